"""Request profile: body validation (-> 400 with param), token estimate, privacy markers, complexity."""

from __future__ import annotations

from typing import Any

import pytest

from hybridroute_router import pii
from hybridroute_router.config import (
    ComplexityConfig,
    EndpointConfig,
    HeaderMatch,
    PrivacyConfig,
    RegexDetector,
    RouterConfig,
)
from hybridroute_router.detectors import detectors_for
from hybridroute_router.pii import luhn_valid
from hybridroute_router.profile import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    ProfileError,
    build_profile,
    complexity_score,
)

LOCAL = EndpointConfig(name="local", type="local", base_url="http://127.0.0.1:9/v1", model="m")


def config(**sections: Any) -> RouterConfig:
    return RouterConfig(endpoints=[LOCAL], **sections)


def chat(*contents: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": c} for c in contents], **extra}


def test_chat_profile_counts_text_tokens_with_per_message_overhead() -> None:
    profile = build_profile("chat", chat("a" * 40, "b" * 41), {}, config())
    assert profile.kind == "chat"
    assert profile.model == "auto"
    assert profile.input_tokens == 10 + 11 + 2 * MESSAGE_OVERHEAD_TOKENS
    assert profile.max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS
    assert profile.stream is False
    assert not profile.sensitive
    assert profile.sensitive_reasons == ()


def test_image_parts_set_vision_and_only_text_parts_count() -> None:
    parts = [
        {"type": "text", "text": "x" * 8},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
    ]
    profile = build_profile("chat", chat(parts), {}, config())
    assert profile.wants_vision
    assert profile.input_tokens == 2 + MESSAGE_OVERHEAD_TOKENS


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    profile = build_profile("chat", chat("hi", max_tokens=10, max_completion_tokens=20), {}, config())
    assert profile.max_output_tokens == 20


def test_tools_and_json_schema_are_recorded_and_tool_definitions_count_as_input() -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": {}}} for i in range(3)]
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat(
        "hi", tools=tools, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    )
    profile = build_profile("chat", body, {}, config())
    bare = build_profile("chat", chat("hi"), {}, config())
    assert profile.tool_count == 3
    assert profile.structured_output
    assert profile.json_schema == schema
    assert profile.input_tokens > bare.input_tokens + 3 * 10


def test_json_object_is_structured_without_schema_and_text_format_is_not() -> None:
    as_object = build_profile("chat", chat("hi", response_format={"type": "json_object"}), {}, config())
    as_text = build_profile("chat", chat("hi", response_format={"type": "text"}), {}, config())
    assert (as_object.structured_output, as_object.json_schema) == (True, None)
    assert not as_text.structured_output


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [("abcdefgh", 2), (["abcd", "abcd"], 2), ([1, 2, 3], 3), ([[1, 2], [3, 4, 5]], 5)],
)
def test_completions_prompt_shapes(prompt: Any, tokens: int) -> None:
    profile = build_profile("completions", {"model": "auto", "prompt": prompt, "max_tokens": 7}, {}, config())
    assert profile.input_tokens == tokens
    assert profile.max_output_tokens == 7


