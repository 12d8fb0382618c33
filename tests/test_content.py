"""What the privacy detectors read: every string of the body (any key, any depth), joined parts,
numbers, forwarded header values; and the fail-closed rule for content they cannot read."""

from __future__ import annotations

from typing import Any

import pytest

from hybridroute_router.config import EndpointConfig, PrivacyConfig, RegexDetector, RouterConfig
from hybridroute_router.content import SEAM_CHARS, readable_content
from hybridroute_router.detectors import TEXT_SEPARATOR
from hybridroute_router.profile import build_profile
from hybridroute_router.proxy import FORWARDED_CLIENT_HEADERS, upstream_headers

LOCAL = EndpointConfig(name="local", type="local", base_url="http://127.0.0.1:9/v1", model="m")
EMAIL = "jane.doe@example.com"
ALL_BUILTINS = PrivacyConfig(builtin_detectors=["email", "phone", "card", "nationalId"])


def config(privacy: PrivacyConfig = ALL_BUILTINS) -> RouterConfig:
    return RouterConfig(endpoints=[LOCAL], privacy=privacy)


def user(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": list(messages) or [user()], **extra}


def function_tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}, **function}}


# Every location the issue saw PII leave through, and the other members of the class found on the way.
LOCATIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "legacy function_call.arguments",
        "chat",
        chat(user(), {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": EMAIL}}),
    ),
    (
        "tool_calls arguments as a JSON object",
        "chat",
        chat(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"to": EMAIL}}}],
            }
        ),
    ),
    ("completions suffix", "completions", {"model": "auto", "prompt": "hi", "suffix": EMAIL}),
    ("messages[].name", "chat", chat(user(name=EMAIL))),
    ("user", "chat", chat(user=EMAIL)),
    ("tool description", "chat", chat(tools=[function_tool(description=f"mails {EMAIL}")])),
    ("tool name", "chat", chat(tools=[function_tool(name=EMAIL)])),
    (
        "tool parameter schema",
        "chat",
        chat(tools=[function_tool(parameters={"type": "object", "properties": {"to": {"default": EMAIL}}})]),
    ),
    ("prediction.content", "chat", chat(prediction={"type": "content", "content": EMAIL})),
    (
        "response_format schema text",
        "chat",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object", "description": f"for {EMAIL}"}},
            }
        ),
    ),
    (
        "e-mail split across two text parts",
        "chat",
        chat(user([_p := {"type": "text", "text": "jane.doe@exa"}, {"type": "text", "text": "mple.com"}])),
    ),
    (
        "e-mail split across two messages",
        "chat",
        chat(user("write to jane.doe@exa"), user("mple.com please")),
    ),
    (
        "e-mail split across the text parts of two messages",
        "chat",
        chat(user([{"type": "text", "text": "jane.doe"}]), user([{"type": "text", "text": "@example.com"}])),
    ),
    (
        "e-mail cut into three messages, the middle one short",
        "chat",
        chat(user("mail jane.doe"), user("@"), user("example.com today")),
    ),
    (  # read glued to "room 12", the card would be "room 125500-0000-…", which is no card
        "card split across two messages after one that ends in digits",
        "chat",
        chat(user("room 12"), user("5500-0000"), user("-0000-0004")),
    ),
    (
        "card split across two text parts after one that ends in digits",
        "chat",
        chat(user([{"type": "text", "text": text} for text in ("room 12", "5500-0000", "-0000-0004")])),
    ),
    (
        "e-mail split between two long messages",
        "chat",
        chat(user("word " * 400 + "jane.doe@exa"), user("mple.com " + "word " * 400)),
    ),
    ("metadata value", "chat", chat(metadata={"customer": EMAIL})),
    ("metadata key", "chat", chat(metadata={EMAIL: "x"})),
    ("stop sequence", "chat", chat(stop=["\n", EMAIL])),
    ("tool message content", "chat", chat({"role": "tool", "tool_call_id": "c1", "content": EMAIL})),
    ("assistant refusal part", "chat", chat({"role": "assistant", "content": [{"type": "refusal", "refusal": EMAIL}]})),
    ("image url text", "chat", chat(user([{"type": "image_url", "image_url": {"url": f"https://x.test/{EMAIL}"}}]))),
    ("embeddings input list", "embeddings", {"model": "auto", "input": ["a", EMAIL]}),
    ("tool_choice function name", "chat", chat(tool_choice={"type": "function", "function": {"name": EMAIL}})),
    ("a field OpenAI has not defined yet", "chat", chat(future_field={"deep": [{"deeper": EMAIL}]})),
    ("card number sent as a JSON number", "chat", chat(metadata={"card": 4111111111111111})),
    ("phone split across prompt strings", "completions", {"model": "auto", "prompt": ["+1 (555) 12", "3-4567"]}),
    # Values of the API's enum-like and numeric settings are forwarded as sent, so they are read too.
    ("card number as the seed", "chat", chat(seed=4111111111111111)),
    ("card number as a completion's n", "completions", {"model": "m", "prompt": "hi", "n": 4111111111111111}),
    ("a message role", "chat", chat({"role": EMAIL, "content": "hi"})),
    ("service_tier", "chat", chat(service_tier=EMAIL)),
    ("reasoning_effort", "chat", chat(reasoning_effort=EMAIL)),
    ("audio voice", "chat", chat(audio={"voice": EMAIL, "format": "wav"})),
    ("modalities", "chat", chat(modalities=["text", EMAIL])),
    ("a content part's type", "chat", chat(user([{"type": EMAIL, "text": "hi"}]))),
    ("embeddings encoding_format", "embeddings", {"model": "auto", "input": "hi", "encoding_format": EMAIL}),
    ("a model key inside metadata", "chat", chat(metadata={"model": EMAIL})),
    ("a type key inside metadata", "chat", chat(metadata={"type": EMAIL})),
    ("stream_options", "chat", chat(stream_options={"include_usage": EMAIL})),
    (
        "tool arguments as JSON text with an escaped at sign",
        "chat",
        chat(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"to": "jane\\u0040example.com"}'},
                    }
                ],
            }
        ),
    ),
    ("a JSON-schema format", "chat", chat(tools=[function_tool(parameters={"type": "string", "format": EMAIL})])),
]


