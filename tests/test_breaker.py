"""Circuit breaker timelines on a fake clock: passive opening, backoff, probes, p95 and unknown data."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hybridroute_router.breaker import BreakerRegistry, CircuitBreaker
from hybridroute_router.config import (
    CircuitBreakerConfig,
    EndpointConfig,
    PrometheusBreakerConfig,
    RouterConfig,
    SLOConfig,
)
from hybridroute_router.slidingwindow import SlidingCounts


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedJitter(random.Random):
    """uniform() returns a chosen factor, so open periods are exact in assertions."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__(0)
        self.factor = factor

    def uniform(self, a: float, b: float) -> float:
        assert (a, b) == (0.8, 1.2)
        return self.factor


SLO = SLOConfig(p95_latency_ms=1000)


def make(clock: FakeClock, factor: float = 1.0, **fields: Any) -> tuple[CircuitBreaker, list[tuple[str, str, str]]]:
    fields.setdefault("open_seconds", 10)
    fields.setdefault("max_open_seconds", 300)
    breaker = CircuitBreaker(CircuitBreakerConfig(**fields), SLO, clock, FixedJitter(factor), name="gpu")
    transitions: list[tuple[str, str, str]] = []
    breaker.on_transition(lambda endpoint, old, new, reason: transitions.append((old, new, reason)))
    assert breaker.name == "gpu"
    return breaker, transitions


def test_consecutive_failures_open_and_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, consecutive_failures=3)
    breaker.record_failure("5xx", breaker.admit())
    breaker.record_failure("timeout", breaker.admit())
    breaker.record_success(0.1, breaker.admit())
    breaker.record_failure("connect", breaker.admit())
    breaker.record_failure("429", breaker.admit())
    assert breaker.state == "closed"
    breaker.record_failure("5xx", breaker.admit())
    assert breaker.state == "open"
    assert breaker.open_reason == "consecutive_failures"
    assert breaker.last_failure_at == clock.now
    assert not breaker.try_acquire()
    assert transitions == [("closed", "open", "consecutive_failures")]


def test_failure_rate_over_window_needs_minimum_calls() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, consecutive_failures=100, minimum_calls=10, failure_rate_percent=50)
    for _ in range(4):
        breaker.record_success(0.1, breaker.admit())
        breaker.record_failure("5xx", breaker.admit())
    assert breaker.state == "closed"  # 8 calls: below minimumCalls
    breaker.record_success(0.1, breaker.admit())
    breaker.record_failure("5xx", breaker.admit())
    assert breaker.state == "open"
    assert breaker.open_reason == "failure_rate"


def test_failures_outside_the_window_are_forgotten() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, consecutive_failures=100, minimum_calls=4, failure_rate_percent=50, window_seconds=30)
    breaker.record_failure("5xx", breaker.admit())
    breaker.record_failure("5xx", breaker.admit())
    breaker.record_success(0.1, breaker.admit())  # resets the consecutive count, not the window
    clock.advance(31)
    breaker.record_success(0.1, breaker.admit())
    breaker.record_failure("5xx", breaker.admit())
    breaker.record_success(0.1, breaker.admit())
    assert breaker.state == "closed"  # the window holds 1 failure in 3 calls


def test_slow_call_rate_opens() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, minimum_calls=5, slow_call_rate_percent=80)
    for duration in (1.5, 1.2, 0.2, 3.0):
        breaker.record_success(duration, breaker.admit())
    assert breaker.state == "closed"
    breaker.record_success(1.01, breaker.admit())
    assert breaker.state == "open"
    assert transitions == [("closed", "open", "slow_call_rate")]


def test_open_period_then_half_open_probes_close_it() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, consecutive_failures=1, half_open_probes=2)
    breaker.record_failure("5xx", breaker.admit())
    assert breaker.open_until == pytest.approx(clock.now + 10)
    clock.advance(9.99)
    assert breaker.state == "open"
    clock.advance(0.01)
    assert breaker.state == "half-open"
    assert breaker.open_reason == "consecutive_failures"
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first
    assert second
    assert not breaker.try_acquire()  # two probes already in flight
    breaker.record_success(0.3, first)
    assert breaker.state == "half-open"
    third = breaker.try_acquire()  # a slot came free
    assert third
    breaker.release(third)  # ... and the client went away
    breaker.record_success(0.2, second)
    assert breaker.state == "closed"
    assert breaker.open_reason is None
    assert breaker.try_acquire()
    assert transitions == [
        ("closed", "open", "consecutive_failures"),
        ("open", "half-open", "open_elapsed"),
        ("half-open", "closed", "probes_succeeded"),
    ]


