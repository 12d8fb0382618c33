"""Client mistakes caught before routing: they are 400s, never a retryable 503 or a 500 later on.

- A `response_format` JSON schema must be a valid schema of a dialect the router knows, and every
  `$ref` in it must resolve inside the schema itself (nothing is fetched). Checked up front because
  the router validates local answers against it (`fallback.validateStructuredOutput`): a schema that
  breaks only then would fail after an endpoint already did the work.
- Output tokens (`max_tokens` / `max_completion_tokens`) larger than every endpoint's context window,
  or a request that the policy's context filter takes off every endpoint, fit nowhere: waiting or
  retrying cannot help, so it is the client's error (OpenAI's `context_length_exceeded`).

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
from .policy import Decision
from .profile import Kind, RequestProfile

SCHEMA_PARAM: Final = "response_format.json_schema.schema"
OUTPUT_TOKEN_PARAMS: Final = ("max_completion_tokens", "max_tokens")
INPUT_PARAM: Final[Mapping[Kind, str]] = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_DATA_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose values are instances, not schemas: a `$ref` key inside them is data."""
_MAX_DETAIL: Final = 200


def check_response_schema(schema: Mapping[str, Any]) -> None:
    """Raise BadRequest (param `response_format.json_schema.schema`) unless `schema` is usable."""
    try:
        specification = _specification(schema)
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator_class.check_schema(dict(schema))
        _check_refs(schema, specification)
    except BadRequest:
        raise
    except jsonschema.exceptions.SchemaError as exc:
        raise BadRequest(
            f"{SCHEMA_PARAM} is not a valid JSON Schema: {_short(exc.message)}", param=SCHEMA_PARAM
        ) from None
    except RecursionError:
        raise BadRequest(f"{SCHEMA_PARAM} is nested too deeply to check", param=SCHEMA_PARAM) from None
    except Exception as exc:  # a library edge case on client input is still the client's schema: 400, not 500
        raise BadRequest(f"{SCHEMA_PARAM} could not be checked ({type(exc).__name__})", param=SCHEMA_PARAM) from None


def check_output_tokens(profile: RequestProfile, body: Mapping[str, Any], config: RouterConfig) -> None:
    """Raise ContextLengthExceeded when the client's own output limit exceeds every context window."""
    param = next((name for name in OUTPUT_TOKEN_PARAMS if body.get(name) is not None), None)
    largest = max(endpoint.max_context_tokens for endpoint in config.endpoints)
    if param is not None and profile.max_output_tokens > largest:
        raise ContextLengthExceeded(
            f"'{param}' is {profile.max_output_tokens}, but the largest context window of any endpoint of "
            f"policy {config.policy.name} is {largest} tokens",
            param=param,
        )


def check_decision_fits(profile: RequestProfile, decision: Decision) -> None:
    """Raise ContextLengthExceeded when the context filter alone left the request without an endpoint."""
    rejected = decision.rejected
    if decision.candidates or not rejected or any(rejection.filter != "context" for rejection in rejected):
        return
    details = "; ".join(f"{rejection.endpoint}: {rejection.detail}" for rejection in rejected)
    raise ContextLengthExceeded(
        f"the request fits no endpoint's context window ({details})", param=INPUT_PARAM[profile.kind]
    )


def _specification(schema: Mapping[str, Any]) -> Specification[Any]:
    dialect = schema.get("$schema")
    if dialect is None:
        return DRAFT202012
    if not isinstance(dialect, str):
        raise BadRequest(f"{SCHEMA_PARAM}.$schema must be a string", param=SCHEMA_PARAM)
    try:
        return specification_with(dialect)
    except UnknownDialect:
        raise BadRequest(f"{SCHEMA_PARAM}.$schema names an unknown dialect", param=SCHEMA_PARAM) from None


def _check_refs(schema: Mapping[str, Any], specification: Specification[Any]) -> None:
    """Every `$ref` must resolve within the schema (walked iteratively: depth costs no stack)."""
    root = specification.create_resource(schema)
    stack: list[tuple[Any, Any]] = [(schema, Registry().resolver_with_root(root))]
    while stack:
        node, resolver = stack.pop()
        if isinstance(node, list):
            stack.extend((item, resolver) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        resolver = resolver.in_subresource(specification.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise BadRequest(
                    f"{SCHEMA_PARAM} has a $ref that does not resolve within the schema: {_short(ref)}",
                    param=SCHEMA_PARAM,
                ) from None
        stack.extend((value, resolver) for key, value in node.items() if key not in _DATA_KEYWORDS)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."
