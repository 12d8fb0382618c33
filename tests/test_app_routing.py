"""The router app end to end: real simulators on loopback, the real `openai` SDK, real uvicorn."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import openai
import orjson
import pytest

from tests.fixtures.upstreams import endpoint, router_config

ROUTINE = [{"role": "user", "content": "Say hello."}]
COMPLEX = [{"role": "user", "content": "Analyze this architecture step by step and compare the trade-off."}]
CLOUD_KEY = "sk-cloud-endpoint-key-123"
ENVIRON = {"CLOUD_KEY": CLOUD_KEY}


def local_and_cloud(local: Any, cloud: Any, **sections: Any) -> Any:
    return router_config(
        endpoint("local-a", local),
        endpoint(
            "cloud-a",
            cloud,
            "cloud",
            apiKey={"env": "CLOUD_KEY"},
            pricing={"inputPerMTok": 1.0, "outputPerMTok": 2.0},
        ),
        **sections,
    )


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_routine_request_is_served_locally_with_explaining_headers(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    client = sdk_client(running)

    raw = client.chat.completions.with_raw_response.create(model="auto", messages=ROUTINE)

    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the upstream simulator."
    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-reason"] == "routine"
    assert raw.headers["x-hybridroute-attempts"] == "1"
    assert float(raw.headers["x-hybridroute-cost-usd"]) == 0.0
    assert 0.0 <= float(raw.headers["x-hybridroute-overhead-ms"]) < 1000
    assert [request.body["model"] for request in local.requests] == ["local-a-model"]
    assert cloud.requests == []


async def test_complex_request_goes_to_cloud_with_the_endpoint_key_only(
    upstream_sim: Any, router: Any, async_sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    client = async_sdk_client(running, api_key="client-own-secret")

    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=COMPLEX, extra_headers={"x-hybridroute-debug": "1", "x-request-id": "req-7"}
    )

    assert raw.headers["x-hybridroute-endpoint"] == "cloud-a"
    assert raw.headers["x-hybridroute-reason"] == "complex"
    # usage 11 in / 7 out at $1 / $2 per million tokens
    assert float(raw.headers["x-hybridroute-cost-usd"]) == pytest.approx(25e-6)
    assert local.requests == []
    (sent,) = cloud.requests
    assert sent.headers["authorization"] == f"Bearer {CLOUD_KEY}"
    assert "client-own-secret" not in orjson.dumps(sent.headers).decode()
    assert "x-hybridroute-debug" not in sent.headers
    assert sent.headers["x-request-id"] == "req-7"
    assert sent.body["model"] == "cloud-a-model"


def test_private_request_stays_local_even_when_complex(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    client = sdk_client(running)

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=COMPLEX, extra_headers={"x-hybridroute-privacy": "restricted"}
    )

    assert raw.headers["x-hybridroute-endpoint"] == "local-a"
    assert raw.headers["x-hybridroute-reason"] == "private"
    assert len(local.requests) == 1
    assert cloud.requests == []
    metrics = http("GET", f"{running.metrics_url}/metrics")[1].decode()
    assert (
        'hybridroute_privacy_blocks_total{namespace="default",outcome="kept-local",policy="standalone"} 1.0' in metrics
    )


def test_private_request_with_local_down_gets_503_and_cloud_never_sees_it(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    local.behavior.failure_rate, local.behavior.failure_status = 1.0, 500
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    client = sdk_client(running)

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="auto", messages=ROUTINE, extra_headers={"x-hybridroute-privacy": "private"}
        )

    assert caught.value.status_code == 503
    assert "local-a: 500 from upstream" in caught.value.message
    assert len(local.requests) == 1
    assert cloud.requests == []


def test_private_request_without_any_local_endpoint_is_refused_with_the_reason(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = router_config(
        endpoint("local-a", local, available=False, unavailableReason="no ready replicas"),
        endpoint("cloud-a", cloud, "cloud"),
    )
    running = router(config)
    client = sdk_client(running)

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="auto", messages=ROUTINE, extra_headers={"x-hybridroute-privacy": "private"}
        )

    assert caught.value.status_code == 503
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "private_no_local"  # the one refusal contract for private requests
    assert "private request" in error["message"]
    assert "no ready replicas" in error["message"]
    assert cloud.requests == []
    assert local.requests == []
    metrics = http("GET", f"{running.metrics_url}/metrics")[1].decode()
    assert 'hybridroute_privacy_blocks_total{namespace="default",outcome="rejected",policy="standalone"} 1.0' in metrics


def test_models_lists_the_policy_aliases(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local")
    running = router(router_config(endpoint("local-a", local), modelAliases=["auto", "fast"]))
    client = sdk_client(running)

    assert [model.id for model in client.models.list()] == ["auto", "fast"]


def test_completions_and_embeddings_are_routed(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local")
    running = router(router_config(endpoint("local-a", local)))
    client = sdk_client(running)

    completion = client.completions.create(model="auto", prompt="Once upon a time", max_tokens=8)
    embedding = client.embeddings.create(model="auto", input=["a", "b"])

    assert completion.choices[0].text == "Hello from the upstream simulator."
    assert len(embedding.data) == 2
    assert local.paths() == ["/v1/completions", "/v1/embeddings"]
    assert all(request.body["model"] == "local-a-model" for request in local.requests)


def test_explain_returns_the_decision_without_sending_or_echoing_the_prompt(upstream_sim: Any, router: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    secret_prompt = "My e-mail is jane.doe@example.com, analyze my plan step by step."
    body = {"model": "auto", "messages": [{"role": "user", "content": secret_prompt}]}

    status, raw = http("POST", f"{running.url}/hybridroute/v1/explain", body)

    assert status == 200
    explained = orjson.loads(raw)
    assert explained["decision"]["reason"] == "complex"
    assert [c["endpoint"] for c in explained["decision"]["candidates"]] == ["cloud-a", "local-a"]
    assert explained["decision"]["candidates"][0]["estimatedCostUsd"] > 0
    assert explained["profile"]["complexity"] >= 0.6
    assert explained["configHash"].startswith("sha256:")
    assert "jane.doe" not in raw.decode()
    assert "plan step" not in raw.decode()
    assert local.requests == []
    assert cloud.requests == []


def test_explain_shows_privacy_rejections(upstream_sim: Any, router: Any) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)

    status, raw = http(
        "POST",
        f"{running.url}/hybridroute/v1/explain",
        {"model": "auto", "messages": ROUTINE},
        headers={"x-hybridroute-privacy": "restricted"},
    )

    explained = orjson.loads(raw)
    assert status == 200
    assert explained["decision"]["private"] is True
    assert [c["endpoint"] for c in explained["decision"]["candidates"]] == ["local-a"]
    assert explained["decision"]["rejected"][0]["endpoint"] == "cloud-a"
    assert explained["decision"]["rejected"][0]["filter"] == "privacy"


def test_metrics_cover_requests_durations_breakers_and_config(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    local = upstream_sim("local")
    running = router(router_config(endpoint("local-a", local)))
    sdk_client(running).chat.completions.create(model="auto", messages=ROUTINE)

    status, raw = http("GET", f"{running.metrics_url}/metrics")
    text = raw.decode()

    assert status == 200
    labels = 'endpoint="local-a",namespace="default",policy="standalone"'
    assert (
        'hybridroute_requests_total{endpoint="local-a",namespace="default",outcome="success",policy="standalone"} 1.0'
        in text
    )
    assert (
        'hybridroute_upstream_duration_seconds_bucket{endpoint="local-a",le="120.0",namespace="default",'
        'policy="standalone"} 1.0' in text
    )
    assert f"hybridroute_upstream_ttft_seconds_count{{{labels}}} 1.0" in text
    assert (
        'hybridroute_tokens_total{direction="output",endpoint="local-a",namespace="default",policy="standalone"} 7.0'
        in text
    )
    assert (
        'hybridroute_breaker_state{endpoint="local-a",namespace="default",policy="standalone",state="closed"} 1.0'
        in text
    )
    assert 'hybridroute_request_attempts_bucket{le="1.0",namespace="default",policy="standalone"} 1.0' in text
    config_hash = running.holder.current.config_hash
    assert f'hybridroute_config_info{{config_hash="{config_hash}",namespace="default",policy="standalone"}} 1.0' in text


def test_health_and_readiness_follow_the_config(router: Any) -> None:
    running = router(None)

    assert http("GET", f"{running.url}/healthz")[0] == 200
    status, raw = http("GET", f"{running.url}/readyz")
    assert status == 503
    assert orjson.loads(raw)["error"]["code"] == "router_not_ready"
    status, _ = http("POST", f"{running.url}/v1/chat/completions", {"model": "auto", "messages": ROUTINE})
    assert status == 503

    running.holder.offer({"endpoints": [{"name": "a", "type": "local", "baseURL": "http://x/v1", "model": "m"}]}, "t")

    status, raw = http("GET", f"{running.url}/readyz")
    assert status == 200
    assert orjson.loads(raw)["configHash"] == running.holder.current.config_hash


def test_executor_refuses_a_cloud_candidate_for_a_private_request_even_if_the_decision_offers_one(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    """The privacy promise holds at the I/O boundary too, not only in `decide`: break `decide` and see."""
    import dataclasses

    from hybridroute_router.policy import Candidate

    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    running = router(local_and_cloud(local, cloud), environ=ENVIRON)
    real_decide = running.app._decide

    def broken_decide(profile: Any, config: Any, *state: Any) -> Any:
        decision = real_decide(profile, config, *state)
        leak = Candidate(config.endpoint("cloud-a"), "preferred", 0.0)  # the bug: cloud first for a private request
        return dataclasses.replace(decision, candidates=(leak, *decision.candidates))

    running.app._decide = broken_decide
    response = sdk_client(running).chat.completions.with_raw_response.create(
        model="auto", messages=ROUTINE, extra_headers={"x-hybridroute-privacy": "private"}
    )

    assert response.headers["x-hybridroute-endpoint"] == "local-a"
    assert cloud.requests == []
    _, metrics = http("GET", f"{running.metrics_url}/metrics")
    assert (
        b'hybridroute_privacy_blocks_total{namespace="default",outcome="cloud_candidate_refused",'
        b'policy="standalone"} 1.0' in metrics
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/hybridroute/v1/explain"])
def test_a_reload_while_the_body_arrives_leaves_the_request_on_the_config_it_started_with(
    path: str, upstream_sim: Any, router: Any, background_loop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow client is mid-body when a reload removes the endpoint it would be routed to."""
    import http.client
    import threading

    from hybridroute_router import app as app_module

    old_local, new_local = upstream_sim("old"), upstream_sim("new")
    old_config = router_config(endpoint("local-old", old_local))
    new_config = router_config(endpoint("local-new", new_local))
    running = router(old_config)
    reading = threading.Event()
    real_read_body = app_module._read_body

    async def read_body_after_signalling(*args: Any) -> bytes:
        reading.set()  # the request has its config: now the test reloads
        return await real_read_body(*args)

    monkeypatch.setattr(app_module, "_read_body", read_body_after_signalling)
    body = orjson.dumps({"model": "auto", "messages": ROUTINE})
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    connection.putrequest("POST", path)
    connection.putheader("content-type", "application/json")
    connection.putheader("content-length", str(len(body)))
    connection.endheaders(body[:7])
    assert reading.wait(10)

    async def reload() -> bool:
        return running.holder.offer(new_config.model_dump(mode="json", by_alias=True), "test")

    assert background_loop.run(reload())
    connection.send(body[7:])
    response = connection.getresponse()
    document = orjson.loads(response.read())
    connection.close()

    assert response.status == 200
    if path == "/hybridroute/v1/explain":
        assert document["configHash"] == old_config.config_hash
        assert [candidate["endpoint"] for candidate in document["decision"]["candidates"]] == ["local-old"]
    else:
        assert response.getheader("x-hybridroute-endpoint") == "local-old"
        assert len(old_local.requests) == 1
    assert new_local.requests == []
    assert running.holder.current.config_hash == new_config.config_hash


