"""OpenAI-compatible upstream SIMULATOR (ours, not a real model): answers like a model server would.

Used by the router's integration tests, the overhead benchmark and the demo as a stand-in for a local
model server or a cloud API. It serves /v1/chat/completions, /v1/completions, /v1/embeddings and
/v1/models, streaming and not, and can be told to misbehave:

- `Behavior` (defaults for every request): model name, latency before the answer, time to first
  byte, streamed chunk count and spacing, a random failure rate with a status, reply content.
- `Fault` (a queue consumed one per request, for deterministic tests): an HTTP status (with
  Retry-After / retry-after-ms for 429), garbage (200 with a non-JSON body), hang (no answer until
  the client gives up), slow (the normal answer after a delay), redirect (a 3xx pointing at another
  URL), reset (the connection dropped before any answer), or dropping the connection after some
  streamed chunks.

Every request is recorded (path, lower-cased headers, JSON body) so tests can assert what the router
actually sent. At runtime, POST /_sim/behavior (JSON fields of Behavior) changes the behaviour and
GET /_sim/requests lists what was received.

Run standalone:  python e2e/upstream_sim.py --port 9101 --model local-sim --ttft-ms 50 --chunks 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Behavior:
    """How the simulator answers when no scripted fault applies."""

    model: str = "sim-model"
    """Model name reported in answers (the router's rewrite is visible in the recorded body)."""
    latency_ms: float = 0.0
    """Delay before a non-streaming answer."""
    ttft_ms: float = 0.0
    """Delay before the first streamed chunk."""
    chunks: int = 3
    """Content chunks per streamed answer."""
    chunk_interval_ms: float = 0.0
    """Delay between streamed chunks."""
    failure_rate: float = 0.0
    """Share of requests answered with failure_status instead."""
    failure_status: int = 500
    content: str = "Hello from the upstream simulator."
    """Assistant message content (a JSON document for structured-output tests)."""
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass
class Fault:
    """One scripted misbehaviour, consumed by the next request."""

    kind: str = "status"
    """status | garbage | hang | slow | redirect | reset | drop_mid_stream"""
    status: int = 500
    retry_after: str | None = None
    """Retry-After header value (seconds) for a 429."""
    retry_after_ms: int | None = None
    """OpenAI's retry-after-ms header for a 429."""
    after_chunks: int = 1
    """drop_mid_stream: chunks sent before the connection is cut."""
    content: str | None = None
    """Overrides Behavior.content for this answer (a status fault with 2xx answers normally)."""
    location: str = ""
    """redirect: the Location header (the status is `status`, e.g. 307 or 308)."""
    delay_ms: float = 0.0
    """slow: delay before the normal answer."""


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class UpstreamSim:
    """The simulator: an aiohttp web app plus its behaviour, fault queue and request log."""

    name: str = "sim"
    behavior: Behavior = field(default_factory=Behavior)
    faults: deque[Fault] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (with /v1), as an endpoint's baseURL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        """Block (another thread than the simulator's) until `count` requests have arrived."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{self.name}: {len(self.requests)} of {count} requests after {timeout}s")

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/_sim/behavior", self._set_behavior)
        app.router.add_get("/_sim/requests", self._list_requests)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> UpstreamSim:
        # A short shutdown: a "hang" fault must not hold the test run for aiohttp's default 60 s.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=2048)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._arrived:
            self.requests.append(RecordedRequest(request.path, headers, body))
            self._arrived.notify_all()
        return body

    def _next_fault(self) -> Fault | None:
        if self.faults:
            return self.faults.popleft()
        if self.behavior.failure_rate and self.rng.random() < self.behavior.failure_rate:
            return Fault(status=self.behavior.failure_status)
        return None

    async def _misbehave(self, request: web.Request, fault: Fault | None) -> web.StreamResponse | None:
        """Answer for a fault that replaces the whole response; None when the request proceeds."""
        if fault is None or fault.kind == "drop_mid_stream" or (fault.kind == "status" and fault.status < 300):
            return None
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_ms / 1000)
            return None
        if fault.kind == "hang":
            await asyncio.sleep(3600)
        if fault.kind == "redirect":
            return web.Response(status=fault.status, headers={"location": fault.location})
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()  # no status line at all, as a crashing server or a proxy reset would
            return web.Response(status=204)
        if fault.kind == "garbage":
            return web.Response(status=200, text="<html>upstream proxy error</html>", content_type="text/html")
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = fault.retry_after
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        body = {"error": {"message": f"simulated {fault.status}", "type": "sim_error", "param": None, "code": None}}
        return web.Response(
            status=fault.status, body=orjson.dumps(body), headers=headers, content_type="application/json"
        )

    def _usage(self) -> dict[str, int]:
        b = self.behavior
        return {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens,
        }

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat.completion")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "text_completion")

    async def _generate(self, request: web.Request, obj: str) -> web.StreamResponse:
        body = await self._record(request)
        fault = self._next_fault()
        failed = await self._misbehave(request, fault)
        if failed is not None:
            return failed
        content = fault.content if fault is not None and fault.content is not None else self.behavior.content
        if isinstance(body, dict) and body.get("stream"):
            return await self._stream(request, body, obj, content, fault)
        if self.behavior.latency_ms:
            await asyncio.sleep(self.behavior.latency_ms / 1000)
        if obj == "chat.completion":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        else:
            choice = {"index": 0, "text": content, "finish_reason": "stop", "logprobs": None}
        answer = {
            "id": "simcmpl-1",
            "object": obj,
            "created": int(time.time()),
            "model": self.behavior.model,
            "choices": [choice],
            "usage": self._usage(),
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers={"x-sim": self.name})

    async def _stream(
        self, request: web.Request, body: dict[str, Any], obj: str, content: str, fault: Fault | None
    ) -> web.StreamResponse:
        b = self.behavior
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "x-sim": self.name})
        await response.prepare(request)
        if b.ttft_ms:
            await asyncio.sleep(b.ttft_ms / 1000)
        chunk_obj = "chat.completion.chunk" if obj == "chat.completion" else "text_completion"
        pieces = _split(content, max(1, b.chunks))
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        for index, piece in enumerate(pieces):
            if fault is not None and fault.kind == "drop_mid_stream" and index >= fault.after_chunks:
                assert request.transport is not None
                request.transport.close()  # cut the connection mid-stream, as a crashing server would
                return response
            last = index == len(pieces) - 1
            if chunk_obj == "chat.completion.chunk":
                delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": "stop" if last else None, "logprobs": None}
            chunk = {"id": "simcmpl-1", "object": chunk_obj, "created": 0, "model": b.model, "choices": [choice]}
            if include_usage:
                chunk["usage"] = None
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if b.chunk_interval_ms and not last:
                await asyncio.sleep(b.chunk_interval_ms / 1000)
        if include_usage:
            usage_chunk = {
                "id": "simcmpl-1",
                "object": chunk_obj,
                "created": 0,
                "model": b.model,
                "choices": [],
                "usage": self._usage(),
            }
            await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        failed = await self._misbehave(request, self._next_fault())
        if failed is not None:
            return failed
        raw_input = body.get("input") if isinstance(body, dict) else None
        inputs = raw_input if isinstance(raw_input, list) else [raw_input]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]} for i in range(len(inputs))]
        tokens = self.behavior.prompt_tokens
        answer = {
            "object": "list",
            "data": data,
            "model": self.behavior.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers={"x-sim": self.name})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        model = {"id": self.behavior.model, "object": "model", "created": 0, "owned_by": "upstream-sim"}
        return web.json_response({"object": "list", "data": [model]})

    async def _set_behavior(self, request: web.Request) -> web.StreamResponse:
        changes = await request.json()
        self.behavior = dataclasses.replace(self.behavior, **changes)
        return web.json_response(dataclasses.asdict(self.behavior))

    async def _list_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([dataclasses.asdict(recorded) for recorded in self.requests])


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    pieces = [text[start : start + size] for start in range(0, len(text), size)] or [""]
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--name", default="sim")
    defaults = Behavior()
    for spec in dataclasses.fields(Behavior):
        flag = "--" + spec.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, spec.name)), default=getattr(defaults, spec.name))
    args = parser.parse_args()
    behavior = Behavior(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(Behavior)})
    sim = UpstreamSim(name=args.name, behavior=behavior)
    # Request recording is for tests; a long-running simulator (demo, benchmark) must not grow forever.
    sim.requests = _BoundedLog()
    try:  # as a benchmark peer the simulator must not be the bottleneck: uvloop when available
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(sim.app(), host=args.host, port=args.port, access_log=None, print=None)


class _BoundedLog(list[RecordedRequest]):
    def append(self, item: RecordedRequest) -> None:
        if len(self) >= 1000:
            del self[:500]
        super().append(item)


if __name__ == "__main__":
    main()
