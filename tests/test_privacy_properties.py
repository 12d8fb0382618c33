"""Property tests: private requests never reach a cloud endpoint, whatever the policy, state or roll.

Hypothesis draws whole router configs (local and cloud endpoints, available or not, capabilities,
context windows, priorities, weights, rules that prefer cloud or list cloud endpoints explicitly,
budgets, rollout shares), endpoint states (breakers, capacity, p95, failure times), rolls and
requests. The promise checked: `decide` never returns a cloud candidate for a sensitive profile, and
when no local endpoint can take it the candidate list is empty and the error says why.
"""

from __future__ import annotations

import http.client
import itertools
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.upstream_sim import Fault
from hybridroute_router.config import (
    BudgetConfig,
    Capabilities,
    EndpointConfig,
    PrivacyConfig,
    RolloutConfig,
    RouterConfig,
    Rule,
    RuleAction,
    RuleMatch,
    parse_config,
)
from hybridroute_router.policy import Decision, EndpointState, decide, matching_rule
from hybridroute_router.profile import RequestProfile, build_profile
from tests.openai_bodies import KIND_PATHS, PlacedPII, placed_pii

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ["a", "b", "c", "d", "e", "f"]


@st.composite
def endpoints(draw: st.DrawFn) -> list[EndpointConfig]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
    result = []
    for name in names:
        kind = draw(st.sampled_from(["local", "cloud"]))
        result.append(
            EndpointConfig(
                name=name,
                type=kind,
                base_url=f"http://{name}.test/v1",
                model="m",
                priority=draw(st.integers(0, 3)),
                weight=draw(st.integers(0, 3)),
                max_context_tokens=draw(st.sampled_from([64, 1_000, 100_000])),
                available=draw(st.booleans()),
                capabilities=Capabilities(
                    tools=draw(st.booleans()), json_schema=draw(st.booleans()), vision=draw(st.booleans())
                ),
                pricing={
                    "inputPerMTok": draw(st.sampled_from([0, 0.5, 3])),
                    "outputPerMTok": draw(st.sampled_from([0, 2])),
                },
            )
        )
    return result


@st.composite
def rules(draw: st.DrawFn, names: list[str]) -> list[Rule]:
    drawn = []
    for index in range(draw(st.integers(0, 3))):
        match = RuleMatch(
            models=draw(st.sampled_from([[], ["auto"], ["big"]])),
            min_input_tokens=draw(st.sampled_from([None, 10, 500])),
            structured_output=draw(st.sampled_from([None, True, False])),
            min_complexity=draw(st.sampled_from([None, 0.5])),
        )
        action = RuleAction(
            prefer=draw(st.sampled_from([None, "local", "cloud"])),
            endpoints=draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))),
        )
        drawn.append(Rule(name=f"r{index}", match=match, action=action))
    return drawn


@st.composite
def router_configs(draw: st.DrawFn) -> RouterConfig:
    drawn = draw(endpoints())
    return RouterConfig(
        endpoints=drawn,
        rules=draw(rules([endpoint.name for endpoint in drawn])),
        budget=BudgetConfig(daily_usd=1, action=draw(st.sampled_from(["localOnly", "reject"]))),
        rollout=RolloutConfig(local_percent=draw(st.sampled_from([0, 10, 50, 100]))),
    )


endpoint_states = st.builds(
    EndpointState,
    breaker=st.sampled_from(["closed", "open", "half-open"]),
    at_capacity=st.booleans(),
    observed_p95_ms=st.one_of(st.none(), st.floats(0, 10_000), st.just(float("nan"))),
    last_failure_at=st.one_of(st.none(), st.floats(0, 1e6)),
)


@st.composite
def profiles(draw: st.DrawFn, sensitive: bool | None = None) -> RequestProfile:
    is_sensitive = draw(st.booleans()) if sensitive is None else sensitive
    return RequestProfile(
        kind=draw(st.sampled_from(["chat", "completions", "embeddings"])),
        model=draw(st.sampled_from(["auto", "big"])),
        stream=draw(st.booleans()),
        input_tokens=draw(st.integers(0, 5_000)),
        max_output_tokens=draw(st.integers(0, 1_000)),
        tool_count=draw(st.integers(0, 3)),
        structured_output=draw(st.booleans()),
        json_schema=None,
        wants_vision=draw(st.booleans()),
        sensitive=is_sensitive,
        sensitive_reasons=draw(st.sampled_from([("header",), ("detector:email",), ("policy", "detector:card")]))
        if is_sensitive
        else (),
        complexity=draw(st.floats(0, 1)),
        latency_budget_ms=None,
        headers={},
    )