def test_a_large_body_is_profiled_off_the_event_loop(upstream_sim: Any, router: Any, monkeypatch: Any) -> None:
    """Megabytes of text take the detectors seconds (4 MB of "1234 ": about 3 s here); profiled on the
    event loop, every other request of the pod waited that long (a /healthz poll stalled 2.9 s; 0.48 s
    at most once off the loop). Small bodies stay inline, where a thread hop costs more than the scan."""
    from hybridroute_router import app as app_module

    where: list[str] = []
    build_profile = app_module.build_profile

    def recording(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return build_profile(*args, **kwargs)

    monkeypatch.setattr(app_module, "build_profile", recording)
    local = upstream_sim("local")
    detectors = {"builtinDetectors": ["email", "phone", "card", "nationalId"]}
    running = router(router_config(endpoint("local-a", local, maxContextTokens=4_000_000), privacy=detectors))
    large = "1234 " * (app_module.PROFILE_IN_THREAD_BYTES // 5 + 1)

    assert http("POST", f"{running.url}/v1/chat/completions", {"model": "auto", "messages": ROUTINE})[0] == 200
    message = [{"role": "user", "content": large}]
    assert http("POST", f"{running.url}/v1/chat/completions", {"model": "auto", "messages": message})[0] == 200
    assert where == ["event loop", "worker thread"]