def test_probe_failure_reopens_for_twice_as_long_and_closing_resets_backoff() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, consecutive_failures=1, half_open_probes=1, open_seconds=10)
    breaker.record_failure("5xx", breaker.admit())
    clock.advance(10)
    probe = breaker.try_acquire()
    assert probe
    breaker.record_failure("timeout", probe)
    assert breaker.state == "open"
    assert breaker.open_reason == "probe_failed"
    assert breaker.open_until == pytest.approx(clock.now + 20)
    clock.advance(20)
    probe = breaker.try_acquire()
    assert probe
    breaker.record_failure("timeout", probe)
    assert breaker.open_until == pytest.approx(clock.now + 40)
    clock.advance(40)
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.1, probe)
    assert breaker.state == "closed"
    breaker.record_failure("5xx", breaker.admit())
    assert breaker.open_until == pytest.approx(clock.now + 10)
    assert [t[2] for t in transitions].count("probe_failed") == 2


def test_open_period_is_jittered_and_capped() -> None:
    clock = FakeClock()
    low, _ = make(clock, factor=0.8, consecutive_failures=1, open_seconds=10)
    low.record_failure("5xx", low.admit())
    assert low.open_until == pytest.approx(clock.now + 8)
    capped, _ = make(clock, factor=1.2, consecutive_failures=1, open_seconds=100, max_open_seconds=150)
    capped.record_failure("5xx", capped.admit())
    assert capped.open_until == pytest.approx(clock.now + 120)
    clock.advance(120)
    probe = capped.try_acquire()
    assert probe
    capped.record_failure("5xx", probe)
    assert capped.open_until == pytest.approx(clock.now + 150)  # 240 capped


def test_real_rng_jitter_stays_within_twenty_percent() -> None:
    clock = FakeClock()
    rng = random.Random(7)
    periods = []
    for _ in range(200):
        breaker = CircuitBreaker(CircuitBreakerConfig(consecutive_failures=1, open_seconds=10), SLO, clock, rng)
        breaker.record_failure("5xx", breaker.admit())
        assert breaker.open_until is not None
        periods.append(breaker.open_until - clock.now)
    assert 8 <= min(periods) < 8.5
    assert 11.5 < max(periods) <= 12


def test_outcomes_while_open_do_not_count() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, consecutive_failures=1, half_open_probes=1)
    in_flight = [breaker.try_acquire(), breaker.try_acquire()]
    breaker.record_failure("5xx", breaker.admit())
    breaker.record_success(0.1, in_flight[0])  # requests already in flight when it opened
    breaker.record_failure("5xx", in_flight[1])
    assert len(transitions) == 1
    clock.advance(10)
    assert breaker.state == "half-open"


def test_release_in_closed_state_is_harmless() -> None:
    breaker, transitions = make(FakeClock())
    breaker.release(breaker.admit())
    assert breaker.try_acquire()
    assert transitions == []


def half_open(clock: FakeClock, probes: int) -> CircuitBreaker:
    breaker, _ = make(clock, consecutive_failures=1, half_open_probes=probes)
    breaker.record_failure("5xx", breaker.admit())
    clock.advance(10)
    assert breaker.state == "half-open"
    return breaker


def test_requests_without_a_probe_slot_are_not_probe_results_and_free_no_slot() -> None:
    """A private request's last resort or the all-open pick reaches a half-open endpoint via `admit`."""
    clock = FakeClock()
    breaker = half_open(clock, probes=2)
    probes = [breaker.try_acquire(), breaker.try_acquire()]
    assert all(probe is not None and probe.probe for probe in probes)
    for _ in range(5):
        breaker.record_success(0.1, breaker.admit())
    assert breaker.state == "half-open"  # five non-probe successes closed nothing
    assert breaker.try_acquire() is None  # ... and freed no probe slot
    breaker.record_failure("5xx", breaker.admit())
    assert breaker.state == "half-open"  # a non-probe failure is no probe result either
    for probe in probes:
        assert probe is not None
        breaker.record_success(0.1, probe)
    assert breaker.state == "closed"


