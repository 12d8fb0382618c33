"""Local admission and its policy filter: saturation, lifecycle and slow start spill public requests only."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from hybridroute_router.admission import LocalAdmission, lifecycle_share
from hybridroute_router.config import RouterConfig, SaturationConfig, SLOConfig
from hybridroute_router.policy import EndpointState, decide
from hybridroute_router.saturation import PoolLoad

from .test_policy import PRIVATE, cloud, filters, local, names, profile


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def setup(**local_fields: Any) -> tuple[LocalAdmission, Clock, dict[str, int], RouterConfig]:
    clock = Clock()
    in_flight: dict[str, int] = {}
    admission = LocalAdmission(clock, lambda name: in_flight.get(name, 0))
    config = RouterConfig(
        endpoints=[local("gpu", **local_fields), cloud("openai")],
        slo=SLOConfig(p95_latency_ms=5_000),
        saturation=SaturationConfig(slo_fraction=0.8, slow_start_seconds=30, slow_start_min_percent=10),
    )
    return admission, clock, in_flight, config


IDLE = {"waiting": 0.0, "running": 0.0, "tokens_per_second": 50.0, "mean_output_tokens": 100.0}
SATURATED = {"waiting": 6.0, "running": 1.0, "tokens_per_second": 50.0, "mean_output_tokens": 100.0}


def test_an_idle_pool_takes_everything() -> None:
    admission, clock, _, config = setup()
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert admission.spills(profile(), config, {}, roll=0.99) == {}


def test_a_saturated_pool_spills_public_requests_with_the_estimate() -> None:
    admission, clock, _, config = setup()
    admission.update({"gpu": PoolLoad(read_at=clock(), **SATURATED)})
    spill = admission.spills(profile(), config, {}, roll=0.0)["gpu"]
    assert spill.kind == "saturation"
    assert "> 4000 ms" in spill.detail  # slo 5000 ms x sloFraction 0.8


def test_the_latency_budget_tightens_the_limit() -> None:
    admission, clock, _, config = setup()
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert admission.spills(profile(max_output_tokens=100), config, {}, roll=0.0) == {}  # 2 s fits 4 s
    spills = admission.spills(profile(max_output_tokens=100, latency_budget_ms=1_000), config, {}, roll=0.0)
    assert spills["gpu"].kind == "saturation"


def test_requests_sent_since_the_reading_push_the_estimate_up() -> None:
    admission, clock, in_flight, config = setup(parallel_slots=1)
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert admission.spills(profile(), config, {}, roll=0.0) == {}
    in_flight["gpu"] = 3  # this router sent three since; the next one would queue behind them
    assert admission.spills(profile(), config, {}, roll=0.0)["gpu"].kind == "saturation"


def test_no_reading_and_disabled_admission_never_spill() -> None:
    admission, _, _, config = setup()
    assert admission.spills(profile(), config, {}, roll=0.0) == {}
    admission.update({"gpu": PoolLoad(read_at=0.0, **SATURATED)})  # stale: read 500 s ago
    assert admission.spills(profile(), config, {}, roll=0.0) == {}
    off = config.model_copy(update={"saturation": SaturationConfig(enabled=False)})
    admission.update({"gpu": PoolLoad(read_at=500.0, **SATURATED)})
    assert admission.spills(profile(), off, {}, roll=0.0) == {}


def test_recovery_returns_traffic_over_the_ramp() -> None:
    admission, clock, _, config = setup()
    admission.update({"gpu": PoolLoad(read_at=clock(), **SATURATED)})
    admission.spills(profile(), config, {}, roll=0.0)
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})  # saturation cleared

    def local_share(rolls: int = 100) -> float:
        kept = sum("gpu" not in admission.spills(profile(), config, {}, roll=i / rolls) for i in range(rolls))
        return kept / rolls

    assert local_share() == pytest.approx(0.10)
    clock.now += 15
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert local_share() == pytest.approx(0.55)
    clock.now += 15
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert local_share() == 1.0


def test_a_breaker_closing_starts_a_ramp_too() -> None:
    admission, _, _, config = setup()
    admission.spills(profile(), config, {"gpu": "open"}, roll=0.5)
    spill = admission.spills(profile(), config, {"gpu": "closed"}, roll=0.5)["gpu"]
    assert spill.kind == "slow-start"
    assert spill.detail == "recovering: local share 10%"


def test_a_pool_short_of_replicas_takes_its_ready_share() -> None:
    admission, _, _, config = setup(desired_replicas=4, ready_replicas=1)
    assert lifecycle_share(config.endpoints[0]) == 0.25
    kinds = Counter(
        spill.kind for i in range(100) for spill in admission.spills(profile(), config, {}, roll=i / 100).values()
    )
    assert kinds == {"lifecycle": 75}


def test_unmanaged_endpoints_have_the_full_lifecycle_share() -> None:
    assert lifecycle_share(local("gpu")) == 1.0
    assert lifecycle_share(local("gpu", desired_replicas=0, ready_replicas=0)) == 1.0


def test_a_private_request_is_refused_up_front_only_when_the_wait_exceeds_its_budget() -> None:
    admission, clock, _, config = setup()
    admission.update({"gpu": PoolLoad(read_at=clock(), **SATURATED)})  # about 15 s
    private = profile(**PRIVATE)
    assert admission.private_refusal(private, config) is None  # within requestTimeoutMs (120 s)
    refusal = admission.private_refusal(profile(**PRIVATE, latency_budget_ms=3_000), config)
    assert refusal is not None
    assert "exceeds the latency budget of 3000 ms" in refusal
    assert "waited 0 ms" in refusal


def test_a_private_request_with_unknown_saturation_is_sent() -> None:
    admission, _, _, config = setup()
    assert admission.private_refusal(profile(**PRIVATE, latency_budget_ms=1), config) is None


# --- the policy's saturation filter ---------------------------------------------------------------

SPILLING = {"gpu": EndpointState(spill="saturation: estimated local latency 9000 ms > 4000 ms")}
BASIC = RouterConfig(endpoints=[local("gpu"), cloud("openai")])


def test_a_spilled_public_request_goes_to_the_cloud_first_with_reason_spill() -> None:
    decision = decide(profile(), BASIC, SPILLING)
    assert names(decision) == ["openai"]
    assert decision.reason == "spill"
    assert filters(decision) == {"gpu": "saturation"}


def test_a_private_request_ignores_spill_and_stays_local() -> None:
    decision = decide(profile(**PRIVATE), BASIC, SPILLING)
    assert names(decision) == ["gpu"]
    assert "saturation" not in filters(decision).values()


def test_spilling_never_leaves_a_request_without_an_endpoint() -> None:
    only_local = RouterConfig(endpoints=[local("gpu")])
    assert names(decide(profile(), only_local, SPILLING)) == ["gpu"]
    cloud_open = {**SPILLING, "openai": EndpointState(breaker="open")}
    assert names(decide(profile(), BASIC, cloud_open)) == ["gpu"]


def test_this_routers_own_in_flight_is_a_floor_for_a_lagging_reading() -> None:
    admission, clock, in_flight, config = setup(parallel_slots=1)
    in_flight["gpu"] = 3  # sent before the reading, but after the scrape it was computed from
    admission.update({"gpu": PoolLoad(read_at=clock(), **IDLE)})
    assert admission.spills(profile(), config, {}, roll=0.0)["gpu"].kind == "saturation"
