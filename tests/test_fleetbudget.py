"""Fleet budget decisions: UTC calendar windows, the spend query, parsing, states, and unknown data."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hybridroute_router.config import BudgetConfig, RouterConfig, parse_config
from hybridroute_router.fleetbudget import (
    FleetBudget,
    Spend,
    budget_state,
    parse_spend,
    reached_caps,
    spend_query,
    window_start,
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def fleet_budget(**fields: Any) -> BudgetConfig:
    return BudgetConfig.model_validate({"scope": "policy", "prometheus": {"url": "http://127.0.0.1:9"}, **fields})


def test_windows_start_at_utc_midnight_and_on_the_first_of_the_month() -> None:
    now = at(2026, 3, 31, 23, 59, 30)
    assert window_start(now, "day") == at(2026, 3, 31)
    assert window_start(now, "month") == at(2026, 3, 1)
    assert window_start(at(2026, 4, 1, 0, 0, 0), "month") == at(2026, 4, 1)


def test_query_range_is_the_time_between_start_and_end() -> None:
    now = at(2026, 2, 3, 1, 2, 3)
    day = spend_query(fleet_budget(dailyUsd=5), "team-a", "chat", at(2026, 2, 3), now)
    series = 'hybridroute_cost_usd_total{namespace="team-a",policy="chat"}'
    assert day == (
        f"(sum(increase({series}[3723s])) or vector(0))"
        f" + (sum(min_over_time({series}[3723s]) unless {series} offset 3723s) or vector(0))"
    )
    # at midnight a range still has to be valid (non-empty)
    assert "[1s]" in spend_query(fleet_budget(dailyUsd=5), "ns", "p", now, now)


def test_namespace_scope_counts_every_policy_of_the_namespace() -> None:
    query = spend_query(fleet_budget(dailyUsd=5, scope="namespace"), "team-a", "chat", 0, 3600)
    assert 'namespace="team-a"}' in query
    assert "policy=" not in query


def test_label_values_are_escaped() -> None:
    query = spend_query(fleet_budget(dailyUsd=1), 'a"b', "c\\d", 0, 3600)
    assert 'namespace="a\\"b",policy="c\\\\d"' in query


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1700000000.0, value]} for value in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_parse_spend_reads_the_sum_and_treats_no_series_as_no_spend() -> None:
    assert parse_spend(vector("12.5")) == 12.5
    assert parse_spend(vector()) == 0.0
    assert parse_spend(vector("-0.0000001")) == 0.0  # extrapolation noise is not a refund


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "error": "bad_data"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        vector("NaN"),
        vector("+Inf"),
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        "not json",
    ],
)
def test_parse_spend_refuses_what_is_not_a_number(body: Any) -> None:
    with pytest.raises(ValueError, match=r"failed|vector|finite|malformed"):
        parse_spend(body)


@pytest.mark.parametrize(
    ("fields", "today", "month", "state"),
    [
        ({"dailyUsd": 10}, 9.99, None, "ok"),
        ({"dailyUsd": 10}, 10.0, None, "exhausted"),
        ({"dailyUsd": 10, "softPercent": 80}, 7.99, None, "ok"),
        ({"dailyUsd": 10, "softPercent": 80}, 8.0, None, "soft"),
        ({"dailyUsd": 10, "monthlyUsd": 100, "softPercent": 90}, 1.0, 95.0, "soft"),
        ({"dailyUsd": 10, "monthlyUsd": 100}, 1.0, 100.0, "exhausted"),
        ({"dailyUsd": 0}, 0.0, None, "exhausted"),  # a cap of 0: no cloud spend at all
        ({"monthlyUsd": 5}, None, None, "ok"),  # a window never answered decides nothing
    ],
)
def test_budget_state(fields: dict[str, Any], today: float | None, month: float | None, state: str) -> None:
    assert budget_state(fleet_budget(**fields), Spend(today, month, 0.0)) == state


def config(url: str, **budget: Any) -> RouterConfig:
    return parse_config(
        {
            "endpoints": [{"name": "cloud", "type": "cloud", "baseURL": "http://127.0.0.1:9/v1", "model": "m"}],
            "policy": {"namespace": "team-a", "name": "chat"},
            "budget": {"scope": "policy", "prometheus": {"url": url, "timeoutSeconds": 1}, **budget},
        }
    )


class PrometheusAnswers:
    """A loopback HTTP server answering /api/v1/query with a set body, recording each query."""

    def __init__(self) -> None:
        self.body: Any = vector("3")
        self.queries: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _query(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        return web.json_response(self.body)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_no_answer_yet_is_no_decision() -> None:
    served = config(closed_port_url(), dailyUsd=0)
    async with aiohttp.ClientSession() as session:
        budget = FleetBudget(session, lambda: served)
        status = await budget.evaluate_once()
    assert status.up is False
    assert budget.state(served.budget) is None
    assert not budget.exhausted(served.budget)


async def test_the_month_is_earlier_days_asked_once_a_day_plus_today() -> None:
    prometheus = PrometheusAnswers()
    await prometheus.start()
    served = config(prometheus.url, monthlyUsd=10)
    clock = [at(2026, 5, 17, 6)]
    async with aiohttp.ClientSession() as session:
        budget = FleetBudget(session, lambda: served, clock=lambda: clock[0])
        status = await budget.evaluate_once()
        assert status.spend == Spend(None, 6.0, clock[0])  # $3 before today, $3 today
        today, earlier = prometheus.queries
        assert (today["time"], earlier["time"]) == (f"{clock[0]:.3f}", f"{at(2026, 5, 17):.3f}")
        assert "[21600s]" in today["query"]
        assert f"[{16 * 86400}s]" in earlier["query"]
        clock[0] += 60
        await budget.evaluate_once()
        assert len(prometheus.queries) == 3  # earlier days kept: only today asked again
        clock[0] = at(2026, 5, 18, 0, 0, 30)
        await budget.evaluate_once()
        assert len(prometheus.queries) == 5  # a new day: the days before it asked once more
        clock[0] = at(2026, 6, 1, 0, 0, 30)
        await budget.evaluate_once()
        assert len(prometheus.queries) == 6  # the first of the month: no days before today
        assert budget.status.spend == Spend(None, 3.0, clock[0])
    await prometheus.stop()


async def test_a_failed_evaluation_keeps_the_last_decision() -> None:
    prometheus = PrometheusAnswers()
    await prometheus.start()
    served = config(prometheus.url, dailyUsd=5, monthlyUsd=5.5)
    clock = at(2026, 5, 17, 6)
    async with aiohttp.ClientSession() as session:
        budget = FleetBudget(session, lambda: served, clock=lambda: clock)
        await budget.evaluate_once()
        assert budget.exhausted(served.budget)  # $3 today + $3 before: $6 this month over a $5.50 cap
        prometheus.body = {"status": "error", "error": "overloaded"}
        status = await budget.evaluate_once()
        assert (status.up, status.last_error) == (False, "ValueError")
        assert budget.exhausted(served.budget)
        await prometheus.stop()
        await budget.evaluate_once()
        assert budget.exhausted(served.budget)


async def test_router_scope_asks_nothing() -> None:
    prometheus = PrometheusAnswers()
    await prometheus.start()
    served = parse_config(
        {
            "endpoints": [{"name": "cloud", "type": "cloud", "baseURL": "http://127.0.0.1:9/v1", "model": "m"}],
            "budget": {"dailyUsd": 1, "prometheus": {"url": prometheus.url}},
        }
    )
    async with aiohttp.ClientSession() as session:
        budget = FleetBudget(session, lambda: served)
        status = await budget.evaluate_once()
    await prometheus.stop()
    assert prometheus.queries == []
    assert status.up is None


async def test_the_decision_follows_both_the_spend_and_the_served_budget() -> None:
    served = config(closed_port_url(), dailyUsd=10)
    async with aiohttp.ClientSession() as session:
        budget = FleetBudget(session, lambda: served)
        budget.status.spend = Spend(5.0, None, 0.0)
        tighter = fleet_budget(dailyUsd=4)
        assert budget.state(served.budget) == "ok"
        assert budget.state(tighter) == "exhausted"  # a config swap changes the answer at once
        assert budget.state(served.budget) == "ok"
        budget.status.spend = Spend(10.0, None, 1.0)
        assert budget.state(served.budget) == "exhausted"  # so does a new reading


def test_reached_caps_names_each_cap_hit_with_its_spend() -> None:
    both = fleet_budget(dailyUsd=10, monthlyUsd=100)
    assert reached_caps(both, Spend(10.004, 120.0, 0)) == [
        "its daily cap $10 ($10.00 spent)",
        "its monthly cap $100 ($120.00 spent)",
    ]
    assert reached_caps(both, Spend(9.0, 120.0, 0)) == ["its monthly cap $100 ($120.00 spent)"]
    assert reached_caps(both, Spend(None, None, 0)) == []
