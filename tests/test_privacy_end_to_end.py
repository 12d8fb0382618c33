"""The privacy promise over real sockets: the router app on uvicorn, a real local upstream simulator
that misbehaves, and a raw TCP listener standing in for the cloud that records every byte it gets.

Checked here: redirects are never followed (a 3xx is an invalid answer, its target gets nothing);
one refusal contract (503 `private_no_local`) for a private request whatever the local fault; the
privacy header read fail-closed; client headers allow-listed and scanned.
"""

from __future__ import annotations

import gzip
import http.client
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from e2e.upstream_sim import Fault
from tests.fixtures.upstreams import endpoint, router_config

EMAIL = "jane.doe@example.com"
CLOUD_FIRST = [{"name": "everything-to-cloud", "match": {}, "action": {"prefer": "cloud"}}]


def post(
    url: str,
    path: str,
    body: Any,
    headers: list[tuple[str, str]] = (),
    timeout: float = 20,  # type: ignore[assignment]
) -> tuple[int, dict[str, str], bytes]:
    """POST with http.client so a header can be sent twice, exactly as listed."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = orjson.dumps(body)
        connection.putrequest("POST", path)
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(len(data)))
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def chat(content: str = "Say hello.", **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}


def local_and_recorder(local: Any, cloud: Any, **sections: Any) -> Any:
    sections.setdefault("rules", CLOUD_FIRST)
    sections.setdefault("slo", {"ttftMs": 300, "requestTimeoutMs": 600})
    return router_config(endpoint("local-a", local), endpoint("cloud-a", cloud, "cloud"), **sections)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("stream", [False, True])
def test_a_redirect_is_never_followed_and_its_target_receives_nothing(
    upstream_sim: Any, byte_recorder: Any, router: Any, status: int, stream: bool
) -> None:
    local, elsewhere = upstream_sim("local"), byte_recorder()
    target = f"{elsewhere.base_url}/chat/completions"
    running = router(router_config(endpoint("local-a", local)))

    local.fail_next(Fault(kind="redirect", status=status, location=target))
    code, _, body = post(running.url, "/v1/chat/completions", chat(stream=stream))
    assert code == 502
    error = orjson.loads(body)["error"]
    assert error["code"] == "upstream_invalid_response"
    assert f"redirect ({status}) refused" in error["message"]

    local.fail_next(Fault(kind="redirect", status=status, location=target))
    code, _, body = post(
        running.url, "/v1/chat/completions", chat(stream=stream), [("x-hybridroute-privacy", "private")]
    )
    assert code == 503
    error = orjson.loads(body)["error"]
    assert error["code"] == "private_no_local"
    assert f"redirect ({status}) refused" in error["message"]

    assert len(local.requests) == 2
    assert elsewhere.received == b""
    assert elsewhere.connections == 0


FAULTS = {
    "5xx": [Fault(status=500)],
    "503": [Fault(status=503)],
    "invalid-json": [Fault(kind="garbage")],
    "slow-past-timeout": [Fault(kind="slow", delay_ms=1500)],
    "reset": [Fault(kind="reset")],
    "redirect-to-cloud": [Fault(kind="redirect", status=307, location="{cloud}/chat/completions")],
    "429-too-long": [Fault(status=429, retry_after="3600")],
    "404-model-not-served": [Fault(status=404)],
    "401-auth": [Fault(status=401)],
    "400": [Fault(status=400)],
}


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
@pytest.mark.parametrize("stream", [False, True])
def test_a_private_request_gets_the_one_refusal_whatever_the_local_fault(
    upstream_sim: Any, byte_recorder: Any, router: Any, fault: str, stream: bool
) -> None:
    local, cloud = upstream_sim("local"), byte_recorder()
    running = router(local_and_recorder(local, cloud))
    for scripted in FAULTS[fault]:
        local.fail_next(Fault(**{**scripted.__dict__, "location": scripted.location.format(cloud=cloud.base_url)}))

    code, _, body = post(
        running.url, "/v1/chat/completions", chat(stream=stream), [("x-hybridroute-privacy", "private")]
    )

    assert code == 503
    error = orjson.loads(body)["error"]
    assert error["code"] == "private_no_local"
    assert error["type"] == "server_error"
    assert error["message"].startswith("private request (header): no local endpoint could answer it (local-a: ")
    assert "the cloud was not tried" in error["message"]
    waited = re.search(r"; waited (\d+) ms for local endpoints;", error["message"])
    assert waited is not None  # how long it waited before the refusal
    if fault == "slow-past-timeout":
        assert int(waited.group(1)) >= 250  # the attempt timed out: ttftMs 300, requestTimeoutMs 600 here
    assert cloud.received == b""


def test_the_refusal_is_the_same_when_no_local_endpoint_is_available_or_configured(
    upstream_sim: Any, byte_recorder: Any, router: Any
) -> None:
    local, cloud = upstream_sim("local"), byte_recorder()
    private = [("x-hybridroute-privacy", "private")]
    down = router_config(
        endpoint("local-a", local, available=False, unavailableReason="no ready replicas"),
        endpoint("cloud-a", cloud, "cloud"),
        rules=CLOUD_FIRST,
    )
    for config in (down, router_config(endpoint("cloud-a", cloud, "cloud"))):
        running = router(config)
        code, _, body = post(running.url, "/v1/chat/completions", chat(), private)
        error = orjson.loads(body)["error"]
        assert (code, error["code"]) == (503, "private_no_local")
        assert error["message"].startswith("private request (header)")
    assert local.requests == []
    assert cloud.received == b""


def test_the_refusal_is_the_same_whatever_keeps_the_local_endpoint_from_taking_it(
    upstream_sim: Any, byte_recorder: Any, router: Any
) -> None:
    """Circuit open, at maxConcurrency, cloud budget exhausted with action reject: one 503 contract."""
    local, cloud = upstream_sim("local"), byte_recorder()
    private = [("x-hybridroute-privacy", "private")]

    def refused(running: Any, reason: str) -> None:
        code, _, body = post(running.url, "/v1/chat/completions", chat(), private)
        error = orjson.loads(body)["error"]
        assert (code, error["code"], error["type"]) == (503, "private_no_local", "server_error"), body
        assert error["message"].startswith("private request (header): no local endpoint ")
        assert reason in error["message"]
        assert "cloud" in error["message"]

    breaking = local_and_recorder(local, cloud, circuitBreaker={"consecutiveFailures": 1, "openSeconds": 60})
    running = router(breaking)
    local.fail_next(Fault(status=500), Fault(kind="garbage"))
    refused(running, "local-a: 500 from upstream")
    assert dict(running.app.executor.breakers.states())["local-a"] == "open"
    # Its only local's circuit is open: the decision's all-open pick still tries it, never the cloud.
    refused(running, "local-a: 200 with a non-JSON body")
    assert len(local.requests) == 2

    local.faults.clear()
    capped = router(
        router_config(
            endpoint("local-a", local, maxConcurrency=1),
            endpoint("cloud-a", cloud, "cloud"),
            rules=CLOUD_FIRST,
            slo={"ttftMs": 5000, "requestTimeoutMs": 5000},
        )
    )
    seen = len(local.requests)
    local.fail_next(Fault(kind="slow", delay_ms=1500))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, capped.url, "/v1/chat/completions", chat(), private)
        local.wait_for_requests(seen + 1)
        refused(capped, "local-a: capacity (maxConcurrency in flight)")
        assert first.result()[0] == 200

    spent = router(local_and_recorder(local, cloud, budget={"dailyUsd": 0, "action": "reject"}))
    code, _, _ = post(spent.url, "/v1/chat/completions", chat())
    assert code == 429  # a public request that needs the cloud is rejected by the budget
    local.fail_next(Fault(status=503))
    refused(spent, "local-a: 503 from upstream")  # a private one never is: it never needed the cloud
    assert cloud.received == b""


@pytest.mark.parametrize(
    "lines",
    [
        [("x-hybridroute-privacy", "private"), ("x-hybridroute-privacy", "public")],
        [("x-hybridroute-privacy", "public, private")],
        [("x-hybridroute-privacy", "private, internal")],
        [("x-hybridroute-privacy", "true")],
        [("x-hybridroute-privacy", "1")],
    ],
)
def test_the_privacy_header_fails_closed_on_the_wire(
    upstream_sim: Any, byte_recorder: Any, router: Any, lines: list[tuple[str, str]]
) -> None:
    local, cloud = upstream_sim("local"), byte_recorder()
    running = router(local_and_recorder(local, cloud))

    code, headers, _ = post(running.url, "/v1/chat/completions", chat(), lines)

    assert code == 200
    assert headers["x-hybridroute-endpoint"] == "local-a"
    assert cloud.received == b""


def test_client_headers_are_allow_listed_and_forwarded_ones_are_scanned(
    upstream_sim: Any, byte_recorder: Any, router: Any
) -> None:
    local, cloud = upstream_sim("local"), byte_recorder()
    privacy = {"builtinDetectors": ["email"]}
    running = router(local_and_recorder(local, cloud, privacy=privacy))

    custom = [
        ("x-end-user", EMAIL),
        ("x-stainless-os", "Linux"),
        ("openai-organization", "org-client"),
        ("cookie", "s=1"),
    ]
    code, headers, _ = post(running.url, "/v1/chat/completions", chat(), [*custom, ("openai-beta", "assistants=v2")])
    assert (code, headers["x-hybridroute-endpoint"]) == (200, "cloud-a")  # public: the rule sends it to the cloud
    sent = bytes(cloud.received).lower()
    assert EMAIL.encode() not in sent
    for dropped in (b"x-end-user", b"x-stainless", b"org-client", b"s=1"):
        assert dropped not in sent
    assert b"openai-beta: assistants=v2" in sent

    before = len(cloud.received)
    code, headers, _ = post(running.url, "/v1/chat/completions", chat(), [("x-request-id", f"req-for-{EMAIL}")])
    assert (code, headers["x-hybridroute-endpoint"]) == (200, "local-a")  # forwarded, so scanned: private
    assert len(cloud.received) == before
    assert local.requests[-1].headers["x-request-id"] == f"req-for-{EMAIL}"


def raw_post(
    url: str, path: str, data: bytes, headers: list[tuple[str, str]], chunked: bool = False
) -> tuple[int, str]:
    """POST exactly these bytes (and headers), optionally with chunked transfer encoding."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if chunked:
            connection.putheader("transfer-encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(data), 7):
                piece = data[start : start + 7]
                connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            connection.send(b"0\r\n\r\n")
        else:
            connection.putheader("content-length", str(len(data)))
            connection.endheaders(data)
        response = connection.getresponse()
        return response.status, response.getheader("x-hybridroute-endpoint") or ""
    finally:
        connection.close()


def test_the_cloud_receives_only_what_was_scanned_whatever_the_wire_shape(
    upstream_sim: Any, byte_recorder: Any, router: Any
) -> None:
    """Duplicate keys, escapes, query strings, encodings the router cannot read, chunked bodies: the
    cloud gets a re-serialization of the body the detectors read, or nothing."""
    local, cloud = upstream_sim("local"), byte_recorder()
    running = router(local_and_recorder(local, cloud, privacy={"builtinDetectors": ["email"]}))
    json_type = [("content-type", "application/json")]
    pii_first = (
        b'{"model":"auto","messages":[{"role":"user","content":"mail jane.doe@example.com"}],'
        b'"messages":[{"role":"user","content":"hi"}]}'
    )
    # The last copy of a duplicated key is what was scanned (public) and what the cloud gets.
    assert raw_post(running.url, "/v1/chat/completions", pii_first, json_type) == (200, "cloud-a")
    # A JSON escape is read as the character it stands for.
    escaped = b'{"model":"auto","messages":[{"role":"user","content":"jane.doe\\u0040example\\u002ecom"}]}'
    assert raw_post(running.url, "/v1/chat/completions", escaped, json_type) == (200, "local-a")
    assert raw_post(running.url, "/v1/chat/completions", escaped, json_type, chunked=True) == (200, "local-a")
    # The query string is never forwarded.
    clean = orjson.dumps(chat())
    assert raw_post(running.url, f"/v1/chat/completions?user={EMAIL}", clean, json_type) == (200, "cloud-a")
    # Bodies the router cannot read are refused, never passed on as they are.
    gzipped = gzip.compress(orjson.dumps(chat(f"mail {EMAIL}")))
    assert raw_post(running.url, "/v1/chat/completions", gzipped, [*json_type, ("content-encoding", "gzip")])[0] == 400
    form = f"--b\r\ncontent-disposition: form-data; name=user\r\n\r\n{EMAIL}\r\n--b--\r\n".encode()
    multipart = [("content-type", "multipart/form-data; boundary=b")]
    assert raw_post(running.url, "/v1/chat/completions", form, multipart)[0] == 400
    utf16 = orjson.dumps(chat(f"mail {EMAIL}")).decode().encode("utf-16")
    assert raw_post(running.url, "/v1/chat/completions", utf16, json_type)[0] == 400

    sent = bytes(cloud.received)
    assert sent.count(b"POST ") == 2
    assert b"jane.doe" not in sent
    assert re.findall(rb"POST (\S+) HTTP", sent) == [b"/v1/chat/completions"] * 2


def test_proxy_variables_in_the_environment_never_divert_a_request(
    upstream_sim: Any, byte_recorder: Any, router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's HTTP(S)_PROXY (set for other tools) must not route request bodies through a proxy."""
    local, proxy = upstream_sim("local"), byte_recorder()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.base_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    running = router(router_config(endpoint("local-a", local)))

    code, headers, _ = post(running.url, "/v1/chat/completions", chat(f"mail {EMAIL}"))

    assert (code, headers["x-hybridroute-endpoint"]) == (200, "local-a")
    assert len(local.requests) == 1
    assert proxy.connections == 0
