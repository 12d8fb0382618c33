"""Talks HTTP to upstreams: an aiohttp client behind a one-method transport seam.

`Transport.send(request)` returns an `UpstreamResponse` whose body is read whole (`read`) or chunk by
chunk (`chunks`). Deadlines travel with the request (`Timeouts`) and are enforced here, so callers see
only three failure families, never aiohttp's own exceptions::

    UpstreamIOError              the attempt failed on the wire
    ├── UpstreamConnectError     connection refused / reset / closed before a complete answer
    └── UpstreamTimeoutError     connect, first byte or total deadline passed (`.phase` says which)

Redirects are never followed: an upstream's 3xx is returned as it is (the executor treats it as an
invalid answer), so a request body only ever goes to the endpoint's own URL.

Why aiohttp: httpx's pool collapses at 32 concurrent requests on this hardware (DESIGN.md); one
`ClientSession` with a keep-alive `TCPConnector` sized for the expected concurrency is shared by the
whole app and owned by its lifespan. Tests can pass any object with a matching `send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines for one attempt, in seconds from the moment it is sent."""

    connect_s: float
    first_byte_s: float
    total_s: float

    def tightened(self, budget_s: float | None) -> Timeouts:
        """Shrink every deadline to a client's latency budget (x-hybridroute-latency-budget-ms)."""
        if budget_s is None:
            return self
        return Timeouts(min(self.connect_s, budget_s), min(self.first_byte_s, budget_s), min(self.total_s, budget_s))


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeouts: Timeouts


class UpstreamIOError(Exception):
    """An attempt failed on the wire; the message is safe to show (no URLs with credentials, no keys)."""


class UpstreamConnectError(UpstreamIOError):
    pass


class UpstreamTimeoutError(UpstreamIOError):
    def __init__(self, phase: str) -> None:
        super().__init__(f"upstream {phase} timeout")
        self.phase = phase


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body, within the attempt's deadlines."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive, within the attempt's deadlines."""
        ...

    def close(self) -> None:
        """Give the connection back (or drop it when the body was not fully read)."""
        ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...


class _AiohttpResponse:
    """An aiohttp response whose reads honour the attempt's first-byte and total deadlines."""

    def __init__(self, response: aiohttp.ClientResponse, first_byte_at: float, deadline: float) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._first_byte_at = first_byte_at
        self._deadline = deadline

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self._response.read()
        except TimeoutError:
            raise UpstreamTimeoutError("total") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"upstream connection failed while reading: {type(exc).__name__}") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        deadline, phase = min(self._first_byte_at, self._deadline), "first byte"
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await content.readany()
            except TimeoutError:
                raise UpstreamTimeoutError(phase) from None
            except aiohttp.ClientError as exc:
                raise UpstreamConnectError(f"upstream connection lost while streaming: {type(exc).__name__}") from None
            if not chunk:
                return
            yield chunk
            deadline, phase = self._deadline, "total"

    def close(self) -> None:
        self._response.release()


class AiohttpTransport:
    """The production transport: one pooled `aiohttp.ClientSession`.

    `limit` bounds open connections across upstreams; it should exceed the router's expected
    concurrency, otherwise requests queue inside the pool where no timeout is attributed correctly.
    """

    def __init__(self, limit: int = 1024, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._connect_timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive_s, ttl_dns_cache=300
        )
        # Decompression stays on (aiohttp asks for gzip); the proxy never forwards content-encoding.
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("transport not started")
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        timeouts = request.timeouts
        first_byte_at = started + timeouts.first_byte_s
        deadline = started + timeouts.total_s
        timeout = self._connect_timeouts.get(timeouts.connect_s)
        if timeout is None:  # one per distinct connect timeout (one per policy SLO), not one per request
            timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect_s, sock_connect=timeouts.connect_s)
            self._connect_timeouts[timeouts.connect_s] = timeout
        try:
            async with asyncio.timeout_at(min(first_byte_at, deadline)):
                # Never follow a redirect: it would re-send the whole body (a private prompt, say) to
                # wherever the Location points. A 3xx comes back to the executor as an invalid answer.
                response = await self.session.post(
                    request.url, data=request.body, headers=request.headers, timeout=timeout, allow_redirects=False
                )
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamTimeoutError("connect") from None
        except TimeoutError:
            raise UpstreamTimeoutError("first byte") from None
        except aiohttp.ClientError as exc:
            raise UpstreamConnectError(f"upstream connection failed: {type(exc).__name__}") from None
        return _AiohttpResponse(response, first_byte_at, deadline)
