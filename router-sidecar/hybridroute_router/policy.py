"""The routing decision: (request profile, config, endpoint states) -> ordered candidates with reasons.

Pure and synchronous; the executor calls `decide` once per request and walks the candidates in order,
failing over before the first byte. The steps, in order:

1. Static hard filters, per endpoint (the first that applies is reported):
   unavailable -> privacy (a sensitive request never gets a cloud endpoint) -> context window
   (input estimate + requested output must fit) -> capabilities (tools, structured output, vision)
   -> budget (cloud spend cap reached) -> rule (the matching rule lists other endpoints).
2. Runtime filters: breaker open, then this router's maxConcurrency reached. Half-open endpoints stay
   eligible; the breaker's own `try_acquire` bounds how many probes they get. Then, for public
   requests only, `saturation`: a local endpoint that `admission` says should spill (saturated,
   short of replicas, in slow start) drops out, unless that would leave no endpoint at all (spilling
   never blocks); the reason becomes "spill" when the request then goes to the cloud first.
3. Preference: the first matching rule's action (prefer local/cloud, or an explicit endpoint list in
   its own order); without a rule, complexity >= threshold prefers cloud ("complex"), else local
   ("routine"). When the preference is local and both kinds are eligible, `rollout.localPercent`
   sends the share `roll >= localPercent/100` cloud-first instead ("rollout").
4. Ranking within each class: priority, then estimated cost, then observed p95 (unknown last). Among
   endpoints tied on priority and cost, `weight` picks which goes first (the weighted split); the
   rest of the class follows as fallbacks, then the other class.

Deliberate choices:
- All breakers open: when every endpoint that passes the static filters is rejected only because its
  breaker is open, routing to nothing would turn a fleet-wide blip into an outage. The request goes
  to the one endpoint whose breaker failed least recently (the likeliest to have recovered), reason
  "all-open"; the executor then sends it without asking that breaker for a slot. This holds for
  private requests too, but their static filters already removed every cloud endpoint, so they can
  only ever land on a local one (a slow local answer beats a leak, and beats a 503).
- Budget `reject`: when the cap is reached and the request would go to a cloud endpoint first, it is
  refused rather than silently degraded to local; otherwise cloud endpoints drop out as fallbacks.
- Rules bind private requests too: a rule that lists only cloud endpoints leaves a private request
  with no candidate, and the error says so (fail closed, never "fail over to cloud").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .breaker import BreakerState
from .config import EndpointConfig, RouterConfig, Rule, RuleMatch
from .cost import estimate_cost
from .profile import RequestProfile, header_matches

FilterName = Literal[
    "privacy", "context", "capability", "breaker", "capacity", "budget", "unavailable", "rule", "saturation"
]
EndpointKind = Literal["local", "cloud"]


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What this router currently knows about an endpoint's health and load."""

    breaker: BreakerState = "closed"
    at_capacity: bool = False
    """maxConcurrency reached in this router."""
    observed_p95_ms: float | None = None
    last_failure_at: float | None = None
    spill: str | None = None
    """Why a local endpoint should not take public requests now (admission.py); private ones ignore it."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """An endpoint the request may be sent to; `reason` is preferred, fallback or all-open."""

    endpoint: EndpointConfig
    reason: str
    estimated_cost_usd: float


@dataclass(frozen=True, slots=True)
class Rejection:
    """An endpoint left out, by which filter, and why (endpoint names and numbers only)."""

    endpoint: str
    filter: FilterName
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `decide`; explainable as is (no prompt text, no secrets)."""

    candidates: tuple[Candidate, ...]
    """Ordered; empty means no route."""
    rejected: tuple[Rejection, ...]
    rule: str | None
    """Name of the first matching rule."""
    private: bool
    reason: str
    """Short, for x-hybridroute-reason: private, rule:<name>, complex, routine, rollout, all-open, spill;
    with no candidates: private, budget or no-route."""
    error: str | None
    """When there are no candidates: why (goes into the 503 message)."""


