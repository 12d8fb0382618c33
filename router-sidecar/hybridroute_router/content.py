"""What of a request the privacy detectors read: every string it carries, and what they cannot read.

`readable_content(body)` walks the whole JSON body (any key, any depth) and returns the texts a
detector must see, so a field OpenAI adds tomorrow is scanned by default:

- every string value, every object key but the API's own field names, and every number (as its
  digits: a card or phone number sent as a JSON number is still one), at any depth: messages and
  their `name`, content parts, `tool_calls[].function.arguments` as a string or as a JSON object,
  legacy `function_call`, tools with their names, descriptions and JSON-schema parameters,
  `response_format` schemas, `prediction`, `user`, `metadata`, `stop`, `suffix`, embeddings
  `input`, ...; one detector pass reads them all (detectors.py joins them);
- JSON `\\uXXXX` escapes left inside a string (tool arguments are JSON text) read decoded as well;
- the seams of the strings and text parts in one array, so a value split across two parts of a
  message (`"jane.doe@exa"`, `"mple.com"`) is read whole, and of the messages' texts in a
  conversation, so one split across two messages is too (`SEAM_CHARS` on each side of a cut);
- the values of enum-like fields and numeric settings too (`role`, `type`, `service_tier`,
  `seed`, ...): a value is read because it is forwarded, whatever the API says it should hold (a
  card number as a `seed`, an address as a nested `role`). Only the top-level `model`
  (`REWRITTEN_KEYS`) is not: the router replaces it before sending, so the client's value never
  leaves.

Content the detectors cannot read is reported by kind in `unreadable` (never its value):
`token-ids` (completions `prompt` / embeddings `input` as token ids), `image`, `audio` and `file`
parts, and base64 `data:` URLs other than text (a text/plain, JSON or XML one is decoded and read).
What that means for the privacy decision is the policy's
`privacy.unreadableContent` (see profile.py).

The walk uses an explicit stack, so a deeply nested body cannot exhaust Python's recursion limit.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Final

from .detectors import TEXT_SEPARATOR

SEAM_CHARS: Final = 64
"""How far on each side of a cut between two parts or messages a split value is read whole: every value
of up to this many characters (an e-mail address, a card, a phone number), wherever it is cut."""

REWRITTEN_KEYS: Final = frozenset({"model"})
"""Top-level keys whose value never leaves: the router replaces it (`model` becomes the endpoint's own
model, proxy.py) before sending, so it is not read. Every other value is, since every other value is
forwarded: an enum-like field (`role`, `service_tier`, `voice`) or a numeric setting (`seed`) holds
whatever the client put there until the upstream validates it, and by then it has left."""

FIELD_NAMES: Final = frozenset(
    {
        "role",
        "type",
        "object",
        "model",
        "finish_reason",
        "encoding_format",
        "reasoning_effort",
        "service_tier",
        "detail",
        "format",
        "voice",
        "modalities",
        "verbosity",
        "stream",
        "include_usage",
        "strict",
        "n",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "logprobs",
        "top_logprobs",
        "best_of",
        "echo",
        "dimensions",
        "parallel_tool_calls",
        "store",
        "index",
        "messages",
        "content",
        "name",
        "text",
        "refusal",
        "tools",
        "tool_calls",
        "tool_call_id",
        "tool_choice",
        "function",
        "functions",
        "function_call",
        "arguments",
        "description",
        "parameters",
        "properties",
        "required",
        "items",
        "id",
        "user",
        "metadata",
        "stop",
        "prompt",
        "suffix",
        "input",
        "response_format",
        "json_schema",
        "schema",
        "prediction",
        "stream_options",
        "image_url",
        "url",
        "input_audio",
        "data",
        "file",
        "file_id",
        "file_data",
        "filename",
        "audio",
        "logit_bias",
    }
)
"""Object keys that are the API's own field names: a fixed name holds no user data, so it is not read as
text. Their values are read like any other."""

TOKEN_ID_FIELDS: Final = ("prompt", "input")
"""Top-level fields that may hold token ids instead of text (completions, embeddings)."""

_JSON_ESCAPE: Final = re.compile(r"\\u([0-9a-fA-F]{4})")
"""A JSON `\\uXXXX` escape left in a string, as in `tool_calls[].function.arguments` (JSON text)."""

_TEXT_MEDIA_TYPES: Final = frozenset({"", "application/json", "application/xml", "application/x-ndjson"})
"""Media types of base64 `data:` URLs read as text (an empty one means text/plain)."""

_PART_KINDS: Final = {
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "file": "file",
    "input_file": "file",
}


@dataclass(slots=True)
class ReadableContent:
    texts: list[str] = field(default_factory=list)
    """Every string the detectors must read (values, keys, numbers' digits, joined parts)."""
    unreadable: set[str] = field(default_factory=set)
    """Kinds of content the detectors cannot read: token-ids, image, audio, file, base64."""


def readable_content(body: dict[str, Any]) -> ReadableContent:
    """The texts of the whole body for the detectors, and the kinds of content they cannot read."""
    found = ReadableContent()
    texts = found.texts
    stack: list[Any] = []
    for key, value in body.items():
        if key not in FIELD_NAMES:
            texts.append(key)
        if key in REWRITTEN_KEYS:
            continue
        if key in TOKEN_ID_FIELDS and isinstance(value, int | list):
            value = _without_token_ids(value, found)
        stack.append(value)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts.append(value)
            if "\\u" in value:  # JSON text inside a string (tool arguments): read its escapes decoded too
                texts.append(_JSON_ESCAPE.sub(lambda escape: chr(int(escape.group(1), 16)), value))
            head = value[:256].lstrip().lower()  # a URL scheme is case-insensitive: DATA: is data:
            if head.startswith("data:") and ";base64," in head:
                decoded = _decoded_text(value.lstrip())
                if decoded is None:
                    found.unreadable.add("base64")
                else:
                    texts.append(decoded)
        elif isinstance(value, dict):
            part_type = value.get("type")
            if isinstance(part_type, str) and part_type in _PART_KINDS:
                found.unreadable.add(_PART_KINDS[part_type])
            for key, item in value.items():
                if key not in FIELD_NAMES:
                    texts.append(key)  # a client's own key (metadata, schema properties) may be PII
                stack.append(item)
        elif isinstance(value, list):
            pieces = [piece for piece in map(_text_of, value) if piece is not None]
            if len(pieces) > 1:
                texts.append(_seams(pieces))
            stack.extend(value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            texts.append(str(value))
        elif isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
            texts.append(str(int(value)))  # 4111111111111111.0 reads as the card number it is
        elif isinstance(value, float):
            texts.append(repr(value))
    return found


def _decoded_text(data_url: str) -> str | None:
    """The text of a base64 `data:` URL whose media type is text (text/*, JSON, XML), else None."""
    header, _, payload = data_url.partition(",")
    media_type = header[len("data:") :].split(";", 1)[0].strip().lower()
    if not (
        media_type.startswith("text/") or media_type in _TEXT_MEDIA_TYPES or media_type.endswith(("+json", "+xml"))
    ):
        return None
    try:
        return base64.b64decode(payload, validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _seams(pieces: list[str]) -> str:
    """The text around each place where consecutive pieces meet, one seam per cut: the last
    `SEAM_CHARS` of the piece before and the first of the piece after, glued. One cut per seam, so
    the text of a third piece never sticks to a value and hides it (`theressn: 123…` is no label);
    and a short piece with both its neighbours' edges, so a value cut into three is read whole too.
    Each piece was read whole on its own; seams cost a bounded amount per cut, not a second pass
    over the conversation."""
    seams = [before[-SEAM_CHARS:] + after[:SEAM_CHARS] for before, after in itertools.pairwise(pieces)]
    seams += [
        before[-SEAM_CHARS:] + middle + after[:SEAM_CHARS]
        for before, middle, after in zip(pieces, pieces[1:], pieces[2:], strict=False)
        if len(middle) <= SEAM_CHARS
    ]
    return TEXT_SEPARATOR.join(seams)


def _text_of(item: Any) -> str | None:
    """A string item, a text part's text, or a message's whole text (what a split value is joined from)."""
    text = _part_text(item)
    if text is not None or not isinstance(item, dict):
        return text
    content = item.get("content")
    if isinstance(content, list):
        content = "".join(piece for piece in map(_part_text, content) if piece is not None) or None
    return content if isinstance(content, str) else None


def _part_text(part: Any) -> str | None:
    """A content part's text: a string or a text part (one level; a message's parts, never messages)."""
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        text = part.get("text")
        return text if isinstance(text, str) else None
    return None


def _is_token_id(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _without_token_ids(value: int | list[Any], found: ReadableContent) -> Any:
    """prompt / input minus its token ids (an id, an array of ids, arrays of id arrays), noted as unreadable."""
    if _is_token_id(value):
        found.unreadable.add("token-ids")
        return None
    if not isinstance(value, list):
        return value
    if value and all(_is_token_id(item) for item in value):
        found.unreadable.add("token-ids")
        return None
    kept = []
    for item in value:
        if isinstance(item, list) and item and all(_is_token_id(token) for token in item):
            found.unreadable.add("token-ids")
        else:
            kept.append(item)
    return kept
