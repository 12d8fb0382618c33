"""A fleet budget in RoutingPolicy status: router spend -> real Prometheus -> operator -> status, Events, kubectl.

A real router (in-process) serves the policy's config in front of a priced cloud simulator; a real
Prometheus scrapes it with the `namespace` target label a PodMonitor would add; the operator, given
that Prometheus as its own setting (the policy's URL is for routers only), must show Ok, then Soft
(with a BudgetSoftLimit Event), then Exhausted (with a BudgetExhausted Event and the Budget column of
`kubectl get rp`), and, with Prometheus gone, keep Exhausted marked stale.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.localcluster import LocalCluster
from e2e.upstream_sim import UpstreamSim
from hybridroute_operator.api import ENDPOINT_PLURAL, POLICY_PLURAL
from tests.fixtures.operator import Kube, eventually
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.upstreams import RunningRouter, endpoint, router_config

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

PRICING = {"inputPerMTok": 1000.0, "outputPerMTok": 1000.0}  # 18 tokens a request: $0.018
HI = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def budget_of(kube: Kube, name: str) -> dict[str, Any]:
    return ((kube.get(POLICY_PLURAL, name) or {}).get("status") or {}).get("budget") or {}


def test_budget_state_reaches_policy_status_events_and_kubectl(
    kube: Kube,
    local_cluster: LocalCluster,
    operator_factory: Callable[..., Path],
    prometheus: PrometheusServer,
    upstream_sim: Callable[..., UpstreamSim],
    router: Callable[..., RunningRouter],
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    kube.create_secret("cloud-key")
    kube.create(ENDPOINT_PLURAL, "local", {"type": "local", "local": {"url": local.base_url, "model": "m"}})
    cloud_spec = {
        "provider": "openai-compatible",
        "baseURL": cloud.base_url,
        "model": "m",
        "apiKeySecretRef": {"name": "cloud-key", "key": "api-key"},
        "pricing": PRICING,
    }
    kube.create(ENDPOINT_PLURAL, "cloud", {"type": "cloud", "cloud": cloud_spec})
    budget = {
        "dailyUsd": 0.05,
        "softPercent": 50,
        "scope": "policy",
        # a generous query timeout: on a loaded machine a 1 s bound turns answers into "stale"
        "prometheus": {"url": prometheus.url, "evaluationSeconds": 1, "timeoutSeconds": 5},
    }
    rules = [{"name": "cloud-first", "action": {"prefer": "cloud"}}]
    # the policy's URL is for routers; the operator must ask only its own Prometheus, never this one
    declared = {**budget, "prometheus": {**budget["prometheus"], "url": "http://prometheus.invalid:9090"}}
    kube.create(
        POLICY_PLURAL, "team", {"endpoints": [{"name": "local"}, {"name": "cloud"}], "rules": rules, "budget": declared}
    )
    operator_factory({"HYBRIDROUTE_PROMETHEUS_URL": prometheus.url})

    served = router(
        router_config(
            endpoint("local", local),
            endpoint("cloud", cloud, "cloud", pricing=PRICING),
            policy={"namespace": kube.namespace, "name": "team"},
            rules=rules,
            budget=budget,
        )
    )
    prometheus.set_targets([f"127.0.0.1:{served.metrics_port}"], labels={"namespace": kube.namespace})
    client = openai.OpenAI(base_url=served.base_url, api_key="client-key", max_retries=0)

    ok = eventually(lambda: budget_of(kube, "team") if budget_of(kube, "team").get("state") == "Ok" else None, "Ok")
    assert ok["spentTodayUsd"] == 0
    assert ok["stale"] is False

    def ask(count: int) -> None:
        for _ in range(count):
            client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])

    ask(2)  # $0.036: past 50 % of $0.05
    soft = eventually(
        lambda: budget_of(kube, "team") if budget_of(kube, "team").get("state") == "Soft" else None, "Soft", timeout=60
    )
    assert "50% of a cap" in soft["message"]
    warned = eventually(lambda: kube.events("team", "BudgetSoftLimit"), "a BudgetSoftLimit event", timeout=30)
    assert warned[0].type == "Warning"

    ask(1)  # $0.054: the cap is reached
    state = "Exhausted"
    exhausted = eventually(
        lambda: budget_of(kube, "team") if budget_of(kube, "team").get("state") == state else None, state, timeout=60
    )
    assert exhausted["spentTodayUsd"] >= 0.05
    assert "served locally" in exhausted["message"]
    eventually(lambda: kube.events("team", "BudgetExhausted"), "a BudgetExhausted event", timeout=30)
    header, row = local_cluster.kubectl("get", "-n", kube.namespace, "rp", "team").splitlines()
    assert header.split() == ["NAME", "READY", "RESOLVED", "CONFIGMAP", "BUDGET", "AGE"]
    assert row.split()[4] == "Exhausted"

    # The router decides from its own evaluation of the same query (every second), which may land a
    # moment after the operator's: wait for the router's dry-run decision, then send for real.
    def router_serves_locally() -> bool:
        request = urllib.request.Request(f"{served.url}/hybridroute/v1/explain", data=json.dumps(HI).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            explained = json.load(response)
        return bool(explained["decision"]["candidates"][0]["endpoint"] == "local")

    eventually(router_serves_locally, "the router's own budget evaluation serving locally", timeout=30)
    answer = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.headers["x-hybridroute-endpoint"] == "local"

    prometheus.kill()
    stale = eventually(lambda: budget_of(kube, "team") if budget_of(kube, "team").get("stale") else None, "stale")
    assert stale["state"] == "Exhausted"
    assert "Prometheus unreadable" in stale["message"]
