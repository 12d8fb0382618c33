"""Same-named policies in two namespaces never read each other's latency (issue 11, item 6).

Two real routers serve a policy named `default` with an endpoint named `local`, one for the test's
namespace (a fast local server) and one for another tenant (a slow one). A real Prometheus scrapes
both as static targets, so the namespace on the series is the router's own label. The router's
default p95 query, rendered for each router's namespace, must see only its own traffic; and the
operator, with that Prometheus, must put the fast p95 into the test namespace's InferenceEndpoint.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.upstream_sim import UpstreamSim
from hybridroute_operator.api import ENDPOINT_PLURAL
from hybridroute_router.config import BudgetConfig, PrometheusBreakerConfig
from hybridroute_router.fleetbudget import spend_query
from hybridroute_router.p95 import parse_query_result, render_query
from hybridroute_router.saturationfeed import QUERIES as SATURATION_QUERIES
from tests.fixtures.operator import Kube, eventually
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.upstreams import RunningRouter, endpoint, router_config

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]
OTHER_TENANT = "team-b"


def p95_for(prometheus: PrometheusServer, namespace: str) -> dict[str, float]:
    """The router's own default p95 query, as the router of `namespace` renders it."""
    query = render_query(PrometheusBreakerConfig().query, "default", "1m", namespace=namespace)
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, Any] = json.load(response)
    return parse_query_result(body)


def test_same_named_policies_in_two_namespaces_keep_their_p95_apart(
    kube: Kube,
    operator_factory: Callable[..., Path],
    prometheus: PrometheusServer,
    upstream_sim: Callable[..., UpstreamSim],
    router: Callable[..., RunningRouter],
) -> None:
    fast, slow = upstream_sim("local", latency_ms=10), upstream_sim("local", latency_ms=600)
    ours = router(router_config(endpoint("local", fast), policy={"namespace": kube.namespace, "name": "default"}))
    theirs = router(router_config(endpoint("local", slow), policy={"namespace": OTHER_TENANT, "name": "default"}))
    prometheus.set_targets([f"127.0.0.1:{ours.metrics_port}", f"127.0.0.1:{theirs.metrics_port}"])  # no target labels
    kube.create(ENDPOINT_PLURAL, "local", {"type": "local", "local": {"url": fast.base_url, "model": "m"}})
    operator_factory({"HYBRIDROUTE_PROMETHEUS_URL": prometheus.url, "HYBRIDROUTE_FLEET_INTERVAL_SECONDS": "1"})

    clients = [openai.OpenAI(base_url=r.base_url, api_key="client-key", max_retries=0) for r in (ours, theirs)]

    def both_seen() -> tuple[dict[str, float], dict[str, float]] | None:
        for client in clients:
            for _ in range(3):
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        mine, other = p95_for(prometheus, kube.namespace), p95_for(prometheus, OTHER_TENANT)
        return (mine, other) if "local" in mine and "local" in other else None

    mine, other = eventually(both_seen, "p95 series for both tenants", timeout=60)
    assert mine["local"] < 100, mine  # 10 ms upstream: its own buckets only
    assert other["local"] >= 500, other  # 600 ms upstream

    def status_p95() -> int | None:
        found = ((kube.get(ENDPOINT_PLURAL, "local") or {}).get("status") or {}).get("latencyP95Ms")
        return int(found) if found else None

    assert eventually(status_p95, "p95 in the endpoint's status", timeout=60) < 100


METRIC = re.compile(r"\b((?:hybridroute_|vllm:|llamacpp:)[A-Za-z0-9_:]*)(\{[^}]*\})?")


def policy_queries(namespace: str) -> dict[str, str]:
    """Every PromQL query the routers and the operator render for one policy of `namespace`."""
    queries = {
        f"saturation {signal}": render_query(template, "default", "1m", namespace=namespace)
        for signal, template in SATURATION_QUERIES.items()
    }
    queries["p95 breaker (default)"] = render_query(
        PrometheusBreakerConfig().query, "default", "1m", namespace=namespace
    )
    for scope in ("policy", "namespace"):
        budget = BudgetConfig.model_validate({"scope": scope, "daily_usd": 1, "prometheus": {"url": "http://p:9090"}})
        queries[f"budget {scope}"] = spend_query(budget, namespace, "default", 0.0, 3600.0)
    return queries


def test_every_series_a_policy_reads_is_filtered_by_its_namespace() -> None:
    """Not one selector may read another tenant's series: an `or` branch without the filter would."""
    for what, query in policy_queries("team-a").items():
        selectors = METRIC.findall(query)
        assert selectors, what
        for metric, matchers in selectors:
            assert 'namespace="team-a"' in matchers, f"{what}: {metric} is read across namespaces: {query}"
