"""The llama.cpp image's entrypoint maps llama-server's command line onto llama-cpp-python's settings.

Pure: no llama-cpp-python needed (the image test runs the real server with what the operator renders).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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

    assert server == {"host": "0.0.0.0", "port": 8080, "interrupt_requests": False}
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
