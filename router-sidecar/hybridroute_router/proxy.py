"""Moves bytes between client and upstream: header and body rewriting, SSE relay, usage extraction.

Nothing here decides where a request goes or whether to retry; the executor does. What this module
guarantees:

- Client headers are forwarded only when an upstream needs them: `FORWARDED_CLIENT_HEADERS`
  (accept, openai-beta, user-agent, x-request-id). Everything else a client sends (credentials, cookies,
  hop-by-hop headers, `x-hybridroute-*`, the SDK's `x-stainless-*`, `openai-organization` and
  `openai-project` of the client's own account, custom headers such as `x-end-user`) stays in the
  pod; the endpoint's own key is set. The forwarded values are part of the request the privacy
  detectors read (profile.py), so a forwarded header never carries PII to a cloud endpoint.
- `model` is rewritten to the endpoint's model; streaming requests always ask for
  `stream_options.include_usage` so the router can meter tokens.
- `SSERelay` forwards server-sent events as they arrive, whole events at a time, and removes the
  usage chunk again when the client did not ask for it. Only events that carry a usage object are
  parsed; everything else is copied as bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

FORWARDED_CLIENT_HEADERS = frozenset({"accept", "openai-beta", "user-agent", "x-request-id"})
"""The only client headers an upstream receives (lower-case): an allow-list, so a header nobody thought
of is dropped rather than sent to a cloud endpoint. content-type and authorization are the router's."""

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = re.compile(rb"\r?\n\r?\n")


def forwarded_client_headers(client_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers that go upstream (`FORWARDED_CLIENT_HEADERS`), names lower-cased."""
    return [(name.lower(), value) for name, value in client_headers if name.lower() in FORWARDED_CLIENT_HEADERS]


def upstream_headers(client_headers: Iterable[tuple[str, str]], api_key: str | None) -> dict[str, str]:
    """Headers for the upstream request: the allow-listed client headers plus our content type and auth."""
    headers = dict(forwarded_client_headers(client_headers))
    headers["content-type"] = "application/json"
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def client_wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_body(body: Mapping[str, Any], model: str, stream: bool) -> bytes:
    """The client's JSON body with the endpoint's model and, when streaming, usage reporting forced on."""
    rewritten = dict(body)
    rewritten["model"] = model
    if stream:
        options = body.get("stream_options")
        rewritten["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(rewritten)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


def usage_of(document: Any) -> Usage | None:
    """Token counts from an OpenAI response or chunk's `usage` object, if it has one."""
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=completion if isinstance(completion, int) else 0,
    )


def sse_error_event(message: str, type_: str, code: str) -> bytes:
    """An in-band error for a stream that already started (OpenAI clients raise on `error` events)."""
    payload = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
    return b"data: " + payload + b"\n\n"


class SSERelay:
    """Forwards an SSE byte stream event by event, metering usage and hiding it when unrequested."""

    def __init__(self, keep_usage: bool) -> None:
        self.keep_usage = keep_usage
        self.usage: Usage | None = None
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send now: every complete event so far (a partial event waits for its end)."""
        data = self._pending + chunk if self._pending else chunk
        cut = _last_event_end(data)
        if cut == 0:
            self._pending = data
            return b""
        complete, self._pending = data[:cut], data[cut:]
        if _USAGE_OBJECT.search(complete) is None:
            return complete
        return b"".join(self._filter_event(event) for event in _split_events(complete))

    def finish(self) -> bytes:
        """Whatever is left when the upstream closes (a final event without its blank line)."""
        rest, self._pending = self._pending, b""
        if not rest.strip():
            return b""
        return self._filter_event(rest if rest.endswith(b"\n") else rest + b"\n\n")

    def _filter_event(self, event: bytes) -> bytes:
        if _USAGE_OBJECT.search(event) is None:
            return event
        lines = event.splitlines()
        data_lines = [line[5:].strip() for line in lines if line.startswith(b"data:")]
        try:
            document = orjson.loads(b"\n".join(data_lines))
        except orjson.JSONDecodeError:
            return event
        usage = usage_of(document)
        if usage is not None:
            self.usage = usage
        if self.keep_usage:
            return event
        if not document.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        document["usage"] = None
        return b"data: " + orjson.dumps(document) + b"\n\n"


def _last_event_end(data: bytes) -> int:
    """Offset just past the last blank line (event separator), 0 when there is none."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _split_events(data: bytes) -> list[bytes]:
    events = []
    start = 0
    for match in _EVENT_END.finditer(data):
        events.append(data[start : match.end()])
        start = match.end()
    if start < len(data):
        events.append(data[start:])
    return events
