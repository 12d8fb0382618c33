"""Spend tracking across UTC day/month boundaries, and the retry budget, on injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hybridroute_router.budget import SpendTracker
from hybridroute_router.config import BudgetConfig
from hybridroute_router.retrybudget import RetryBudget


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_spend_rolls_over_at_utc_midnight_and_month_start() -> None:
    clock = FakeClock(at(2026, 1, 31, 23, 59, 59))
    tracker = SpendTracker(clock)
    tracker.record(1.5)
    tracker.record(0.25)
    assert tracker.spent_today() == pytest.approx(1.75)
    assert tracker.spent_month() == pytest.approx(1.75)
    clock.now = at(2026, 2, 1, 0, 0, 0)
    assert tracker.spent_today() == 0.0
    assert tracker.spent_month() == 0.0
    tracker.record(2.0)
    clock.now = at(2026, 2, 2, 12)
    tracker.record(1.0)
    assert tracker.spent_today() == pytest.approx(1.0)
    assert tracker.spent_month() == pytest.approx(3.0)


def test_same_day_next_year_is_a_new_day_and_month() -> None:
    clock = FakeClock(at(2026, 3, 5, 10))
    tracker = SpendTracker(clock)
    tracker.record(4.0)
    clock.now = at(2027, 3, 5, 10)
    assert (tracker.spent_today(), tracker.spent_month()) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("cfg", "spent", "exhausted"),
    [
        (BudgetConfig(), 1e9, False),
        (BudgetConfig(daily_usd=5), 4.99, False),
        (BudgetConfig(daily_usd=5), 5.0, True),
        (BudgetConfig(monthly_usd=3), 3.5, True),
        (BudgetConfig(daily_usd=0), 0.0, True),
        (BudgetConfig(daily_usd=10, monthly_usd=100), 9.0, False),
    ],
)
def test_exhausted_against_caps(cfg: BudgetConfig, spent: float, exhausted: bool) -> None:
    tracker = SpendTracker(FakeClock(at(2026, 6, 1, 8)))
    tracker.record(spent)
    assert tracker.exhausted(cfg) is exhausted


def test_daily_cap_frees_up_next_day_but_monthly_cap_holds() -> None:
    clock = FakeClock(at(2026, 6, 10, 8))
    tracker = SpendTracker(clock)
    tracker.record(6.0)
    daily = BudgetConfig(daily_usd=5)
    monthly = BudgetConfig(monthly_usd=5)
    assert tracker.exhausted(daily)
    clock.now = at(2026, 6, 11, 0, 0, 1)
    assert not tracker.exhausted(daily)
    assert tracker.exhausted(monthly)


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_spend_refuses_nonsense_amounts(bad: float) -> None:
    tracker = SpendTracker(FakeClock(at(2026, 1, 1)))
    with pytest.raises(ValueError, match="finite non-negative"):
        tracker.record(bad)
    assert tracker.spent_today() == 0.0


def test_retry_budget_allows_percent_of_recent_requests() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(20, 10, clock, min_retries_per_s=0.0)
    for _ in range(50):
        budget.record_request()
    granted = sum(budget.try_spend_retry() for _ in range(30))
    assert granted == 10


def test_retry_budget_floor_serves_quiet_traffic() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(20, 10, clock, min_retries_per_s=0.5)
    budget.record_request()
    granted = sum(budget.try_spend_retry() for _ in range(20))
    assert granted == 5


def test_retry_budget_refills_as_the_window_slides() -> None:
    clock = FakeClock(0.0)
    budget = RetryBudget(50, 10, clock, min_retries_per_s=0.0)
    for _ in range(4):
        budget.record_request()
    assert [budget.try_spend_retry() for _ in range(3)] == [True, True, False]
    clock.now = 10.0  # everything above has left the window
    assert not budget.try_spend_retry()  # no recent requests, no floor
    budget.record_request()
    budget.record_request()
    assert budget.try_spend_retry()
    assert not budget.try_spend_retry()


def test_zero_percent_disables_retries_floor_included() -> None:
    budget = RetryBudget(0, 10, FakeClock(0.0))
    budget.record_request()
    assert not budget.try_spend_retry()


def test_retry_budget_validates_percent() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        RetryBudget(101, 10, FakeClock(0.0))
