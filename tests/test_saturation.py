"""The local-latency estimator and its verdict: queue arithmetic, KV cache, and unknown data never spilling."""

from __future__ import annotations

import math

import pytest

from hybridroute_router.config import SaturationConfig
from hybridroute_router.saturation import PoolLoad, estimate_latency_ms, judge

CFG = SaturationConfig()
NOW = 1_000.0


def load(**fields: float | int | None) -> PoolLoad:
    base: dict[str, float | int | None] = {"waiting": 0.0, "running": 0.0, "tokens_per_second": 50.0}
    base.update(fields)
    return PoolLoad(read_at=NOW, **base)  # type: ignore[arg-type]


def test_an_idle_pool_costs_only_the_requests_own_generation() -> None:
    assert estimate_latency_ms(load(), 100) == pytest.approx(2_000)


def test_each_queued_request_adds_its_mean_length_at_the_pools_rate() -> None:
    # 3 waiting, one lane generating: 3.5 mean requests (the running one half done) of 200 tokens
    # at 50 tokens/s before ours starts, then ours: 100 tokens.
    estimate = estimate_latency_ms(load(waiting=3, running=1, mean_output_tokens=200), 100)
    assert estimate == pytest.approx((3.5 * 200 / 50 + 100 / 50) * 1000)


def test_more_lanes_drain_the_queue_faster() -> None:
    one = estimate_latency_ms(load(waiting=4, running=1, mean_output_tokens=200), 100)
    four = estimate_latency_ms(load(waiting=4, running=4, mean_output_tokens=200), 100)
    assert one is not None
    assert four is not None
    assert four < one


def test_known_slots_make_a_busy_serial_server_a_queue_even_without_a_reported_backlog() -> None:
    # llama-cpp-python serves one request at a time: with one running, the next one waits.
    unknown_slots = estimate_latency_ms(load(waiting=0, running=1, mean_output_tokens=200), 100)
    one_slot = estimate_latency_ms(load(waiting=0, running=1, mean_output_tokens=200), 100, parallel_slots=1)
    assert unknown_slots == pytest.approx(2_000)
    assert one_slot == pytest.approx((0.5 * 200 / 50 + 2) * 1000)


def test_a_free_slot_means_no_wait() -> None:
    estimate = estimate_latency_ms(load(waiting=0, running=1, replicas=1), 100, parallel_slots=2)
    assert estimate == pytest.approx(2_000)


def test_requests_this_router_sent_since_the_reading_count_as_queued() -> None:
    seen = estimate_latency_ms(load(waiting=1, running=1, mean_output_tokens=100), 100)
    with_unseen = estimate_latency_ms(load(waiting=1, running=1, mean_output_tokens=100), 100, unseen=3)
    assert seen is not None
    assert with_unseen is not None
    assert with_unseen - seen == pytest.approx(3 * 100 / 50 * 1000)


def test_without_a_mean_the_requests_own_length_stands_in() -> None:
    estimate = estimate_latency_ms(load(waiting=1, running=1), 100)
    assert estimate == pytest.approx((1.5 * 100 / 50 + 2) * 1000)


@pytest.mark.parametrize(
    "fields",
    [
        {"tokens_per_second": None},
        {"tokens_per_second": 0.0},
        {"tokens_per_second": math.nan},
        {"tokens_per_second": math.inf},
        {"waiting": None},
    ],
)
def test_no_rate_or_no_queue_figure_is_no_estimate(fields: dict[str, float | None]) -> None:
    assert estimate_latency_ms(load(**{"waiting": 50.0, "running": 1.0, **fields}), 100) is None


def test_an_estimate_over_the_limit_spills_and_says_by_how_much() -> None:
    verdict = judge(load(waiting=10, running=1, mean_output_tokens=200), CFG, now=NOW, own_tokens=100, limit_ms=4_000)
    assert verdict.spill
    assert verdict.estimate_ms is not None
    assert verdict.estimate_ms > 4_000
    assert "> 4000 ms" in verdict.detail
    assert "10 waiting" in verdict.detail


def test_an_estimate_within_the_limit_does_not_spill() -> None:
    verdict = judge(load(waiting=0, running=1), CFG, now=NOW, own_tokens=100, limit_ms=4_000)
    assert not verdict.spill
    assert verdict.estimate_ms == pytest.approx(2_000)


def test_a_long_request_spills_where_a_short_one_fits() -> None:
    busy = load(waiting=1, running=1, mean_output_tokens=50)
    assert not judge(busy, CFG, now=NOW, own_tokens=50, limit_ms=4_000).spill
    assert judge(busy, CFG, now=NOW, own_tokens=400, limit_ms=4_000).spill


def test_a_full_kv_cache_spills_even_without_a_rate() -> None:
    verdict = judge(load(kv_cache_ratio=0.97, tokens_per_second=None), CFG, now=NOW, own_tokens=10, limit_ms=1e9)
    assert verdict.spill
    assert "KV cache 97%" in verdict.detail


def test_a_kv_cache_below_the_threshold_does_not_spill() -> None:
    assert not judge(load(kv_cache_ratio=0.5), CFG, now=NOW, own_tokens=10, limit_ms=1e9).spill


@pytest.mark.parametrize(
    "reading",
    [
        None,
        PoolLoad(read_at=NOW),
        PoolLoad(read_at=NOW, waiting=100.0, running=1.0, tokens_per_second=None),
        PoolLoad(read_at=NOW, waiting=None, running=None, tokens_per_second=10.0),
        PoolLoad(read_at=NOW, waiting=100.0, running=1.0, tokens_per_second=math.nan, kv_cache_ratio=math.nan),
    ],
)
def test_unknown_data_never_spills(reading: PoolLoad | None) -> None:
    verdict = judge(reading, CFG, now=NOW, own_tokens=1_000, limit_ms=1)
    assert not verdict.spill
    assert verdict.estimate_ms is None
    assert verdict.detail == "saturation unknown"


def test_a_stale_reading_is_unknown_however_saturated_it_was() -> None:
    saturated = load(waiting=100, running=1, kv_cache_ratio=1.0)
    fresh = judge(saturated, CFG, now=NOW + CFG.stale_after_seconds, own_tokens=100, limit_ms=1)
    stale = judge(saturated, CFG, now=NOW + CFG.stale_after_seconds + 0.1, own_tokens=100, limit_ms=1)
    assert fresh.spill
    assert not stale.spill
    assert stale.estimate_ms is None
