"""Per-endpoint circuit breaker: a state machine driven by call outcomes and by fleet-wide p95.

    closed --(consecutive failures | failure rate | slow-call rate | p95 breaches)--> open
    open --(open period elapsed | p95-opened and its p95 data went stale)--> half-open
    half-open --(halfOpenProbes probes succeeded [+ p95 recovered, if p95 opened it])--> closed
    half-open --(a probe failed | p95 breaches)--> open (for longer)

Passive signals, judged the moment an outcome is recorded while closed:
- `consecutiveFailures` failures in a row;
- failure share >= `failureRatePercent` over `windowSeconds`, once `minimumCalls` calls are in it;
- share of successful calls slower than `slo.p95LatencyMs` >= `slowCallRatePercent`, same window.
Every failure kind ("5xx", "429", "timeout", "connect", "invalid") counts the same; the executor
decides what it records.

Open lasts `openSeconds`, doubling on each re-open without an intervening close, times a jitter
factor in [0.8, 1.2] from the injected rng (so a fleet of routers does not probe in lockstep),
capped at `maxOpenSeconds`. Closing resets the backoff. Outcomes recorded while open (requests that
were already in flight) do not count.

Every request sent to the endpoint holds a `Permit` from `try_acquire` (or `admit`, for a request
sent without asking: the decision's all-open pick, a private request's last resort), and its outcome
is recorded with that permit. A permit belongs to one breaker *episode* (a new one starts at every
state change), and an outcome only counts in the episode its permit was issued in: a request admitted
before the breaker opened says nothing about the endpoint after it, and is ignored.
Half-open admits at most `halfOpenProbes` probes in flight at once (`try_acquire`); only a permit that
holds one of those slots is a probe, so requests sent there without a slot (`admit`) never count as
probe results, and never give back a slot they did not take. A request that ends without an outcome
gives its slot back (`release`). Each permit settles once, so the in-flight count cannot drift. A
probe's success is a success however long it took: LLM call durations vary with output length, and
slowness is the p95 signal's job.

p95 from Prometheus (`observe_p95`, called every evaluation): above the SLO for `consecutiveBreaches`
known observations in a row opens the breaker (reason `p95_slo_breach`), or re-opens it from
half-open. `None` means unknown (Prometheus down, empty, NaN, timeout): it neither counts as a breach
nor resets the streak, and never opens or closes anything by itself. Once p95 opened a breaker,
closing from half-open also needs the latest p95 below SLO x `recoveryRatio` (hysteresis against
flapping around the SLO) — unless that data is older than `staleAfterSeconds`, in which case the p95
condition has expired and probes alone decide; likewise a p95-opened open state turns half-open as
soon as its data goes stale. Passive breaking keeps working whatever Prometheus does.

The clock is injected (seconds, monotonic in production) and read only here, so tests drive whole
timelines without sleeping; `observe_p95(now=...)` must use the same clock. The open -> half-open
transition happens lazily, when the state is next read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from .config import CircuitBreakerConfig, RouterConfig, SLOConfig
from .slidingwindow import SlidingCounts

BreakerState = Literal["closed", "open", "half-open"]
TransitionCallback = Callable[[str, BreakerState, BreakerState, str], None]
"""(endpoint, old state, new state, reason)."""

P95_BREACH: Final = "p95_slo_breach"
JITTER: Final = 0.2
_MAX_DOUBLINGS: Final = 30  # 2**30 x openSeconds is far beyond any maxOpenSeconds; avoids float overflow


@dataclass(slots=True)
class Permit:
    """One request's admission to an endpoint: the episode it was issued in, and whether it holds a probe slot."""

    episode: int
    probe: bool
    settled: bool = False


