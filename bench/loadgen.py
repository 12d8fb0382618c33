"""A lean HTTP/1.1 load generator, run as its own process so it shares no event loop with its target.

    python bench/loadgen.py --url http://127.0.0.1:8040/v1/chat/completions --body '{"model": "auto", ...}' \
        --concurrency 32 --duration 5 --warmup 1

Closed loop: `concurrency` keep-alive connections, each sending the same POST as soon as its previous
answer is complete. Prints one JSON object: completed requests (measured, and with the warm-up),
errors, req/s, latency percentiles (ms, whole response), the median time to the first body byte,
and the median of the router's `x-hybridroute-overhead-ms` header when the target sends one.

Why not an aiohttp client: on a two-core machine the load generator competes with the simulator and
the router for CPU, and aiohttp's client spends several times more CPU per request than the target's
own hop. Here a request is one pre-encoded `write` and the answer is parsed by httptools (the C
parser uvicorn uses), so nearly all the CPU goes to what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

OVERHEAD_HEADER = b"x-hybridroute-overhead-ms"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends the request and waits for the complete answer."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[int] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.first_byte_at = 0.0
        self.overhead_ms: float | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))
        if not self._closed.done():
            self._closed.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == OVERHEAD_HEADER:
            self.overhead_ms = float(value)

    def on_body(self, body: bytes) -> None:
        if not self.first_byte_at:
            self.first_byte_at = time.perf_counter()

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(self._parser.get_status_code())

    # ---------------------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    async def exchange(self) -> int:
        """Send the request once; the answer's status code when it has been read completely."""
        assert self._transport is not None
        self._done = asyncio.get_running_loop().create_future()
        self.first_byte_at = 0.0
        self.overhead_ms = None
        self._transport.write(self._request)
        return await self._done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def build_request(url: str, body: bytes, bearer: str) -> tuple[str, int, bytes]:
    """Host, port and the raw bytes of the POST (the same bytes every time)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        f"host: {host}:{port}\r\n"
        "content-type: application/json\r\n"
        f"authorization: Bearer {bearer}\r\n"
        f"content-length: {len(body)}\r\n"
        "\r\n"
    )
    return host, port, head.encode() + body


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return round(sorted_values[index], 3)


async def run(
    url: str, body: bytes, bearer: str, concurrency: int, duration: float, warmup: float
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    host, port, request = build_request(url, body, bearer)
    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(lambda: _Connection(request), host, port)
        connections.append(protocol)
    latencies: list[float] = []
    ttfbs: list[float] = []
    overheads: list[float] = []
    errors = 0
    completed = 0  # warm-up included: what the target's CPU time is divided by
    statuses: dict[int, int] = {}
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + duration

    async def worker(connection: _Connection) -> None:
        nonlocal errors, completed
        while True:
            begin = time.perf_counter()
            if begin >= stop_at:
                return
            try:
                status = await connection.exchange()
            except (OSError, httptools.HttpParserError):
                if begin >= measure_from:
                    errors += 1
                return  # a broken connection ends this worker; errors say how many
            end = time.perf_counter()
            completed += 1
            if begin < measure_from:
                continue
            if status != 200:
                statuses[status] = statuses.get(status, 0) + 1
                errors += 1
                continue
            latencies.append((end - begin) * 1000)
            ttfbs.append(((connection.first_byte_at or end) - begin) * 1000)
            if connection.overhead_ms is not None:
                overheads.append(connection.overhead_ms)

    await asyncio.gather(*(worker(connection) for connection in connections))
    for connection in connections:
        connection.close()
    latencies.sort()
    ttfbs.sort()
    return {
        "url": url,
        "concurrency": concurrency,
        "duration_s": duration,
        "requests": len(latencies),
        "requests_with_warmup": completed,
        "errors": errors,
        "error_statuses": statuses,
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": percentile(latencies, 0.5),
        "p90_ms": percentile(latencies, 0.9),
        "p99_ms": percentile(latencies, 0.99),
        "ttfb_p50_ms": percentile(ttfbs, 0.5),
        "router_overhead_p50_ms": round(statistics.median(overheads), 3) if overheads else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--bearer", default="loadgen", help="Authorization bearer token to send")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    args = parser.parse_args()
    body = json.dumps(json.loads(args.body)).encode()
    result = uvloop.run(run(args.url, body, args.bearer, args.concurrency, args.duration, args.warmup))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
