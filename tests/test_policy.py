"""Routing decision tables: hard filters, preference, ranking, weighted split, rollout, budget, all-open."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hybridroute_router.config import (
    BudgetConfig,
    Capabilities,
    EndpointConfig,
    HeaderMatch,
    Pricing,
    RolloutConfig,
    RouterConfig,
    Rule,
    RuleAction,
    RuleMatch,
)
from hybridroute_router.cost import estimate_cost
from hybridroute_router.policy import Decision, EndpointState, decide, rule_matches, weighted_first
from hybridroute_router.profile import RequestProfile


def local(name: str, **fields: Any) -> EndpointConfig:
    return EndpointConfig(name=name, type="local", base_url=f"http://{name}:8000/v1", model="small", **fields)


def cloud(name: str, **fields: Any) -> EndpointConfig:
    fields.setdefault("pricing", Pricing(input_per_m_tok=1.0, output_per_m_tok=4.0))
    fields.setdefault("max_context_tokens", 128_000)
    return EndpointConfig(name=name, type="cloud", base_url="https://api.example.com/v1", model="big", **fields)


def profile(**fields: Any) -> RequestProfile:
    base = RequestProfile(
        kind="chat",
        model="auto",
        stream=False,
        input_tokens=100,
        max_output_tokens=100,
        tool_count=0,
        structured_output=False,
        json_schema=None,
        wants_vision=False,
        sensitive=False,
        sensitive_reasons=(),
        complexity=0.2,
        latency_budget_ms=None,
        headers={},
    )
    return replace(base, **fields)


PRIVATE = {"sensitive": True, "sensitive_reasons": ("header",)}


def names(decision: Decision) -> list[str]:
    return [candidate.endpoint.name for candidate in decision.candidates]


def filters(decision: Decision) -> dict[str, str]:
    return {rejection.endpoint: rejection.filter for rejection in decision.rejected}


def config(*endpoints: EndpointConfig, **sections: Any) -> RouterConfig:
    return RouterConfig(endpoints=list(endpoints), **sections)


BASIC = config(local("gpu"), cloud("openai"))


def test_routine_request_prefers_local_with_cloud_as_fallback() -> None:
    decision = decide(profile(), BASIC, {})
    assert names(decision) == ["gpu", "openai"]
    assert [c.reason for c in decision.candidates] == ["preferred", "fallback"]
    assert decision.reason == "routine"
    assert decision.error is None
    assert decision.rejected == ()


def test_complex_request_prefers_cloud() -> None:
    decision = decide(profile(complexity=0.6), BASIC, {})
    assert names(decision) == ["openai", "gpu"]
    assert decision.reason == "complex"


def test_private_request_never_gets_cloud_even_when_complex() -> None:
    decision = decide(profile(complexity=0.9, **PRIVATE), BASIC, {})
    assert names(decision) == ["gpu"]
    assert decision.private
    assert decision.reason == "private"
    assert filters(decision) == {"openai": "privacy"}
    assert "header" in decision.rejected[0].detail


def test_private_request_with_local_down_gets_an_explained_error() -> None:
    decision = decide(
        profile(**PRIVATE),
        config(local("gpu", available=False, unavailable_reason="0/1 replicas ready"), cloud("openai")),
        {},
    )
    assert decision.candidates == ()
    assert decision.error is not None
    assert "private request (header)" in decision.error
    assert "gpu: unavailable (0/1 replicas ready)" in decision.error
    assert "cloud endpoints never receive it" in decision.error


def test_private_request_without_any_local_endpoint() -> None:
    decision = decide(profile(**PRIVATE), config(cloud("openai")), {})
    assert decision.candidates == ()
    assert decision.error is not None
    assert "no local endpoint is configured" in decision.error


@pytest.mark.parametrize(
    ("request_fields", "endpoint_fields", "expected_filter"),
    [
        ({"input_tokens": 8000, "max_output_tokens": 193}, {}, "context"),
        ({"tool_count": 2}, {"capabilities": Capabilities(tools=False)}, "capability"),
        ({"structured_output": True}, {"capabilities": Capabilities(json_schema=False)}, "capability"),
        ({"wants_vision": True}, {}, "capability"),
        ({}, {"available": False}, "unavailable"),
    ],
)
def test_static_filters_reject_local_and_fall_to_cloud(
    request_fields: dict[str, Any], endpoint_fields: dict[str, Any], expected_filter: str
) -> None:
    decision = decide(
        profile(**request_fields),
        config(local("gpu", **endpoint_fields), cloud("openai", capabilities=Capabilities(vision=True))),
        {},
    )
    assert names(decision) == ["openai"]
    assert filters(decision) == {"gpu": expected_filter}


def test_context_window_fits_exactly() -> None:
    decision = decide(profile(input_tokens=8000, max_output_tokens=192), config(local("gpu")), {})
    assert names(decision) == ["gpu"]


def test_capability_detail_lists_what_is_missing() -> None:
    decision = decide(
        profile(tool_count=1, wants_vision=True), config(local("gpu", capabilities=Capabilities(tools=False))), {}
    )
    assert decision.rejected[0].detail == "no support for tools, vision"
    assert decision.error == "no eligible endpoint: gpu: capability (no support for tools, vision)"


def test_open_breaker_and_capacity_filter_at_runtime() -> None:
    endpoints = config(local("a"), local("b"), local("c"), cloud("openai"))
    states = {
        "a": EndpointState(breaker="open"),
        "b": EndpointState(at_capacity=True),
        "c": EndpointState(breaker="half-open"),
    }
    decision = decide(profile(), endpoints, states)
    assert names(decision) == ["c", "openai"]
    assert filters(decision) == {"a": "breaker", "b": "capacity"}


def test_all_open_picks_least_recently_failed_for_non_private() -> None:
    states = {
        "gpu": EndpointState(breaker="open", last_failure_at=50.0),
        "openai": EndpointState(breaker="open", last_failure_at=20.0),
    }
    decision = decide(profile(), BASIC, states)
    assert names(decision) == ["openai"]
    assert decision.reason == "all-open"
    assert decision.candidates[0].reason == "all-open"
    assert filters(decision) == {"gpu": "breaker"}


def test_all_open_for_private_stays_local() -> None:
    states = {
        "gpu": EndpointState(breaker="open", last_failure_at=50.0),
        "openai": EndpointState(breaker="open", last_failure_at=20.0),
    }
    decision = decide(profile(**PRIVATE), BASIC, states)
    assert names(decision) == ["gpu"]
    assert decision.reason == "all-open"
    assert filters(decision) == {"openai": "privacy"}


def test_all_open_does_not_apply_when_something_is_only_at_capacity() -> None:
    states = {"gpu": EndpointState(breaker="open"), "openai": EndpointState(at_capacity=True)}
    decision = decide(profile(), BASIC, states)
    assert decision.candidates == ()
    assert decision.error is not None
    assert "openai: capacity" in decision.error
    assert "gpu: breaker (circuit open)" in decision.error


def test_breaker_open_on_a_statically_rejected_endpoint_is_not_all_open() -> None:
    cfg = config(local("gpu", max_context_tokens=100), cloud("openai"))
    decision = decide(profile(), cfg, {"openai": EndpointState(breaker="open", last_failure_at=1.0)})
    assert names(decision) == ["openai"]
    assert decision.reason == "all-open"
    assert filters(decision) == {"gpu": "context"}


def test_ranking_within_class_by_priority_then_cost_then_p95() -> None:
    cheap = Pricing(input_per_m_tok=0.1, output_per_m_tok=0.1)
    cfg = config(
        cloud("pricey"),
        cloud("cheap-slow", pricing=cheap),
        cloud("cheap-fast", pricing=cheap),
        cloud("urgent", priority=10),
        local("gpu"),
    )
    states = {"cheap-slow": EndpointState(observed_p95_ms=900.0), "cheap-fast": EndpointState(observed_p95_ms=100.0)}
    decision = decide(profile(complexity=0.9), cfg, states, roll=0.0)
    assert names(decision) == ["urgent", "cheap-fast", "cheap-slow", "pricey", "gpu"]


def test_unknown_or_nan_p95_ranks_after_known() -> None:
    # Zero weights switch the weighted pick off, so the ranking order shows as is.
    states = {"known": EndpointState(observed_p95_ms=300.0), "nan": EndpointState(observed_p95_ms=float("nan"))}
    for unknown in ("fresh", "nan"):
        decision = decide(profile(), config(local(unknown, weight=0), local("known", weight=0)), states)
        assert names(decision) == ["known", unknown]


@pytest.mark.parametrize(("roll", "first"), [(0.0, "a"), (0.24, "a"), (0.25, "b"), (0.99, "b")])
def test_weighted_split_among_equal_priority_and_cost(roll: float, first: str) -> None:
    cfg = config(local("a", weight=25), local("b", weight=75), local("backup", priority=200))
    decision = decide(profile(), cfg, {}, roll=roll)
    assert names(decision)[0] == first
    assert names(decision)[-1] == "backup"
    assert sorted(names(decision)[:2]) == ["a", "b"]


def test_weighted_first_keeps_order_for_zero_weights_and_singletons() -> None:
    a, b = local("a", weight=0), local("b", weight=0)
    assert weighted_first([a, b], 0.7) == [a, b]
    assert weighted_first([a], 0.7) == [a]
    c = local("c", weight=1)
    assert weighted_first([a, c], 0.0) == [c, a]


@pytest.mark.parametrize(
    ("roll", "first", "reason"),
    [(0.0, "gpu", "routine"), (0.09, "gpu", "routine"), (0.1, "openai", "rollout"), (0.95, "openai", "rollout")],
)
def test_rollout_sends_the_configured_share_local_first(roll: float, first: str, reason: str) -> None:
    cfg = config(local("gpu"), cloud("openai"), rollout=RolloutConfig(local_percent=10))
    decision = decide(profile(), cfg, {}, roll=roll)
    assert names(decision)[0] == first
    assert decision.reason == reason
    assert len(decision.candidates) == 2


def test_rollout_never_moves_private_requests_and_needs_both_kinds() -> None:
    cfg = config(local("gpu"), cloud("openai"), rollout=RolloutConfig(local_percent=0))
    assert names(decide(profile(**PRIVATE), cfg, {}, roll=0.5)) == ["gpu"]
    only_local = config(local("gpu"), rollout=RolloutConfig(local_percent=0))
    decision = decide(profile(), only_local, {}, roll=0.5)
    assert (names(decision), decision.reason) == (["gpu"], "routine")


def test_rollout_rescales_the_roll_for_the_weighted_split() -> None:
    cfg = config(local("a"), local("b"), cloud("openai"), rollout=RolloutConfig(local_percent=50))
    # roll 0.3 falls in the local half; rescaled to 0.6 it lands on the second of two equal weights.
    assert names(decide(profile(), cfg, {}, roll=0.3)) == ["b", "a", "openai"]
    assert names(decide(profile(), cfg, {}, roll=0.2)) == ["a", "b", "openai"]


def rule(name: str, match: RuleMatch | None = None, **action: Any) -> Rule:
    return Rule(name=name, match=match or RuleMatch(), action=RuleAction(**action))


def test_first_matching_rule_decides_preference() -> None:
    cfg = config(
        local("gpu"),
        cloud("openai"),
        rules=[
            rule("long-context", RuleMatch(min_input_tokens=1000), prefer="cloud"),
            rule("everything", prefer="local"),
        ],
    )
    long = decide(profile(input_tokens=2000, complexity=0.0), cfg, {})
    short = decide(profile(complexity=0.9), cfg, {})
    assert (names(long), long.reason, long.rule) == (["openai", "gpu"], "rule:long-context", "long-context")
    assert (names(short), short.reason, short.rule) == (["gpu", "openai"], "rule:everything", "everything")


def test_rule_endpoint_list_restricts_and_orders() -> None:
    cfg = config(local("a"), local("b"), cloud("openai"), rules=[rule("pin", endpoints=["openai", "b"])])
    decision = decide(profile(), cfg, {})
    assert names(decision) == ["openai", "b"]
    assert filters(decision) == {"a": "rule"}
    assert decision.rejected[0].detail == "not listed by rule pin"


def test_rule_endpoint_list_with_prefer_puts_that_kind_first() -> None:
    cfg = config(local("a"), cloud("openai"), rules=[rule("pin", endpoints=["openai", "a"], prefer="local")])
    decision = decide(profile(), cfg, {})
    assert names(decision) == ["a", "openai"]
    assert [c.reason for c in decision.candidates] == ["preferred", "fallback"]


def test_private_request_under_a_cloud_only_rule_fails_closed() -> None:
    cfg = config(local("gpu"), cloud("openai"), rules=[rule("to-cloud", endpoints=["openai"])])
    decision = decide(profile(**PRIVATE), cfg, {})
    assert decision.candidates == ()
    assert decision.error is not None
    assert "gpu: rule (not listed by rule to-cloud)" in decision.error


@pytest.mark.parametrize(
    ("match", "fields", "matches"),
    [
        (RuleMatch(), {}, True),
        (RuleMatch(models=["gpt-4o"]), {"model": "gpt-4o"}, True),
        (RuleMatch(models=["gpt-4o"]), {}, False),
        (RuleMatch(headers=[HeaderMatch(name="x-team", values=["ml"])]), {"headers": {"x-team": "ML"}}, True),
        (RuleMatch(headers=[HeaderMatch(name="x-team", values=["ml"])]), {"headers": {"x-team": "web"}}, False),
        (RuleMatch(max_input_tokens=99), {}, False),
        (RuleMatch(min_input_tokens=100, max_input_tokens=100), {}, True),
        (RuleMatch(min_tools=1), {"tool_count": 1}, True),
        (RuleMatch(min_tools=2), {"tool_count": 1}, False),
        (RuleMatch(structured_output=True), {"structured_output": True}, True),
        (RuleMatch(structured_output=False), {"structured_output": True}, False),
        (RuleMatch(min_complexity=0.5), {"complexity": 0.5}, True),
        (RuleMatch(max_complexity=0.4), {"complexity": 0.5}, False),
        (RuleMatch(models=["auto"], min_tools=1), {"tool_count": 0}, False),
    ],
)
def test_rule_matching(match: RuleMatch, fields: dict[str, Any], matches: bool) -> None:
    assert rule_matches(match, profile(**fields)) is matches


def test_budget_local_only_drops_cloud() -> None:
    decision = decide(profile(complexity=0.9), BASIC, {}, budget_exhausted=True)
    assert names(decision) == ["gpu"]
    assert filters(decision) == {"openai": "budget"}
    assert decision.reason == "complex"


def test_budget_reject_refuses_requests_that_would_go_to_cloud() -> None:
    cfg = config(local("gpu"), cloud("openai"), budget=BudgetConfig(daily_usd=1, action="reject"))
    complex_request = decide(profile(complexity=0.9), cfg, {}, budget_exhausted=True)
    assert complex_request.candidates == ()
    assert complex_request.reason == "budget"
    assert complex_request.error is not None
    assert "budget exhausted" in complex_request.error
    routine = decide(profile(), cfg, {}, budget_exhausted=True)
    assert names(routine) == ["gpu"]
    assert filters(routine) == {"openai": "budget"}


def test_budget_not_exhausted_changes_nothing() -> None:
    cfg = config(local("gpu"), cloud("openai"), budget=BudgetConfig(daily_usd=1, action="reject"))
    assert names(decide(profile(complexity=0.9), cfg, {}, budget_exhausted=False)) == ["openai", "gpu"]


def test_candidates_carry_estimated_cost() -> None:
    decision = decide(profile(input_tokens=1000, max_output_tokens=500, complexity=0.9), BASIC, {})
    openai = decision.candidates[0]
    assert openai.estimated_cost_usd == pytest.approx((1000 * 1.0 + 500 * 4.0) / 1e6)
    assert decision.candidates[1].estimated_cost_usd == 0.0


def test_estimate_cost() -> None:
    endpoint = cloud("x", pricing=Pricing(input_per_m_tok=2.5, output_per_m_tok=10))
    assert estimate_cost(endpoint, 1_000_000, 100_000) == pytest.approx(3.5)
    assert estimate_cost(local("gpu"), 10**9, 10**9) == 0.0
