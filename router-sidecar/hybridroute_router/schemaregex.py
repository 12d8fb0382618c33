"""JSON Schema validators whose regex keywords run on RE2: a client's schema is client input.

The router validates local structured-output answers against the client's `response_format` schema
(`fallback.validateStructuredOutput`). `jsonschema` evaluates `pattern`, `patternProperties` and the
pattern exclusions of `additionalProperties` with Python's backtracking `re`, so a schema such as
`{"pattern": "(a+)+$"}` plus an answer the client steers towards "aaaa…!" would stall the router's
event loop, and every request with it. Here those keywords run on RE2 (`regexengine`): linear time.

What RE2 cannot take (look-around, backreferences), and a schema with both `unevaluatedProperties`
and `patternProperties` anywhere in it, cannot be checked safely: `validator_for` returns None and
the caller treats the answer as unchecked. jsonschema decides which properties are "evaluated" with
`re.search` over every `patternProperties` it reaches from the `unevaluatedProperties` node, through
`allOf`/`anyOf`/`oneOf`, `$ref`, `if`/`then`/`else` and `dependentSchemas`; tracing those paths is
jsonschema's business, so any such pair in one schema is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from .regexengine import Matcher, PatternError, compile_pattern


def validator_for(schema: Mapping[str, Any]) -> Validator | None:
    """A validator for `schema` with RE2 regex keywords; None when it cannot be checked safely.

    Keyword functions take the validator as `Any`: jsonschema passes its concrete class, whose
    `descend` the `Validator` protocol does not declare.
    """
    if not _patterns_safe(schema):
        return None
    base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    keywords = {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional}
    extended: Any = jsonschema.validators.extend(base, keywords)  # type: ignore[no-untyped-call]
    validator: Validator = extended(dict(schema))
    return validator


def _patterns_safe(schema: Mapping[str, Any]) -> bool:
    stack: list[Any] = [schema]
    unevaluated = pattern_properties_seen = False
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        pattern_properties = node.get("patternProperties")
        if isinstance(pattern_properties, dict):
            pattern_properties_seen = True
            patterns.extend(pattern_properties)
        unevaluated = unevaluated or "unevaluatedProperties" in node
        if unevaluated and pattern_properties_seen:
            return False  # jsonschema would match these with `re` (see the module docstring)
        try:
            for pattern in patterns:
                _compiled(pattern)
        except PatternError:
            return False
        stack.extend(node.values())
    return True


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Matcher:
    return compile_pattern(pattern)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and _compiled(pattern).search(instance) is None:
        yield ValidationError(f"does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        matcher = _compiled(pattern)
        for key, value in instance.items():
            if matcher.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    matchers = [_compiled(pattern) for pattern in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in properties and not any(matcher.search(key) is not None for matcher in matchers)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        yield ValidationError(f"additional properties are not allowed ({len(extras)} unexpected)")
