"""Cloud spend so far this UTC day and month, against the policy's caps.

Each router meters what it sends (estimated from token usage and list prices, see `cost`), so a cap
holds per sidecar: with N replicas of an application the fleet may spend up to N times the cap.
Totals roll over at UTC midnight and on the first of the month; the clock is injected (wall-clock
seconds since the epoch) so tests cross those boundaries without waiting. State is in memory and
starts at zero when the router restarts.

This is `budget.scope: router`, the default for compatibility and for a standalone router. Fleets use
`scope: policy` or `namespace` (fleetbudget.py: one cap for all replicas, counted in Prometheus); there
this tracker is only the fallback while the fleet's spend is not known yet (docs/budgets.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from .config import BudgetConfig


class SpendTracker:
    """Running USD totals for the current UTC day and month."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._day: tuple[int, int, int] | None = None
        self._month: tuple[int, int] | None = None
        self._spent_day = 0.0
        self._spent_month = 0.0

    def record(self, usd: float) -> None:
        """Add the estimated cost of one call (zero for free endpoints)."""
        if not math.isfinite(usd) or usd < 0:
            raise ValueError(f"spend must be a finite non-negative amount, got {usd!r}")
        self._roll_over()
        self._spent_day += usd
        self._spent_month += usd

    def spent_today(self) -> float:
        self._roll_over()
        return self._spent_day

    def spent_month(self) -> float:
        self._roll_over()
        return self._spent_month

    def exhausted(self, cfg: BudgetConfig) -> bool:
        """True once a configured cap is reached (a cap of 0 means no cloud spend at all)."""
        self._roll_over()
        return (cfg.daily_usd is not None and self._spent_day >= cfg.daily_usd) or (
            cfg.monthly_usd is not None and self._spent_month >= cfg.monthly_usd
        )

    def _roll_over(self) -> None:
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        day, month = (now.year, now.month, now.day), (now.year, now.month)
        if day != self._day:
            self._day, self._spent_day = day, 0.0
        if month != self._month:
            self._month, self._spent_month = month, 0.0
