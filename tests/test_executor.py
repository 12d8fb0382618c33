"""Failover, bounded attempts, 429 handling, pass-through, caps and structured-output validation.

Each test drives the real router over loopback with the `openai` SDK and asserts on what the
simulated upstreams actually received.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from e2e.upstream_sim import Fault
from hybridroute_router.executor import retry_after_seconds, structured_output_valid
from hybridroute_router.upstream import Timeouts
from tests.fixtures.upstreams import endpoint, free_port, router_config

ROUTINE = [{"role": "user", "content": "Say hello."}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
STRUCTURED = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}


def two_tier(local: Any, cloud: Any, **sections: Any) -> Any:
    return router_config(endpoint("local-a", local), endpoint("cloud-a", cloud, "cloud"), **sections)


def test_5xx_fails_over_to_the_next_candidate(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=503))
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert raw.headers["x-hybridroute-attempts"] == "2"
    assert raw.headers["x-hybridroute-reason"] == "routine;fallback"
    assert len(local.requests) == 1
    assert len(cloud.requests) == 1


def test_time_to_first_byte_timeout_fails_over_a_stream(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(kind="hang"))
    running = router(two_tier(local, cloud, slo={"ttftMs": 200}))

    with sdk_client(running).chat.completions.with_streaming_response.create(
        model="auto", messages=ROUTINE, stream=True
    ) as raw:
        assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
        assert raw.headers["x-hybridroute-attempts"] == "2"


def test_request_timeout_bounds_a_hung_non_streaming_call(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(kind="hang"))
    running = router(two_tier(local, cloud, slo={"ttftMs": 100, "requestTimeoutMs": 300}))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert raw.headers["x-hybridroute-attempts"] == "2"


def test_non_streaming_answer_slower_than_ttft_is_not_cut(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    """A server sends a non-streaming answer's headers only when generation ends: ttftMs must not cut it."""
    local, cloud = upstream_sim("local", latency_ms=600), upstream_sim("cloud")
    running = router(two_tier(local, cloud, slo={"ttftMs": 150, "requestTimeoutMs": 10_000}))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-attempts"] == "1"
    assert raw.parse().choices[0].message.content == "Hello from the upstream simulator."
    assert len(cloud.requests) == 0


def test_latency_budget_header_tightens_the_timeouts(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(kind="hang"))
    running = router(two_tier(local, cloud))  # default ttft 10 s: only the header can make this fast

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, extra_headers={"x-hybridroute-latency-budget-ms": "200"}, timeout=5
    )

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert "x-hybridroute-latency-budget-ms" not in cloud.requests[0].headers


def test_connection_refused_fails_over(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    cloud = upstream_sim("cloud")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    running = router(two_tier(dead, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert raw.headers["x-hybridroute-attempts"] == "2"


def test_short_retry_after_is_honoured_on_the_same_endpoint(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=429, retry_after_ms=150))
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-attempts"] == "2"
    assert len(local.requests) == 2
    assert cloud.requests == []
    # the wait is upstream's instruction, not router overhead
    assert float(raw.headers["x-hybridroute-overhead-ms"]) < 100


def test_long_retry_after_moves_to_the_next_candidate_at_once(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=429, retry_after="30"))
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(model="auto", messages=ROUTINE, timeout=5)

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert len(local.requests) == 1
    assert len(cloud.requests) == 1


def test_client_errors_from_upstream_pass_through_without_failover(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=422))
    running = router(two_tier(local, cloud))

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.body["message"] == "simulated 422"
    assert caught.value.response.headers["x-hybridroute-endpoint"] == "local-a"
    assert cloud.requests == []


def test_max_attempts_bounds_failover(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=500))
    running = router(two_tier(local, cloud, fallback={"maxAttempts": 1}))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 503
    assert caught.value.body["message"] == "all 1 upstream attempts failed: local-a: 500 from upstream"
    assert cloud.requests == []


def test_failure_kinds_not_listed_in_on_status_do_not_fail_over(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=500))
    running = router(two_tier(local, cloud, fallback={"onStatus": ["timeout"]}))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert caught.value.status_code == 503
    assert cloud.requests == []


def test_zero_retry_budget_means_no_retries(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=500))
    running = router(two_tier(local, cloud, fallback={"retryBudgetPercent": 0}))

    with pytest.raises(openai.APIStatusError) as caught:
        sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    assert "retry budget exhausted" in caught.value.message
    assert cloud.requests == []


