"""Client mistakes are 400s before routing: an unusable JSON schema, output tokens that fit nowhere.

Driven through the real router over loopback with the `openai` SDK; the simulators prove nothing was
sent upstream, and the captured logs prove the client's schema never reaches a log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import openai
import orjson
import pytest

from hybridroute_router.clientchecks import MAX_SCHEMA_NODES, SCHEMA_PARAM
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


def function_tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", "strict": True, "parameters": parameters}}


@pytest.mark.parametrize(
    ("declared", "param"),
    [
        (
            {"tools": [function_tool({"type": "object", "properties": {"q": {"$ref": "#/$defs/gone"}}})]},
            "tools[0].function.parameters",
        ),
        ({"tools": [function_tool({"type": "object"}), function_tool({"type": 12})]}, "tools[1].function.parameters"),
        (
            {"tools": [function_tool({"properties": {"q": {"type": "string", "pattern": "("}}})]},
            "tools[0].function.parameters",
        ),
        ({"tools": [function_tool("an object, please")]}, "tools[0].function.parameters"),
        (
            {"functions": [{"name": "lookup", "parameters": {"$ref": "https://example.invalid/s.json"}}]},
            "functions[0].parameters",
        ),
    ],
    ids=["unresolvable-ref", "bad-type-second-tool", "invalid-pattern", "not-an-object", "legacy-functions"],
)
def test_unusable_function_parameters_are_400_before_routing_and_never_logged(
    declared: dict[str, Any],
    param: str,
    upstream_sim: Any,
    router: Any,
    sdk_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tool schemas are client schemas too: every upstream compiles them, so a broken one fails everywhere."""
    caplog.set_level(logging.DEBUG)
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud))
    messages = [{"role": "user", "content": f"look {MARKER} up"}]

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=messages, **declared)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert local.requests == []
    assert cloud.requests == []
    assert MARKER not in logged_text(caplog)


def test_usable_function_parameters_are_served(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local")
    running = router(two_tier(local, upstream_sim("cloud")))
    parameters = {
        "type": "object",
        "properties": {"q": {"$ref": "#/$defs/query"}},
        "required": ["q"],
        "additionalProperties": False,
        "$defs": {"query": {"type": "string", "pattern": "^[a-z]+$"}},
    }

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, tools=[function_tool(parameters)]
    )

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert len(local.requests) == 1


@pytest.mark.parametrize(
    ("limits", "param", "code"),
    [
        ({"max_completion_tokens": 16, "max_tokens": 200_000}, "max_tokens", "context_length_exceeded"),
        ({"max_completion_tokens": 200_000, "max_tokens": 16}, "max_completion_tokens", "context_length_exceeded"),
        ({"max_completion_tokens": 16, "max_tokens": -1}, "max_tokens", "invalid_request"),
        ({"max_tokens": 0}, "max_tokens", "invalid_request"),
        ({"max_completion_tokens": -5}, "max_completion_tokens", "invalid_request"),
        ({"max_tokens": 12.5}, "max_tokens", "invalid_request"),
        ({"max_tokens": "100"}, "max_tokens", "invalid_request"),
        ({"max_completion_tokens": True}, "max_completion_tokens", "invalid_request"),
    ],
    ids=[
        "tokens-too-large",
        "completion-too-large",
        "negative-beside-valid",
        "zero",
        "negative",
        "fraction",
        "string",
        "bool",
    ],
)
def test_every_output_limit_the_client_sends_is_judged(
    limits: dict[str, Any], param: str, code: str, upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """Both limits reach the upstream, which may honour either: each is the client's to get right."""
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud))

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, extra_body=limits)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.code == code
    assert local.requests == []
    assert cloud.requests == []


LOOPS = [
    {"$ref": "#"},
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "object", "$ref": "#/$defs/a"}}},
    {"allOf": [{"$ref": "#"}]},
    {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"$ref": "#/properties/x"}]}}},
    {"if": {"not": {"$ref": "#"}}, "then": {}},
]


@pytest.mark.parametrize("where", ["response_format", "tools"])
@pytest.mark.parametrize("schema", LOOPS, ids=["self", "a-b-a", "allOf-root", "anyOf-property", "if-not-root"])
def test_a_ref_loop_that_never_descends_is_400_before_routing(
    schema: dict[str, Any], where: str, upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """Validating such a schema would recurse on the same value forever: no endpoint can honour it."""
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud, fallback={"validateStructuredOutput": True}))
    declared: dict[str, Any] = (
        {"response_format": structured(schema)} if where == "response_format" else {"tools": [function_tool(schema)]}
    )

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, **declared)

    assert caught.value.param == (SCHEMA_PARAM if where == "response_format" else "tools[0].function.parameters")
    assert "loop" in caught.value.message
    assert local.requests == []
    assert cloud.requests == []


