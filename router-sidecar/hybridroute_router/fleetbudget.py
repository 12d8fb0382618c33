"""Fleet budgets: the fleet's cloud spend this UTC day and month, read from Prometheus, against the caps.

Every router counts what it spends in `hybridroute_cost_usd_total{namespace,policy,endpoint}`; Prometheus
already sums those counters across replicas and keeps them across restarts. A budget of scope `policy`
or `namespace` asks Prometheus for the increase of that sum since the start of the current UTC day and
month and compares it with the caps, so N replicas share one cap and a restarted router forgets nothing.
No new datastore, and the answer is the same for every router that asks.

Calendar windows: the range of `increase()` is the time elapsed since 00:00 UTC today, computed from the
injected clock at each evaluation, so the day resets at midnight UTC, not 24 h after some spend. The
month is the days of the month before today, asked once a day (`increase()` over that range, evaluated
at today's midnight) and kept, plus today: no evaluation reads more than a day of samples, where a
month-long range would read thirty times as many on every evaluation of every router. `increase()`
counts across counter resets (a restarted router starts again from zero) but never a series' first
sample: the router creates its cost series at zero when a config arrives (metrics.py), and the query
adds the first value of series born inside the range, for a router that spent before Prometheus first
scraped it.

Each router decides from its own reads (see docs/budgets.md for why not the operator): the decision
delay is one scrape interval plus one evaluation interval, and the overshoot is bounded by the fleet's
spend rate over that delay. Unknown data (Prometheus down, an error, a timeout) keeps the last decision;
before any answer `state` is None and the app falls back to the router's own spend (budget.py).

Everything but `query_spend` and `FleetBudget.run` is pure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

from .config import BudgetConfig, BudgetPrometheusConfig, RouterConfig
from .periodic import run_every

log = logging.getLogger("hybridroute.router.fleetbudget")

Window = Literal["day", "month"]
State = Literal["ok", "soft", "exhausted"]
COST_METRIC = "hybridroute_cost_usd_total"


def window_start(now: float, window: Window) -> float:
    """Unix time of 00:00 UTC today (`day`) or on the first of this month (`month`)."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        start = start.replace(day=1)
    return start.timestamp()


def spend_query(budget: BudgetConfig, namespace: str, policy: str, start: float, end: float) -> str:
    """PromQL for the scope's spend from `start` to `end` (evaluate it at `end`; at least 1 s of range)."""
    seconds = max(1, math.floor(end - start))
    selector = f'namespace="{_label_value(namespace)}"'
    if budget.scope == "policy":
        selector += f',policy="{_label_value(policy)}"'
    series, window = f"{COST_METRIC}{{{selector}}}", f"[{seconds}s]"
    # increase() never counts a series' first sample; a router whose first scrape already carries spend
    # (Prometheus found the pod after its first requests) adds that first value: the series' minimum
    # in the range, for series that did not exist at its start.
    born_in_window = f"min_over_time({series}{window}) unless {series} offset {seconds}s"
    return f"(sum(increase({series}{window})) or vector(0)) + (sum({born_in_window}) or vector(0))"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def parse_spend(body: Any) -> float:
    """USD from a `sum(...)` answer; an empty vector is no spend yet. Raises ValueError on anything else."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ValueError("prometheus query failed")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError("expected a vector result")
    result = data.get("result") or []
    if not result:
        return 0.0
    try:
        usd = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError("malformed sample") from exc
    if not math.isfinite(usd):
        raise ValueError("spend is not a finite number")
    return max(0.0, usd)


@dataclass(frozen=True, slots=True)
class Spend:
    """The scope's spend as Prometheus last reported it; None for a window without a cap (not asked)."""

    today_usd: float | None
    month_usd: float | None
    at: float
    """Clock time of the answer."""


def budget_state(budget: BudgetConfig, spend: Spend) -> State:
    """exhausted once a cap is reached (a cap of 0: no cloud spend at all), soft past softPercent of one."""
    pairs = [(budget.daily_usd, spend.today_usd), (budget.monthly_usd, spend.month_usd)]
    capped = [(cap, spent) for cap, spent in pairs if cap is not None and spent is not None]
    if any(spent >= cap for cap, spent in capped):
        return "exhausted"
    if budget.soft_percent is not None and any(spent >= cap * budget.soft_percent / 100 for cap, spent in capped):
        return "soft"
    return "ok"


