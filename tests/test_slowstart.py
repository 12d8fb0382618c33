"""Slow start: a recovered pool's share ramps linearly; no recovery, no ramp; relapse ends the ramp."""

from __future__ import annotations

import pytest

from hybridroute_router.slowstart import SlowStart


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_endpoint_never_impaired_has_the_full_share() -> None:
    ramp = SlowStart(Clock())
    ramp.observe("gpu", False)
    assert ramp.share("gpu", 30, 10) == 1.0
    assert ramp.ramping() == {}


def test_recovery_ramps_from_the_floor_to_full_over_the_duration() -> None:
    clock = Clock()
    ramp = SlowStart(clock)
    ramp.observe("gpu", True)
    assert ramp.share("gpu", 30, 10) == 1.0  # impaired: the other filters keep traffic away, not the ramp
    ramp.observe("gpu", False)
    assert ramp.share("gpu", 30, 10) == pytest.approx(0.10)
    clock.now += 15
    ramp.observe("gpu", False)  # observing a healthy endpoint again does not restart the ramp
    assert ramp.share("gpu", 30, 10) == pytest.approx(0.55)
    clock.now += 15
    assert ramp.share("gpu", 30, 10) == 1.0
    assert ramp.ramping() == {}


def test_falling_impaired_during_the_ramp_ends_it_and_the_next_recovery_starts_again() -> None:
    clock = Clock()
    ramp = SlowStart(clock)
    ramp.observe("gpu", True)
    ramp.observe("gpu", False)
    clock.now += 20
    ramp.observe("gpu", True)
    clock.now += 5
    ramp.observe("gpu", False)
    assert ramp.share("gpu", 30, 10) == pytest.approx(0.10)


def test_zero_seconds_means_no_ramp() -> None:
    ramp = SlowStart(Clock())
    ramp.observe("gpu", True)
    ramp.observe("gpu", False)
    assert ramp.share("gpu", 0, 10) == 1.0
