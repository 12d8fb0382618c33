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
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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
    return parser


def settings(argv: Sequence[str], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(server settings, model settings) for llama-cpp-python from llama-server's command line."""
    args = _parser().parse_args(argv)
    model = args.model
    if "/" not in model:
        model = str(Path(env.get("LLAMACPP_MODELS_DIR", "/models")) / f"{model}.gguf")
    server = {
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

    server_settings = ServerSettings(**server)
    # Loads the model before the socket opens, so `/health` answers only once requests can be served.
    app = create_app(server_settings=server_settings, model_settings=[ModelSettings(**model)])

    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    uvicorn.run(app, host=server_settings.host, port=server_settings.port)


if __name__ == "__main__":
    main()
