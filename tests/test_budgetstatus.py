"""status.budget of a RoutingPolicy from a spend reading, and the Events its changes post (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hybridroute_operator.budgetstatus import budget_event, budget_status, read_spend
from hybridroute_router.config import BudgetConfig
from hybridroute_router.fleetbudget import Spend

NOW = datetime(2026, 5, 17, 6, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 5, 17, 6, 0, 15, tzinfo=UTC)


def budget(**fields: Any) -> BudgetConfig:
    prometheus = {"url": "http://prometheus:9090"}
    return BudgetConfig.model_validate({"scope": "policy", "prometheus": prometheus, "dailyUsd": 10, **fields})


def test_spend_is_shown_in_cents_with_its_state_and_meaning() -> None:
    shown = budget_status(budget(softPercent=80), "team-a", "chat", Spend(8.123, None, 0), None, NOW)
    assert shown == {
        "state": "Soft",
        "spentTodayUsd": 8.12,
        "stale": False,
        "message": "80% of a cap is spent by policy team-a/chat; routing is unchanged",
        "lastEvaluationTime": "2026-05-17T06:00:00Z",
    }


def test_exhausted_says_what_the_action_does() -> None:
    local_only = budget_status(budget(), "team-a", "chat", Spend(10, None, 0), None, NOW)
    assert local_only["state"] == "Exhausted"
    assert "served locally" in local_only["message"]
    rejected = budget_status(
        budget(action="reject", scope="namespace"), "team-a", "chat", Spend(10, None, 0), None, NOW
    )
    assert "rejected (429)" in rejected["message"]
    assert "namespace team-a" in rejected["message"]


def test_unchanged_spend_keeps_the_timestamp_so_nothing_is_patched() -> None:
    first = budget_status(budget(), "ns", "p", Spend(1.001, None, 0), None, NOW)
    again = budget_status(budget(), "ns", "p", Spend(1.004, None, 0), first, LATER)
    assert again == first
    moved = budget_status(budget(), "ns", "p", Spend(1.02, None, 0), first, LATER)
    assert moved["lastEvaluationTime"] == "2026-05-17T06:00:15Z"


def test_prometheus_unreadable_keeps_the_last_state_marked_stale() -> None:
    last = budget_status(budget(), "ns", "p", Spend(12, None, 0), None, NOW)
    stale = budget_status(budget(), "ns", "p", "ClientConnectorError", last, LATER)
    assert stale["state"] == "Exhausted"
    assert stale["spentTodayUsd"] == 12
    assert stale["stale"] is True
    assert "ClientConnectorError" in stale["message"]
    never_read = budget_status(budget(), "ns", "p", "TimeoutError", None, NOW)
    assert never_read["state"] == "Unknown"


def test_events_follow_state_changes_once() -> None:
    ok = budget_status(budget(softPercent=50), "ns", "p", Spend(1, None, 0), None, NOW)
    soft = budget_status(budget(softPercent=50), "ns", "p", Spend(6, None, 0), ok, NOW)
    spent = budget_status(budget(softPercent=50), "ns", "p", Spend(11, None, 0), soft, NOW)
    stale = budget_status(budget(softPercent=50), "ns", "p", "TimeoutError", spent, NOW)
    next_day = budget_status(budget(softPercent=50), "ns", "p", Spend(0, None, 0), stale, NOW)

    assert budget_event(None, ok) is not None
    assert budget_event(ok, ok) is None
    soft_event = budget_event(ok, soft)
    assert soft_event is not None
    assert (soft_event.type, soft_event.reason) == ("Warning", "BudgetSoftLimit")
    exhausted_event = budget_event(soft, spent)
    assert exhausted_event is not None
    assert exhausted_event.reason == "BudgetExhausted"
    unknown_event = budget_event(spent, stale)
    assert unknown_event is not None
    assert unknown_event.reason == "BudgetUnknown"
    assert budget_event(stale, stale) is None
    ok_event = budget_event(stale, next_day)
    assert ok_event is not None
    assert (ok_event.type, ok_event.reason) == ("Normal", "BudgetOk")


async def test_the_operator_asks_only_its_own_prometheus() -> None:
    # the policy names a Prometheus; without one of its own the operator asks nobody and says why
    assert await read_spend(budget(), "ns", "p", None) == "the operator has no --prometheus-url"
    reading = await read_spend(budget(), "ns", "p", "http://127.0.0.1:9")
    assert reading == "ClientConnectorError"  # its own URL is the one asked (and unreachable here)
