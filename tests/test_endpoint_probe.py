"""The operator's probe of an existing server (`spec.local.url`) against real loopback servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hybridroute_operator.handlers.endpoint import probe_server


@pytest.fixture
async def models_server() -> AsyncIterator[tuple[str, dict[str, float]]]:
    """Serves GET /v1/models after a configurable delay (a model server busy with queued requests)."""
    settings = {"delay": 0.0}

    async def models(_: web.Request) -> web.Response:
        await asyncio.sleep(settings["delay"])
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1", settings
    await runner.cleanup()


async def test_answering_server_is_healthy(models_server: tuple[str, dict[str, float]]) -> None:
    url, _ = models_server
    assert await probe_server(url, timeout_seconds=2) == (None, False)


async def test_slow_server_times_out_and_says_so(models_server: tuple[str, dict[str, float]]) -> None:
    url, settings = models_server
    settings["delay"] = 1.0
    error, timed_out = await probe_server(url, timeout_seconds=0.2)
    assert timed_out is True
    assert error == "no answer within 0.2s"


async def test_refused_connection_is_not_a_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        error, timed_out = await probe_server(f"http://127.0.0.1:{port}/v1", timeout_seconds=2)
    assert timed_out is False
    assert error is not None
    assert "Connect" in error
