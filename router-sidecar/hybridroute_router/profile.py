"""What the router needs to know about one request before choosing where it goes.

`build_profile` validates an OpenAI-shaped body just enough to route it (wrong shapes raise
`ProfileError`, which the server turns into a 400 naming the offending parameter) and condenses it
into a `RequestProfile`: token estimates, tool and structured-output requests, privacy markers,
a complexity score and the client's latency budget.

Token estimate: about four characters per token for every text part, plus a small per-message
overhead and the serialized tool definitions (they occupy the context window too); token-id prompts
count one per id. Image parts are not counted; they only set `wants_vision`. The estimate is for
routing (context-window fit, cost ranking, rules), not for billing, and needs no tokenizer download.

Privacy (what makes a request sensitive; docs/privacy.md is the user's version):
- the privacy header: every occurrence and every comma-separated value is read; any value other than
  `public` (a configured one, an unknown one such as `true` or `1`, an empty one) makes it sensitive,
  so a client's typo or a duplicated header fails closed;
- `allRequestsSensitive`;
- a detector that matches any string of the body (content.py: every field, not a list of known ones)
  or the value of a client header that is forwarded upstream (proxy.FORWARDED_CLIENT_HEADERS);
- with any detector configured and `unreadableContent: sensitive` (the default), content the
  detectors cannot read: token-id prompts, image, audio and file parts, base64 data.

Privacy markers are reasons only (`header`, `policy`, `detector:<name>`, `unreadable:<kind>`); the
text that triggered a detector is never kept, so profiles can be logged and explained safely.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from .config import ComplexityConfig, HeaderMatch, PrivacyConfig, RouterConfig
from .content import readable_content
from .detectors import detectors_for
from .proxy import forwarded_client_headers

Kind = Literal["chat", "completions", "embeddings"]

LATENCY_BUDGET_HEADER: Final = "x-hybridroute-latency-budget-ms"
PUBLIC_VALUE: Final = "public"
"""The one privacy-header value that does not make a request sensitive."""
UNREADABLE_PREFIX: Final = "unreadable:"
CHARS_PER_TOKEN: Final = 4
MESSAGE_OVERHEAD_TOKENS: Final = 4
"""Role markers and separators a chat template adds around each message."""
DEFAULT_MAX_OUTPUT_TOKENS: Final = 256
"""Assumed output length when the client sets no limit (context-window fit and cost ranking)."""

_VISION_PART_TYPES: Final = frozenset({"image_url", "input_image", "image"})
_STRUCTURED_FORMATS: Final = frozenset({"json_schema", "json_object"})
_NUMERIC_PARAMS: Final = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


class ProfileError(ValueError):
    """The request body cannot be routed as sent; becomes an OpenAI-style 400 with `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class RequestProfile:
    """The routing-relevant facts about one request (no prompt text)."""

    kind: Kind
    model: str
    """Requested model alias."""
    stream: bool
    input_tokens: int
    """Estimated input tokens."""
    max_output_tokens: int
    """Requested output limit (max_tokens / max_completion_tokens) or DEFAULT_MAX_OUTPUT_TOKENS."""
    tool_count: int
    structured_output: bool
    """response_format json_schema or json_object."""
    json_schema: dict[str, Any] | None
    """The schema when json_schema was requested with one."""
    wants_vision: bool
    sensitive: bool
    sensitive_reasons: tuple[str, ...]
    """Why the request is sensitive: header, policy, detector:<name>. Never the matched text."""
    complexity: float
    """Score in 0..1 from the policy's complexity signals."""
    latency_budget_ms: int | None
    """From the x-hybridroute-latency-budget-ms header."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers with lower-cased names, for rule matching."""


@dataclass(slots=True)
class _Content:
    """What the body's text-bearing parts add up to."""

    texts: list[str] = field(default_factory=list)
    extra_tokens: int = 0
    wants_vision: bool = False


def header_matches(match: HeaderMatch, headers: Mapping[str, str]) -> bool:
    """True when the header is present (and, if values are listed, equals one, case-insensitively).

    `headers` must have lower-cased names.
    """
    value = headers.get(match.name.lower())
    if value is None:
        return False
    if not match.values:
        return True
    wanted = value.strip().lower()
    return any(wanted == candidate.lower() for candidate in match.values)


def privacy_header_says_sensitive(match: HeaderMatch, headers: Sequence[tuple[str, str]]) -> bool:
    """True when any occurrence of the privacy header carries any value but `public` (fail-closed).

    `headers` is every header line as sent (duplicates kept), names lower-cased. With no values
    configured, the header's presence is enough; otherwise the configured values are the documented
    ones, but an unknown value is sensitive too, never public.
    """
    name = match.name.lower()
    occurrences = [value for header, value in headers if header == name]
    if not occurrences:
        return False
    if not match.values:
        return True
    tokens = [token.strip().lower() for value in occurrences for token in value.split(",")]
    return any(token != PUBLIC_VALUE for token in tokens)


def build_profile(
    kind: Kind,
    body: Any,
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
    config: RouterConfig,
) -> RequestProfile:
    """Validate `body` enough to route it and describe it; raise ProfileError(param=...) on bad shapes.

    `headers`: the client's header lines (duplicates kept, as the privacy header needs) or a mapping.
    """
    if not isinstance(body, dict):
        raise ProfileError("request body must be a JSON object")
    lines = [(name.lower(), value) for name, value in (headers.items() if isinstance(headers, Mapping) else headers)]
    lowered = dict(lines)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProfileError("'model' must be a non-empty string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ProfileError("'stream' must be a boolean", param="stream")
    _check_numbers(body)

    tool_count, structured, schema = 0, False, None
    if kind == "chat":
        content = _chat_content(body.get("messages"))
        tool_count, tools_tokens = _tools(body)
        content.extra_tokens += tools_tokens
        structured, schema = _response_format(body.get("response_format"))
    elif kind == "completions":
        content = _token_input(body.get("prompt"), "prompt")
    else:
        content = _token_input(body.get("input"), "input")

    input_tokens = content.extra_tokens + sum(_estimate_tokens(text) for text in content.texts)
    max_output = 0 if kind == "embeddings" else _max_output_tokens(body)
    reasons = _sensitive_reasons(body, lines, config.privacy)
    return RequestProfile(
        kind=kind,
        model=model,
        stream=stream,
        input_tokens=input_tokens,
        max_output_tokens=max_output,
        tool_count=tool_count,
        structured_output=structured,
        json_schema=schema,
        wants_vision=content.wants_vision,
        sensitive=bool(reasons),
        sensitive_reasons=reasons,
        complexity=complexity_score(config.complexity, content.texts, input_tokens, tool_count, structured),
        latency_budget_ms=_latency_budget(lowered),
        headers=lowered,
    )


def complexity_score(
    cfg: ComplexityConfig, texts: list[str], input_tokens: int, tool_count: int, structured_output: bool
) -> float:
    """Base score plus the seeds' signals (reasoning keywords, long input, tools, schema), capped at 1."""
    score = cfg.base_score
    if _mentions_keyword(texts, _lowered_keywords(cfg)):
        score += cfg.keyword_weight
    if input_tokens > cfg.long_input_tokens:
        score += cfg.long_input_weight
    score += min(cfg.tools_cap, cfg.tools_weight * tool_count)
    if structured_output:
        score += cfg.schema_weight
    return min(1.0, round(score, 6))


def _mentions_keyword(texts: list[str], keywords: tuple[str, ...]) -> bool:
    """Any keyword at the start of a word ("reason" catches "reasoning", not "treason").

    Plain `str.find` on lower-cased text: several times faster than one case-insensitive regex
    alternation with a word boundary, and this runs on every request.
    """
    for text in texts:
        lowered = text.lower()
        for keyword in keywords:
            start = lowered.find(keyword)
            while start != -1:
                if start == 0 or not (lowered[start - 1].isalnum() or lowered[start - 1] == "_"):
                    return True
                start = lowered.find(keyword, start + 1)
    return False


_KEYWORDS_CACHE_SIZE: Final = 32
_keywords_by_config: dict[int, tuple[ComplexityConfig, tuple[str, ...]]] = {}


def _lowered_keywords(cfg: ComplexityConfig) -> tuple[str, ...]:
    """The config's keywords, lower-cased, once per config object (configs are frozen; the list in
    them makes them unhashable, hence the identity key, checked against the object it was made for)."""
    cached = _keywords_by_config.get(id(cfg))
    if cached is None or cached[0] is not cfg:
        if len(_keywords_by_config) >= _KEYWORDS_CACHE_SIZE:
            _keywords_by_config.clear()
        keywords = tuple(keyword.lower() for keyword in cfg.keywords if keyword.strip())
        cached = _keywords_by_config[id(cfg)] = (cfg, keywords)
    return cached[1]


def _estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _sensitive_reasons(
    body: dict[str, Any], headers: Sequence[tuple[str, str]], privacy: PrivacyConfig
) -> tuple[str, ...]:
    reasons: list[str] = []
    if privacy_header_says_sensitive(privacy.header, headers):
        reasons.append("header")
    if privacy.all_requests_sensitive:
        reasons.append("policy")
    detectors = detectors_for(privacy)
    if detectors.detectors:  # no detector configured: nothing to read, no walk on the hot path
        content = readable_content(body)
        content.texts.extend(value for _, value in forwarded_client_headers(headers))
        reasons.extend(detectors.scan(content.texts))
        if privacy.unreadable_content == "sensitive":
            reasons.extend(UNREADABLE_PREFIX + kind for kind in sorted(content.unreadable))
    return tuple(reasons)


def _chat_content(messages: Any) -> _Content:
    if not isinstance(messages, list) or not messages:
        raise ProfileError("'messages' must be a non-empty array", param="messages")
    content = _Content()
    texts = content.texts
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProfileError(f"'messages[{index}]' must be an object", param=f"messages[{index}]")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ProfileError(f"'messages[{index}].role' must be a non-empty string", param=f"messages[{index}].role")
        body = message.get("content")
        if body is None and "content" not in message and role != "assistant":
            raise ProfileError(f"'messages[{index}].content' is required", param=f"messages[{index}].content")
        content.extra_tokens += MESSAGE_OVERHEAD_TOKENS
        if isinstance(body, str) and "tool_calls" not in message:
            texts.append(body)  # the common case, without the generator below
        else:
            texts.extend(_message_texts(message, f"messages[{index}]", content))
    return content


def _message_texts(message: dict[str, Any], where: str, content: _Content) -> Iterator[str]:
    body = message.get("content")
    if isinstance(body, str):
        yield body
    elif isinstance(body, list):
        for index, part in enumerate(body):
            param = f"{where}.content[{index}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ProfileError(f"'{param}' must be an object with a string 'type'", param=param)
            if part["type"] in _VISION_PART_TYPES:
                content.wants_vision = True
            for key in ("text", "refusal"):
                if key in part:
                    if not isinstance(part[key], str):
                        raise ProfileError(f"'{param}.{key}' must be a string", param=f"{param}.{key}")
                    yield part[key]
    elif body is not None:
        raise ProfileError(f"'{where}.content' must be a string, an array of parts or null", param=f"{where}.content")
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return
    if not isinstance(tool_calls, list):
        raise ProfileError(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            yield arguments  # arguments carry user data too, so detectors must see them


def _token_input(value: Any, param: str) -> _Content:
    """prompt / input: a string, strings, token ids, or arrays of token ids (OpenAI's four shapes)."""
    content = _Content()
    if isinstance(value, str):
        content.texts.append(value)
        return content
    if not isinstance(value, list) or not value:
        raise ProfileError(f"'{param}' must be a string or a non-empty array", param=param)
    for index, item in enumerate(value):
        if isinstance(item, str):
            content.texts.append(item)
        elif _is_token_id(item):
            content.extra_tokens += 1
        elif isinstance(item, list) and all(_is_token_id(token) for token in item):
            content.extra_tokens += len(item)
        else:
            raise ProfileError(f"'{param}[{index}]' must be a string, a token id or an array of token ids", param=param)
    return content


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tools(body: dict[str, Any]) -> tuple[int, int]:
    """Number of declared tools (or legacy functions) and the tokens their definitions occupy."""
    count, tokens = 0, 0
    for param in ("tools", "functions"):
        declared = body.get(param)
        if declared is None:
            continue
        if not isinstance(declared, list) or not all(isinstance(tool, dict) for tool in declared):
            raise ProfileError(f"'{param}' must be an array of objects", param=param)
        count += len(declared)
        tokens += _estimate_tokens(orjson.dumps(declared).decode())
    return count, tokens


def _response_format(value: Any) -> tuple[bool, dict[str, Any] | None]:
    if value is None:
        return False, None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProfileError("'response_format' must be an object with a string 'type'", param="response_format")
    if value["type"] not in _STRUCTURED_FORMATS:
        return False, None
    if value["type"] == "json_object":
        return True, None
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise ProfileError("'response_format.json_schema' must be an object", param="response_format.json_schema")
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise ProfileError(
            "'response_format.json_schema.schema' must be an object", param="response_format.json_schema.schema"
        )
    return True, schema


def _check_numbers(body: dict[str, Any]) -> None:
    for param in _NUMERIC_PARAMS:
        value = body.get(param)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ProfileError(f"'{param}' must be a number", param=param)
    n = body.get("n")
    if n is not None and not (_is_token_id(n) and n >= 1):
        raise ProfileError("'n' must be a positive integer", param="n")


def _max_output_tokens(body: dict[str, Any]) -> int:
    for param in ("max_completion_tokens", "max_tokens"):
        value = body.get(param)
        if value is None:
            continue
        if not _is_token_id(value) or value < 1:
            raise ProfileError(f"'{param}' must be a positive integer", param=param)
        return int(value)
    return DEFAULT_MAX_OUTPUT_TOKENS


def _latency_budget(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(LATENCY_BUDGET_HEADER)
    if raw is None:
        return None
    try:
        budget = int(raw.strip())
    except ValueError:
        budget = 0
    if budget < 1:
        raise ProfileError(f"header {LATENCY_BUDGET_HEADER} must be a positive integer", param=LATENCY_BUDGET_HEADER)
    return budget
