"""Fleet visibility end to end: router metrics -> real Prometheus -> operator -> InferenceEndpoint status.

A real router (in-process, on loopback) serves traffic to two simulators named like the endpoints;
a real Prometheus scrapes it with the `namespace` target label a PodMonitor would add; the operator,
given the Prometheus URL, must publish each endpoint's p95 and circuit into status and record an Event
when the fleet circuit changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.upstream_sim import UpstreamSim
from hybridroute_operator.api import ENDPOINT_PLURAL
from tests.fixtures.operator import Kube, eventually
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.upstreams import RunningRouter, endpoint, router_config

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]


def send(client: openai.OpenAI, count: int) -> None:
    for _ in range(count):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return (kube.get(ENDPOINT_PLURAL, name) or {}).get("status") or {}


def test_p95_and_circuit_reach_endpoint_status(
    kube: Kube,
    operator_factory: Callable[..., Path],
    prometheus: PrometheusServer,
    upstream_sim: Callable[..., UpstreamSim],
    router: Callable[..., RunningRouter],
) -> None:
    local = upstream_sim("local", latency_ms=40)
    cloud = upstream_sim("cloud")
    kube.create_secret("cloud-key")
    kube.create(ENDPOINT_PLURAL, "local", {"type": "local", "local": {"url": local.base_url, "model": "m"}})
    kube.create(
        ENDPOINT_PLURAL,
        "cloud",
        {
            "type": "cloud",
            "cloud": {
                "provider": "openai-compatible",
                "baseURL": cloud.base_url,
                "model": "m",
                "apiKeySecretRef": {"name": "cloud-key", "key": "api-key"},
            },
        },
    )
    operator_factory({"HYBRIDROUTE_PROMETHEUS_URL": prometheus.url, "HYBRIDROUTE_FLEET_INTERVAL_SECONDS": "1"})

    served = router(
        router_config(
            endpoint("local", local),
            endpoint("cloud", cloud, "cloud"),
            # a long open period: the breaker must still be open when the operator looks
            circuitBreaker={"consecutiveFailures": 3, "openSeconds": 120, "maxOpenSeconds": 120},
        )
    )
    prometheus.set_targets([f"127.0.0.1:{served.metrics_port}"], labels={"namespace": kube.namespace})
    client = openai.OpenAI(base_url=served.base_url, api_key="client-key", max_retries=0)

    def p95_published() -> dict[str, Any] | None:
        send(client, 5)
        found = status_of(kube, "local")
        return found if found.get("latencyP95Ms") and found.get("circuit") == "closed" else None

    published = eventually(p95_published, "local p95 and closed circuit in status", timeout=60)
    # 40 ms of simulated latency lands in the 0.025-0.05 s bucket; p95 interpolates inside it
    assert 25 <= published["latencyP95Ms"] <= 100, published

    local.behavior.failure_rate = 1.0  # the local server now fails every request: passive breaker opens
    send(client, 5)  # failover keeps these answering from the cloud

    def opened() -> dict[str, Any] | None:
        found = status_of(kube, "local")
        return found if found.get("circuit") == "open" else None

    eventually(opened, "circuit open in local status", timeout=60)
    events = eventually(lambda: kube.events("local", "CircuitOpened"), "a CircuitOpened event", timeout=30)
    assert events[0].type == "Warning"
    assert "closed -> open" in events[0].message
    assert status_of(kube, "cloud").get("circuit") == "closed"
