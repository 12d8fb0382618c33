"""Per-endpoint in-flight caps (`maxConcurrency`): a full endpoint is skipped, never queued on.

The router runs one event loop, so plain integer counters are enough: no locks, no awaits. An
endpoint without a cap is never at capacity, but its in-flight count is still tracked so the cap can
be introduced by a config reload without losing track of requests already running.
"""

from __future__ import annotations

import logging
from collections import defaultdict

log = logging.getLogger("hybridroute.router.limiter")


class ConcurrencyLimiter:
    """Counts in-flight upstream attempts per endpoint name against each endpoint's cap."""

    def __init__(self) -> None:
        self._in_flight: defaultdict[str, int] = defaultdict(int)

    def at_capacity(self, endpoint: str, cap: int | None) -> bool:
        return cap is not None and self._in_flight[endpoint] >= cap

    def try_acquire(self, endpoint: str, cap: int | None) -> bool:
        """Take a slot; False (and nothing taken) when the endpoint is full."""
        if self.at_capacity(endpoint, cap):
            return False
        self._in_flight[endpoint] += 1
        return True

    def release(self, endpoint: str) -> None:
        """Give a slot back. Releasing more than was taken is a bug: logged, and the count stays at 0."""
        if self._in_flight[endpoint] <= 0:
            log.error("in-flight slot released twice; count kept at 0", extra={"endpoint": endpoint})
            return
        self._in_flight[endpoint] -= 1

    def in_flight(self, endpoint: str) -> int:
        return self._in_flight.get(endpoint, 0)
