"""Decision logging that stays cheap at thousands of requests per second.

What is logged, and at which level:
- Every request that did not go the plain way (a failed or repeated attempt, a fallback, an upstream
  error, a client error passed through, an in-band stream error, a schema miss): one JSON line at
  INFO, as it happens. These are the decisions an operator reads during an incident.
- Every routine request (one attempt, success): one line at DEBUG only. At INFO it is counted instead,
  and `DecisionSummary` writes one INFO line per interval with the counts by endpoint, reason and
  outcome (the first routine request after the interval has passed writes it).

Why: a line per routine request costs the router more CPU than its whole routing decision (a
LogRecord, a JSON encoding and a write to stderr each time) and turns a busy sidecar's log into a
request log that nobody reads; the request counts per endpoint and outcome are in the metrics
anyway. The summary keeps routine traffic visible in the log without that cost.

Never prompt text or keys: lines carry endpoint names, reasons, outcomes, counts and durations only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

DEFAULT_SUMMARY_INTERVAL_S = 60.0

RouteKey = tuple[str, str, str]
"""(endpoint, reason, outcome)."""


class DecisionSummary:
    """Counts routine requests and hands back a summary once per interval of the injected clock."""

    def __init__(self, clock: Callable[[], float], interval_s: float = DEFAULT_SUMMARY_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._clock = clock
        self.interval_s = interval_s
        self._counts: dict[RouteKey, int] = {}
        self._since = clock()

    def count(self, endpoint: str, reason: str, outcome: str) -> dict[str, Any] | None:
        """Count one routine request; the summary of the closed interval when one just ended, else None."""
        key = (endpoint, reason, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1
        now = self._clock()
        if now - self._since < self.interval_s:
            return None
        return self._take(now)

    def _take(self, now: float) -> dict[str, Any]:
        counts, self._counts = self._counts, {}
        window_s, self._since = now - self._since, now
        routes = [
            {"endpoint": endpoint, "reason": reason, "outcome": outcome, "count": count}
            for (endpoint, reason, outcome), count in sorted(counts.items())
        ]
        return {"window_s": round(window_s, 3), "requests": sum(counts.values()), "routes": routes}


class DecisionLog:
    """Writes decision lines to `logger` following the levels in the module docstring."""

    def __init__(self, logger: logging.Logger, summary: DecisionSummary) -> None:
        self._logger = logger
        self._summary = summary

    def routed(
        self, endpoint: str, reason: str, outcome: str, routine: bool, details: Callable[[], dict[str, Any]]
    ) -> None:
        """One finished request; `details` builds the rest of its line (called only when one is written)."""
        logger = self._logger
        level = logging.DEBUG if routine else logging.INFO
        if logger.isEnabledFor(level):
            line = {"endpoint": endpoint, "reason": reason, "outcome": outcome, **details()}
            logger.log(level, "request routed", extra=line)
        elif routine and logger.isEnabledFor(logging.INFO):
            summary = self._summary.count(endpoint, reason, outcome)
            if summary is not None:
                logger.info("requests routed (summary of routine requests)", extra=summary)
