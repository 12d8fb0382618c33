"""Hypothesis strategies for whole OpenAI request bodies, and for placing one PII value anywhere in one.

`requests()` draws a chat, completions or embeddings body using the fields the API defines (messages
of every role with names and content parts of every type, assistant audio and refusals, tool calls
with string or object arguments, legacy function calls, function and custom tools with descriptions,
JSON-schema parameters and grammars, tool_choice in every form, response_format json_schema,
prediction as text or parts, user, safety_identifier, prompt_cache_key, metadata, stop, logit_bias,
web_search_options, audio, modalities, verbosity, suffix, stream with stream_options, sampling
settings) in shapes the router accepts. Filler text is letters and spaces only, so nothing in it
looks like PII.

`PlacedPII` puts one PII value at a drawn place: replacing any string leaf the router forwards (an
enum-like value such as a `role` or a `service_tier` included; only the top-level `model` is
rewritten, so never forwarded), as a new key or value in any object, as a JSON number (a new key,
or the `seed`), as the value of a top-level setting, split across two text parts of one message or
across two messages in a row, or in a client header (forwarded and scanned: x-request-id,
user-agent; or dropped: x-end-user).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ ", min_size=1, max_size=24)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
PII_TEXT = [
    "jane.doe@example.com",
    "j.smith+billing@mail.example.co.uk",
    "jane [at] example [dot] org",
    "bob(at)corp.io",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "6011.0009.9013.9424",
    "3782 822463 10005",
    "ref-4111111111111111",
    "SSN-123-45-6789",
    "ssn: 123456789",
    "+1 (555) 123-4567",
    "+4915112345678",
]
PII_NUMBERS = [4111111111111111, 5500000000000004]
SETTINGS = {
    "chat": ["seed", "service_tier", "reasoning_effort", "verbosity", "safety_identifier", "prompt_cache_key"],
    "completions": ["seed", "user", "service_tier"],
    "embeddings": ["encoding_format", "user"],
}
"""Top-level settings the router forwards without validating them, per kind: where `setting` puts PII."""


def schemas(depth: int = 2) -> Any:
    leaf = st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "integer", "boolean"])}, optional={"description": WORDS}
    )
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(NAMES, schemas(depth - 1), max_size=3)},
            optional={"description": WORDS, "required": st.lists(NAMES, max_size=2)},
        ),
        st.fixed_dictionaries({"type": st.just("array"), "items": schemas(depth - 1)}),
    )


arguments = st.one_of(
    st.dictionaries(NAMES, WORDS, max_size=3).map(lambda args: orjson.dumps(args).decode()),
    st.dictionaries(NAMES, WORDS, max_size=3),  # some clients send a JSON object, not its text
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": NAMES.map(lambda name: f"call_{name}"),
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": NAMES, "arguments": arguments}),
        }
    ),
    min_size=1,
    max_size=2,
)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": WORDS})
text_parts = st.lists(text_part, min_size=1, max_size=2)
image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries(
            {"url": st.sampled_from(["https://img.test/a.png", "data:image/png;base64,iVBORw0KGgo="])},
            optional={"detail": st.sampled_from(["low", "high", "auto"])},
        ),
    }
)
audio_part = st.fixed_dictionaries(
    {
        "type": st.just("input_audio"),
        "input_audio": st.fixed_dictionaries({"data": st.just("UklGRiQAAABXQVZF"), "format": st.just("wav")}),
    }
)
file_part = st.fixed_dictionaries(
    {
        "type": st.just("file"),
        "file": st.one_of(
            st.fixed_dictionaries({"file_id": NAMES.map(lambda name: f"file-{name}")}),
            st.fixed_dictionaries(
                {"filename": NAMES, "file_data": st.just("data:application/pdf;base64,JVBERi0xLjQ=")}
            ),
        ),
    }
)
parts = st.lists(st.one_of(text_part, text_part, image_part, audio_part, file_part), min_size=1, max_size=3)
user_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "developer"]), "content": st.one_of(WORDS, parts)},
    optional={"name": NAMES},
)
assistant_message = st.fixed_dictionaries(
    {
        "role": st.just("assistant"),
        "content": st.one_of(
            st.none(),
            WORDS,
            st.lists(st.one_of(text_part, st.fixed_dictionaries({"type": st.just("refusal"), "refusal": WORDS}))),
        ),
    },
    optional={
        "name": NAMES,
        "tool_calls": tool_calls,
        "function_call": st.fixed_dictionaries({"name": NAMES, "arguments": arguments}),
        "refusal": st.one_of(st.none(), WORDS),
        "audio": st.fixed_dictionaries({"id": NAMES.map(lambda name: f"audio_{name}")}),
    },
)
tool_message = st.fixed_dictionaries(
    {
        "role": st.just("tool"),
        "tool_call_id": NAMES.map(lambda name: f"call_{name}"),
        "content": st.one_of(WORDS, text_parts),
    }
)
function_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": NAMES}, optional={"description": WORDS, "parameters": schemas(), "strict": st.booleans()}
        ),
    }
)
custom_tool = st.fixed_dictionaries(
    {
        "type": st.just("custom"),
        "custom": st.fixed_dictionaries(
            {"name": NAMES},
            optional={
                "description": WORDS,
                "format": st.one_of(
                    st.just({"type": "text"}),
                    st.fixed_dictionaries(
                        {
                            "type": st.just("grammar"),
                            "grammar": st.fixed_dictionaries(
                                {"definition": WORDS, "syntax": st.sampled_from(["lark", "regex"])}
                            ),
                        }
                    ),
                ),
            },
        ),
    }
)
tools = st.lists(st.one_of(function_tool, function_tool, custom_tool), min_size=1, max_size=2)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": NAMES})}),
    st.fixed_dictionaries({"type": st.just("custom"), "custom": st.fixed_dictionaries({"name": NAMES})}),
    st.fixed_dictionaries(
        {
            "type": st.just("allowed_tools"),
            "allowed_tools": st.fixed_dictionaries(
                {
                    "mode": st.sampled_from(["auto", "required"]),
                    "tools": st.lists(
                        st.fixed_dictionaries(
                            {"type": st.just("function"), "function": st.fixed_dictionaries({"name": NAMES})}
                        ),
                        min_size=1,
                        max_size=2,
                    ),
                }
            ),
        }
    ),
)
web_search_options = st.fixed_dictionaries(
    {},
    optional={
        "search_context_size": st.sampled_from(["low", "medium", "high"]),
        "user_location": st.fixed_dictionaries(
            {
                "type": st.just("approximate"),
                "approximate": st.fixed_dictionaries(
                    {}, optional={"city": WORDS, "country": st.just("DE"), "region": WORDS, "timezone": WORDS}
                ),
            }
        ),
    },
)
response_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": NAMES, "schema": schemas()}, optional={"description": WORDS, "strict": st.booleans()}
            ),
        }
    ),
)
COMMON = {
    "user": WORDS,
    "safety_identifier": WORDS,
    "prompt_cache_key": WORDS,
    "metadata": st.dictionaries(NAMES, WORDS, max_size=3),
    "stop": st.one_of(WORDS, st.lists(WORDS, min_size=1, max_size=3)),
    "logit_bias": st.dictionaries(st.integers(0, 50_000).map(str), st.integers(-100, 100), max_size=3),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 2),
    "seed": st.integers(0, 2**53),
    "max_tokens": st.integers(1, 256),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
}
stream_fields = st.one_of(
    st.just({}),
    st.just({"stream": False}),
    st.fixed_dictionaries(
        {"stream": st.just(True)},
        optional={
            "stream_options": st.fixed_dictionaries(
                {}, optional={"include_usage": st.booleans(), "include_obfuscation": st.booleans()}
            )
        },
    ),
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    messages = draw(st.lists(st.one_of(user_message, assistant_message, tool_message), min_size=0, max_size=3))
    messages.append(draw(user_message))  # a conversation ends with the asker
    optional = {
        **COMMON,
        "tools": tools,
        "tool_choice": tool_choices,
        "functions": st.lists(
            st.fixed_dictionaries({"name": NAMES}, optional={"description": WORDS, "parameters": schemas()}),
            min_size=1,
            max_size=2,
        ),
        "function_call": st.one_of(st.sampled_from(["auto", "none"]), st.fixed_dictionaries({"name": NAMES})),
        "response_format": response_formats,
        "prediction": st.fixed_dictionaries({"type": st.just("content"), "content": st.one_of(WORDS, text_parts)}),
        "max_completion_tokens": st.integers(1, 256),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 5),
        "parallel_tool_calls": st.booleans(),
        "store": st.booleans(),
        "service_tier": st.sampled_from(["auto", "default"]),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "modalities": st.just(["text"]),
        "audio": st.fixed_dictionaries({"voice": st.just("alloy"), "format": st.just("wav")}),
        "verbosity": st.sampled_from(["low", "medium", "high"]),
        "prompt_cache_retention": st.sampled_from(["in-memory", "24h"]),
        "web_search_options": web_search_options,
    }
    body = draw(st.fixed_dictionaries({"model": st.just("auto"), "messages": st.just(messages)}, optional=optional))
    return {**body, **draw(stream_fields)}


prompts = st.one_of(
    WORDS,
    st.lists(WORDS, min_size=1, max_size=3),
    st.lists(st.integers(0, 50_000), min_size=1, max_size=8),
    st.lists(st.lists(st.integers(0, 50_000), min_size=1, max_size=4), min_size=1, max_size=2),
)


@st.composite
def completion_bodies(draw: st.DrawFn) -> dict[str, Any]:
    optional = {**COMMON, "suffix": WORDS, "echo": st.booleans(), "best_of": st.integers(1, 2)}
    body = draw(st.fixed_dictionaries({"model": st.just("auto"), "prompt": prompts}, optional=optional))
    return {**body, **draw(stream_fields)}


embedding_bodies = st.fixed_dictionaries(
    {"model": st.just("auto"), "input": prompts},
    optional={
        "user": WORDS,
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, 64),
    },
)
KIND_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}


def requests() -> Any:
    """(kind, body) for any of the three proxied APIs."""
    return st.one_of(
        st.tuples(st.just("chat"), chat_bodies()),
        st.tuples(st.just("completions"), completion_bodies()),
        st.tuples(st.just("embeddings"), embedding_bodies),
    )


def text_leaves(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every string the router forwards: all of them but the top-level `model` (rewritten)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if path or key != "model":
                found.extend(text_leaves(value, (*path, key)))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found.extend(text_leaves(value, (*path, index)))
    elif isinstance(body, str):
        found.append(path)
    return found


def objects(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every JSON object in the body (where a new key can go)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(body, dict):
        found.append(path)
        for key, value in body.items():
            found.extend(objects(value, (*path, key)))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found.extend(objects(value, (*path, index)))
    return found


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


@dataclass
class PlacedPII:
    """A request with one PII value placed somewhere (or none), and where it went."""

    kind: str
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)
    value: str | None = None
    where: str = "nowhere"
    in_forwarded_part: bool = False
    """The value is somewhere the router reads and could forward (body, x-request-id)."""


@st.composite
def placed_pii(draw: st.DrawFn, with_pii: bool = True) -> PlacedPII:
    kind, original = draw(requests())
    body = copy.deepcopy(original)
    placed = PlacedPII(kind, body)
    if not with_pii:
        return placed
    where = draw(
        st.sampled_from(
            ["leaf", "leaf", "leaf", "new-key", "new-value", "number", "setting", "split", "split-messages", "header"]
        )
    )
    value = draw(st.sampled_from(PII_TEXT))
    placed.value, placed.where, placed.in_forwarded_part = value, where, True
    leaves = text_leaves(body)
    split_targets = [
        path for path in leaves if kind == "chat" and len(path) == 3 and path[0] == "messages" and path[2] == "content"
    ] + [
        path[:-1] for path in leaves if kind == "chat" and len(path) == 5 and path[2] == "content" and path[4] == "text"
    ]
    if where == "leaf" and leaves:
        path = draw(st.sampled_from(leaves))
        _at(body, path[:-1])[path[-1]] = f"{draw(WORDS)} {value} {draw(WORDS)}"
        placed.where = "leaf:" + ".".join(str(step) for step in path)
    elif where == "split" and split_targets:
        path = draw(st.sampled_from(split_targets))
        cut = draw(st.integers(1, len(value) - 1))
        halves = [{"type": "text", "text": value[:cut]}, {"type": "text", "text": value[cut:]}]
        if path[-1] == "content":  # a string content becomes two parts
            _at(body, path[:-1])["content"] = halves
        else:
            content = _at(body, path[:-1])
            content[path[-1] : path[-1] + 1] = halves
    elif where == "split-messages" and kind == "chat":  # two messages in a row, each with half the value
        at = draw(st.integers(0, len(body["messages"])))
        cut = draw(st.integers(1, len(value) - 1))
        body["messages"][at:at] = [{"role": "user", "content": value[:cut]}, {"role": "user", "content": value[cut:]}]
    elif where == "number":
        target = _at(body, draw(st.sampled_from(objects(body))))
        target[draw(NAMES)] = draw(st.sampled_from(PII_NUMBERS))
        placed.value = None  # a JSON number: checked by the socket byte count, not by a string search
    elif where == "setting":  # a top-level setting's value: forwarded as sent, whatever the API expects there
        setting = draw(st.sampled_from(SETTINGS[kind]))
        if setting == "seed":
            body["seed"] = draw(st.sampled_from(PII_NUMBERS))
            placed.value = None
        else:
            body[setting] = value
        placed.where = f"setting:{setting}"
    elif where == "header":
        forwarded = draw(st.booleans())
        name = draw(st.sampled_from(["x-request-id", "user-agent"] if forwarded else ["x-end-user", "x-customer"]))
        placed.headers.append((name, f"req {value}"))
        placed.where, placed.in_forwarded_part = f"header:{name}", forwarded
    else:  # a new key, or a new value under a new key, in any object (the body included)
        target = _at(body, draw(st.sampled_from(objects(body))))
        if where == "new-key":
            target[f"{value}"] = draw(WORDS)
        else:
            target[f"x_{draw(NAMES)}"] = value
    return placed
