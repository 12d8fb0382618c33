"""Retry budget: retries may add at most a set share of recent traffic, so failover cannot storm.

The idea of Finagle's and Linkerd's retry budgets: over a sliding window, retries are allowed while
`retries < max(percent% of requests, min_retries_per_s x window)`. The floor keeps failover working
for a quiet sidecar (one request a minute can still be retried); the percentage caps what a sick
upstream can cost everyone else once traffic is heavy. `percent = 0` turns retries off entirely,
floor included, because that is what an operator writing `retryBudgetPercent: 0` means.
"""

from __future__ import annotations

from collections.abc import Callable

from .slidingwindow import SlidingCounts

DEFAULT_MIN_RETRIES_PER_S = 1.0


class RetryBudget:
    """Counts first attempts and retries over `window_s` seconds of the injected clock."""

    def __init__(
        self,
        percent: int,
        window_s: float,
        clock: Callable[[], float],
        min_retries_per_s: float = DEFAULT_MIN_RETRIES_PER_S,
    ) -> None:
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        self.percent = percent
        self.min_retries_per_s = min_retries_per_s
        self._counts = SlidingCounts(window_s, 2, clock)  # requests, retries

    def record_request(self) -> None:
        """A client request arrived (its first attempt is never charged to the budget)."""
        self._counts.add(1, 0)

    def try_spend_retry(self) -> bool:
        """Take one retry from the budget; False means do not retry (answer with what you have)."""
        if self.percent == 0:
            return False
        requests, retries = self._counts.totals()
        allowed = max(requests * self.percent / 100, self.min_retries_per_s * self._counts.window_s)
        if retries >= allowed:
            return False
        self._counts.add(0, 1)
        return True
