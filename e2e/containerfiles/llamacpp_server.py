"""The hybridroute llama.cpp image's entrypoint: llama.cpp's `llama-server` command line, served by llama-cpp-python.

A managed `InferenceEndpoint` with `server: llamacpp` renders llama.cpp's own server command line
(`-m MODEL --host H --port P --alias NAME [-c N] [--parallel N] [--n-gpu-layers N]`, readiness on
`GET /health`; see operator/hybridroute_operator/render.py). This image runs llama-cpp-python's
OpenAI-compatible server instead (its wheel is compiled here, no prebuilt image can be pulled), so
this entrypoint reads that command line, maps it onto llama-cpp-python's settings and adds the
`/health` route. A bare `-m NAME` (no `/`) names a GGUF file baked into the image:
$LLAMACPP_MODELS_DIR/NAME.gguf.

llama-cpp-python serves one request at a time and queues the rest, so `--parallel` is accepted and
has no effect; `--chat-template` picks llama-cpp-python's chat format (default
$LLAMACPP_CHAT_FORMAT), which matters for GGUF files without an embedded template such as Gemma 3 270M.

`--metrics`: llama-cpp-python has no `/metrics`, so `LlamaMetrics` serves the subset of llama.cpp
server's own metric names that routers read for saturation (router-sidecar's saturationfeed.py),
counted around the app rather than inside the model: `llamacpp:requests_processing` (0 or 1),
`llamacpp:requests_deferred` (queued behind it), `llamacpp:tokens_predicted_total` (completion tokens
from each answer's usage; one per content chunk when streaming) and
`llamacpp:tokens_predicted_seconds_total` (seconds with a request in flight, which include prompt
processing). No KV-cache gauge: llama-cpp-python does not expose its use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
GENERATING = ("/v1/chat/completions", "/v1/completions")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("-m", "--model", required=True, help="GGUF path, or NAME of $LLAMACPP_MODELS_DIR/NAME.gguf")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-a", "--alias", help="model id served in /v1/models (default: the -m value)")
    parser.add_argument("-c", "--ctx-size", type=int, default=2048)
    parser.add_argument("-t", "--threads", type=int, help="default: llama-cpp-python's (half the CPUs)")
    parser.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=0)
    parser.add_argument("-np", "--parallel", type=int, default=1, help="accepted; requests are served one at a time")
    parser.add_argument("--chat-template", help="llama-cpp-python chat format (default $LLAMACPP_CHAT_FORMAT)")
    parser.add_argument("--metrics", action="store_true", help="serve llama.cpp server's /metrics names")
    return parser


class LlamaMetrics:
    """ASGI wrapper counting generation requests in llama.cpp server's metric names (serves /metrics)."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.in_flight = 0
        self.tokens = 0
        self._busy_s = 0.0
        self._busy_since: float | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (*GENERATING, "/metrics"):
            await self.app(scope, receive, send)
        elif scope["path"] == "/metrics":
            body = self.render().encode()
            headers = [(b"content-type", b"text/plain; version=0.0.4")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await self._generate(scope, receive, send)

    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []
        streamed = 0

        async def counting_send(message: Message) -> None:
            nonlocal streamed
            if message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                streamed += chunk.count(b'"content":"') + chunk.count(b'"text":"')
                streamed -= chunk.count(b'"content":""') + chunk.count(b'"text":""')
                if len(parts) < 64:
                    parts.append(chunk)
            await send(message)

        self._enter()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self._leave()
            self.tokens += completion_tokens(b"".join(parts), streamed)

    def _enter(self) -> None:
        if self.in_flight == 0:
            self._busy_since = self.clock()
        self.in_flight += 1

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._busy_since is not None:
            self._busy_s += self.clock() - self._busy_since
            self._busy_since = None

    def busy_seconds(self) -> float:
        running = 0.0 if self._busy_since is None else self.clock() - self._busy_since
        return self._busy_s + running

    def render(self) -> str:
        processing = min(self.in_flight, 1)
        lines = []
        for name, kind, value in (
            ("requests_processing", "gauge", processing),
            ("requests_deferred", "gauge", self.in_flight - processing),
            ("tokens_predicted_total", "counter", self.tokens),
            ("tokens_predicted_seconds_total", "counter", self.busy_seconds()),
        ):
            lines += [f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value}"]
        return "\n".join(lines) + "\n"


def completion_tokens(body: bytes, streamed_chunks: int) -> int:
    """The answer's usage.completion_tokens; for a stream (no JSON body), its content chunks."""
    try:
        document = json.loads(body)
    except ValueError:
        return streamed_chunks
    usage = document.get("usage") if isinstance(document, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else streamed_chunks


def settings(argv: Sequence[str], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(server settings, model settings) for llama-cpp-python from llama-server's command line."""
    args = _parser().parse_args(argv)
    model = args.model
    if "/" not in model:
        model = str(Path(env.get("LLAMACPP_MODELS_DIR", "/models")) / f"{model}.gguf")
    server = {
        "metrics": args.metrics,
        "host": args.host,
        "port": args.port,
        # Queue a new request behind a running one instead of cutting the running stream short.
        "interrupt_requests": False,
    }
    model_settings: dict[str, Any] = {
        "model": model,
        "model_alias": args.alias or args.model,
        "n_ctx": args.ctx_size,
        "n_gpu_layers": args.n_gpu_layers,
    }
    if args.threads:
        model_settings["n_threads"] = args.threads
    chat_format = args.chat_template or env.get("LLAMACPP_CHAT_FORMAT")
    if chat_format:
        model_settings["chat_format"] = chat_format
    return server, model_settings


def main(argv: Sequence[str] | None = None) -> None:
    server, model = settings(sys.argv[1:] if argv is None else argv, os.environ)
    if not Path(model["model"]).is_file():
        raise SystemExit(f"error: model file {model['model']} not found")
    # Imported here so the argument mapping above can be tested without llama-cpp-python installed.
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    metrics = server.pop("metrics")
    server_settings = ServerSettings(**server)
    # Loads the model before the socket opens, so `/health` answers only once requests can be served.
    app = create_app(server_settings=server_settings, model_settings=[ModelSettings(**model)])

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    served: Any = LlamaMetrics(app) if metrics else app
    uvicorn.run(served, host=server_settings.host, port=server_settings.port)


if __name__ == "__main__":
    main()