def test_requests_admitted_before_the_breaker_opened_are_not_probes() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, consecutive_failures=1, half_open_probes=1)
    early = [breaker.try_acquire() for _ in range(3)]  # closed: sent before the trouble started
    breaker.record_failure("5xx", breaker.admit())
    clock.advance(10)
    assert breaker.state == "half-open"
    probe = breaker.try_acquire()
    assert probe is not None
    for permit in early:
        assert permit is not None
        breaker.record_success(0.1, permit)
    assert breaker.state == "half-open"
    assert breaker.try_acquire() is None  # the probe slot is still held by the one real probe
    breaker.record_failure("timeout", probe)
    assert breaker.state == "open"
    assert transitions[-1] == ("half-open", "open", "probe_failed")


def test_probe_slots_of_an_earlier_episode_do_not_count_or_leak() -> None:
    """Settling the same permit twice, or a probe of a previous half-open episode, never moves the count."""
    clock = FakeClock()
    breaker = half_open(clock, probes=2)
    stale = breaker.try_acquire()
    failing = breaker.try_acquire()
    assert stale is not None
    assert failing is not None
    breaker.record_failure("5xx", failing)  # reopens: a new episode
    clock.advance(40)
    assert breaker.state == "half-open"
    fresh = [breaker.try_acquire(), breaker.try_acquire()]
    assert all(fresh)
    breaker.release(stale)  # the earlier episode's probe gives back nothing
    breaker.record_success(0.1, stale)
    breaker.release(failing)
    assert breaker.try_acquire() is None  # still exactly two in flight
    first = fresh[0]
    assert first is not None
    breaker.release(first)
    breaker.release(first)  # settled once only
    again = breaker.try_acquire()
    assert again is not None
    assert breaker.try_acquire() is None


def p95_config(**fields: Any) -> dict[str, Any]:
    prometheus = PrometheusBreakerConfig(url="http://127.0.0.1:9090", **fields)
    return {"prometheus": prometheus, "open_seconds": 10, "half_open_probes": 1}


def test_p95_breaches_in_a_row_open_and_unknown_data_neither_counts_nor_resets() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **p95_config(consecutive_breaches=3))
    breaker.observe_p95(1500)
    breaker.observe_p95(None)
    breaker.observe_p95(float("nan"))
    breaker.observe_p95(1500)
    breaker.observe_p95(900)  # back under: streak resets
    breaker.observe_p95(1500)
    breaker.observe_p95(1500)
    assert breaker.state == "closed"
    breaker.observe_p95(1001)
    assert breaker.state == "open"
    assert transitions == [("closed", "open", "p95_slo_breach")]
    assert breaker.observed_p95_ms == 1001


def test_unknown_data_alone_never_opens_or_closes() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **p95_config(consecutive_breaches=1, stale_after_seconds=1000))
    for _ in range(50):
        breaker.observe_p95(None)
        clock.advance(5)
    assert transitions == []
    breaker.observe_p95(2000)
    assert breaker.state == "open"
    clock.advance(10)
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.1, probe)
    for _ in range(10):
        breaker.observe_p95(None)  # unknown does not count as recovery
        clock.advance(1)
    assert breaker.state == "half-open"


def test_p95_opened_breaker_closes_only_with_probes_and_hysteresis() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **p95_config(consecutive_breaches=2, recovery_ratio=0.8))
    breaker.observe_p95(1200)
    breaker.observe_p95(1200)
    assert breaker.state == "open"
    clock.advance(10)
    assert breaker.state == "half-open"
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.2, probe)
    assert breaker.state == "half-open"  # the p95 still says slow
    breaker.observe_p95(850)  # under the SLO but not under 0.8 x SLO
    assert breaker.state == "half-open"
    probe = breaker.try_acquire()  # probing goes on so fresh latency data exists
    assert probe
    breaker.record_success(0.2, probe)
    breaker.observe_p95(790)
    assert breaker.state == "closed"
    assert transitions[-1] == ("half-open", "closed", "p95_recovered")


def test_probe_success_after_p95_recovered_closes() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **p95_config(consecutive_breaches=1))
    breaker.observe_p95(5000)
    clock.advance(10)
    breaker.observe_p95(100)
    assert breaker.state == "half-open"  # recovered data, but no probe yet
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.2, probe)
    assert transitions[-1] == ("half-open", "closed", "probes_succeeded")


def test_p95_breaches_while_half_open_reopen_for_longer() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **p95_config(consecutive_breaches=2))
    breaker.observe_p95(3000)
    breaker.observe_p95(3000)
    clock.advance(10)
    assert breaker.state == "half-open"
    breaker.observe_p95(3000)
    assert breaker.state == "half-open"
    breaker.observe_p95(3000)
    assert breaker.state == "open"
    assert breaker.open_until == pytest.approx(clock.now + 20)
    assert [t[1:] for t in transitions] == [
        ("open", "p95_slo_breach"),
        ("half-open", "open_elapsed"),
        ("open", "p95_slo_breach"),
    ]


