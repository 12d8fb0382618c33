"""Concurrency shedding end to end: `maxConcurrency` caps in-flight requests per router, nothing queues.

Real simulators on loopback, the router in-process under uvicorn, aiohttp and the `openai` SDK as
clients. A full endpoint is skipped at once: the overflow is answered by the next candidate while the
capped endpoint is still busy, so its latency is the cloud's, not the local queue's. Private overflow
has no next candidate (cloud never receives it) and is refused with a 503 that says why. The slot of a
streamed answer is held until the stream ends. Caps are per router: two sidecars may each fill theirs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from e2e.loadclient import PRIVATE_HEADERS, Outcome, send
from e2e.upstream_sim import Fault, UpstreamSim
from hybridroute_router.config import RouterConfig
from tests.fixtures.upstreams import RunningRouter, endpoint, router_config

LOCAL_LATENCY_S = 1.5
"""Long enough that a whole burst arrives while the first requests still hold local's slots."""
POLICY = "shed"


def capped(local: UpstreamSim, cloud: UpstreamSim, cap: int, **sections: Any) -> RouterConfig:
    return router_config(
        endpoint("local-a", local, maxConcurrency=cap),
        endpoint("cloud-a", cloud, "cloud"),
        policy={"name": POLICY},
        **sections,
    )


async def burst(running: RunningRouter, size: int, headers: dict[str, str] | None = None) -> list[Outcome]:
    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(send(session, running.url, headers) for _ in range(size))))