class CircuitBreaker:
    """One endpoint's breaker. Not thread-safe: it lives on the router's event loop."""

    def __init__(
        self,
        config: CircuitBreakerConfig,
        slo: SLOConfig,
        clock: Callable[[], float],
        rng: random.Random,
        name: str = "",
    ) -> None:
        self.name = name
        self._config = config
        self._slo = slo
        self._clock = clock
        self._rng = rng
        self._state: BreakerState = "closed"
        self.open_reason: str | None = None
        """Why the breaker last opened; kept while half-open, None once closed."""
        self.last_failure_at: float | None = None
        self._open_until = 0.0
        self._reopens = 0
        self._p95_gated = False  # p95 opened this episode: closing needs p95 recovery too
        self._consecutive_failures = 0
        self._window = SlidingCounts(config.window_seconds, 3, clock)  # calls, failures, slow calls
        self._episode = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._breaches = 0
        self._last_p95_ms: float | None = None
        self._last_p95_at: float | None = None
        self._callbacks: list[TransitionCallback] = []

    # -- reading ------------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        if self._state == "open":
            now = self._clock()
            if now >= self._open_until:
                self._half_open("open_elapsed")
            elif self.open_reason == P95_BREACH and self._p95_stale(now):
                self._half_open("p95_stale")
        return self._state

    @property
    def observed_p95_ms(self) -> float | None:
        """The latest known p95 (ms) from Prometheus, for ranking; None before any."""
        return self._last_p95_ms

    @property
    def open_until(self) -> float | None:
        """When the current open period ends (clock seconds); None unless open."""
        return self._open_until if self.state == "open" else None

    def on_transition(self, callback: TransitionCallback) -> None:
        """Call `callback(endpoint, old, new, reason)` on every state change (metrics, events, logs)."""
        self._callbacks.append(callback)

    def configure(self, config: CircuitBreakerConfig, slo: SLOConfig) -> None:
        """Adopt a reloaded config, keeping the state (a changed window starts empty)."""
        if config.window_seconds != self._config.window_seconds:
            self._window = SlidingCounts(config.window_seconds, 3, self._clock)
        self._config, self._slo = config, slo

    # -- passive outcomes ---------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """May a request go to this endpoint now? Half-open: only while a probe slot is free."""
        state = self.state
        if state == "closed":
            return Permit(self._episode, probe=False)
        if state == "open" or self._probes_in_flight >= self._config.half_open_probes:
            return None
        self._probes_in_flight += 1
        return Permit(self._episode, probe=True)

    def admit(self) -> Permit:
        """A permit for a request sent without asking (never a probe: its outcome counts only while closed)."""
        return Permit(self._episode, probe=False)

    def release(self, permit: Permit) -> None:
        """The permit's request ended without an outcome (the client went away, no key): give back its slot."""
        self._settle(permit)

    def record_success(self, duration_s: float, permit: Permit) -> None:
        state = self.state
        if not self._settle(permit):
            return
        if state == "closed":
            self._consecutive_failures = 0
            slow = duration_s * 1000 > self._slo.p95_latency_ms
            self._window.add(1, 0, int(slow))
            self._judge_window()
        elif state == "half-open" and permit.probe:
            self._probe_successes += 1
            self._close_if_recovered("probes_succeeded")

    def record_failure(self, kind: str, permit: Permit) -> None:
        """An attempt failed (kind: 5xx, 429, timeout, connect, invalid)."""
        self.last_failure_at = self._clock()
        state = self.state
        if not self._settle(permit):
            return
        if state == "closed":
            self._consecutive_failures += 1
            self._window.add(1, 1, 0)
            if self._consecutive_failures >= self._config.consecutive_failures:
                self._open("consecutive_failures")
            else:
                self._judge_window()
        elif state == "half-open" and permit.probe:
            self._open("probe_failed")

    def _settle(self, permit: Permit) -> bool:
        """Settle `permit` once; True when its outcome belongs to the current episode."""
        if permit.settled:
            return False
        permit.settled = True
        if permit.episode != self._episode:
            return False
        if permit.probe:
            self._probes_in_flight -= 1
        return True

    # -- p95 from Prometheus ------------------------------------------------------------------------

    def observe_p95(self, p95_ms: float | None, now: float | None = None) -> None:
        """One evaluation's p95 in ms; None (or NaN/inf) is unknown and changes nothing."""
        if p95_ms is None or not math.isfinite(p95_ms):
            return
        self._last_p95_ms = p95_ms
        self._last_p95_at = self._clock() if now is None else now
        self._breaches = self._breaches + 1 if p95_ms > self._slo.p95_latency_ms else 0
        state = self.state
        if state == "open":
            return
        if self._breaches >= self._config.prometheus.consecutive_breaches:
            self._p95_gated = True
            self._open(P95_BREACH)
        elif state == "half-open":
            self._close_if_recovered("p95_recovered")

    # -- transitions --------------------------------------------------------------------------------

    def _judge_window(self) -> None:
        calls, failures, slow = self._window.totals()
        if calls < self._config.minimum_calls:
            return
        if failures * 100 >= self._config.failure_rate_percent * calls:
            self._open("failure_rate")
        elif slow * 100 >= self._config.slow_call_rate_percent * calls:
            self._open("slow_call_rate")

    def _open(self, reason: str) -> None:
        base = self._config.open_seconds * 2 ** min(self._reopens, _MAX_DOUBLINGS)
        period = min(self._config.max_open_seconds, base * self._rng.uniform(1 - JITTER, 1 + JITTER))
        self._reopens += 1
        self._open_until = self._clock() + period
        self.open_reason = reason
        self._breaches = 0
        self._reset_counts()
        self._transition("open", reason)

    def _half_open(self, reason: str) -> None:
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._transition("half-open", reason)

    def _close_if_recovered(self, reason: str) -> None:
        if self._probe_successes < self._config.half_open_probes:
            return
        if self._p95_gated and not self._p95_recovered(self._clock()):
            return
        self._reopens = 0
        self._p95_gated = False
        self.open_reason = None
        self._breaches = 0
        self._reset_counts()
        self._transition("closed", reason)

    def _p95_recovered(self, now: float) -> bool:
        if self._p95_stale(now):
            return True  # the p95 condition expired with its data; probes alone decide
        assert self._last_p95_ms is not None
        return self._last_p95_ms < self._slo.p95_latency_ms * self._config.prometheus.recovery_ratio

    def _p95_stale(self, now: float) -> bool:
        return self._last_p95_at is None or now - self._last_p95_at >= self._config.prometheus.stale_after_seconds

    def _reset_counts(self) -> None:
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._window.clear()

    def _transition(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        self._episode += 1  # permits issued before this change no longer count
        for callback in self._callbacks:
            callback(self.name, old, new, reason)


class BreakerRegistry:
    """One breaker per endpoint of the config being served; state survives config reloads."""

    def __init__(self, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._callbacks: list[TransitionCallback] = []

    def sync(self, config: RouterConfig) -> None:
        """Create breakers for new endpoints, reconfigure survivors, drop removed ones."""
        breakers: dict[str, CircuitBreaker] = {}
        for endpoint in config.endpoints:
            breaker = self._breakers.get(endpoint.name)
            if breaker is None:
                breaker = CircuitBreaker(config.circuit_breaker, config.slo, self._clock, self._rng, endpoint.name)
                for callback in self._callbacks:
                    breaker.on_transition(callback)
            else:
                breaker.configure(config.circuit_breaker, config.slo)
            breakers[endpoint.name] = breaker
        self._breakers = breakers

    def get(self, endpoint: str) -> CircuitBreaker:
        """The endpoint's breaker; KeyError for a name the current config does not have."""
        return self._breakers[endpoint]

    def snapshot(self) -> Mapping[str, CircuitBreaker]:
        """The breakers of the config being served now, frozen: a later reload does not change this view.

        A request takes it together with the config it starts with, so an endpoint that a reload
        removes while the request is still arriving keeps its breaker for that request's whole life.
        """
        return MappingProxyType(self._breakers)

    def states(self) -> dict[str, BreakerState]:
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def observe_p95(self, endpoint: str, p95_ms: float | None) -> None:
        """The p95 evaluator's hook; names unknown to the current config are ignored (a reload raced)."""
        breaker = self._breakers.get(endpoint)
        if breaker is not None:
            breaker.observe_p95(p95_ms)

    def on_transition(self, callback: TransitionCallback) -> None:
        """Subscribe to transitions of every breaker, present and future."""
        self._callbacks.append(callback)
        for breaker in self._breakers.values():
            breaker.on_transition(callback)
