"""Structured-output validation runs a client's schema regexes on RE2, never on Python's backtracking `re`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from hybridroute_router.executor import structured_output_valid
from hybridroute_router.schemaregex import validator_for
from tests.fixtures.upstreams import endpoint

EVIL = {"type": "object", "properties": {"code": {"type": "string", "pattern": "(a+)+$"}}, "required": ["code"]}
EVIL_ANSWER = {"code": "a" * 64 + "!"}
"""2^64 backtracking steps for Python's `re`; linear on RE2."""


def answer(content: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": orjson.dumps(content).decode()}}]}


@pytest.mark.parametrize(
    ("schema", "instance", "valid"),
    [
        ({"type": "string", "pattern": "^[A-Z]{3}-\\d+$"}, "ABC-42", True),
        ({"type": "string", "pattern": "^[A-Z]{3}-\\d+$"}, "abc-42", False),
        ({"patternProperties": {"^x-": {"type": "integer"}}}, {"x-a": 1, "y": "free"}, True),
        ({"patternProperties": {"^x-": {"type": "integer"}}}, {"x-a": "one"}, False),
        (
            {"properties": {"id": {}}, "patternProperties": {"^x-": {}}, "additionalProperties": False},
            {"id": 1, "x-note": 2},
            True,
        ),
        (
            {"properties": {"id": {}}, "patternProperties": {"^x-": {}}, "additionalProperties": False},
            {"id": 1, "other": 2},
            False,
        ),
        ({"additionalProperties": {"type": "integer"}}, {"a": 1, "b": "two"}, False),
    ],
)
def test_regex_keywords_keep_their_json_schema_meaning(schema: dict[str, Any], instance: Any, valid: bool) -> None:
    validator = validator_for(schema)
    assert validator is not None
    assert validator.is_valid(instance) is valid


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "(?=x)x"},
        {"patternProperties": {"^(a)\\1$": {}}},
        {"patternProperties": {"^x-": {}}, "unevaluatedProperties": False},
        # jsonschema collects "evaluated" keys with `re` through every applicator, not only next door
        {"unevaluatedProperties": False, "allOf": [{"patternProperties": {"^(a+)+$": {}}}]},
        {"unevaluatedProperties": False, "$ref": "#/$defs/keys", "$defs": {"keys": {"patternProperties": {"^x": {}}}}},
        {"unevaluatedProperties": False, "if": {"patternProperties": {"^x": {}}}, "then": {}},
        {"unevaluatedProperties": False, "dependentSchemas": {"a": {"patternProperties": {"^x": {}}}}},
        {"properties": {"o": {"anyOf": [{"patternProperties": {"^x": {}}}], "unevaluatedProperties": False}}},
    ],
)
def test_schemas_re2_cannot_check_are_left_unchecked(schema: dict[str, Any]) -> None:
    assert validator_for(schema) is None
    assert structured_output_valid(answer("anything"), schema) is True


def test_catastrophic_pattern_is_checked_in_linear_time() -> None:
    """In a child process, so a backtracking engine cannot hang the test run (a hang guard, not a speed bound)."""
    program = textwrap.dedent(
        f"""
        from hybridroute_router.executor import structured_output_valid
        print(structured_output_valid({answer(EVIL_ANSWER)!r}, {EVIL!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


NESTED_EVIL = {"type": "object", "unevaluatedProperties": False, "allOf": [{"patternProperties": {"^(a+)+$": {}}}]}
NESTED_EVIL_ANSWER = {"a" * 64 + "!": 1}
"""The catastrophic pattern reached through `allOf`: matched against the answer's keys."""


def test_catastrophic_pattern_behind_an_applicator_cannot_hang_the_check() -> None:
    """A hang guard in a child process, as above: the key search must never reach Python's `re`."""
    program = textwrap.dedent(
        f"""
        from hybridroute_router.executor import structured_output_valid
        print(structured_output_valid({answer(NESTED_EVIL_ANSWER)!r}, {NESTED_EVIL!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "True"  # left unchecked: the router cannot judge it safely


def test_router_answers_a_local_reply_steered_at_a_catastrophic_pattern(
    upstream_sim: Any, router_process: Any, sdk_client: Any, tmp_path: Path
) -> None:
    """The real CLI router: the answer comes back (flagged invalid), and the router keeps serving."""
    local = upstream_sim("local", content=orjson.dumps(EVIL_ANSWER).decode())
    path = tmp_path / "router.yaml"
    config = {"endpoints": [endpoint("local-a", local)], "fallback": {"validateStructuredOutput": True}}
    path.write_text(yaml.safe_dump(config))
    running = router_process(path)
    client = sdk_client(running, timeout=60)
    response_format = {"type": "json_schema", "json_schema": {"name": "code", "schema": EVIL}}

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "say a lot of a"}], response_format=response_format
    )

    assert raw.headers["x-hybridroute-structured-output"] == "invalid"
    assert len(local.requests) == 2  # asked once more, as validation failed
    plain = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert plain.headers["x-hybridroute-endpoint"] == "local-a"