def test_a_recursive_schema_that_descends_is_served_and_checked(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    tree = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["name"],
        "additionalProperties": False,
    }
    local = upstream_sim("local", content='{"name": "root", "children": [{"name": "leaf", "children": []}]}')
    running = router(two_tier(local, upstream_sim("cloud"), fallback={"validateStructuredOutput": True}))

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, response_format=structured(tree)
    )

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert "x-hybridroute-structured-output" not in raw.headers
    assert len(local.requests) == 1


@pytest.mark.parametrize("headers", [{"x-hybridroute-privacy": "private"}, {}], ids=["private", "public"])
def test_a_prompt_too_long_for_every_endpoint_is_400_whatever_else_filters_them(
    headers: dict[str, str], upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """Privacy takes the cloud off first, an open breaker the local: the prompt still fits neither window."""
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(
        router_config(
            endpoint("local-a", local, maxContextTokens=512),
            endpoint("cloud-a", cloud, "cloud", maxContextTokens=1024),
            circuitBreaker={"consecutiveFailures": 1},
        )
    )
    breaker = running.app.executor.breakers.get("local-a")
    breaker.record_failure("5xx", breaker.admit())  # open: a filter of its own before routing

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "word " * 4000}], max_tokens=16, extra_headers=headers
        )

    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert "1024" in caught.value.message
    assert local.requests == []
    assert cloud.requests == []


def test_a_private_prompt_that_fits_only_the_cloud_is_refused_as_private_not_as_too_long(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(
        router_config(
            endpoint("local-a", local, maxContextTokens=512),
            endpoint("cloud-a", cloud, "cloud", maxContextTokens=128_000),
        )
    )

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running, max_retries=0).chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "word " * 2000}],
            max_tokens=16,
            extra_headers={"x-hybridroute-privacy": "private"},
        )

    assert caught.value.status_code == 503
    assert caught.value.code == "private_no_local"
    assert local.requests == []
    assert cloud.requests == []


def wide_schema(properties: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{index}": {"type": "string"} for index in range(properties)}}


def test_schemas_beyond_the_size_bound_are_400_before_any_check(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """The bound counts every schema of the request together: two halves are as large as one whole."""
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(two_tier(local, cloud))
    half = wide_schema(MAX_SCHEMA_NODES // 2)

    with pytest.raises(openai.BadRequestError) as caught:
        sdk_client(running).chat.completions.create(
            model="auto", messages=ROUTINE, response_format=structured(half), tools=[function_tool(half)]
        )

    assert caught.value.param == "tools[0].function.parameters"
    assert str(MAX_SCHEMA_NODES) in caught.value.message
    assert local.requests == []
    assert cloud.requests == []


async def test_schemas_are_checked_off_the_event_loop(
    upstream_sim: Any, router: Any, async_sdk_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a schema near the bound takes jsonschema seconds: the router serves others meanwhile.

    The check is held until other requests were answered; on the event loop it would block them all
    (and time out waiting for them).
    """
    import threading

    from hybridroute_router import app as app_module

    local = upstream_sim("local")
    running = router(two_tier(local, upstream_sim("cloud")))
    client = async_sdk_client(running, timeout=60, max_retries=0)
    checking, others_answered = threading.Event(), threading.Event()
    held: list[bool] = []
    real_check = app_module.check_request_schemas

    def held_check(schemas: Any) -> None:
        checking.set()
        held.append(others_answered.wait(10))
        real_check(schemas)

    monkeypatch.setattr(app_module, "check_request_schemas", held_check)

    async def others() -> None:
        assert await asyncio.to_thread(checking.wait, 10)
        for _ in range(3):
            await client.models.list()
        others_answered.set()

    schema = wide_schema(50)
    await asyncio.gather(
        client.chat.completions.create(model="auto", messages=ROUTINE, response_format=structured(schema)), others()
    )

    assert held == [True]
    assert local.requests  # routed once its check passed


async def test_local_answers_are_validated_off_the_event_loop(
    upstream_sim: Any, router: Any, async_sdk_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer's validation against a large schema is as slow as the schema's check: held, others go on."""
    import threading

    from hybridroute_router import executor as executor_module

    local = upstream_sim("local", content='{"p0": "x"}')
    running = router(two_tier(local, upstream_sim("cloud"), fallback={"validateStructuredOutput": True}))
    client = async_sdk_client(running, timeout=60, max_retries=0)
    validating, others_answered = threading.Event(), threading.Event()
    held: list[bool] = []
    real_validation = executor_module.structured_output_valid

    def held_validation(document: Any, schema: Any) -> bool:
        validating.set()
        held.append(others_answered.wait(10))
        return real_validation(document, schema)

    monkeypatch.setattr(executor_module, "structured_output_valid", held_validation)

    async def others() -> None:
        assert await asyncio.to_thread(validating.wait, 10)
        for _ in range(3):
            await client.models.list()
        others_answered.set()

    answer, _ = await asyncio.gather(
        client.chat.completions.with_raw_response.create(
            model="auto", messages=ROUTINE, response_format=structured(wide_schema(50))
        ),
        others(),
    )

    assert held == [True]
    assert answer.headers["x-hybridroute-endpoint"] == "local-a"
    assert "x-hybridroute-structured-output" not in answer.headers