rolls = st.floats(0, 1, exclude_max=True)


def scenario(sensitive: bool | None) -> Any:
    return st.tuples(
        router_configs(),
        profiles(sensitive),
        st.dictionaries(st.sampled_from(NAMES), endpoint_states),
        st.booleans(),
        rolls,
    )


def run(case: tuple[RouterConfig, RequestProfile, dict[str, EndpointState], bool, float]) -> Decision:
    config, profile, states, budget_exhausted, roll = case
    return decide(profile, config, states, budget_exhausted=budget_exhausted, roll=roll)


def statically_fit_locals(config: RouterConfig, profile: RequestProfile) -> list[EndpointConfig]:
    """Local endpoints that could take the request if healthy: an oracle written apart from policy.py."""
    rule = matching_rule(profile, config.rules)
    fit = []
    for endpoint in config.endpoints:
        caps = endpoint.capabilities
        if (
            endpoint.is_local
            and endpoint.available
            and profile.input_tokens + profile.max_output_tokens <= endpoint.max_context_tokens
            and (not profile.tool_count or caps.tools)
            and (not profile.structured_output or caps.json_schema)
            and (not profile.wants_vision or caps.vision)
            and (rule is None or not rule.action.endpoints or endpoint.name in rule.action.endpoints)
        ):
            fit.append(endpoint)
    return fit


@SETTINGS
@given(scenario(sensitive=True))
def test_private_requests_never_get_a_cloud_candidate(case: Any) -> None:
    decision = run(case)
    assert decision.private
    assert all(candidate.endpoint.is_local for candidate in decision.candidates)


@SETTINGS
@given(scenario(sensitive=True))
def test_private_request_without_a_local_home_gets_an_explained_empty_decision(case: Any) -> None:
    config, profile, states, _, _ = case
    decision = run(case)
    fit = statically_fit_locals(config, profile)
    healthy = [
        e
        for e in fit
        if states.get(e.name, EndpointState()).breaker != "open" and not states.get(e.name, EndpointState()).at_capacity
    ]
    all_open = bool(fit) and all(states.get(e.name, EndpointState()).breaker == "open" for e in fit)
    can_take = bool(healthy) or all_open
    assert bool(decision.candidates) == can_take
    assert {c.endpoint.name for c in decision.candidates} <= {e.name for e in fit}
    if not can_take:
        assert decision.error is not None
        assert decision.error.startswith("private request (")
        assert "cloud endpoints never receive it" in decision.error
        for reason in profile.sensitive_reasons:
            assert reason in decision.error
    else:
        assert decision.error is None


@SETTINGS
@given(scenario(sensitive=None))
def test_candidates_are_never_rejected_and_appear_once(case: Any) -> None:
    config, profile, _, _, _ = case
    decision = run(case)
    chosen = [candidate.endpoint.name for candidate in decision.candidates]
    rejected = [rejection.endpoint for rejection in decision.rejected]
    assert len(chosen) == len(set(chosen))
    assert len(rejected) == len(set(rejected))
    assert not set(chosen) & set(rejected)
    assert set(chosen) | set(rejected) <= {endpoint.name for endpoint in config.endpoints}
    if decision.reason != "budget":  # budget "reject" refuses the request without rejecting local endpoints
        assert set(chosen) | set(rejected) == {endpoint.name for endpoint in config.endpoints}
    for candidate in decision.candidates:
        assert candidate.endpoint.available
        assert profile.input_tokens + profile.max_output_tokens <= candidate.endpoint.max_context_tokens
    assert bool(decision.candidates) == (decision.error is None)


@SETTINGS
@given(scenario(sensitive=None))
def test_exhausted_budget_never_routes_to_cloud(case: Any) -> None:
    config, profile, states, _, roll = case
    decision = decide(profile, config, states, budget_exhausted=True, roll=roll)
    assert all(candidate.endpoint.is_local for candidate in decision.candidates)


