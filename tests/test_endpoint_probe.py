"""The operator's probe of an existing server (`spec.local.url`) against real loopback servers.

Also the allow-list (issue 11, item 4): a host outside it is never connected to, a name that resolves
outside the allowed networks is refused after resolution, and the outcome words are generic.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from hybridroute_operator.api import ENDPOINT_PLURAL
from hybridroute_operator.probes import AllowList, Outcome, probe_server
from tests.fixtures.operator import Kube, OperatorProcesses, eventually

LOOPBACK = AllowList.parse(["127.0.0.0/8"])


@pytest.fixture
async def models_server() -> AsyncIterator[tuple[str, dict[str, float]]]:
    """Serves GET /v1/models after a configurable delay (a model server busy with queued requests)."""
    settings = {"delay": 0.0, "hits": 0.0}

    async def models(_: web.Request) -> web.Response:
        settings["hits"] += 1
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
    assert await probe_server(url, allow=LOOPBACK, timeout_seconds=2) is Outcome.ANSWERED


async def test_slow_server_times_out_and_says_so(models_server: tuple[str, dict[str, float]]) -> None:
    url, settings = models_server
    settings["delay"] = 1.0
    outcome = await probe_server(url, allow=LOOPBACK, timeout_seconds=0.2)
    assert outcome is Outcome.TIMED_OUT
    assert outcome.problem(0.2) == "no answer within 0.2s"


async def test_refused_connection_is_not_a_timeout_and_says_nothing_more() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        outcome = await probe_server(f"http://127.0.0.1:{port}/v1", allow=LOOPBACK, timeout_seconds=2)
    assert outcome is Outcome.UNREACHABLE
    assert outcome.problem(2) == "not reachable"


async def test_unresolvable_name_reads_like_a_refused_port() -> None:
    # DNS failure and a refused port must look the same: neither leaks why.
    allow = AllowList.parse(["*.invalid"])
    outcome = await probe_server("http://nothing.invalid:8080/v1", allow=allow, timeout_seconds=2)
    assert outcome is Outcome.UNREACHABLE


async def test_a_host_outside_the_allow_list_is_never_connected_to(
    models_server: tuple[str, dict[str, float]],
) -> None:
    url, settings = models_server
    for allow in (AllowList(), AllowList.parse(["10.0.0.0/8", "ollama.lab.example"])):
        assert await probe_server(url, allow=allow, timeout_seconds=2) is Outcome.NOT_ALLOWED
    assert settings["hits"] == 0
    assert await probe_server(url, allow=LOOPBACK, timeout_seconds=2) is Outcome.ANSWERED
    assert settings["hits"] == 1


async def test_a_name_resolving_outside_the_allowed_networks_is_refused(
    models_server: tuple[str, dict[str, float]],
) -> None:
    url, _ = models_server
    by_name = url.replace("127.0.0.1", "localhost")
    assert await probe_server(by_name, allow=AllowList.parse(["10.0.0.0/8"]), timeout_seconds=2) is Outcome.NOT_ALLOWED
    assert await probe_server(by_name, allow=LOOPBACK, timeout_seconds=2) is Outcome.ANSWERED
    assert await probe_server(by_name, allow=AllowList.parse(["localhost"]), timeout_seconds=2) is Outcome.ANSWERED


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        ("10.0.0.0/8", "http://10.1.2.3:11434/v1", True),
        ("10.0.0.0/8", "http://169.254.169.254/latest", False),
        ("fd00::/8", "http://[fd00::1]:8000/v1", True),
        ("*.lab.example", "http://ollama.lab.example:11434/v1", True),
        ("*.lab.example", "http://lab.example.evil.test/v1", False),
        ("ollama.lab.example", "http://OLLAMA.lab.example./v1", True),
    ],
)
def test_allow_list_entries(entry: str, url: str, allowed: bool) -> None:
    assert AllowList.parse([entry]).allows_url(url) is allowed


def test_a_malformed_entry_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'http://x/'"):
        AllowList.parse(["http://x/"])


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback that records every path asked for (a host a scanner would try)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", hits
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.cluster
def test_the_operator_probes_only_allowed_hosts_and_reports_generic_outcomes(
    kube: Kube, operator_factory: OperatorProcesses, counting_server: tuple[str, list[str]]
) -> None:
    url, hits = counting_server
    # Loopback is not allowed here: the server stands for a host inside the operator's network.
    operator_factory({"HYBRIDROUTE_PROBE_ALLOWED_HOSTS": "10.0.0.0/8,*.invalid"})
    kube.create(ENDPOINT_PLURAL, "scan", {"type": "local", "local": {"url": url, "model": "m"}})
    kube.create(
        ENDPOINT_PLURAL, "nxdomain", {"type": "local", "local": {"url": "http://gone.invalid/v1", "model": "m"}}
    )

    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "nxdomain", "Ready", "False", "EndpointUnreachable"), "unreachable"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "nxdomain", "Ready") or {})["message"]
    assert message == "http://gone.invalid/v1: not reachable", "no DNS or connection error text in status"
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "scan", "Ready", "False", "ProbeNotAllowed"), "ProbeNotAllowed"
    )
    assert "probes.allowedHosts" in (kube.condition(ENDPOINT_PLURAL, "scan", "Ready") or {})["message"]
    assert hits == [], "a host outside the allow-list was contacted"
