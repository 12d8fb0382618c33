"""The per-endpoint in-flight count: exact, never negative, and a release without an acquire is said aloud."""

from __future__ import annotations

import logging

import pytest

from hybridroute_router.limiter import ConcurrencyLimiter


def test_a_release_without_a_slot_is_logged_and_never_goes_negative(caplog: pytest.LogCaptureFixture) -> None:
    limiter = ConcurrencyLimiter()
    assert limiter.try_acquire("local-a", 1)
    assert not limiter.try_acquire("local-a", 1)
    limiter.release("local-a")

    limiter.release("local-a")  # one too many: a bug somewhere above

    assert limiter.in_flight("local-a") == 0
    assert [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR] == [
        "in-flight slot released twice; count kept at 0"
    ]
    assert limiter.try_acquire("local-a", 1)
    assert not limiter.try_acquire("local-a", 1)  # the cap still holds after the bad release
