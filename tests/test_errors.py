"""Every client-visible failure in OpenAI's error shape, with the right status, and never a key."""

from __future__ import annotations

import http.client
from typing import Any

import openai
import orjson
import pytest

from e2e.upstream_sim import Fault
from hybridroute_router.errors import BadRequest, UpstreamTimeout, error_body
from tests.fixtures.upstreams import endpoint, router_config

ROUTINE = [{"role": "user", "content": "Say hello."}]
KEY = "sk-must-never-leak-0042"


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None, chunked: bool = False) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        all_headers = {"content-type": "application/json", **(headers or {})}
        if chunked:
            connection.request(
                "POST",
                path,
                body=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
                headers=all_headers,
                encode_chunked=True,
            )
        else:
            connection.request("POST", path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def assert_openai_error(document: Any, code: str) -> str:
    error = document["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    return str(error["message"])


@pytest.fixture
def single(upstream_sim: Any, router: Any) -> Any:
    sim = upstream_sim("local")
    running = router(router_config(endpoint("local-a", sim)), max_body_bytes=2048)
    return sim, running


def test_malformed_json_is_400(single: Any) -> None:
    _, running = single

    status, document = post(running.port, "/v1/chat/completions", b'{"model": "auto", "messages": [')

    assert status == 400
    assert "not valid JSON" in assert_openai_error(document, "invalid_request")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto"}, "messages"),
        ({"messages": ROUTINE}, "model"),
        ({"model": "auto", "messages": ROUTINE, "temperature": "hot"}, "temperature"),
        ({"model": "auto", "messages": ROUTINE, "stream": "yes"}, "stream"),
    ],
)
def test_missing_fields_and_wrong_types_are_400_naming_the_param(single: Any, body: Any, param: str) -> None:
    sim, running = single

    status, document = post(running.port, "/v1/chat/completions", orjson.dumps(body))

    assert status == 400
    assert_openai_error(document, "invalid_request")
    assert document["error"]["param"] == param
    assert sim.requests == []


def test_body_over_the_limit_is_413_by_content_length(single: Any) -> None:
    sim, running = single
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 4000}]})

    status, document = post(running.port, "/v1/chat/completions", body)

    assert status == 413
    assert "2048-byte limit" in assert_openai_error(document, "request_too_large")
    assert sim.requests == []


def test_body_over_the_limit_is_413_when_counted_while_reading(single: Any) -> None:
    _, running = single
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 10000}]})

    status, document = post(running.port, "/v1/chat/completions", body, chunked=True)

    assert status == 413
    assert_openai_error(document, "request_too_large")


def test_unknown_model_alias_is_404(single: Any, sdk_client: Any) -> None:
    _, running = single

    with pytest.raises(openai.NotFoundError) as caught:
        sdk_client(running).chat.completions.create(model="gpt-unknown", messages=ROUTINE)

    assert caught.value.code == "model_not_found"
    assert "gpt-unknown" in caught.value.message


def test_no_eligible_endpoint_is_503_naming_the_reason(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    sim = upstream_sim("local")
    running = router(router_config(endpoint("local-a", sim, available=False, unavailableReason="0/1 replicas ready")))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 503
    assert caught.value.code == "no_eligible_endpoint"
    assert "local-a: unavailable" in caught.value.message


def test_upstream_garbage_is_502(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    sim = upstream_sim("local")
    sim.fail_next(Fault(kind="garbage"))
    running = router(router_config(endpoint("local-a", sim)))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_invalid_response"
    assert "non-JSON" in caught.value.message


def test_all_attempts_timing_out_is_504(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    sim = upstream_sim("local")
    sim.fail_next(Fault(kind="hang"))
    running = router(router_config(endpoint("local-a", sim), slo={"ttftMs": 150}))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_failures_never_echo_the_endpoint_key(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    cloud = upstream_sim("cloud")
    cloud.fail_next(Fault(status=500), Fault(status=500), Fault(status=500))
    config = router_config(endpoint("cloud-a", cloud, "cloud", apiKey={"env": "K"}))
    running = router(config, environ={"K": KEY})

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert cloud.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in caught.value.response.text
    assert KEY not in running.app.metrics.render().decode()


def test_a_missing_key_is_an_error_that_names_no_value(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    cloud = upstream_sim("cloud")
    running = router(router_config(endpoint("cloud-a", cloud, "cloud", apiKey={"env": "ABSENT_KEY"})), environ={})

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 503
    assert "API key not available" in caught.value.message
    assert cloud.requests == []


def test_unknown_path_and_wrong_method(single: Any) -> None:
    _, running = single
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        connection.request("GET", "/v1/chat/completions")
        response = connection.getresponse()
        assert response.status == 405
        assert_openai_error(orjson.loads(response.read()), "method_not_allowed")
        connection.request("GET", "/nope")
        response = connection.getresponse()
        assert response.status == 404
        assert_openai_error(orjson.loads(response.read()), "not_found")
    finally:
        connection.close()


def test_error_classes_render_openai_bodies() -> None:
    assert orjson.loads(BadRequest("bad", param="model").body()) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "invalid_request"}
    }
    assert UpstreamTimeout("slow").status == 504
    assert orjson.loads(error_body("m", "t"))["error"]["code"] is None
