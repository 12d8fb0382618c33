"""Client mistakes are 400s before routing: an unusable JSON schema, output tokens that fit nowhere.

Driven through the real router over loopback with the `openai` SDK; the simulators prove nothing was
sent upstream, and the captured logs prove the client's schema never reaches a log line.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
import orjson
import pytest

from tests.fixtures.upstreams import endpoint, router_config

ROUTINE = [{"role": "user", "content": "Say hello."}]
MARKER = "client-schema-marker-7f3a"
"""Appears in every schema below: it must never show up in a log record."""


def structured(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"description": MARKER, **schema}}}


def two_tier(local: Any, cloud: Any, **sections: Any) -> Any:
    cloud_endpoint = endpoint("cloud-a", cloud, "cloud", maxContextTokens=128_000, capabilities={"jsonSchema": True})
    local_endpoint = endpoint("local-a", local, maxContextTokens=4096, capabilities={"jsonSchema": True})
    return router_config(local_endpoint, cloud_endpoint, **sections)


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"city": {"$ref": "#/$defs/missing"}}},
        {"$ref": "#/definitions/nowhere"},
        {"$ref": "https://schemas.example.invalid/remote.json"},
        {"type": 12},
        {"type": "object", "required": "city"},
        {"$schema": "https://dialects.example.invalid/unknown", "type": "object"},
    ],
    ids=["missing-defs", "missing-root-ref", "remote-ref", "bad-type", "bad-required", "unknown-dialect"],
)
def test_unusable_response_schema_is_400_before_routing_and_never_logged(
    schema: dict[str, Any], upstream_sim: Any, router: Any, sdk_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud, fallback={"validateStructuredOutput": True}))

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, response_format=structured(schema))

    assert caught.value.status_code == 400
    assert caught.value.param == "response_format.json_schema.schema"
    assert caught.value.code == "invalid_request"
    assert local.requests == []
    assert cloud.requests == []
    assert MARKER not in logged_text(caplog)


def test_schema_with_resolvable_refs_is_served(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local", content='{"city": "Lyon"}')
    running = router(two_tier(local, upstream_sim("cloud"), fallback={"validateStructuredOutput": True}))
    schema = {
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/name"}, "const-data": {"const": {"$ref": "not-a-reference"}}},
        "required": ["city"],
        "$defs": {"name": {"type": "string"}},
    }

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, response_format=structured(schema)
    )

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert "x-hybridroute-structured-output" not in raw.headers


def test_an_internal_error_is_an_openai_500_that_logs_no_request_content(
    upstream_sim: Any, router: Any, sdk_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = router(two_tier(upstream_sim("local"), upstream_sim("cloud")))

    async def broken(request: Any) -> Any:
        raise RuntimeError(f"bug that quotes the body: {orjson.dumps(request.body).decode()}")

    running.app.executor.execute = broken
    with pytest.raises(openai.InternalServerError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=[{"role": "user", "content": MARKER}])

    assert caught.value.code == "internal_error"
    assert MARKER not in logged_text(caplog)
    assert any(getattr(record, "error", None) == "RuntimeError" for record in caplog.records)


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_output_tokens_beyond_every_context_window_are_the_clients_error(
    param: str, upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud))

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, **{param: 200_000})

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == "context_length_exceeded"
    assert "128000" in caught.value.message
    assert local.requests == []
    assert cloud.requests == []


def test_input_that_fits_no_context_window_is_the_clients_error(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(
        router_config(
            endpoint("local-a", local, maxContextTokens=512), endpoint("cloud-a", cloud, "cloud", maxContextTokens=1024)
        )
    )
    long_prompt = [{"role": "user", "content": "word " * 4000}]

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=long_prompt, max_tokens=16)

    assert caught.value.param == "messages"
    assert caught.value.code == "context_length_exceeded"
    assert local.requests == []
    assert cloud.requests == []


def test_output_tokens_that_fit_one_endpoint_are_routed_there(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE, max_tokens=8000)

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"


def test_explain_applies_the_same_client_checks(upstream_sim: Any, router: Any) -> None:
    import http.client

    running = router(two_tier(upstream_sim("local"), upstream_sim("cloud")))
    body = {"model": "auto", "messages": ROUTINE, "max_tokens": 200_000}
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    connection.request("POST", "/hybridroute/v1/explain", body=orjson.dumps(body))
    response = connection.getresponse()
    document = orjson.loads(response.read())
    connection.close()

    assert response.status == 400
    assert document["error"]["param"] == "max_tokens"
