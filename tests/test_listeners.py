"""The router's two listeners, as the CLI runs them: the API on loopback, operations on their own port.

The API spends the pod's cloud keys, so it must never answer on the pod IP; Prometheus and the
kubelet need /metrics, /healthz and /readyz there. So the operations listener serves exactly those
three paths, and the API listener never serves /metrics.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.fixtures.upstreams import endpoint


def fetch(url: str, body: Any = None) -> tuple[int, bytes]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a TCP socket listening on `port` (from the kernel's /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture
def routers(upstream_sim: Any, router_process: Any, tmp_path: Path) -> Any:
    sim = upstream_sim("local")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [endpoint("local-a", sim)]}))
    return router_process(path, "--metrics-host", "0.0.0.0")  # as the injected sidecar runs it


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_api_listener_binds_loopback_only_and_the_metrics_listener_the_pod_network(routers: Any) -> None:
    assert listening_addresses(routers.port) == {"127.0.0.1"}
    assert listening_addresses(routers.metrics_port) == {"0.0.0.0"}


def test_api_listener_serves_the_api_but_not_metrics(routers: Any) -> None:
    status, body = fetch(f"{routers.url}/metrics")
    assert status == 404
    assert orjson.loads(body)["error"]["code"] == "not_found"
    assert fetch(f"{routers.base_url}/chat/completions", CHAT)[0] == 200
    assert fetch(f"{routers.url}/hybridroute/v1/explain", CHAT)[0] == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "auto", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "auto", "input": "hi"}),
        ("/v1/models", None),
        ("/hybridroute/v1/explain", CHAT),
    ],
)
def test_metrics_listener_serves_no_api_and_no_explain(routers: Any, path: str, body: Any) -> None:
    status, answer = fetch(f"{routers.metrics_url}{path}", body)
    assert status == 404
    assert orjson.loads(answer)["error"]["code"] == "not_found"


def test_metrics_listener_serves_metrics_and_probes(routers: Any) -> None:
    fetch(f"{routers.base_url}/chat/completions", CHAT)
    status, metrics = fetch(f"{routers.metrics_url}/metrics")
    assert status == 200
    assert b"hybridroute_requests_total{" in metrics
    assert fetch(f"{routers.metrics_url}/healthz")[0] == 200
    status, ready = fetch(f"{routers.metrics_url}/readyz")
    assert status == 200
    assert orjson.loads(ready)["status"] == "ready"


def test_the_api_never_shares_its_listener_with_metrics(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [endpoint("local-a", "http://127.0.0.1:9/v1")]}))
    command = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(path), "--port", "8123"]
    result = subprocess.run([*command, "--metrics-port", "8123"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "--metrics-port must differ from --port" in result.stderr
