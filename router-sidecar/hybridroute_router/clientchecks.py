"""Client mistakes caught before routing: they are 400s, never a retryable 503 or a 500 later on.

- Every JSON schema a request carries must be a valid schema of a dialect the router knows, and
  every `$ref` in it must resolve inside the schema itself (nothing is fetched): the
  `response_format` schema, which the router validates local answers against
  (`fallback.validateStructuredOutput`), so a schema that breaks only then would fail after an
  endpoint already did the work; and each function's `parameters` (`tools[].function`, legacy
  `functions[]`), which every upstream compiles too (OpenAI refuses a bad one with a 400; a local
  server may fail it with a 500 the router would count against a healthy endpoint). A `$ref` loop
  that never descends into the value (`{"$ref": "#"}`) is refused too: validating it never ends.
- Output tokens (`max_tokens` and `max_completion_tokens`, each one sent) larger than every
  endpoint's context window, or estimated input plus output larger than every endpoint's window
  (whatever privacy, breakers or budgets would also rule out), fit nowhere: waiting or retrying
  cannot help, so it is the client's error (OpenAI's `context_length_exceeded`).

Messages name the parameter and the problem; the client's schema text never reaches a log line (the
app logs the error code only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jsonschema
from referencing import Registry, Specification
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, UnknownDialect, specification_with

from .config import RouterConfig
from .errors import BadRequest, ContextLengthExceeded
from .profile import Kind, RequestProfile

SCHEMA_PARAM: Final = "response_format.json_schema.schema"
OUTPUT_TOKEN_PARAMS: Final = ("max_completion_tokens", "max_tokens")
INPUT_PARAM: Final[Mapping[Kind, str]] = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose values are instances, not schemas: a `$ref` key inside them is data."""
_MAX_DETAIL: Final = 200
MAX_SCHEMA_NODES: Final = 5_000
"""Objects (subschemas and the like) in all of one request's schemas; OpenAI's structured outputs take
up to 5,000 object properties. Bounds the check's CPU time (about 2 s at the limit on one core)."""
_IN_PLACE_LISTS: Final = ("allOf", "anyOf", "oneOf")
_IN_PLACE_SINGLE: Final = ("not", "if", "then", "else")
"""Applicators that apply a subschema to the same value (with `$ref`, the edges of a validation loop)."""


