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


def raw_request(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with the target sent byte for byte (no client-side path normalisation)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("host", f"127.0.0.1:{port}")
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture
def router_and_upstream(upstream_sim: Any, router_process: Any, tmp_path: Path) -> tuple[Any, Any]:
    sim = upstream_sim("local")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [endpoint("local-a", sim)]}))
    return router_process(path, "--metrics-host", "0.0.0.0"), sim


TRICKS = [
    "//v1/chat/completions",
    "/v1/chat/completions/",
    "/v1//chat/completions",
    "/metrics/../v1/chat/completions",
    "/metrics/%2e%2e/v1/chat/completions",
    "/v1/chat%2Fcompletions",
    "/%2Fv1/chat/completions",
    "/hybridroute/v1/explain/",
    "/metrics/",
    "/metrics/x",
    "/Metrics",
    "/readyz/../v1/models",
]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
def test_no_method_or_path_trick_reaches_the_api_through_the_metrics_listener(
    router_and_upstream: tuple[Any, Any], method: str
) -> None:
    """Whatever the method and however the path is spelt, the operations listener spends nothing."""
    running, upstream = router_and_upstream
    body = b"" if method in ("GET", "HEAD", "OPTIONS") else orjson.dumps(CHAT)
    absolute = f"http://127.0.0.1:{running.port}/v1/chat/completions"  # proxy-style absolute target
    for target in [*TRICKS, absolute, "/v1/chat/completions", "/hybridroute/v1/explain", "/v1/models"]:
        status, headers, answer = raw_request(running.metrics_port, method, target, body)
        assert status == 404, (method, target)
        assert headers["content-type"] == "application/json"
        if method != "HEAD":
            assert orjson.loads(answer)["error"]["code"] == "not_found"
    for path in ("/metrics", "/healthz", "/readyz"):
        status, headers, answer = raw_request(running.metrics_port, method, path, body)
        if method in ("GET", "HEAD"):
            assert status == 200, (method, path)
        else:
            assert status == 405, (method, path)
            assert orjson.loads(answer)["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_metrics_carry_no_client_input(router_and_upstream: tuple[Any, Any]) -> None:
    """Label values come from the config only: no client model names, users, header values or content."""
    running, _upstream = router_and_upstream
    secret = "client-chosen-7c1e"
    headers = {"x-end-user": f"{secret}-header", "x-hybridroute-privacy": "private", "user-agent": f"{secret}-agent"}
    bodies = [
        {"model": "auto", "messages": [{"role": "user", "content": f"{secret}-content"}], "user": f"{secret}-user"},
        {"model": f"{secret}-model", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1, "metadata": {secret: 1}},
        {"model": "auto", "prompt": f"{secret}-prompt"},
        {"model": "auto", "input": [f"{secret}-input"]},
    ]
    for body in bodies:
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", f"/v1/{secret}-path"):
            request = urllib.request.Request(f"{running.url}{path}", data=orjson.dumps(body), headers=headers)
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except urllib.error.HTTPError as exc:
                exc.close()

    status, metrics = fetch(f"{running.metrics_url}/metrics")

    assert status == 200
    assert b"hybridroute_requests_total{" in metrics
    assert secret.encode() not in metrics


def test_a_failure_on_the_metrics_listener_is_an_openai_500_that_logs_no_detail(
    upstream_sim: Any, router: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No plain-text 500 from uvicorn on either listener: a bug while rendering answers in OpenAI's shape."""
    import logging

    from tests.fixtures.upstreams import router_config

    caplog.set_level(logging.DEBUG)
    running = router(router_config(endpoint("local-a", upstream_sim("local"))))
    marker = "collector-detail-3b9d"

    def broken() -> bytes:
        raise RuntimeError(f"a collector bug quoting {marker}")

    running.app.metrics.render = broken
    status, headers, answer = raw_request(running.metrics_port, "GET", "/metrics")

    assert status == 500
    assert headers["content-type"] == "application/json"
    assert orjson.loads(answer)["error"]["code"] == "internal_error"
    assert marker not in "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)


@pytest.mark.parametrize("listener", ["api", "metrics"])
@pytest.mark.parametrize("path", ["/metrics", "/v1/chat/completions", "/anything"])
def test_a_websocket_upgrade_gets_an_openai_style_answer_on_either_listener(
    router_and_upstream: tuple[Any, Any], listener: str, path: str
) -> None:
    """Neither listener speaks WebSocket: an upgrade is answered as plain HTTP in OpenAI's shape, no 500."""
    import http.client

    running, upstream = router_and_upstream
    port = running.port if listener == "api" else running.metrics_port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(
        "GET",
        path,
        headers={
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    response = connection.getresponse()
    answer = response.read()
    connection.close()

    assert upstream.requests == []
    if (listener, path) == ("metrics", "/metrics"):  # a GET with extra headers: served as any scrape
        assert response.status == 200
        assert b"hybridroute_" in answer
        return
    assert response.status == (405 if (listener, path) == ("api", "/v1/chat/completions") else 404)
    assert response.getheader("content-type") == "application/json"
    assert "error" in orjson.loads(answer)