def test_embeddings_need_no_output_tokens() -> None:
    profile = build_profile("embeddings", {"model": "auto", "input": ["abcd", "efgh"]}, {}, config())
    assert profile.kind == "embeddings"
    assert profile.input_tokens == 2
    assert profile.max_output_tokens == 0


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        ("chat", [], None),
        ("chat", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("chat", {"model": 3, "messages": []}, "model"),
        ("chat", {"model": "auto"}, "messages"),
        ("chat", {"model": "auto", "messages": []}, "messages"),
        ("chat", {"model": "auto", "messages": ["hi"]}, "messages[0]"),
        ("chat", {"model": "auto", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ("chat", {"model": "auto", "messages": [{"role": "user"}]}, "messages[0].content"),
        ("chat", {"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            "chat",
            {"model": "auto", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0]",
        ),
        (
            "chat",
            {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[0].content[0].text",
        ),
        ("chat", chat("x", stream="yes"), "stream"),
        ("chat", chat("x", max_tokens="10"), "max_tokens"),
        ("chat", chat("x", max_tokens=0), "max_tokens"),
        ("chat", chat("x", max_completion_tokens=True), "max_completion_tokens"),
        ("chat", chat("x", temperature="hot"), "temperature"),
        ("chat", chat("x", n=0), "n"),
        ("chat", chat("x", tools={"type": "function"}), "tools"),
        ("chat", chat("x", response_format="json"), "response_format"),
        ("chat", chat("x", response_format={"type": "json_schema"}), "response_format.json_schema"),
        ("completions", {"model": "auto"}, "prompt"),
        ("completions", {"model": "auto", "prompt": [1.5]}, "prompt"),
        ("embeddings", {"model": "auto", "input": []}, "input"),
        ("embeddings", {"model": "auto", "input": [[1, "a"]]}, "input"),
    ],
)
def test_malformed_bodies_raise_profile_error_naming_the_param(kind: Any, body: Any, param: str | None) -> None:
    with pytest.raises(ProfileError) as caught:
        build_profile(kind, body, {}, config())
    assert caught.value.param == param
    assert caught.value.message


def test_assistant_message_with_tool_calls_needs_no_content() -> None:
    message = {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    profile = build_profile("chat", {"model": "auto", "messages": [message]}, {}, config())
    assert profile.input_tokens == MESSAGE_OVERHEAD_TOKENS + 1


def test_privacy_header_matches_case_insensitively() -> None:
    cfg = config()
    marked = build_profile("chat", chat("hi"), {"X-HybridRoute-Privacy": "Restricted"}, cfg)
    other_value = build_profile("chat", chat("hi"), {"x-hybridroute-privacy": "public"}, cfg)
    assert marked.sensitive
    assert marked.sensitive_reasons == ("header",)
    assert marked.headers["x-hybridroute-privacy"] == "Restricted"
    assert not other_value.sensitive


@pytest.mark.parametrize(
    ("lines", "sensitive"),
    [
        ([("x-hybridroute-privacy", "private"), ("x-hybridroute-privacy", "public")], True),  # the last copy
        ([("x-hybridroute-privacy", "public"), ("x-hybridroute-privacy", "private")], True),  # does not win
        ([("x-hybridroute-privacy", "public, private")], True),
        ([("x-hybridroute-privacy", "private, internal")], True),
        ([("x-hybridroute-privacy", "true")], True),  # unknown values fail closed
        ([("x-hybridroute-privacy", "1")], True),
        ([("x-hybridroute-privacy", "")], True),
        ([("X-Hybridroute-Privacy", " PUBLIC ")], False),
        ([("x-hybridroute-privacy", "public"), ("x-hybridroute-privacy", "Public")], False),
        ([("x-other", "private")], False),
        ([("x-hybridroute-privacy", '"public"')], True),  # quoted: not the word public
        ([("x-hybridroute-privacy", "public;q=1")], True),
        ([("x-hybridroute-privacy", "public,")], True),  # an empty member is unknown, so private
        ([("x-hybridroute-privacy", "\uff50ublic")], True),  # a look-alike letter
        ([("x-hybridroute-privacy", "\tpublic\t")], False),
    ],
)
def test_privacy_header_reads_every_occurrence_and_value_and_fails_closed(
    lines: list[tuple[str, str]], sensitive: bool
) -> None:
    profile = build_profile("chat", chat("hi"), lines, config())
    assert profile.sensitive is sensitive
    assert profile.sensitive_reasons == (("header",) if sensitive else ())


def test_presence_only_header_and_policy_wide_flag() -> None:
    cfg = config(privacy=PrivacyConfig(header=HeaderMatch(name="x-tenant-eu"), all_requests_sensitive=True))
    profile = build_profile("chat", chat("hi"), {"x-tenant-eu": ""}, cfg)
    assert profile.sensitive_reasons == ("header", "policy")


def test_detectors_report_names_never_the_matched_text() -> None:
    privacy = PrivacyConfig(
        builtin_detectors=["email", "card"], detectors=[RegexDetector(name="ticket", pattern=r"TICKET-\d+")]
    )
    body = chat("mail me at jane.doe@example.com", "card 4111 1111 1111 1111, ref TICKET-42")
    profile = build_profile("chat", body, {}, config(privacy=privacy))
    assert profile.sensitive
    assert profile.sensitive_reasons == ("detector:email", "detector:card", "detector:ticket")
    assert "jane" not in repr(profile.sensitive_reasons)


def test_detectors_scan_tool_call_arguments_prompts_and_embedding_inputs() -> None:
    cfg = config(privacy=PrivacyConfig(builtin_detectors=["email"]))
    call = {"function": {"name": "send", "arguments": '{"to": "bob@example.org"}'}}
    chat_body = {"model": "auto", "messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    assert build_profile("chat", chat_body, {}, cfg).sensitive
    assert build_profile("completions", {"model": "auto", "prompt": ["x", "a@b.io"]}, {}, cfg).sensitive
    assert build_profile("embeddings", {"model": "auto", "input": "c@d.co"}, {}, cfg).sensitive
    assert not build_profile("embeddings", {"model": "auto", "input": "no address"}, {}, cfg).sensitive


@pytest.mark.parametrize(
    ("detector", "text", "found"),
    [
        ("email", "write to a.b+tag@mail.example.co.uk today", True),
        ("email", "user at example dot com", True),  # worded at with worded dots: an address, obfuscated
        ("email", "write to a [at] b [dot] com", True),
        ("email", "a(at)b.com", True),
        ("email", "jane {AT} example.org", True),
        ("email", "jane @ example.org", True),
        ("email", "jane\uff20example.org", True),  # fullwidth at sign
        ("email", "docs are available at docs.python.org", False),  # a worded at needs worded dots
        ("email", "meet at noon. dot your i's", False),
        ("phone", "call +1 (555) 123-4567", True),
        ("phone", "call 555-123-4567", True),
        ("phone", "call +4915112345678", True),
        ("phone", "on 2024-01-15 at 10.30", False),
        ("phone", "version 1.2.3 build 4567", False),
        ("phone", "call +49 151 12345678", True),
        ("phone", "server 192.168.100.254 is down", False),  # an IPv4 address, not a phone
        ("phone", "tag 1234-5678-90-12-345-67", False),  # part of a longer dashed run
        ("card", "4111111111111111", True),
        ("card", "5500-0000-0000-0004", True),
        ("card", "4111 1111 1111 1112", False),  # fails Luhn
        ("card", "order 1234567890123", False),
        ("card", "4111.1111.1111.1111", True),
        ("card", "4111/1111/1111/1111", True),
        ("card", "4111  1111  1111  1111", True),
        ("card", "ref-4111111111111111", True),  # right after a prefix
        ("card", "ref-4111-1111-1111-1111", True),
        ("card", "id:4111111111111111;", True),
        ("card", "3782 822463 10005", True),  # Amex 4-6-5
        ("card", "4111 1111 1111 1111 12/25", True),  # a card then its expiry
        ("card", "41-1111-1111-1111-11", False),  # Luhn-valid digits in a tag's grouping
        ("card", "tag 4111-1111-1111-1111-18", False),  # Luhn-valid 18 digits: a longer tag
        ("card", "build 83-4111-1111-1111-1111", False),  # part of a longer dashed run
        ("card", "serial 9111-1111-1111-1117", False),  # Luhn-valid but no card starts with 9
        ("card", "4111-1111.1111 1111", False),  # mixed separators: not how cards are printed
        ("nationalId", "SSN 123-45-6789", True),
        ("nationalId", "SSN 123 45 6789", True),
        ("nationalId", "SSN 000-45-6789", False),
        ("nationalId", "SSN 666-45-6789", False),
        ("nationalId", "SSN 123-00-6789", False),
        ("nationalId", "SSN 123-45 6789", False),
        ("nationalId", "part 2123-45-67890", False),
        ("nationalId", "SSN-123-45-6789", True),  # right after a prefix
        ("nationalId", "id=123.45.6789", True),
        ("nationalId", "ssn: 123456789", True),  # nine digits after an SSN label
        ("nationalId", "Social Security Number 123456789", True),
        ("nationalId", "order 123456789", False),  # nine digits without a label
        ("nationalId", "tag 12-123-45-6789", False),  # part of a longer dashed run
        # Other members of the classes: separators, prefixes, obfuscations, look-alikes.
        ("card", "4111_1111_1111_1111", True),  # underscores
        ("card", "4111\u00a01111\u00a01111\u00a01111", True),  # no-break spaces
        ("card", "4111\u20091111\u20091111\u20091111", True),  # thin spaces
        ("card", "card:4111111111111111", True),
        ("card", "cardno4111111111111111", True),
        ("card", "sent at 1718035200000 ms", False),  # epoch milliseconds: 13 digits starting with 1
        ("card", "IBAN DE89 3704 0044 0532 0130 00", False),
        ("card", "tag 41_1111_1111_1111_11", False),  # a tag's grouping with underscores
        ("nationalId", "123_45_6789", True),
        ("nationalId", "123/45/6789", True),
        ("nationalId", "my SSN is 123456789", True),
        ("nationalId", "SSN number: 123-45-6789", True),
        ("nationalId", "SSN#123456789", True),
        ("email", "jane[@]example[.]com", True),  # defanged
        ("email", "jane@example[.]com", True),
        ("email", "jane(@)example.com", True),
        ("email", "https://x.test/?u=jane.doe%40example.com", True),  # URL-encoded
        ("email", "jane&#64;example.com", True),  # HTML entities
        ("email", "jane&#x40;example.com", True),
        ("email", "jane&commat;example.com", True),
        ("email", "jane@b\u00fccher.de", True),  # an internationalised domain
        ("email", "100%40 of the time", False),
        ("phone", "logged at 2024-01-15 10:30:00", False),  # a date and time
        ("phone", "am 15.01.2024 10:30 Uhr", False),
        ("phone", "on 01/15/2024 10:30", False),
        ("phone", "call 555.123.4567", True),
        ("phone", "call tel:+15551234567", True),
    ],
)
def test_builtin_detectors(detector: Any, text: str, found: bool) -> None:
    detectors = detectors_for(PrivacyConfig(builtin_detectors=[detector]))
    assert detectors.scan([text]) == ((f"detector:{detector}",) if found else ())


@pytest.mark.parametrize(
    ("detector", "text"),
    [
        ("email", "jane\u200b.doe@exa\u200bmple.com"),  # zero-width spaces inside
        ("email", "jane\uff20example\uff0ecom"),  # fullwidth at and dot
        ("email", "jane.doe@exam\u00adple.com"),  # soft hyphen
        ("card", "\uff14\uff11\uff11\uff11 1111 1111 1111"),  # fullwidth digits
        ("card", "\u0664\u0661\u0661\u0661-1111-1111-1111"),  # Arabic-Indic digits
        ("nationalId", "SSN \u0967\u0968\u0969-45-6789"),  # Devanagari digits
        ("phone", "+1\u200b (555) 123-4567"),
    ],
)
def test_detectors_read_text_as_a_reader_sees_it(detector: Any, text: str) -> None:
    detectors = detectors_for(PrivacyConfig(builtin_detectors=[detector]))
    assert detectors.scan([text]) == (f"detector:{detector}",)


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("79927398713", True), ("79927398710", False), ("0", True), ("18", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_detector_sets_are_cached_per_privacy_content() -> None:
    first = detectors_for(PrivacyConfig(builtin_detectors=["email"]))
    second = detectors_for(PrivacyConfig(builtin_detectors=["email"]))
    assert first is second
    assert detectors_for(PrivacyConfig(builtin_detectors=["card"])) is not first


@pytest.mark.timeout(120)  # a hang guard for catastrophic backtracking, not a speed assertion (bench/ measures speed)
def test_long_digit_runs_are_not_taken_for_pii() -> None:
    detectors = detectors_for(PrivacyConfig(builtin_detectors=["email", "phone", "card", "nationalId"]))
    text = "7" * 200_000 + " " + "a" * 200_000
    assert detectors.scan([text]) == ()


def test_complexity_signals_add_up_and_cap_at_one() -> None:
    cfg = ComplexityConfig()
    assert complexity_score(cfg, ["hello"], 10, 0, False) == pytest.approx(0.2)
    assert complexity_score(cfg, ["Please REASONING about it"], 10, 0, False) == pytest.approx(0.6)
    assert complexity_score(cfg, ["treason"], 10, 0, False) == pytest.approx(0.2)
    assert complexity_score(cfg, ["hi"], 10, 2, True) == pytest.approx(0.5)
    assert complexity_score(cfg, ["hi"], 10, 9, False) == pytest.approx(0.5)  # tools capped at 0.3
    assert complexity_score(cfg, ["step by step plan"], 5_000, 5, True) == 1.0


def test_profile_complexity_uses_policy_config() -> None:
    cfg = config(complexity=ComplexityConfig(keywords=["refactor"], keyword_weight=0.5, base_score=0.0))
    assert build_profile("chat", chat("Refactor this"), {}, cfg).complexity == pytest.approx(0.5)
    assert build_profile("chat", chat("analyze this"), {}, cfg).complexity == pytest.approx(0.0)


def test_latency_budget_header() -> None:
    profile = build_profile("chat", chat("hi"), {"X-Hybridroute-Latency-Budget-Ms": "250"}, config())
    assert profile.latency_budget_ms == 250
    assert build_profile("chat", chat("hi"), {}, config()).latency_budget_ms is None
    with pytest.raises(ProfileError) as caught:
        build_profile("chat", chat("hi"), {"x-hybridroute-latency-budget-ms": "soon"}, config())
    assert caught.value.param == "x-hybridroute-latency-budget-ms"


@pytest.mark.parametrize("unit", ["%40", "a[@]", "a dot ", "x@y.", "&#64;"])
def test_email_sites_close_together_are_read_as_one_stretch(unit: str) -> None:
    """A text of nothing but at signs (or worded dots) is read once, not once per sign (that was
    quadratic: seconds for a 300 kB body on the event loop)."""
    text = unit * 50_000
    assert len(list(pii.EMAIL_SITES.finditer(text))) == 1
    assert detectors_for(PrivacyConfig(builtin_detectors=["email"])).scan([text + " jane@example.com"])
