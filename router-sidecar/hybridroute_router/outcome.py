"""What one finished client request amounts to: the fact the audit trail, GenAI metrics and spans read.

The executor (or the app, for a request refused before routing) builds one `RequestOutcome` per
client request and hands it to every observer registered on the executor (`audit.AuditTrail`,
`genai.GenAIMetrics`, `tracing.SpanRecorder`). Observers never see the request body or headers:
only names from the config (policy, endpoints, models, detector names), counts, durations and
outcomes, so nothing an observer writes can quote a prompt, a matched value or a key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Literal, NotRequired, TypedDict

from .config import EndpointConfig, RouterConfig
from .policy import Decision
from .profile import RequestProfile

Location = Literal["local", "cloud"]

log = logging.getLogger("hybridroute.router.outcome")

OPERATION_NAMES = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
"""Request kind -> GenAI `gen_ai.operation.name` well-known value."""


class RequestOutcome(TypedDict):
    """One client request, finished: routed and answered (or refused). Observers only read it.

    A plain dict, because it is the audit record itself (`audit` adds the version and the pod and
    writes it as is): one object per request, no copy from a model into a record.
    """

    ts: float
    """Unix time (wall clock) when the request finished."""
    duration_s: float
    """From arrival to the final answer (for a stream: to its end)."""
    namespace: str
    policy: str
    config_hash: str
    operation: str
    """GenAI operation name: chat, text_completion or embeddings."""
    stream: bool
    private: bool
    privacy: tuple[str, ...]
    """header, policy, detector:<name>, unreadable:<kind>: names only, never what matched."""
    reason: str
    """The decision's route reason."""
    candidates: list[str]
    attempts: list[tuple[str, Location]]
    """Every upstream attempt in order: (endpoint, local|cloud); repeats when an endpoint was retried."""
    endpoint: str | None
    """The endpoint that answered; None when none did."""
    location: Location | None
    provider: str
    """The answering endpoint's provider (else the first candidate's); empty when there was none."""
    request_model: str
    """Model the router asked for first (the first candidate's configured model)."""
    response_model: str
    """Configured model of the endpoint that answered; empty when none did."""
    outcome: str
    """success, client_error, structured_output_invalid, stream_error, client_disconnected,
    upstream_error, or rejected (refused before any attempt)."""
    status: int
    error_type: str
    """Empty on success; else a short, bounded kind (the error code or the failure kind)."""
    input_tokens: int
    output_tokens: int
    cost_usd: float
    first_chunk_s: float | None
    """Streams only: from arrival to the first body chunk."""
    breaker_state: str
    """State of the answering endpoint's breaker when the request finished; empty when none answered."""
    fallback: bool
    """The answer came from a later candidate or took more than one attempt."""
    reached_cloud: bool
    """Any attempt went to a cloud endpoint (answered or not)."""
    traceparent: NotRequired[str]
    """The client's W3C `traceparent`, when spans are exported and it is well formed (ids only)."""


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def trace_parent(headers: Sequence[tuple[str, str]]) -> str | None:
    """The request's `traceparent` header if it has the W3C shape (hex ids only), else None.

    Anything else is dropped rather than carried: the value is the client's, and only ids may reach
    the audit record and the span.
    """
    for name, value in headers:
        if name.lower() == "traceparent":
            value = value.strip()
            return value if _TRACEPARENT.fullmatch(value) else None
    return None


def location_of(endpoint: EndpointConfig) -> Location:
    return "local" if endpoint.is_local else "cloud"


def build_outcome(
    *,
    config: RouterConfig,
    kind: str,
    profile: RequestProfile | None,
    decision: Decision | None,
    attempted: Sequence[tuple[str, Location]],
    served: EndpointConfig | None,
    outcome: str,
    status: int,
    error_type: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    duration_s: float,
    finished_at: float,
    first_chunk_s: float | None = None,
    breaker_state: str = "",
) -> RequestOutcome:
    """The outcome of one request from what the app and executor hold (`profile`/`decision` may be
    missing for a request refused before they were made)."""
    candidates = decision.candidates if decision is not None else ()
    names = [candidate.endpoint.name for candidate in candidates]
    first = candidates[0].endpoint if candidates else None
    named = served or first
    attempts = list(attempted)
    return {
        "ts": finished_at,
        "duration_s": duration_s,
        "namespace": config.policy.namespace,
        "policy": config.policy.name,
        "config_hash": config.config_hash,
        "operation": OPERATION_NAMES.get(kind, kind),
        "stream": profile.stream if profile is not None else False,
        "private": decision.private if decision is not None else bool(profile and profile.sensitive_reasons),
        "privacy": profile.sensitive_reasons if profile is not None else (),
        "reason": decision.reason if decision is not None else "",
        "candidates": names,
        "attempts": attempts,
        "endpoint": served.name if served is not None else None,
        "location": location_of(served) if served is not None else None,
        "provider": named.provider if named is not None else "",
        "request_model": first.model if first is not None else "",
        "response_model": served.model if served is not None else "",
        "outcome": outcome,
        "status": status,
        "error_type": error_type,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost_usd,
        "first_chunk_s": first_chunk_s,
        "breaker_state": breaker_state,
        "fallback": len(attempts) > 1 or (served is not None and bool(names) and served.name != names[0]),
        "reached_cloud": any(location == "cloud" for _, location in attempts),
    }


def notify(observers: Sequence[Callable[[RequestOutcome], None]], outcome: RequestOutcome) -> None:
    """Hand `outcome` to each observer; one that raises is logged (its type and the error's, no message) and skipped.

    The request has been answered by now: a broken observer must not turn that answer into a 500,
    nor keep the observers after it from seeing the request.
    """
    for observer in observers:
        try:
            observer(outcome)
        except Exception as exc:  # any bug in an observer, by design
            details = {"observer": type(observer).__name__, "error": type(exc).__name__}
            log.error("request observer failed", extra=details)
