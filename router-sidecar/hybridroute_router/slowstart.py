"""Slow start: after a local pool recovers, its share of public traffic ramps up instead of jumping back.

A pool is *impaired* while its breaker is not closed, it is saturated, or fewer replicas serve than
were asked for. When it stops being impaired, its share starts at `slowStartMinPercent` and grows
linearly to 100 % over `slowStartSeconds` (Envoy's slow start for new hosts, with aggression 1).
Falling impaired again during the ramp ends it; the next recovery starts a new one. An endpoint never
seen impaired has the full share. The clock is injected, so tests never sleep.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SlowStart"]


class SlowStart:
    """Per-endpoint ramp state; `observe` is idempotent, so it can be called on every request."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._impaired: set[str] = set()
        self._ramp_from: dict[str, float] = {}

    def observe(self, endpoint: str, impaired: bool) -> None:
        """Record the endpoint's condition now; a change from impaired to not starts its ramp."""
        if impaired:
            self._impaired.add(endpoint)
            self._ramp_from.pop(endpoint, None)
        elif endpoint in self._impaired:
            self._impaired.discard(endpoint)
            self._ramp_from[endpoint] = self._clock()

    def share(self, endpoint: str, seconds: float, min_percent: int) -> float:
        """Share (0..1) of public traffic the endpoint may take now; 1 outside a ramp."""
        started = self._ramp_from.get(endpoint)
        if started is None or seconds <= 0:
            return 1.0
        progress = (self._clock() - started) / seconds
        if progress >= 1:
            del self._ramp_from[endpoint]
            return 1.0
        floor = min_percent / 100
        return floor + (1 - floor) * max(0.0, progress)

    def ramping(self) -> dict[str, float]:
        """Endpoints in a ramp and when it started (for the explain endpoint and metrics)."""
        return dict(self._ramp_from)