_CLOSED = EndpointState()


def decide(
    profile: RequestProfile,
    config: RouterConfig,
    states: Mapping[str, EndpointState],
    *,
    budget_exhausted: bool = False,
    roll: float = 0.0,
) -> Decision:
    """Choose and order the endpoints for one request. `roll` is uniform in [0, 1) (random.random())."""
    rule = matching_rule(profile, config.rules)
    if budget_exhausted and config.budget.action == "reject" and not profile.sensitive:
        unconstrained = _route(profile, config, states, rule, roll, budget_blocks_cloud=False)
        if unconstrained.candidates and not unconstrained.candidates[0].endpoint.is_local:
            constrained = _route(profile, config, states, rule, roll, budget_blocks_cloud=True)
            return Decision(
                candidates=(),
                rejected=constrained.rejected,
                rule=unconstrained.rule,
                private=False,
                reason="budget",
                error="cloud spend budget exhausted (action reject) and this request would be routed to cloud",
            )
    return _route(profile, config, states, rule, roll, budget_blocks_cloud=budget_exhausted)


def matching_rule(profile: RequestProfile, rules: Iterable[Rule]) -> Rule | None:
    """The first rule whose match holds for the profile."""
    return next((rule for rule in rules if rule_matches(rule.match, profile)), None)


def rule_matches(match: RuleMatch, profile: RequestProfile) -> bool:
    """All given conditions hold (an empty match always does)."""
    return (
        (not match.models or profile.model in match.models)
        and all(header_matches(header, profile.headers) for header in match.headers)
        and (match.min_input_tokens is None or profile.input_tokens >= match.min_input_tokens)
        and (match.max_input_tokens is None or profile.input_tokens <= match.max_input_tokens)
        and (match.min_tools is None or profile.tool_count >= match.min_tools)
        and (match.structured_output is None or profile.structured_output == match.structured_output)
        and (match.min_complexity is None or profile.complexity >= match.min_complexity)
        and (match.max_complexity is None or profile.complexity <= match.max_complexity)
    )


def _route(
    profile: RequestProfile,
    config: RouterConfig,
    states: Mapping[str, EndpointState],
    rule: Rule | None,
    roll: float,
    *,
    budget_blocks_cloud: bool,
) -> Decision:
    rejected: list[Rejection] = []
    passed_static: list[EndpointConfig] = []
    for endpoint in config.endpoints:
        rejection = _static_rejection(endpoint, profile, rule, budget_blocks_cloud)
        if rejection is None:
            passed_static.append(endpoint)
        else:
            rejected.append(rejection)

    eligible: list[EndpointConfig] = []
    breaker_open: list[EndpointConfig] = []
    for endpoint in passed_static:
        state = states.get(endpoint.name, _CLOSED)
        if state.breaker == "open":
            breaker_open.append(endpoint)
            rejected.append(Rejection(endpoint.name, "breaker", "circuit open"))
        elif state.at_capacity:
            rejected.append(Rejection(endpoint.name, "capacity", "maxConcurrency in flight"))
        else:
            eligible.append(endpoint)
    if not profile.sensitive:
        spilled = {e.name for e in eligible if states.get(e.name, _CLOSED).spill is not None}
        if spilled and len(spilled) < len(eligible):
            rejected.extend(Rejection(name, "saturation", states[name].spill or "") for name in sorted(spilled))
            eligible = [endpoint for endpoint in eligible if endpoint.name not in spilled]

    rule_name = rule.name if rule else None
    if not eligible:
        if breaker_open and len(breaker_open) == len(passed_static):
            chosen = min(breaker_open, key=lambda endpoint: _failed_at(states, endpoint))
            candidate = Candidate(chosen, "all-open", _cost(chosen, profile))
            remaining = tuple(rejection for rejection in rejected if rejection.endpoint != chosen.name)
            return Decision((candidate,), remaining, rule_name, profile.sensitive, "all-open", None)
        return Decision(
            (),
            tuple(rejected),
            rule_name,
            profile.sensitive,
            _reason_when_empty(profile),
            _no_route(profile, config, rejected),
        )

    costs = {endpoint.name: _cost(endpoint, profile) for endpoint in eligible}
    ordered, reason = _order(profile, config, states, rule, eligible, costs, roll)
    if not ordered[0].endpoint.is_local and any(rejection.filter == "saturation" for rejection in rejected):
        reason = "spill"
    return Decision(
        ordered, tuple(rejected), rule_name, profile.sensitive, "private" if profile.sensitive else reason, None
    )