@pytest.mark.parametrize(
    ("kind", "body"), [(kind, body) for _, kind, body in LOCATIONS], ids=[i for i, _, _ in LOCATIONS]
)
def test_pii_anywhere_in_the_body_makes_the_request_sensitive(kind: Any, body: dict[str, Any]) -> None:
    profile = build_profile(
        kind, body, {}, config(PrivacyConfig(builtin_detectors=["email", "phone", "card"], unreadable_content="ignore"))
    )
    assert profile.sensitive
    assert any(reason.startswith("detector:") for reason in profile.sensitive_reasons)


def test_what_is_read_across_messages_is_bounded_by_the_seams_not_the_conversation() -> None:
    long_messages = [user("word " * 2000) for _ in range(10)]

    found = readable_content(chat(*long_messages))

    conversation = sum(len(message["content"]) for message in long_messages)
    seams = 9 * (2 * SEAM_CHARS + len(TEXT_SEPARATOR))
    assert conversation < sum(map(len, found.texts)) <= conversation + seams + 100


def test_every_forwarded_value_is_read_and_only_the_rewritten_model_is_not() -> None:
    found = readable_content(
        {
            "model": "4111111111111111",  # replaced by the endpoint's model before sending
            "seed": 4111111111111111,
            "temperature": 0.5,
            "messages": [{"role": "developer", "content": "hi"}],
            "metadata": {"model": "5555555555554444"},
            "response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"type": {}}}}},
        }
    )
    assert "4111111111111111" in found.texts  # from the seed, not the model
    assert {"developer", "hi", "5555555555554444", "json_schema", "0.5"} <= set(found.texts)
    assert found.texts.count("4111111111111111") == 1
    assert not {"model", "role", "type", "seed", "properties"} & set(found.texts)  # the API's field names


def test_a_new_setting_is_scanned() -> None:
    found = readable_content({"model": "m", "brand_new_setting": "value"})
    assert "value" in found.texts


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    body: Any = EMAIL
    for _ in range(5_000):
        body = {"k": [body]}
    assert EMAIL in readable_content({"metadata": body}).texts


