"""Event counts over a sliding time window, in fixed slices: O(1) per event and bounded memory.

Shared by the circuit breaker (calls, failures, slow calls) and the retry budget (requests, retries).
Counts cover the last `window_s` seconds to within one slice (`window_s / slices`): a slice leaves
the window whole, so an event may be forgotten up to one slice early. That granularity is what keeps
a breaker on a 5,000 req/s path from holding 150,000 timestamps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

DEFAULT_SLICES = 10


class SlidingCounts:
    """Running totals of `fields` counters over the last `window_s` seconds of the injected clock."""

    def __init__(self, window_s: float, fields: int, clock: Callable[[], float], slices: int = DEFAULT_SLICES) -> None:
        if window_s <= 0 or slices < 1 or fields < 1:
            raise ValueError("window_s must be positive, slices and fields at least 1")
        self.window_s = window_s
        self._slice_s = window_s / slices
        self._slices = slices
        self._clock = clock
        self._ring: deque[tuple[int, list[int]]] = deque()
        self._totals = [0] * fields

    def add(self, *deltas: int) -> None:
        """Count one event's contributions (one delta per field) at the current time."""
        index = self._expire()
        if not self._ring or self._ring[-1][0] != index:
            self._ring.append((index, [0] * len(self._totals)))
        counts = self._ring[-1][1]
        for field, delta in enumerate(deltas):
            counts[field] += delta
            self._totals[field] += delta

    def totals(self) -> tuple[int, ...]:
        """Per-field sums over the window."""
        self._expire()
        return tuple(self._totals)

    def clear(self) -> None:
        self._ring.clear()
        self._totals = [0] * len(self._totals)

    def _expire(self) -> int:
        index = math.floor(self._clock() / self._slice_s)
        oldest_kept = index - self._slices + 1
        while self._ring and self._ring[0][0] < oldest_kept:
            _, counts = self._ring.popleft()
            for field, count in enumerate(counts):
                self._totals[field] -= count
        return index