async def metric(running: RunningRouter, name: str, **labels: str) -> float:
    """One sample's value from the router's /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as session, session.get(f"{running.metrics_url}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def served_by(outcomes: list[Outcome]) -> Counter[str]:
    assert all(outcome.ok for outcome in outcomes), [outcome.body for outcome in outcomes if not outcome.ok]
    return Counter(outcome.endpoint for outcome in outcomes)


async def test_burst_beyond_the_cap_overflows_to_cloud_at_once(upstream_sim: Any, router: Any) -> None:
    local, cloud = upstream_sim("local", latency_ms=LOCAL_LATENCY_S * 1000), upstream_sim("cloud")
    running = router(capped(local, cloud, cap=3))

    first = await burst(running, 10)

    assert served_by(first) == {"local-a": 3, "cloud-a": 7}
    assert len(local.requests) == 3
    overflow = [outcome for outcome in first if outcome.endpoint == "cloud-a"]
    # No queueing: every overflow answer came back while local was still working on its three.
    assert max(outcome.seconds for outcome in overflow) < LOCAL_LATENCY_S / 2
    assert min(outcome.seconds for outcome in first if outcome.endpoint == "local-a") >= LOCAL_LATENCY_S * 0.9
    assert await metric(running, "hybridroute_capacity_skips_total", policy=POLICY, endpoint="local-a") == 7
    assert await metric(running, "hybridroute_requests_total", endpoint="cloud-a", outcome="success") == 7
    assert running.app.executor.limiter.in_flight("local-a") == 0

    # The slots came back with the answers: the next burst gets three local again.
    assert served_by(await burst(running, 5)) == {"local-a": 3, "cloud-a": 2}


async def test_private_overflow_is_refused_never_sent_to_cloud(upstream_sim: Any, router: Any) -> None:
    local, cloud = upstream_sim("local", latency_ms=LOCAL_LATENCY_S * 1000), upstream_sim("cloud")
    running = router(capped(local, cloud, cap=1))

    async with aiohttp.ClientSession() as session:
        holder = asyncio.create_task(send(session, running.url, PRIVATE_HEADERS))
        await asyncio.to_thread(local.wait_for_requests, 1)  # local's only slot is taken
        refused = await send(session, running.url, PRIVATE_HEADERS)
        public = await send(session, running.url)
        held = await holder

    assert (held.status, held.endpoint) == (200, "local-a")
    assert refused.status == 503
    assert refused.seconds < LOCAL_LATENCY_S / 2  # refused at once, not queued behind the holder
    message = orjson.loads(refused.body)["error"]["message"]
    assert "private request" in message
    assert "local-a: capacity (maxConcurrency in flight)" in message
    assert "cloud endpoints never receive it" in message
    assert (public.status, public.endpoint) == (200, "cloud-a")
    assert len(cloud.requests) == 1
    assert not any("x-hybridroute-privacy" in request.headers for request in cloud.requests)
    assert await metric(running, "hybridroute_privacy_blocks_total", policy=POLICY, outcome="rejected") == 1


async def test_a_stream_holds_its_slot_until_it_ends(upstream_sim: Any, router: Any, async_sdk_client: Any) -> None:
    local = upstream_sim("local", chunks=4, chunk_interval_ms=300)
    cloud = upstream_sim("cloud")
    running = router(capped(local, cloud, cap=1))
    client = async_sdk_client(running)
    messages = [{"role": "user", "content": "Say hello."}]

    async def served_endpoint() -> str:
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=messages)
        return str(raw.headers["x-hybridroute-endpoint"])

    stream = await client.chat.completions.create(model="auto", messages=messages, stream=True)
    chunks = aiter(stream)
    await anext(chunks)  # first bytes are here; the rest is still being generated locally
    during = await served_endpoint()
    rest = [chunk async for chunk in chunks]
    after = await served_endpoint()

    assert during == "cloud-a"
    assert rest
    assert after == "local-a"
    assert running.app.executor.limiter.in_flight("local-a") == 0


async def test_caps_are_per_router(upstream_sim: Any, router: Any) -> None:
    local, cloud = upstream_sim("local", latency_ms=LOCAL_LATENCY_S * 1000), upstream_sim("cloud")
    config = capped(local, cloud, cap=2)
    first, second = router(config), router(config)

    outcomes = await asyncio.gather(burst(first, 4), burst(second, 4))

    assert [served_by(list(each)) for each in outcomes] == [{"local-a": 2, "cloud-a": 2}] * 2
    assert len(local.requests) == 4  # two sidecars, two slots each, all in flight together


class ManualClock:
    """The router's monotonic clock, moved by the test (breaker open periods without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_private_request_is_not_refused_by_busy_half_open_probe_slots(upstream_sim: Any, router: Any) -> None:
    """Half-open admits `halfOpenProbes` at a time; public overflow goes to cloud, private stays local.

    A private request has no other candidate, and local is not failing: it is served (slowly) like
    under an open breaker's "all-open" pick, rather than refused because public probes hold the slots.
    """
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    clock = ManualClock()
    breaker = {"consecutiveFailures": 1, "minimumCalls": 10_000, "openSeconds": 10, "halfOpenProbes": 1}
    running = router(capped(local, cloud, cap=100, circuitBreaker=breaker), clock=clock)
    local.fail_next(Fault(status=500))

    async with aiohttp.ClientSession() as session:
        failed_over = await send(session, running.url)
        assert (failed_over.status, failed_over.endpoint) == (200, "cloud-a")
        assert running.app.executor.breakers.states()["local-a"] == "open"

        clock.now += 60  # the open period is over: half-open at the next look
        local.behavior = dataclasses.replace(local.behavior, latency_ms=LOCAL_LATENCY_S * 1000)
        probe = asyncio.create_task(send(session, running.url))
        await asyncio.to_thread(local.wait_for_requests, 2)  # the probe holds the only probe slot
        assert running.app.executor.breakers.states()["local-a"] == "half-open"
        public = await send(session, running.url)
        private = await send(session, running.url, PRIVATE_HEADERS)
        probed = await probe

    assert (probed.status, probed.endpoint) == (200, "local-a")
    assert (public.status, public.endpoint) == (200, "cloud-a")
    assert (private.status, private.endpoint) == (200, "local-a"), private.body
    assert not any("x-hybridroute-privacy" in request.headers for request in cloud.requests)