@SETTINGS
@given(scenario(sensitive=False))
def test_order_respects_priority_within_each_class(case: Any) -> None:
    config, profile, _, _, _ = case
    decision = run(case)
    rule = matching_rule(profile, config.rules)
    if (rule is not None and rule.action.endpoints) or not decision.candidates:
        return  # an explicit endpoint list is an order of its own
    kinds = [candidate.endpoint.type for candidate in decision.candidates]
    switches = sum(1 for first, second in itertools.pairwise(kinds) if first != second)
    assert switches <= 1  # one class, then the other
    for kind in ("local", "cloud"):
        priorities = [c.endpoint.priority for c in decision.candidates if c.endpoint.type == kind]
        assert priorities == sorted(priorities)


@SETTINGS
@given(scenario(sensitive=False), rolls)
def test_roll_only_reorders_never_changes_the_set(case: Any, other_roll: float) -> None:
    config, profile, states, budget_exhausted, roll = case
    first = decide(profile, config, states, budget_exhausted=budget_exhausted, roll=roll)
    second = decide(profile, config, states, budget_exhausted=budget_exhausted, roll=other_roll)
    if "budget" in (first.reason, second.reason):
        return  # budget "reject" depends on which class the roll put first
    assert {c.endpoint.name for c in first.candidates} == {c.endpoint.name for c in second.candidates}


PII = st.sampled_from(["jane.doe@example.com", "4111 1111 1111 1111", "SSN 123-45-6789", "+1 (555) 123-4567"])
FILLER = st.text(alphabet=st.characters(codec="ascii", categories=["L", "Zs"]), max_size=200)


@SETTINGS
@given(
    router_configs(),
    FILLER,
    PII,
    FILLER,
    st.dictionaries(st.sampled_from(NAMES), endpoint_states),
    st.booleans(),
    rolls,
)
def test_requests_carrying_pii_are_detected_and_kept_local(
    config: RouterConfig,
    before: str,
    secret: str,
    after: str,
    states: dict[str, EndpointState],
    budget_exhausted: bool,
    roll: float,
) -> None:
    privacy = PrivacyConfig(builtin_detectors=["email", "phone", "card", "nationalId"])
    config = config.model_copy(update={"privacy": privacy})
    body = {"model": "auto", "messages": [{"role": "user", "content": f"{before} {secret} {after}"}]}
    profile = build_profile("chat", body, {}, config)
    assert profile.sensitive
    assert all(secret not in reason for reason in profile.sensitive_reasons)
    decision = decide(profile, config, states, budget_exhausted=budget_exhausted, roll=roll)
    assert all(candidate.endpoint.is_local for candidate in decision.candidates)
    assert secret not in (decision.error or "")
    assert all(secret not in rejection.detail for rejection in decision.rejected)


def test_strategies_cover_cloud_preferring_rules_and_all_states() -> None:
    # Guard against a strategy change that would quietly stop exercising the dangerous cases.
    @settings(max_examples=300, deadline=None, database=None)
    @given(scenario(sensitive=True))
    def collect(case: Any) -> None:
        config, _, states, _, _ = case
        cloud_names = {endpoint.name for endpoint in config.endpoints if not endpoint.is_local}
        for rule in config.rules:
            if rule.action.prefer == "cloud":
                seen.add("prefer-cloud")
            if cloud_names & set(rule.action.endpoints):
                seen.add("lists-cloud")
        seen.update(state.breaker for state in states.values())

    seen: set[str] = set()
    collect()
    assert {"prefer-cloud", "lists-cloud", "open", "half-open", "closed"} <= seen


# ---------------------------------------------------------------------------------------------------
# By construction, over real sockets: whole OpenAI bodies with PII placed anywhere, a real local
# upstream that misbehaves at random, config reloads, and a raw TCP listener as the cloud that
# records every byte it receives. `make privacy-soak` runs the same property longer.
# ---------------------------------------------------------------------------------------------------

SOCKET_EXAMPLES = int(os.environ.get("HYBRIDROUTE_PRIVACY_EXAMPLES", "250"))
SLO = {"ttftMs": 250, "requestTimeoutMs": 500, "connectTimeoutMs": 500}
SLOW_MS = 900  # past both deadlines above
LOCALS = ("local-a", "local-b")
BEHAVIOURS = ["ok", "ok", "5xx", "4xx", "redirect", "slow", "reset", "invalid-json", "cut"]
PRIVACY_HEADER_VALUES = ["private", "restricted", "true", "1", "public, private", "internal", ""]


