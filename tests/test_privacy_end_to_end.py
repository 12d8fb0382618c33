"""The privacy promise over real sockets: the router app on uvicorn, a real local upstream simulator
that misbehaves, and a raw TCP listener standing in for the cloud that records every byte it gets.

Checked here: redirects are never followed (a 3xx is an invalid answer, its target gets nothing);
one refusal contract (503 `private_no_local`) for a private request whatever the local fault; the
privacy header read fail-closed; client headers allow-listed and scanned.
"""

from __future__ import annotations

import http.client
import re
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