@pytest.mark.parametrize(
    ("kind", "body", "unreadable"),
    [
        ("completions", {"model": "auto", "prompt": [1, 2, 3]}, "token-ids"),
        ("completions", {"model": "auto", "prompt": [[1, 2], [3]]}, "token-ids"),
        ("embeddings", {"model": "auto", "input": [42]}, "token-ids"),
        ("chat", chat(user([{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}])), "image"),
        ("chat", chat(user([{"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}])), "audio"),
        ("chat", chat(user([{"type": "file", "file": {"file_id": "file-1"}}])), "file"),
        ("chat", chat(user(), metadata={"blob": "data:application/octet-stream;base64,AAEC"}), "base64"),
        ("chat", chat(user(), metadata={"blob": " DATA:Application/Octet-Stream;BASE64,AAEC"}), "base64"),
    ],
)
def test_content_the_detectors_cannot_read_fails_closed_by_default(kind: Any, body: Any, unreadable: str) -> None:
    assert build_profile(kind, body, {}, config()).sensitive_reasons == (f"unreadable:{unreadable}",)
    ignore = config(PrivacyConfig(builtin_detectors=["email"], unreadable_content="ignore"))
    assert not build_profile(kind, body, {}, ignore).sensitive
    no_detectors = config(PrivacyConfig())  # nothing is scanned, so nothing is unreadable
    assert not build_profile(kind, body, {}, no_detectors).sensitive


@pytest.mark.parametrize(
    "url",
    [
        "data:text/plain;base64,amFuZS5kb2VAZXhhbXBsZS5jb20=",
        "data:;base64,amFuZS5kb2VAZXhhbXBsZS5jb20=",
        "Data:Text/Plain;Base64,amFuZS5kb2VAZXhhbXBsZS5jb20=",
        "data:application/json;charset=utf-8;base64,eyJ0byI6ICJqYW5lLmRvZUBleGFtcGxlLmNvbSJ9",
    ],
)
def test_base64_text_is_decoded_and_read(url: str) -> None:
    ignore = config(PrivacyConfig(builtin_detectors=["email"], unreadable_content="ignore"))
    body = chat(user([{"type": "text", "text": "see"}, {"type": "file", "file": {"file_data": url}}]))
    assert build_profile("chat", body, {}, ignore).sensitive_reasons == ("detector:email",)
    assert build_profile("chat", chat(metadata={"blob": url}), {}, config()).sensitive_reasons == ("detector:email",)


def test_mixed_prompt_scans_strings_and_notes_token_ids() -> None:
    found = readable_content({"model": "m", "prompt": ["hello", [1, 2]]})
    assert "hello" in found.texts
    assert found.unreadable == {"token-ids"}


def test_forwarded_header_values_are_scanned_and_the_rest_never_leave() -> None:
    headers = [("x-request-id", f"req-{EMAIL}"), ("content-type", "application/json")]
    assert build_profile("chat", chat(), headers, config()).sensitive_reasons == ("detector:email",)
    custom = [("x-end-user", EMAIL), ("x-stainless-os", "Linux"), ("openai-organization", "org-1")]
    assert build_profile("chat", chat(), [("user-agent", f"app/1 ({EMAIL})")], config()).sensitive
    assert not build_profile("chat", chat(), custom, config()).sensitive
    sent = upstream_headers([*custom, ("authorization", "Bearer client"), ("cookie", "c=1"), ("accept", "*/*")], "k")
    assert sent == {"accept": "*/*", "content-type": "application/json", "authorization": "Bearer k"}
    assert {"accept", "openai-beta", "user-agent", "x-request-id"} == FORWARDED_CLIENT_HEADERS


def test_custom_regex_detectors_read_every_field_too() -> None:
    privacy = PrivacyConfig(detectors=[RegexDetector(name="project", pattern=r"Falcon-\d+")])
    body = chat(tools=[function_tool(description="about Falcon-7")])
    assert build_profile("chat", body, {}, config(privacy)).sensitive_reasons == ("detector:project",)


def test_anchored_custom_detectors_still_match_any_one_field() -> None:
    privacy = PrivacyConfig(detectors=[RegexDetector(name="account", pattern=r"^ACME-\d{4}$")])
    body = chat(user("first"), user("ACME-1234"), metadata={"k": "v"})
    assert build_profile("chat", body, {}, config(privacy)).sensitive_reasons == ("detector:account",)
