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
    # The same host spelled so that only the HTTP client's URL parser reads it as 127.0.0.1.
    idna = url.replace("127.0.0.1", "127\u30020\u30020\u30021")
    kube.create(ENDPOINT_PLURAL, "idna", {"type": "local", "local": {"url": idna, "model": "m"}})

    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "nxdomain", "Ready", "False", "EndpointUnreachable"), "unreachable"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "nxdomain", "Ready") or {})["message"]
    assert message == "http://gone.invalid/v1: not reachable", "no DNS or connection error text in status"
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "scan", "Ready", "False", "ProbeNotAllowed"), "ProbeNotAllowed"
    )
    assert "probes.allowedHosts" in (kube.condition(ENDPOINT_PLURAL, "scan", "Ready") or {})["message"]
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "idna", "Ready", "False", "ProbeNotAllowed"), "ProbeNotAllowed"
    )
    assert hits == [], "a host outside the allow-list was contacted"


LOOPBACK_SPELLINGS = [
    "127\u30020\u30020\u30021",  # ideographic full stops: a URL parser's IDNA step makes them dots
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits
    "2130706433",  # one decimal number
    "0x7f.1",  # hex, short form
    "0177.0.0.1",  # octal
    "127.1",  # short form
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "localhost.",  # a name, trailing dot
    "10.0.0.1@127.0.0.1",  # userinfo that looks like an allowed host
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_no_spelling_of_a_host_outside_the_list_reaches_it(
    counting_server: tuple[str, list[str]], host: str
) -> None:
    url, hits = counting_server
    port = url.split(":")[2].split("/")[0]
    outcome = await probe_server(f"http://{host}:{port}/v1", allow=AllowList.parse(["10.0.0.0/8"]), timeout_seconds=2)
    assert outcome in (Outcome.NOT_ALLOWED, Outcome.UNREACHABLE)
    assert hits == [], f"{host} reached a host outside the allow-list"


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (["::/0"], "http://[::ffff:127.0.0.1]/v1"),  # an IPv6 grant never admits an IPv4 host
        (["ollama.lab.example"], "ftp://ollama.lab.example/v1"),  # http and https only
        (["ollama.lab.example"], "http://ollama.lab.example@127.0.0.1/v1"),
        (["169.254.0.0/16"], "file://169.254.169.254/latest"),
    ],
)
def test_allow_list_decides_on_the_address_actually_connected_to(entries: list[str], url: str) -> None:
    assert AllowList.parse(entries).allows_url(url) is False


def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address() -> None:
    assert AllowList.parse(["10.0.0.0/8"]).allows_url("http://[::ffff:10.1.2.3]:8000/v1") is True


@pytest.fixture
def redirecting_server(counting_server: tuple[str, list[str]]) -> Iterator[str]:
    """An allowed host (127.0.0.2) that answers every GET with a redirect to the counting server."""
    target, _ = counting_server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target + "/models")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_a_redirect_from_an_allowed_host_is_not_followed(
    redirecting_server: str, counting_server: tuple[str, list[str]]
) -> None:
    _, hits = counting_server
    outcome = await probe_server(redirecting_server, allow=AllowList.parse(["127.0.0.2/32"]), timeout_seconds=2)
    assert outcome is Outcome.ANSWERED, "the allowed host answered (with a redirect)"
    assert hits == [], "the redirect to a host outside the allow-list was followed"


async def test_a_name_outside_the_list_reads_the_same_whether_it_resolves_or_not(
    models_server: tuple[str, dict[str, float]],
) -> None:
    """No DNS oracle: otherwise status would tell whoever creates endpoints which internal names exist."""
    url, settings = models_server
    allow = AllowList.parse(["10.0.0.0/8"])
    resolves = await probe_server(url.replace("127.0.0.1", "localhost"), allow=allow, timeout_seconds=2)
    does_not = await probe_server("http://nothing.invalid:8080/v1", allow=allow, timeout_seconds=2)
    assert resolves is does_not is Outcome.NOT_ALLOWED
    assert settings["hits"] == 0
