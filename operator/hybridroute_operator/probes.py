"""Health probes of existing servers (`spec.local.url`), limited to an allow-list of hosts and networks.

Whoever may create an InferenceEndpoint chooses the URL the operator GETs, from the operator's place
in the network. Without limits that is a port scanner with the operator's reach (the API server,
node ports, cloud metadata endpoints) whose findings come back in status. So:

- the operator probes only hosts the administrator allowed (`--probe-allowed-hosts`, chart value
  `probes.allowedHosts`): CIDRs (`10.0.0.0/8`, `fd00::/8`) and host names (`ollama.lab.example`, or
  `*.lab.example` for any name under it). Default: nothing, so no URL is probed and such endpoints
  report Ready=False, ProbeNotAllowed, until allowed;
- the URL is parsed once, by the parser the HTTP client uses (yarl), and that parsed URL is both
  judged and fetched: two parsers could read different hosts from one string (`127。0。0。1` is an
  IDNA spelling of 127.0.0.1 to yarl and a name to `urllib`). Only http and https are probed;
- a name that is not allowed by name is resolved once and connected to only at addresses inside the
  allowed networks (the resolver below), so DNS cannot point an allowed name elsewhere in between,
  and numeric spellings (`2130706433`, `0x7f.1`) are judged by the address they resolve to;
- a name that is neither listed nor resolves reads like one resolving outside the list (both
  ProbeNotAllowed), so status is no oracle for which internal names exist;
- an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4 address it reaches;
- redirects are not followed (an allowed host cannot send the probe elsewhere);
- the outcome in status is coarse (answered, no answer in time, not reachable, server error): no
  connection error or DNS text, which would tell a scanner why a port is closed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")


class Outcome(Enum):
    """What a probe found, in words status may carry."""

    ANSWERED = "answered"
    NOT_ALLOWED = "not allowed"
    TIMED_OUT = "no answer in time"
    UNREACHABLE = "not reachable"
    SERVER_ERROR = "server error (HTTP 5xx)"

    def problem(self, timeout_seconds: float) -> str | None:
        """None when the server answered, else the generic words status carries."""
        if self is Outcome.ANSWERED:
            return None
        if self is Outcome.TIMED_OUT:
            return f"no answer within {timeout_seconds:g}s"
        return str(self.value)


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks the operator may probe; empty allows nothing."""

    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()
    """Exact host names, or `*.suffix` for any name below suffix (lowercase, no trailing dot)."""

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """From CIDRs, addresses and host names; raises ValueError naming a malformed entry."""
        networks: list[Network] = []
        names: list[str] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            label = entry.removeprefix("*.")
            if "/" in entry or not all(part and part.replace("-", "").isalnum() for part in label.split(".")):
                raise ValueError(f"probe allow-list entry {raw!r} is neither a CIDR nor a host name")
            names.append(entry)
        return cls(tuple(networks), tuple(names))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for name in self.names:
            if name.startswith("*.") and host.endswith(name[1:]):
                return True
            if host == name:
                return True
        return False

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # connecting to it reaches the IPv4 host
        return any(ip in network for network in self.networks)

    def allows_url(self, url: str | URL) -> bool | None:
        """True/False when the host alone decides; None when a name must be resolved first.

        `url` is read as yarl (the HTTP client's parser) reads it; pass the very URL object fetched.
        """
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except ValueError:
            return False
        host = parsed.host or ""
        if parsed.scheme not in SCHEMES or not host:
            return False
        if self.allows_name(host):
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None if self.networks else False
        return self.allows_address(host)


class NotAllowed(OSError):
    """A name resolved only to addresses outside the allowed networks."""


class _AllowListResolver(AbstractResolver):
    """Resolves names with aiohttp's default resolver and keeps only addresses in allowed networks."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._allow.allows_name(host):
            return await self._resolver.resolve(host, port, family)
        try:
            answers = await self._resolver.resolve(host, port, family)
        except OSError:
            # Not "unreachable": a name that does not resolve must read like one resolving outside
            # the list, or status would tell which internal names exist.
            raise NotAllowed(f"{host} is outside the probe allow-list") from None
        kept = [answer for answer in answers if self._allow.allows_address(answer["host"])]
        if not kept:
            raise NotAllowed(f"{host} is outside the probe allow-list")
        return kept

    async def close(self) -> None:
        await self._resolver.close()


async def probe_server(url: str, *, allow: AllowList, timeout_seconds: float) -> Outcome:
    """GET {url}/models without following redirects: ANSWERED when the answer is below 500."""
    try:
        target = URL(url.rstrip("/") + "/models")  # parsed once: judged and fetched as the same object
    except ValueError:
        return Outcome.UNREACHABLE
    if allow.allows_url(target) is False:
        return Outcome.NOT_ALLOWED
    connector = aiohttp.TCPConnector(resolver=_AllowListResolver(allow), use_dns_cache=False)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as session,
            session.get(target, allow_redirects=False) as response,
        ):
            return Outcome.SERVER_ERROR if response.status >= 500 else Outcome.ANSWERED
    except TimeoutError:
        return Outcome.TIMED_OUT
    except aiohttp.ClientConnectorError as exc:
        return Outcome.NOT_ALLOWED if isinstance(exc.os_error, NotAllowed) else Outcome.UNREACHABLE
    except (aiohttp.ClientError, OSError, ValueError):
        return Outcome.UNREACHABLE