async def test_full_endpoint_overflows_to_the_next_candidate(
    upstream_sim: Any, router: Any, async_sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local", latency_ms=400), upstream_sim("cloud")
    config = router_config(endpoint("local-a", local, maxConcurrency=1), endpoint("cloud-a", cloud, "cloud"))
    running = router(config)
    client = async_sdk_client(running)

    async def ask() -> str:
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)
        return raw.headers["x-hybridroute-endpoint"]

    first = asyncio.create_task(ask())
    await asyncio.to_thread(local.wait_for_requests, 1)  # the first request holds local-a's only slot
    second = await ask()

    assert await first == "local-a"
    assert second == "cloud-a"
    assert len(local.requests) == 1


def test_invalid_structured_output_retries_local_once_then_escalates(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local", content="not json"), upstream_sim("cloud", content='{"city": "Oslo"}')
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, response_format=STRUCTURED
    )

    assert orjson.loads(raw.parse().choices[0].message.content or "") == {"city": "Oslo"}
    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert raw.headers["x-hybridroute-attempts"] == "3"
    assert len(local.requests) == 2
    assert len(cloud.requests) == 1


def test_valid_structured_output_on_the_retry_stays_local(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local", content='{"city": "Bergen"}'), upstream_sim("cloud")
    local.fail_next(Fault(status=200, content='{"town": "wrong field"}'))
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, response_format=STRUCTURED
    )

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-attempts"] == "2"
    assert cloud.requests == []


def test_private_structured_output_never_escalates_and_says_it_failed(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local", content="[1, 2]"), upstream_sim("cloud", content='{"city": "Oslo"}')
    running = router(two_tier(local, cloud))

    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto",
        messages=ROUTINE,
        response_format=STRUCTURED,
        extra_headers={"x-hybridroute-privacy": "restricted"},
    )

    assert raw.http_response.status_code == 200
    assert raw.headers["x-hybridroute-structured-output"] == "invalid"
    assert raw.parse().choices[0].message.content == "[1, 2]"
    assert len(local.requests) == 2
    assert cloud.requests == []


def test_structured_output_validation_unit() -> None:
    def answer(content: Any) -> dict[str, Any]:
        return {"choices": [{"message": {"content": content}}]}

    assert structured_output_valid(answer('{"city": "Oslo"}'), SCHEMA)
    assert not structured_output_valid(answer('{"city": 3}'), SCHEMA)
    assert not structured_output_valid(answer("Oslo"), SCHEMA)
    assert not structured_output_valid(answer(None), SCHEMA)
    assert not structured_output_valid({"choices": []}, SCHEMA)
    # a schema that is itself broken cannot be checked: the upstream's answer stands
    assert structured_output_valid(answer("anything"), {"type": "no-such-type"})


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "x", "retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None