def _static_rejection(
    endpoint: EndpointConfig, profile: RequestProfile, rule: Rule | None, budget_blocks_cloud: bool
) -> Rejection | None:
    name = endpoint.name
    if not endpoint.available:
        return Rejection(name, "unavailable", endpoint.unavailable_reason or "not ready")
    if profile.sensitive and not endpoint.is_local:
        reasons = ", ".join(profile.sensitive_reasons)
        return Rejection(name, "privacy", f"private request ({reasons}); cloud endpoints never receive it")
    needed = profile.input_tokens + profile.max_output_tokens
    if needed > endpoint.max_context_tokens:
        return Rejection(
            name,
            "context",
            f"{profile.input_tokens} input + {profile.max_output_tokens} output tokens exceed its "
            f"{endpoint.max_context_tokens}-token context",
        )
    missing = _missing_capabilities(endpoint, profile)
    if missing:
        return Rejection(name, "capability", "no support for " + ", ".join(missing))
    if budget_blocks_cloud and not endpoint.is_local:
        return Rejection(name, "budget", "cloud spend budget exhausted")
    if rule is not None and rule.action.endpoints and name not in rule.action.endpoints:
        return Rejection(name, "rule", f"not listed by rule {rule.name}")
    return None


def _missing_capabilities(endpoint: EndpointConfig, profile: RequestProfile) -> list[str]:
    capabilities = endpoint.capabilities
    missing = []
    if profile.tool_count and not capabilities.tools:
        missing.append("tools")
    if profile.structured_output and not capabilities.json_schema:
        missing.append("structured output")
    if profile.wants_vision and not capabilities.vision:
        missing.append("vision")
    return missing


def _order(
    profile: RequestProfile,
    config: RouterConfig,
    states: Mapping[str, EndpointState],
    rule: Rule | None,
    eligible: list[EndpointConfig],
    costs: Mapping[str, float],
    roll: float,
) -> tuple[tuple[Candidate, ...], str]:
    """Preferred class first (ranked, weighted), then the other class as fallbacks."""
    action = rule.action if rule else None
    rule_reason = f"rule:{rule.name}" if rule else ""
    if action is not None and action.endpoints:
        listed = sorted(eligible, key=lambda endpoint: action.endpoints.index(endpoint.name))
        if action.prefer is not None:
            listed.sort(key=lambda endpoint: endpoint.type != action.prefer)
        reasons = ["fallback" if action.prefer and e.type != action.prefer else "preferred" for e in listed]
        return _candidates(listed, reasons, costs), rule_reason

    prefer: EndpointKind
    if action is not None and action.prefer is not None:
        prefer, reason = action.prefer, rule_reason
    elif profile.complexity >= config.complexity.threshold:
        prefer, reason = "cloud", "complex"
    else:
        prefer, reason = "local", "routine"

    local = [endpoint for endpoint in eligible if endpoint.is_local]
    cloud = [endpoint for endpoint in eligible if not endpoint.is_local]
    split_roll = roll
    if prefer == "local" and local and cloud and not profile.sensitive:
        # One roll serves two draws: which class goes first, then (rescaled within the part of [0, 1)
        # it fell in) which endpoint of a tie goes first — independent, and reproducible in tests.
        local_share = config.rollout.local_percent / 100
        if roll >= local_share:
            prefer, reason = "cloud", "rollout"
            split_roll = (roll - local_share) / (1 - local_share)
        else:
            split_roll = roll / local_share
    first, second = (local, cloud) if prefer == "local" else (cloud, local)
    ranked_first = _rank(first, costs, states, split_roll)
    ranked_second = _rank(second, costs, states, split_roll)
    reasons = ["preferred"] * len(ranked_first) + ["fallback"] * len(ranked_second)
    return _candidates(ranked_first + ranked_second, reasons, costs), reason