def _fault(behaviour: str, redirect_to: str, status: int) -> Fault | None:
    return {
        "ok": None,
        "5xx": Fault(status=status),
        "4xx": Fault(status=404 if status % 2 else 401),
        "redirect": Fault(kind="redirect", status=307 if status % 2 else 308, location=redirect_to),
        "slow": Fault(kind="slow", delay_ms=SLOW_MS),
        "reset": Fault(kind="reset"),
        "invalid-json": Fault(kind="garbage"),
        "cut": Fault(kind="drop_mid_stream", after_chunks=1),  # a stream cut after its first chunk
    }[behaviour]


@st.composite
def socket_configs(draw: st.DrawFn, urls: dict[str, str]) -> dict[str, Any]:
    """A router config document over the two local simulators and the cloud recorder."""
    capable = {"tools": True, "jsonSchema": True, "vision": True}
    endpoints = [
        {
            "name": name,
            "type": "local",
            "baseURL": urls[name],
            "model": f"{name}-model",
            "maxContextTokens": 1_000_000,
            "capabilities": capable,
            "available": draw(st.sampled_from([True, True, True, False])),
            "priority": draw(st.integers(0, 2)),
        }
        for name in LOCALS
    ]
    endpoints.append(
        {
            "name": "cloud-a",
            "type": "cloud",
            "baseURL": urls["cloud-a"],
            "model": "cloud-model",
            "maxContextTokens": 1_000_000,
            "capabilities": capable,
        }
    )
    rules = draw(
        st.sampled_from(
            [
                [],
                [{"name": "cloud-first", "match": {}, "action": {"prefer": "cloud"}}],
                [{"name": "listed", "match": {}, "action": {"endpoints": ["cloud-a", "local-b", "local-a"]}}],
            ]
        )
    )
    return {
        "endpoints": endpoints,
        "rules": rules,
        "privacy": {
            "builtinDetectors": ["email", "phone", "card", "nationalId"],
            **draw(st.sampled_from([{}, {"unreadableContent": "ignore"}])),  # absent: the default, sensitive
        },
        "fallback": {"maxAttempts": draw(st.integers(1, 3)), "retryBudgetPercent": draw(st.sampled_from([0, 100]))},
        "circuitBreaker": {"consecutiveFailures": draw(st.sampled_from([2, 1000])), "openSeconds": 0.2},
        "slo": SLO,
    }


def _unreadable(kind: str, body: dict[str, Any]) -> bool:
    """Oracle, written apart from content.py: image/audio/file parts or token-id prompts."""
    if kind == "chat":
        return any(
            isinstance(part, dict) and part.get("type") in ("image_url", "input_audio", "file")
            for message in body["messages"]
            if isinstance(message.get("content"), list)
            for part in message["content"]
        )
    value = body["prompt" if kind == "completions" else "input"]
    return isinstance(value, list) and any(isinstance(item, int | list) for item in value)


