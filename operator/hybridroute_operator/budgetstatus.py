"""A RoutingPolicy's fleet budget in its status: the same spend query the routers ask, shown to people.

Routers decide on their own reads (hybridroute_router.fleetbudget); the operator asks its own
Prometheus (--prometheus-url, never a URL from the policy) the same question on each policy
reconcile, so that `kubectl get rp` shows Ok / Soft / Exhausted, and posts an Event when the state
changes (the soft threshold's Event). When Prometheus cannot be read the last state and spend stay,
marked `stale` with the reason: unknown data never changes a decision.

To keep status writes rare, spend is rounded to cents and `lastEvaluationTime` moves only with it:
a policy spending nothing patches nothing. Everything but `read_spend` is pure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import aiohttp

from hybridroute_operator.status import timestamp
from hybridroute_router.config import BudgetConfig
from hybridroute_router.fleetbudget import EarlierDays, Spend, budget_state, query_spend

STATES: Final = {"ok": "Ok", "soft": "Soft", "exhausted": "Exhausted"}
UNKNOWN: Final = "Unknown"


@dataclass(frozen=True)
class BudgetEvent:
    """A Kubernetes Event to post about the policy (type Normal or Warning)."""

    type: str
    reason: str
    message: str


_EARLIER_DAYS: dict[tuple[str, str], EarlierDays] = {}
"""Per policy: the month's spend before today, asked once a day."""


async def read_spend(budget: BudgetConfig, namespace: str, name: str, prometheus_url: str | None) -> Spend | str:
    """The scope's spend now from the operator's own Prometheus, or why it could not be read.

    The policy's `prometheus.url` is for its routers; the operator asks only the Prometheus its
    administrator configured (--prometheus-url), so a policy cannot make it send requests elsewhere.
    """
    if not prometheus_url or budget.prometheus is None:
        return "the operator has no --prometheus-url"
    own = budget.model_copy(update={"prometheus": budget.prometheus.model_copy(update={"url": prometheus_url})})
    earlier_days = _EARLIER_DAYS.setdefault((namespace, name), EarlierDays())
    try:
        async with aiohttp.ClientSession() as session:
            return await query_spend(session, own, namespace, name, time.time(), earlier_days)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return type(exc).__name__


def _cents(usd: float | None) -> float | None:
    return None if usd is None else round(usd, 2)


def _meaning(budget: BudgetConfig, state: str, scope: str) -> str:
    if state == "Exhausted":
        effect = "cloud requests are rejected (429)" if budget.action == "reject" else "requests are served locally"
        return f"a cap is reached by the spend of {scope}: {effect} until the UTC window resets"
    if state == "Soft":
        return f"{budget.soft_percent}% of a cap is spent by {scope}; routing is unchanged"
    return f"spend of {scope} is under its caps"


def budget_status(
    budget: BudgetConfig,
    namespace: str,
    name: str,
    reading: Spend | str,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """status.budget from a reading (a Spend, or an error name) and the previous status.budget."""
    scope = f"namespace {namespace}" if budget.scope == "namespace" else f"policy {namespace}/{name}"
    if isinstance(reading, str):
        kept = dict(previous or {"state": UNKNOWN})
        kept["stale"] = True
        kept["message"] = f"Prometheus unreadable ({reading}): routers keep their last decision; shown is the last read"
        return kept
    state = STATES[budget_state(budget, reading)]
    desired: dict[str, Any] = {
        "state": state,
        "spentTodayUsd": _cents(reading.today_usd),
        "spentThisMonthUsd": _cents(reading.month_usd),
        "stale": False,
        "message": _meaning(budget, state, scope),
    }
    desired = {key: value for key, value in desired.items() if value is not None}
    unchanged = previous is not None and all(previous.get(key) == value for key, value in desired.items())
    desired["lastEvaluationTime"] = (previous or {}).get("lastEvaluationTime") if unchanged else timestamp(now)
    return desired


def budget_event(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> BudgetEvent | None:
    """The Event for a change of state or of staleness; None when neither changed."""
    before = previous or {}
    if current.get("stale") and not before.get("stale"):
        return BudgetEvent("Warning", "BudgetUnknown", current["message"])
    state = current["state"]
    if state == before.get("state") or state == UNKNOWN:
        return None
    if state == "Exhausted":
        return BudgetEvent("Warning", "BudgetExhausted", current["message"])
    if state == "Soft":
        return BudgetEvent("Warning", "BudgetSoftLimit", current["message"])
    return BudgetEvent("Normal", "BudgetOk", current["message"])