def test_p95_opened_state_expires_when_its_data_goes_stale() -> None:
    clock = FakeClock()
    breaker, transitions = make(
        clock, **(p95_config(consecutive_breaches=1, stale_after_seconds=60) | {"open_seconds": 200})
    )
    breaker.observe_p95(3000)
    clock.advance(30)
    breaker.observe_p95(3000)  # fresh data while open keeps it open
    clock.advance(59)
    assert breaker.state == "open"
    breaker.observe_p95(None)  # Prometheus went quiet
    clock.advance(1)
    assert breaker.state == "half-open"
    assert transitions[-1] == ("open", "half-open", "p95_stale")
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.2, probe)  # stale p95 no longer gates closing
    assert breaker.state == "closed"


def test_passive_open_does_not_expire_on_stale_p95() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, **(p95_config(stale_after_seconds=1) | {"consecutive_failures": 1}))
    breaker.record_failure("connect", breaker.admit())
    clock.advance(5)
    assert breaker.state == "open"


def test_passive_breaking_works_while_prometheus_is_unknown() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock, **(p95_config() | {"consecutive_failures": 2}))
    breaker.observe_p95(None)
    breaker.record_failure("connect", breaker.admit())
    breaker.observe_p95(None)
    breaker.record_failure("connect", breaker.admit())
    assert transitions == [("closed", "open", "consecutive_failures")]


def test_probe_failure_on_p95_episode_keeps_the_hysteresis_gate() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, **p95_config(consecutive_breaches=1))
    breaker.observe_p95(3000)
    clock.advance(10)
    probe = breaker.try_acquire()
    assert probe
    breaker.record_failure("timeout", probe)
    assert breaker.open_reason == "probe_failed"
    clock.advance(20)
    breaker.observe_p95(990)  # fresh, below SLO, above 0.8 x SLO
    probe = breaker.try_acquire()
    assert probe
    breaker.record_success(0.1, probe)
    assert breaker.state == "half-open"


def config_with(*names: str, **breaker_fields: Any) -> RouterConfig:
    endpoints = [EndpointConfig(name=n, type="local", base_url="http://127.0.0.1:1/v1", model="m") for n in names]
    return RouterConfig(endpoints=endpoints, circuit_breaker=CircuitBreakerConfig(**breaker_fields))


def test_registry_keeps_state_for_surviving_endpoints_and_notifies() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock, random.Random(1))
    seen: list[tuple[str, str, str, str]] = []
    registry.on_transition(lambda *event: seen.append(event))
    registry.sync(config_with("a", "b", consecutive_failures=1))
    registry.get("a").record_failure("5xx", registry.get("a").admit())
    registry.sync(config_with("a", "c", consecutive_failures=2))
    assert registry.states() == {"a": "open", "c": "closed"}
    with pytest.raises(KeyError):
        registry.get("b")
    registry.get("c").record_failure("5xx", registry.get("c").admit())
    assert registry.get("c").state == "closed"  # the new config's threshold applies
    registry.get("c").record_failure("5xx", registry.get("c").admit())
    assert [(endpoint, new) for endpoint, _, new, _ in seen] == [("a", "open"), ("c", "open")]


def test_registry_feeds_p95_and_ignores_unknown_names() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(clock)
    cfg = config_with("a", prometheus=PrometheusBreakerConfig(consecutive_breaches=1))
    registry.sync(cfg)
    registry.observe_p95("gone", 99999)
    registry.observe_p95("a", 99999)
    assert registry.states() == {"a": "open"}
    assert registry.get("a").observed_p95_ms == 99999


def test_sliding_counts_expire_whole_slices() -> None:
    clock = FakeClock(0.0)
    counts = SlidingCounts(10, 2, clock)  # 1 s slices
    counts.add(1, 0)
    clock.advance(5)
    counts.add(1, 1)
    assert counts.totals() == (2, 1)
    clock.advance(5)  # t=10: the slice holding t=0 has left
    assert counts.totals() == (1, 1)
    clock.advance(100)
    assert counts.totals() == (0, 0)
    counts.add(3, 3)
    counts.clear()
    assert counts.totals() == (0, 0)
    with pytest.raises(ValueError, match="positive"):
        SlidingCounts(0, 1, clock)