def _post(url: str, path: str, body: Any, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = orjson.dumps(body)
        connection.putrequest("POST", path)
        for name, value in [("content-type", "application/json"), ("content-length", str(len(data))), *headers]:
            connection.putheader(name, value)
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_no_byte_of_a_private_request_reaches_the_cloud_socket(
    upstream_sim: Any, byte_recorder: Any, router: Any, background_loop: Any
) -> None:
    sims = {name: upstream_sim(name) for name in LOCALS}
    cloud = byte_recorder()
    urls = {**{name: sim.base_url for name, sim in sims.items()}, "cloud-a": cloud.base_url}
    running = router(
        parse_config({"endpoints": [{"name": "cloud-a", "type": "cloud", "baseURL": cloud.base_url, "model": "m"}]})
    )
    seen: Counter[str] = Counter()

    async def reload(document: dict[str, Any]) -> bool:
        return running.holder.offer(document, "property-test")

    @settings(
        max_examples=SOCKET_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        socket_configs(urls),
        st.booleans().flatmap(lambda with_pii: placed_pii(with_pii=with_pii)),
        st.lists(st.sampled_from(PRIVACY_HEADER_VALUES), max_size=2),
        st.fixed_dictionaries({name: st.sampled_from(BEHAVIOURS) for name in LOCALS}),
        st.sampled_from([500, 502, 503]),
        st.one_of(st.none(), st.floats(0, 0.4)),
    )
    def one_request(
        document: dict[str, Any],
        placed: PlacedPII,
        header_values: list[str],
        behaviour: dict[str, str],
        status: int,
        swap_after_s: float | None,
    ) -> None:
        hash_before = running.holder.current.config_hash if running.holder.current else ""
        assert background_loop.run(reload(document))
        seen["reloads"] += running.holder.current is not None and running.holder.current.config_hash != hash_before
        path = KIND_PATHS[placed.kind]
        for name, sim in sims.items():
            sim.faults.clear()
            fault = _fault(behaviour[name], f"{cloud.base_url}/{path.removeprefix('/v1/')}", status)
            if fault is not None:
                sim.fail_next(*[fault] * 4)
        headers = [*placed.headers, *(("x-hybridroute-privacy", value) for value in header_values)]
        private = (
            placed.in_forwarded_part
            or any(value.strip() != "public" for value in header_values)
            or (document["privacy"].get("unreadableContent") != "ignore" and _unreadable(placed.kind, placed.body))
        )
        received, connections = len(cloud.received), cloud.connections
        swap = None
        if swap_after_s is not None:  # while the request is in flight, its local endpoints become cloud ones
            swapped = {
                **document,
                "endpoints": [
                    {**entry, "type": "cloud", "baseURL": cloud.base_url} if entry["name"] in LOCALS else entry
                    for entry in document["endpoints"]
                ],
            }
            swapped_at: list[float] = []

            def reload_swapped() -> None:
                swapped_at.append(swap_after_s)
                background_loop.run(reload(swapped))

            swap = threading.Timer(swap_after_s, reload_swapped)
            swap.start()

        code, response_headers, answer = _post(running.url, path, placed.body, headers)

        if swap is not None:
            swap.cancel()  # not yet fired: the request was quicker
            swap.join()
            seen["reloads racing the request (locals become cloud)"] += bool(swapped_at)

        sent_to_cloud = bytes(cloud.received[received:])
        if placed.value is not None:
            assert placed.value.encode() not in sent_to_cloud, placed.where
        served_by = response_headers.get("x-hybridroute-endpoint")
        if private:
            assert sent_to_cloud == b"", (placed.kind, placed.where, behaviour, served_by)
            assert cloud.connections == connections
            if code == 200:
                assert served_by in LOCALS
                seen["private served locally"] += 1
            elif code == 400:  # a value the router validates (a JSON schema's type, say): refused before routing
                assert orjson.loads(answer)["error"]["type"] == "invalid_request_error", answer
                seen["private refused as invalid (400)"] += 1
            else:
                assert code == 503, answer
                assert orjson.loads(answer)["error"]["code"] == "private_no_local"
                seen["private refused (503 private_no_local)"] += 1
        else:
            seen["public to the cloud" if served_by == "cloud-a" else "public elsewhere or failed"] += 1
        seen[f"kind:{placed.kind}"] += 1
        seen[f"placed:{placed.where.split(':')[0]}"] += 1
        for name in LOCALS:
            seen[f"local behaviour:{behaviour[name]}"] += 1

    for sim in sims.values():  # nobody else's faults in this test's way
        sim.faults.clear()
    one_request()
    report = dict(sorted(seen.items()))
    print(f"\nprivacy socket property: {SOCKET_EXAMPLES} examples requested; outcomes: {report}")
    if os.environ.get("HYBRIDROUTE_PRIVACY_REPORT"):
        Path(os.environ["HYBRIDROUTE_PRIVACY_REPORT"]).write_text(orjson.dumps(report).decode())
    if SOCKET_EXAMPLES >= 100:  # the strategies must keep reaching every case that matters
        for outcome in ("private served locally", "private refused (503 private_no_local)", "public to the cloud"):
            assert seen[outcome] > 0, report
        for kind in ("redirect", "slow", "reset", "invalid-json", "5xx", "4xx", "cut"):
            assert seen[f"local behaviour:{kind}"] > 0, report
        assert seen["reloads"] > 0, report
        assert seen["reloads racing the request (locals become cloud)"] > 0, report
