"""What a reached cap does to requests, through the real `openai` SDK: 429 for reject, local for localOnly.

A daily cap of 0 is reached before any spend, so this router's own tracker (scope router) decides
without Prometheus; fleet scopes reach the same `decide` with the fleet's decision
(tests/test_budget_fleet_prometheus.py).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fixtures.upstreams import endpoint, router_config

CLOUD_FIRST = [{"name": "cloud-first", "action": {"prefer": "cloud"}}]
MESSAGES = [{"role": "user", "content": "Say hello."}]
PRIVATE = {"x-hybridroute-privacy": "restricted"}


def capped(local: Any, cloud: Any, action: str) -> Any:
    return router_config(
        endpoint("local-a", local),
        endpoint("cloud-a", cloud, "cloud", pricing={"inputPerMTok": 1.0, "outputPerMTok": 2.0}),
        policy={"name": "capped", "namespace": "team-a"},
        rules=CLOUD_FIRST,
        budget={"dailyUsd": 0, "action": action},
    )


def test_reject_answers_429_in_openai_shape_and_the_sdk_does_not_retry(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(capped(local, cloud, "reject"))
    client = sdk_client(running, max_retries=3)  # the SDK retries every 429 unless told not to

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="auto", messages=MESSAGES)

    error = refused.value
    assert error.status_code == 429
    assert error.code == "budget_exhausted"
    assert error.type == "insufficient_quota"
    assert "reject" in error.message
    assert "its daily cap $0 ($0.00 spent)" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert cloud.requests == []
    assert local.requests == []  # reject means refused, not quietly degraded
    metrics = running.app.metrics.render().decode()
    assert (
        'hybridroute_requests_total{endpoint="",namespace="team-a",outcome="budget_exhausted",policy="capped"} 1.0'
        in (metrics)
    )


def test_reject_leaves_private_traffic_local(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(capped(local, cloud, "reject"))
    client = sdk_client(running)

    private = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, extra_headers=PRIVATE)
    assert private.headers["x-hybridroute-endpoint"] == "local-a"
    assert cloud.requests == []


def test_local_only_serves_cloud_first_requests_locally(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(capped(local, cloud, "localOnly"))
    client = sdk_client(running)

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.parse().choices[0].message.content
    assert cloud.requests == []


def test_a_fleet_budget_without_an_answer_yet_falls_back_to_the_routers_own_spend(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = capped(local, cloud, "localOnly")
    unreachable = {"url": "http://127.0.0.1:9", "evaluationSeconds": 1, "timeoutSeconds": 0.5}
    config = config.model_copy(
        update={"budget": config.budget.model_validate({"dailyUsd": 0, "scope": "policy", "prometheus": unreachable})}
    )
    running = router(config)
    client = sdk_client(running)

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)

    assert running.app.fleet_budget is not None
    assert running.app.fleet_budget.state(config.budget) is None
    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert cloud.requests == []
