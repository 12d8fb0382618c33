"""Client traffic against a router, recorded per request: for the end-to-end tests and the benchmarks.

`send` makes one chat completion with aiohttp and returns an `Outcome`: wall-clock send and finish
times, HTTP status, the serving endpoint from the router's `x-hybridroute-endpoint` header (empty
when the router answered an error itself) and the body. Two load shapes, both sending until stopped
with outcomes accumulating for the caller to slice by time:

- `Load`: closed loop, a few workers each waiting for its answer (a slow upstream slows the load);
- `PacedLoad`: open loop, a fixed arrival rate whatever the answers do, which is what a fleet of
  independent clients looks like to a failover (measuring shares of traffic needs this shape).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson

CHAT_BODY = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8})
PRIVATE_HEADERS = {"x-hybridroute-privacy": "restricted"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it."""

    sent: float
    done: float
    status: int
    """HTTP status; 0 when no HTTP answer arrived (connection error, client timeout)."""
    endpoint: str
    body: bytes

    @property
    def seconds(self) -> float:
        return self.done - self.sent

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def send(
    session: aiohttp.ClientSession,
    router_url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = CHAT_BODY,
    timeout_s: float = 30,
) -> Outcome:
    """One non-streaming chat completion through the router at `router_url` (no /v1)."""
    sent = time.time()
    all_headers = {"content-type": "application/json", **(headers or {})}
    try:
        async with session.post(
            f"{router_url}/v1/chat/completions",
            data=body,
            headers=all_headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            answer = await response.read()
            endpoint = response.headers.get("x-hybridroute-endpoint", "")
            return Outcome(sent, time.time(), response.status, endpoint, answer)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(sent, time.time(), 0, "", type(exc).__name__.encode())


class Load:
    """Closed-loop traffic: each worker sends one request at a time, then pauses `pause_s`.

    The pause paces the load so that a small shared machine keeps serving the router, the upstreams
    and Prometheus on time; it also bounds the request rate at `workers / pause_s`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        router_url: str,
        workers: int,
        headers: Mapping[str, str] | None = None,
        pause_s: float = 0.05,
    ) -> None:
        self._session = session
        self._url = router_url
        self._headers = dict(headers or {})
        self._pause_s = pause_s
        self.outcomes: list[Outcome] = []
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while True:
            self.outcomes.append(await send(self._session, self._url, self._headers))
            await asyncio.sleep(self._pause_s)

    def sent_between(self, start: float, end: float = math.inf) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if start <= outcome.sent <= end]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class PacedLoad:
    """Open-loop traffic: one request every `1 / rate` seconds, each in its own task.

    At most `max_in_flight` requests are outstanding; an arrival beyond that is counted in `dropped`
    rather than sent, so a stalled router cannot make the load generator grow without bound.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        router_url: str,
        rate: float,
        headers: Mapping[str, str] | None = None,
        max_in_flight: int = 1000,
    ) -> None:
        self._session = session
        self._url = router_url
        self._headers = dict(headers or {})
        self._interval = 1 / rate
        self._max_in_flight = max_in_flight
        self._in_flight: set[asyncio.Task[None]] = set()
        self.outcomes: list[Outcome] = []
        self.dropped = 0
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if len(self._in_flight) < self._max_in_flight:
                task = asyncio.create_task(self._one())
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            else:
                self.dropped += 1
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _one(self) -> None:
        self.outcomes.append(await send(self._session, self._url, self._headers))

    async def stop(self) -> None:
        """Stop arrivals and wait for the requests already sent."""
        self._ticker.cancel()
        await asyncio.gather(self._ticker, *self._in_flight, return_exceptions=True)
