"""p95 evaluator: query rendering, result parsing, and unknown-data handling against a loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hybridroute_router.config import (
    CircuitBreakerConfig,
    EndpointConfig,
    PolicyRef,
    PrometheusBreakerConfig,
    RouterConfig,
)
from hybridroute_router.p95 import P95Evaluator, observation_for, parse_query_result, render_query


def vector(*series: tuple[str, str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"endpoint": name}, "value": [1700000000.0, value]} for name, value in series],
        },
    }


def test_render_query_substitutes_policy_and_window() -> None:
    assert render_query('x{policy="$policy"}[$window]', "team-a", "30s") == 'x{policy="team-a"}[30s]'


def test_parse_converts_seconds_to_ms_and_drops_nan_and_inf() -> None:
    parsed = parse_query_result(vector(("local", "0.25"), ("cloud", "NaN"), ("other", "+Inf")))
    assert parsed == {"local": 250.0}


def test_parse_rejects_errors_and_non_vectors() -> None:
    with pytest.raises(ValueError, match="query failed"):
        parse_query_result({"status": "error", "error": "bad_data"})
    with pytest.raises(ValueError, match="vector"):
        parse_query_result({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_observation_marks_missing_endpoints_unknown() -> None:
    assert observation_for(["local", "cloud"], {"local": 12.0}) == {"local": 12.0, "cloud": None}
    assert observation_for(["local"], None) == {"local": None}


def config_for(url: str, timeout_seconds: float = 0.5) -> RouterConfig:
    return RouterConfig(
        policy=PolicyRef(name="p"),
        endpoints=[
            EndpointConfig(name="local", type="local", base_url="http://127.0.0.1:1/v1", model="m"),
            EndpointConfig(name="cloud", type="cloud", base_url="http://127.0.0.1:2/v1", model="m"),
        ],
        circuit_breaker=CircuitBreakerConfig(
            prometheus=PrometheusBreakerConfig(url=url, timeout_seconds=timeout_seconds)
        ),
    )


@pytest.fixture
async def canned_prometheus() -> AsyncIterator[tuple[str, Callable[[Any, float], None], list[str]]]:
    """A loopback HTTP server answering /api/v1/query with whatever the test sets."""
    answer: dict[str, Any] = {"body": vector(), "delay": 0.0}
    queries: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        queries.append(request.query["query"])
        await asyncio.sleep(answer["delay"])
        return web.json_response(answer["body"])

    app = web.Application()
    app.router.add_get("/api/v1/query", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def set_answer(body: Any, delay: float = 0.0) -> None:
        answer["body"], answer["delay"] = body, delay

    yield f"http://127.0.0.1:{port}", set_answer, queries
    await runner.cleanup()


async def evaluate(config: RouterConfig) -> tuple[dict[str, float | None], bool | None]:
    seen: dict[str, float | None] = {}
    async with aiohttp.ClientSession() as session:
        evaluator = P95Evaluator(session, lambda: config, seen.__setitem__, clock=lambda: 42.0)
        status = await evaluator.evaluate_once()
    assert status.last_evaluation == 42.0
    return seen, status.up


async def test_values_reach_each_endpoint(canned_prometheus: Any) -> None:
    url, set_answer, queries = canned_prometheus
    set_answer(vector(("local", "1.5"), ("cloud", "0.2")))
    seen, up = await evaluate(config_for(url))
    assert up is True
    assert seen == {"local": 1500.0, "cloud": 200.0}
    assert 'policy="p"' in queries[0]


async def test_empty_and_nan_results_are_unknown(canned_prometheus: Any) -> None:
    url, set_answer, _ = canned_prometheus
    set_answer(vector(("local", "NaN")))
    seen, up = await evaluate(config_for(url))
    assert up is True
    assert seen == {"local": None, "cloud": None}


async def test_slow_query_times_out_as_unknown(canned_prometheus: Any) -> None:
    url, set_answer, _ = canned_prometheus
    set_answer(vector(("local", "9")), delay=2.0)
    seen, up = await evaluate(config_for(url, timeout_seconds=0.2))
    assert up is False
    assert seen == {"local": None, "cloud": None}


async def test_error_status_is_unknown(canned_prometheus: Any) -> None:
    url, set_answer, _ = canned_prometheus
    set_answer({"status": "error", "errorType": "bad_data", "error": "parse error"})
    seen, up = await evaluate(config_for(url))
    assert up is False
    assert set(seen.values()) == {None}


async def test_unreachable_prometheus_is_unknown() -> None:
    seen, up = await evaluate(config_for("http://127.0.0.1:9"))
    assert up is False
    assert seen == {"local": None, "cloud": None}
