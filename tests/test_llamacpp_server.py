"""The llama.cpp image's entrypoint maps llama-server's command line onto llama-cpp-python's settings.

Pure: no llama-cpp-python needed (the image test runs the real server with what the operator renders).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hybridroute_operator.api import LocalSpec
from hybridroute_operator.render import Owner, managed_pool

ENTRYPOINT = Path(__file__).resolve().parents[1] / "e2e/containerfiles/llamacpp_server.py"
IMAGE_ENV = {"LLAMACPP_MODELS_DIR": "/models", "LLAMACPP_CHAT_FORMAT": "gemma"}


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llamacpp_server", ENTRYPOINT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load()


def test_the_operators_llamacpp_arguments_are_understood() -> None:
    local = LocalSpec.model_validate(
        {"server": "llamacpp", "model": "gemma-3-270m", "maxContextTokens": 4096, "maxConcurrency": 2}
    )
    [container] = managed_pool(Owner("gemma", "models", "0"), local).deployment["spec"]["template"]["spec"][
        "containers"
    ]

    server, model = entrypoint.settings(container["args"], IMAGE_ENV)

    assert server == {"metrics": True, "host": "0.0.0.0", "port": 8080, "interrupt_requests": False}
    assert model["model"] == "/models/gemma-3-270m.gguf"
    assert model["model_alias"] == "gemma-3-270m"
    assert model["n_ctx"] == 4096
    assert model["chat_format"] == "gemma"


def test_a_path_is_used_as_given_and_flags_override_the_image_defaults() -> None:
    _, model = entrypoint.settings(
        ["-m", "/data/other.gguf", "--chat-template", "chatml", "-t", "2", "-ngl", "999"], IMAGE_ENV
    )

    assert model["model"] == "/data/other.gguf"
    assert model["model_alias"] == "/data/other.gguf"
    assert model["chat_format"] == "chatml"
    assert model["n_threads"] == 2
    assert model["n_gpu_layers"] == 999


def test_unknown_flags_are_refused_rather_than_ignored() -> None:
    with pytest.raises(SystemExit):
        entrypoint.settings(["-m", "gemma-3-270m", "--no-such-flag"], IMAGE_ENV)


# --- `--metrics`: llama.cpp server's metric names around llama-cpp-python -------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


async def _call(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "POST"}, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    return status, b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")


def _samples(text: bytes) -> dict[str, float]:
    lines = text.decode().splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if not line.startswith("#")}


async def test_metrics_count_queued_requests_tokens_and_busy_seconds() -> None:
    clock = Clock()
    release, all_in = asyncio.Event(), asyncio.Event()
    entered = 0

    async def model(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        if entered == 3:
            all_in.set()
        await release.wait()
        body = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = entrypoint.LlamaMetrics(model, clock)
    requests = [asyncio.create_task(_call(app, "/v1/chat/completions")) for _ in range(3)]
    await all_in.wait()
    clock.now += 2.0
    _, during = await _call(app, "/metrics")
    assert _samples(during) == {
        "llamacpp:requests_processing": 1,
        "llamacpp:requests_deferred": 2,
        "llamacpp:tokens_predicted_total": 0,
        "llamacpp:tokens_predicted_seconds_total": 2.0,
    }
    release.set()
    await asyncio.gather(*requests)
    clock.now += 5.0  # idle time is not generation time
    _, after = await _call(app, "/metrics")
    assert _samples(after) == {
        "llamacpp:requests_processing": 0,
        "llamacpp:requests_deferred": 0,
        "llamacpp:tokens_predicted_total": 21,
        "llamacpp:tokens_predicted_seconds_total": 2.0,
    }


async def test_a_stream_counts_its_content_chunks_and_other_paths_pass_through() -> None:
    async def model(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/health":
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        for piece in ('{"delta":{"role":"assistant","content":""}}', '{"delta":{"content":"Hi"}}', '{"delta":{}}'):
            await send({"type": "http.response.body", "body": f"data: {piece}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    app = entrypoint.LlamaMetrics(model, Clock())
    assert await _call(app, "/health") == (200, b'{"status":"ok"}')
    await _call(app, "/v1/chat/completions")
    _, text = await _call(app, "/metrics")
    assert _samples(text)["llamacpp:tokens_predicted_total"] == 1