class ManualClock:
    """The router's monotonic clock, moved only by the test (breaker timelines without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLocal:
    """A slow local model server on loopback that counts public requests in flight at once.

    Private prompts (the marker in their text) are answered at once; public ones are held until the
    test releases them, so no probe can finish (and close the breaker) while the burst is going on.
    """

    def __init__(self) -> None:
        self.release = asyncio.Event()  # bound to the server's loop on first wait; set from there too
        self.public_in_flight = 0
        self.max_public_in_flight = 0
        self.private_served = 0

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        if "PRIVATE" in body["messages"][0]["content"]:
            self.private_served += 1
        else:
            self.public_in_flight += 1
            self.max_public_in_flight = max(self.max_public_in_flight, self.public_in_flight)
            try:
                await self.release.wait()
            finally:
                self.public_in_flight -= 1
        answer = {
            "id": "local-1",
            "object": "chat.completion",
            "created": 0,
            "model": "local-a-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        return web.json_response(answer)


async def test_half_open_local_gets_at_most_half_open_probes_public_requests(
    upstream_sim: Any, router: Any, async_sdk_client: Any, background_loop: Any
) -> None:
    """Private requests served by a half-open local hold no probe slot and close nothing."""
    from aiohttp import web

    local = CountingLocal()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", local.handle)
    runner = web.AppRunner(app)
    port = free_port()

    async def start_local() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    background_loop.run(start_local())
    cloud = upstream_sim("cloud")
    clock = ManualClock()
    breaker_settings = {"consecutiveFailures": 1, "halfOpenProbes": 3, "openSeconds": 10}
    config = router_config(
        endpoint("local-a", f"http://127.0.0.1:{port}/v1"),
        endpoint("cloud-a", cloud, "cloud"),
        circuitBreaker=breaker_settings,
    )
    running = router(config, clock=clock)

    assert background_loop.run(half_open_after_a_failure(running, clock, 100)) == "half-open"
    client = async_sdk_client(running, timeout=30)

    async def ask(text: str, private: bool) -> str:
        headers = {"x-hybridroute-privacy": "private"} if private else {}
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers
        )
        return raw.headers["x-hybridroute-endpoint"]

    public, private = [], []
    for index in range(12):
        public.append(asyncio.create_task(ask(f"public {index}", private=False)))
        private.append(asyncio.create_task(ask(f"PRIVATE {index}", private=True)))
        await asyncio.sleep(0.02)
    assert await asyncio.gather(*private) == ["local-a"] * 12  # every private request stayed local
    # Everything but the probes is answered while they are held: wait for that, bounded.
    for _ in range(400):
        if sum(task.done() for task in public) >= 9:
            break
        await asyncio.sleep(0.05)

    async def release_probes() -> None:
        local.release.set()

    try:
        assert local.private_served == 12
        assert local.public_in_flight == 3
        assert local.max_public_in_flight == 3
        assert [task.result() for task in public if task.done()] == ["cloud-a"] * 9
    finally:
        background_loop.run(release_probes())
    assert [await task for task in public].count("local-a") == 3
    assert background_loop.run(breaker_state(running)) == "closed"  # three probe successes close it
    background_loop.run(runner.cleanup())


async def breaker_state(running: Any) -> str:
    state: str = running.app.executor.breakers.get("local-a").state
    return state


def test_ttft_bounds_only_a_streams_first_chunk_not_the_pauses_after_it(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """A generating stream pauses between tokens: each pause longer than ttftMs is no reason to cut it."""
    local = upstream_sim("local", ttft_ms=10, chunk_interval_ms=400, chunks=3)
    cloud = upstream_sim("cloud")
    running = router(two_tier(local, cloud, slo={"ttftMs": 150, "requestTimeoutMs": 10_000}))

    with sdk_client(running).chat.completions.with_streaming_response.create(
        model="auto", messages=ROUTINE, stream=True
    ) as raw:
        lines = [line for line in raw.iter_lines() if line]

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)
    assert cloud.requests == []


@pytest.mark.parametrize("kind", ["completions", "embeddings"])
def test_every_non_streaming_kind_slower_than_ttft_is_not_cut(
    kind: str, upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(kind="slow", delay_ms=600))  # headers, and all of the answer, after 600 ms
    running = router(two_tier(local, cloud, slo={"ttftMs": 150, "requestTimeoutMs": 10_000}))
    client = sdk_client(running)

    if kind == "completions":
        raw: Any = client.completions.with_raw_response.create(model="auto", prompt="Say hello.")
    else:
        raw = client.embeddings.with_raw_response.create(model="auto", input="hello")

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-attempts"] == "1"
    assert cloud.requests == []


@pytest.mark.parametrize(
    ("stream", "budget_ms", "expected"),
    [
        (False, None, Timeouts(2.0, 120.0, 120.0)),
        (True, None, Timeouts(2.0, 10.0, 120.0)),
        (False, 500, Timeouts(0.5, 0.5, 0.5)),
        (True, 30_000, Timeouts(2.0, 10.0, 30.0)),
    ],
)
def test_attempt_deadlines_follow_how_servers_answer(stream: bool, budget_ms: int | None, expected: Timeouts) -> None:
    """Non-streaming: the first byte is the last, so only the total bounds it; streams: ttft, then the total."""
    from hybridroute_router.config import SLOConfig
    from hybridroute_router.executor import attempt_timeouts

    assert attempt_timeouts(SLOConfig(), stream, budget_ms) == expected


class FailingOnce:
    """The real aiohttp transport, except that its first send raises what no handler expects (a bug)."""

    def __init__(self) -> None:
        from hybridroute_router.upstream import AiohttpTransport

        self.inner = AiohttpTransport()
        self.failures_left = 1

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def send(self, request: Any) -> Any:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("a bug below the executor")
        return await self.inner.send(request)


def test_an_attempt_that_raises_gives_back_its_concurrency_slot_and_probe_slot(
    upstream_sim: Any, router: Any, sdk_client: Any, background_loop: Any
) -> None:
    """After a 500 from a bug mid-attempt, the endpoint's only slot and only probe slot are free again."""
    local = upstream_sim("local")
    config = router_config(
        endpoint("local-a", local, maxConcurrency=1), circuitBreaker={"consecutiveFailures": 1, "halfOpenProbes": 1}
    )
    clock = ManualClock()
    running = router(config, transport=FailingOnce(), clock=clock)

    assert background_loop.run(half_open_after_a_failure(running, clock, 1000)) == "half-open"
    client = sdk_client(running, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="auto", messages=ROUTINE)

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert running.app.executor.limiter.in_flight("local-a") == 0
    assert background_loop.run(breaker_state(running)) == "closed"  # the second request was the probe


async def half_open_after_a_failure(running: Any, clock: Any, wait_s: float, name: str = "local-a") -> str:
    """Open `name`'s breaker with one 5xx, let `wait_s` pass on the manual clock; the breaker's state."""
    breaker = running.app.executor.breakers.get(name)
    breaker.record_failure("5xx", breaker.admit())
    clock.now += wait_s
    return str(breaker.state)
