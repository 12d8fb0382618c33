"""SSE streaming through the router: chunk relay, usage metering, in-band errors after the first byte."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from e2e.upstream_sim import Fault
from hybridroute_router.proxy import SSERelay, upstream_body, upstream_headers
from tests.fixtures.upstreams import endpoint, router_config

ROUTINE = [{"role": "user", "content": "Say hello."}]


def two_tier(local: Any, cloud: Any) -> Any:
    return router_config(endpoint("local-a", local), endpoint("cloud-a", cloud, "cloud"))


def test_stream_without_usage_request_hides_the_forced_usage_chunk(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local = upstream_sim("local", chunks=4)
    running = router(router_config(endpoint("local-a", local)))

    chunks = list(sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, stream=True))

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "Hello from the upstream simulator."
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the client
    assert all(chunk.usage is None for chunk in chunks)
    assert local.requests[0].body["stream_options"] == {"include_usage": True}


async def test_stream_with_usage_request_keeps_the_usage_chunk(
    upstream_sim: Any, router: Any, async_sdk_client: Any
) -> None:
    local = upstream_sim("local", chunks=2)
    running = router(router_config(endpoint("local-a", local)))

    stream = await async_sdk_client(running).chat.completions.create(
        model="auto", messages=ROUTINE, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 11
    assert chunks[-1].usage.completion_tokens == 7


def test_streamed_usage_is_metered(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local", completion_tokens=42)
    running = router(router_config(endpoint("local-a", local)))

    list(sdk_client(running).completions.create(model="auto", prompt="Once", stream=True))

    text = running.app.metrics.render().decode()
    assert (
        'hybridroute_tokens_total{direction="output",endpoint="local-a",namespace="default",policy="standalone"} 42.0'
        in text
    )


def test_failure_before_the_first_byte_fails_over_while_streaming(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.fail_next(Fault(status=502))
    running = router(two_tier(local, cloud))

    with sdk_client(running).chat.completions.with_streaming_response.create(
        model="auto", messages=ROUTINE, stream=True
    ) as response:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse())
        assert response.headers["x-hybridroute-endpoint"] == "cloud-a"
        assert response.headers["x-hybridroute-attempts"] == "2"

    assert text == "Hello from the upstream simulator."


def test_failure_after_the_first_byte_is_reported_in_band_without_failover(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local", chunks=5), upstream_sim("cloud")
    local.fail_next(Fault(kind="drop_mid_stream", after_chunks=2))
    running = router(two_tier(local, cloud))
    received: list[str] = []

    stream = sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE, stream=True)
    with pytest.raises(openai.APIError) as caught:
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    assert received == ["Hello f", "rom the"]  # what arrived before the cut, then the in-band error
    assert "local-a failed after the response started" in caught.value.message
    assert cloud.requests == []
    text = running.app.metrics.render().decode()
    assert (
        'hybridroute_requests_total{endpoint="local-a",namespace="default",outcome="stream_error",'
        'policy="standalone"} 1.0' in text
    )


# ---- the relay itself, without a network --------------------------------------------------------

USAGE_CHUNK = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n'
CONTENT_CHUNK = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'


def test_relay_holds_partial_events_until_complete() -> None:
    relay = SSERelay(keep_usage=True)

    assert relay.feed(CONTENT_CHUNK[:10]) == b""
    assert relay.feed(CONTENT_CHUNK[10:] + b"data: [DO") == CONTENT_CHUNK
    assert relay.feed(b"NE]\n\n") == b"data: [DONE]\n\n"


def test_relay_drops_the_usage_chunk_but_still_meters_it() -> None:
    relay = SSERelay(keep_usage=False)

    out = relay.feed(CONTENT_CHUNK + USAGE_CHUNK[:20]) + relay.feed(USAGE_CHUNK[20:] + b"data: [DONE]\n\n")

    assert out == CONTENT_CHUNK + b"data: [DONE]\n\n"
    assert relay.usage is not None
    assert (relay.usage.input_tokens, relay.usage.output_tokens) == (3, 5)


def test_relay_keeps_requested_usage_and_handles_crlf_and_a_missing_final_blank_line() -> None:
    relay = SSERelay(keep_usage=True)
    crlf_usage = USAGE_CHUNK.replace(b"\n\n", b"\r\n\r\n")

    out = relay.feed(crlf_usage) + relay.feed(b"data: [DONE]") + relay.finish()

    assert out == crlf_usage + b"data: [DONE]\n\n"
    assert relay.usage is not None


def test_relay_strips_usage_from_a_content_chunk_when_unrequested() -> None:
    relay = SSERelay(keep_usage=False)

    out = relay.feed(b'data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n')

    assert out == b'data: {"choices":[{"delta":{}}],"usage":null}\n\n'
    assert relay.usage is not None


def test_upstream_rewrites_force_usage_and_drop_client_credentials() -> None:
    body = upstream_body({"model": "auto", "stream": True, "stream_options": {"x": 1}}, "served", stream=True)
    headers = upstream_headers(
        [
            ("authorization", "Bearer client"),
            ("api-key", "client"),
            ("x-api-key", "client"),
            ("connection", "keep-alive"),
            ("x-hybridroute-privacy", "restricted"),
            ("user-agent", "sdk"),
        ],
        api_key="endpoint-key",
    )

    assert body == b'{"model":"served","stream":true,"stream_options":{"x":1,"include_usage":true}}'
    assert headers == {"user-agent": "sdk", "content-type": "application/json", "authorization": "Bearer endpoint-key"}