def _rank(
    endpoints: list[EndpointConfig], costs: Mapping[str, float], states: Mapping[str, EndpointState], roll: float
) -> list[EndpointConfig]:
    """Priority, cost, observed p95 (unknown last); then a weighted pick leads each priority+cost tie."""
    if len(endpoints) < 2:
        return list(endpoints)  # the common single-endpoint class: nothing to order

    def latency(endpoint: EndpointConfig) -> float:
        p95 = states.get(endpoint.name, _CLOSED).observed_p95_ms
        return math.inf if p95 is None or math.isnan(p95) else p95

    def tier(endpoint: EndpointConfig) -> tuple[int, float]:
        return endpoint.priority, costs[endpoint.name]

    ranked = sorted(endpoints, key=lambda endpoint: (*tier(endpoint), latency(endpoint)))
    result: list[EndpointConfig] = []
    for _, members in itertools.groupby(ranked, key=tier):
        result.extend(weighted_first(list(members), roll))
    return result


def weighted_first(tier: Sequence[EndpointConfig], roll: float) -> list[EndpointConfig]:
    """Move the endpoint that `roll` lands on (by weight) to the front; the rest keep their order."""
    total = sum(endpoint.weight for endpoint in tier)
    if len(tier) < 2 or total == 0:
        return list(tier)
    target = roll * total
    cumulative = 0
    for index, endpoint in enumerate(tier):
        cumulative += endpoint.weight
        if target < cumulative:
            return [endpoint, *tier[:index], *tier[index + 1 :]]
    return list(tier)


def _candidates(
    endpoints: list[EndpointConfig], reasons: list[str], costs: Mapping[str, float]
) -> tuple[Candidate, ...]:
    return tuple(
        Candidate(endpoint, reason, costs[endpoint.name]) for endpoint, reason in zip(endpoints, reasons, strict=True)
    )


def _cost(endpoint: EndpointConfig, profile: RequestProfile) -> float:
    return estimate_cost(endpoint, profile.input_tokens, profile.max_output_tokens)


def _failed_at(states: Mapping[str, EndpointState], endpoint: EndpointConfig) -> float:
    failed = states.get(endpoint.name, _CLOSED).last_failure_at
    return -math.inf if failed is None else failed


def _reason_when_empty(profile: RequestProfile) -> str:
    return "private" if profile.sensitive else "no-route"


def _no_route(profile: RequestProfile, config: RouterConfig, rejected: list[Rejection]) -> str:
    """The 503 message: which endpoints were left out and why, without prompt text or secrets."""
    if profile.sensitive:
        reasons = ", ".join(profile.sensitive_reasons)
        local_names = {endpoint.name for endpoint in config.endpoints if endpoint.is_local}
        if not local_names:
            return f"private request ({reasons}): no local endpoint is configured and cloud endpoints never receive it"
        details = "; ".join(_describe(rejection) for rejection in rejected if rejection.endpoint in local_names)
        return (
            f"private request ({reasons}): no local endpoint can take it ({details}); cloud endpoints never receive it"
        )
    return "no eligible endpoint: " + "; ".join(_describe(rejection) for rejection in rejected)


def _describe(rejection: Rejection) -> str:
    return f"{rejection.endpoint}: {rejection.filter} ({rejection.detail})"
