"""The half-open probe limit as a stateful property of the pure breaker (hypothesis state machine).

Random interleavings of what the executor does with a breaker: ask for a slot (`try_acquire`), send
without asking (`admit`: the all-open pick, a private request's last resort), settle a permit with a
success, a failure or a release (any permit, any number of times, old episodes included) and let
time pass. Whatever the order:

- while half-open, at most `halfOpenProbes` permits holding a probe slot of the current episode are
  unsettled, and `try_acquire` grants a probe exactly when fewer are;
- the breaker's in-flight probe count always equals that number (never negative, never drifting);
- only probes of the current episode move a half-open breaker: it closes after `halfOpenProbes` of
  their successes, and a permit without a slot, of an earlier episode, or settled before never
  changes the state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, precondition, rule

from hybridroute_router.breaker import CircuitBreaker, Permit
from hybridroute_router.config import CircuitBreakerConfig, SLOConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Issued:
    """A permit and what the model knows about it."""

    permit: Permit
    episode: int
    settled: bool = False


class HalfOpenProbes(RuleBasedStateMachine):
    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.episode = 0
        self.transitions: list[tuple[str, str]] = []
        self.probe_successes = 0  # successes of current-episode probes since the breaker went half-open
        self.issued: list[Issued] = []

    @initialize(
        failures=st.integers(1, 3),
        probes=st.integers(1, 4),
        open_seconds=st.integers(1, 5),
        seed=st.integers(0, 2**16),
    )
    def start(self, failures: int, probes: int, open_seconds: int, seed: int) -> None:
        config = CircuitBreakerConfig(
            consecutive_failures=failures, half_open_probes=probes, open_seconds=open_seconds, max_open_seconds=60
        )
        self.limit = probes
        self.breaker = CircuitBreaker(
            config, SLOConfig(p95_latency_ms=60_000), self.clock, random.Random(seed), "local"
        )
        self.breaker.on_transition(self._transition)

    def _transition(self, _endpoint: str, old: str, new: str, _reason: str) -> None:
        if old == "half-open" and new == "closed":
            assert self.probe_successes >= self.limit, "closed without enough probe successes"
        self.episode += 1
        self.probe_successes = 0
        self.transitions.append((old, new))

    def _outstanding_probes(self) -> int:
        return sum(1 for each in self.issued if each.permit.probe and not each.settled and each.episode == self.episode)

    # -- what the executor does ---------------------------------------------------------------------

    @rule(target=permits)
    def try_acquire(self) -> Issued | object:
        state = self.breaker.state  # lazy transitions first, so the model's episode is current
        free = state == "closed" or (state == "half-open" and self._outstanding_probes() < self.limit)
        permit = self.breaker.try_acquire()
        assert (permit is not None) == free
        if permit is None:
            return multiple()
        assert permit.probe == (state == "half-open")
        issued = Issued(permit, self.episode)
        self.issued.append(issued)
        return issued

    @rule(target=permits)
    def admit(self) -> Issued:
        self.breaker.state  # noqa: B018 (a read applies any due transition)
        issued = Issued(self.breaker.admit(), self.episode)
        assert not issued.permit.probe
        self.issued.append(issued)
        return issued

    @rule(issued=permits, outcome=st.sampled_from(["success", "failure", "release"]))
    def settle(self, issued: Issued, outcome: str) -> None:
        state = self.breaker.state
        counts = issued.permit.probe and not issued.settled and issued.episode == self.episode
        moves_state = not issued.settled and issued.episode == self.episode and (state == "closed" or counts)
        before = len(self.transitions)
        if outcome == "success":
            if counts and state == "half-open":
                self.probe_successes += 1
            self.breaker.record_success(0.01, issued.permit)
        elif outcome == "failure":
            self.breaker.record_failure("5xx", issued.permit)
        else:
            self.breaker.release(issued.permit)
        if not moves_state or outcome == "release":
            assert len(self.transitions) == before, f"{outcome} of a permit that is no probe result moved the breaker"
        issued.settled = True

    @rule(seconds=st.sampled_from([0.5, 3.0, 12.0, 70.0]))  # within, about, past an open period
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def probe_count_is_exact(self) -> None:
        self.breaker.state  # noqa: B018
        outstanding = self._outstanding_probes()
        assert self.breaker._probes_in_flight == outstanding  # the count under test
        assert 0 <= outstanding <= self.limit
        if self.breaker.state != "half-open":
            assert outstanding == 0


TestHalfOpenProbes = HalfOpenProbes.TestCase
TestHalfOpenProbes.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