class EarlierDays:
    """The month's spend before today, per scope, asked once a day and kept (it no longer changes)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str, str, float], float] = {}

    def get(self, key: tuple[str, str, str, float]) -> float | None:
        return self._kept.get(key)

    def keep(self, key: tuple[str, str, str, float], usd: float) -> None:
        self._kept = {key: usd}  # one scope per evaluator: yesterday's entry goes


async def _ask(session: aiohttp.ClientSession, prometheus: BudgetPrometheusConfig, query: str, at: float) -> float:
    timeout = aiohttp.ClientTimeout(total=prometheus.timeout_seconds)
    params = {"query": query, "time": f"{at:.3f}"}
    async with session.get(f"{prometheus.url.rstrip('/')}/api/v1/query", params=params, timeout=timeout) as response:
        return parse_spend(await response.json(content_type=None))


def reached_caps(budget: BudgetConfig, spend: Spend) -> list[str]:
    """Each cap the spend has reached, in words for an error message (`daily cap $40 ($40.12 spent)`)."""
    pairs = (("daily", budget.daily_usd, spend.today_usd), ("monthly", budget.monthly_usd, spend.month_usd))
    return [
        f"its {window} cap ${cap:g} (${spent:.2f} spent)"
        for window, cap, spent in pairs
        if cap is not None and spent is not None and spent >= cap
    ]


async def query_spend(
    session: aiohttp.ClientSession,
    budget: BudgetConfig,
    namespace: str,
    policy: str,
    now: float,
    earlier_days: EarlierDays | None = None,
) -> Spend:
    """Today's spend, and the month's when it has a cap; bounded by the timeout, raises on any failure."""
    prometheus: BudgetPrometheusConfig | None = budget.prometheus
    if prometheus is None:
        raise ValueError("fleet budget without a Prometheus URL")
    today_start, month_start = window_start(now, "day"), window_start(now, "month")
    today = await _ask(session, prometheus, spend_query(budget, namespace, policy, today_start, now), now)
    if budget.monthly_usd is None:
        return Spend(today, None, now)
    before_today = 0.0
    if today_start > month_start:
        key = (budget.scope, namespace, policy, today_start)
        kept = earlier_days.get(key) if earlier_days else None
        if kept is None:
            query = spend_query(budget, namespace, policy, month_start, today_start)
            kept = await _ask(session, prometheus, query, today_start)
            if earlier_days is not None:
                earlier_days.keep(key, kept)
        before_today = kept
    return Spend(today if budget.daily_usd is not None else None, before_today + today, now)


@dataclass
class FleetBudgetStatus:
    """What the last evaluation saw; exported as metrics. `spend` survives failed evaluations."""

    up: bool | None = None
    """None before the first evaluation, then whether the last one answered."""
    spend: Spend | None = None
    last_error: str | None = None


class FleetBudget:
    """Evaluates the served config's fleet budget periodically; `exhausted` is the hot path's question."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        current_config: Callable[[], RouterConfig | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._current_config = current_config
        self._clock = clock
        self._earlier_days = EarlierDays()
        self.status = FleetBudgetStatus()
        self._decided: tuple[BudgetConfig, Spend, State] | None = None
        """The last decision and what it was made from: the hot path asks per request, spend changes per
        evaluation, so two identity checks usually answer."""

    def state(self, budget: BudgetConfig) -> State | None:
        """The decision from the last answered evaluation; None before any."""
        spend = self.status.spend
        if spend is None:
            return None
        decided = self._decided
        if decided is not None and decided[0] is budget and decided[1] is spend:
            return decided[2]
        state = budget_state(budget, spend)
        self._decided = (budget, spend, state)
        return state

    def exhausted(self, budget: BudgetConfig) -> bool:
        return self.state(budget) == "exhausted"

    async def evaluate_once(self) -> FleetBudgetStatus:
        config = self._current_config()
        if config is None or not config.budget.fleet:
            return self.status
        try:
            self.status.spend = await query_spend(
                self._session,
                config.budget,
                config.policy.namespace,
                config.policy.name,
                self._clock(),
                self._earlier_days,
            )
            self.status.up, self.status.last_error = True, None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.status.up, self.status.last_error = False, type(exc).__name__
            log.warning(
                "prometheus spend query failed; keeping the last budget decision", extra={"error": type(exc).__name__}
            )
        return self.status

    def interval(self) -> float:
        config = self._current_config()
        prometheus = config.budget.prometheus if config else None
        return prometheus.evaluation_seconds if prometheus else 5.0

    async def run(self) -> None:
        """Evaluate forever, one evaluation per interval (cancel the task to stop)."""
        await run_every(self.evaluate_once, self.interval, "fleet budget evaluation")