def request_schemas(body: Mapping[str, Any], response_schema: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """(param, schema) of every JSON schema the request carries: the response format's, then each function's."""
    found: list[tuple[str, Any]] = [] if response_schema is None else [(SCHEMA_PARAM, response_schema)]
    return found + _function_parameters(body)


def check_request_schemas(schemas: list[tuple[str, Any]]) -> None:
    """Raise BadRequest (param: where the schema sits) unless every schema of the request is usable.

    CPU-bound (jsonschema checks about 2,500 subschemas a second here): the app runs it off the event
    loop, and `MAX_SCHEMA_NODES` bounds it.
    """
    total = 0
    for param, schema in schemas:
        if not isinstance(schema, dict):
            raise BadRequest(f"'{param}' must be a JSON Schema object", param=param)
        total += _count_nodes(schema)
        if total > MAX_SCHEMA_NODES:
            raise BadRequest(
                f"{param}: the request's schemas hold more than {MAX_SCHEMA_NODES} objects in all", param=param
            )
    for param, schema in schemas:
        check_schema(schema, param)


def check_schema(schema: Mapping[str, Any], param: str) -> None:
    """Raise BadRequest naming `param` unless `schema` is a valid JSON Schema whose `$ref`s resolve inside it."""
    try:
        specification = _specification(schema, param)
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator_class.check_schema(dict(schema))
        _check_ref_loops(_check_refs(schema, specification, param), specification, param)
    except BadRequest:
        raise
    except jsonschema.exceptions.SchemaError as exc:
        raise BadRequest(f"{param} is not a valid JSON Schema: {_short(exc.message)}", param=param) from None
    except RecursionError:
        raise BadRequest(f"{param} is nested too deeply to check", param=param) from None
    except Exception as exc:  # a library edge case on client input is still the client's schema: 400, not 500
        raise BadRequest(f"{param} could not be checked ({type(exc).__name__})", param=param) from None


def check_output_tokens(profile: RequestProfile, body: Mapping[str, Any], config: RouterConfig) -> None:
    """Raise ContextLengthExceeded when an output limit the client sent exceeds every context window.

    Both parameters are judged when both are sent: an upstream may honour either.
    """
    if profile.kind == "embeddings":
        return
    largest = max(endpoint.max_context_tokens for endpoint in config.endpoints)
    for param in OUTPUT_TOKEN_PARAMS:
        value = body.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{param}' must be a positive integer", param=param)
        if value > largest:
            raise ContextLengthExceeded(
                f"'{param}' is {value}, but the largest context window of any endpoint of "
                f"policy {config.policy.name} is {largest} tokens",
                param=param,
            )


def check_fits_a_window(profile: RequestProfile, config: RouterConfig) -> None:
    """Raise ContextLengthExceeded when input plus output exceed the context window of every endpoint.

    Judged on the windows alone, before routing: whatever else would keep an endpoint from the
    request (privacy, breakers, budget), a request that fits no endpoint of the policy at all is the
    client's to shorten. One that fits an endpoint it may not use (a private request that fits only
    the cloud) is not: routing refuses it with its own reason.
    """
    needed = profile.input_tokens + profile.max_output_tokens
    if any(needed <= endpoint.max_context_tokens for endpoint in config.endpoints):
        return
    windows = ", ".join(f"{endpoint.name}: {endpoint.max_context_tokens}" for endpoint in config.endpoints)
    raise ContextLengthExceeded(
        f"the request needs {profile.input_tokens} input + {profile.max_output_tokens} output tokens, more than "
        f"the context window of every endpoint of policy {config.policy.name} ({windows} tokens)",
        param=INPUT_PARAM[profile.kind],
    )


def _count_nodes(schema: Mapping[str, Any]) -> int:
    """Objects in `schema`, counted iteratively (a deep one costs no stack)."""
    count, stack = 0, [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += 1
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _function_parameters(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(param, schema) of every function declared with `parameters` (tools of type function, legacy functions)."""
    found: list[tuple[str, Any]] = []
    tools = body.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" in function:
            found.append((f"tools[{index}].function.parameters", function["parameters"]))
    functions = body.get("functions")
    for index, function in enumerate(functions if isinstance(functions, list) else ()):
        if isinstance(function, dict) and "parameters" in function:
            found.append((f"functions[{index}].parameters", function["parameters"]))
    return found


def _specification(schema: Mapping[str, Any], param: str) -> Specification[Any]:
    dialect = schema.get("$schema")
    if dialect is None:
        return DRAFT202012
    if not isinstance(dialect, str):
        raise BadRequest(f"{param}.$schema must be a string", param=param)
    try:
        return specification_with(dialect)
    except UnknownDialect:
        raise BadRequest(f"{param}.$schema names an unknown dialect", param=param) from None


def _check_refs(schema: Mapping[str, Any], specification: Specification[Any], param: str) -> list[tuple[Any, Any]]:
    """Every `$ref` must resolve within the schema (walked iteratively: depth costs no stack).

    Returns every subschema visited with the resolver it is read with (for `_check_ref_loops`).
    """
    root = specification.create_resource(schema)
    stack: list[tuple[Any, Any]] = [(schema, Registry().resolver_with_root(root))]
    visited: list[tuple[Any, Any]] = []
    while stack:
        node, resolver = stack.pop()
        if isinstance(node, list):
            stack.extend((item, resolver) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        visited.append((node, resolver))
        resolver = resolver.in_subresource(specification.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise BadRequest(
                    f"{param} has a $ref that does not resolve within the schema: {_short(ref)}", param=param
                ) from None
        stack.extend((value, resolver) for key, value in node.items() if key not in _DATA_KEYWORDS)
    return visited


def _check_ref_loops(subschemas: list[tuple[Any, Any]], specification: Specification[Any], param: str) -> None:
    """Refuse a `$ref` loop that never descends into the value (`a` -> `b` -> `a`, `{"allOf": [{"$ref": "#"}]}`).

    Validating one would recurse on the same value forever. A recursive schema that descends (a tree:
    `{"properties": {"children": {"items": {"$ref": "#"}}}}`) is fine: each step reads a smaller value.
    Only the edges that apply a schema to the same value are followed: `$ref` and the in-place
    applicators. Depth-first from every subschema, iteratively, once `_check_refs` proved every `$ref`
    resolves.
    """
    done: set[int] = set()
    on_path: set[int] = set()
    for start, start_resolver in subschemas:
        stack: list[tuple[Any, Any, bool]] = [(start, start_resolver, False)]
        while stack:
            node, resolver, leaving = stack.pop()
            if leaving:
                on_path.discard(id(node))
                done.add(id(node))
                continue
            if id(node) in on_path:
                raise BadRequest(
                    f"{param} has a $ref loop that never descends into the value (validating it would never end)",
                    param=param,
                )
            if id(node) in done or not isinstance(node, dict):
                continue
            on_path.add(id(node))
            stack.append((node, resolver, True))
            stack.extend(
                (child, child_resolver, False) for child, child_resolver in _in_place(node, resolver, specification)
            )


def _in_place(node: dict[str, Any], resolver: Any, specification: Specification[Any]) -> list[tuple[Any, Any]]:
    """The subschemas `node` applies to the value it validates itself: its `$ref` target and in-place applicators."""
    resolver = resolver.in_subresource(specification.create_resource(node))
    found: list[tuple[Any, Any]] = []
    ref = node.get("$ref")
    if isinstance(ref, str):
        resolved = resolver.lookup(ref)
        found.append((resolved.contents, resolved.resolver))
    for key in _IN_PLACE_LISTS:
        listed = node.get(key)
        if isinstance(listed, list):
            found.extend((sub, resolver) for sub in listed)
    found.extend((node[key], resolver) for key in _IN_PLACE_SINGLE if isinstance(node.get(key), dict))
    return found


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."
