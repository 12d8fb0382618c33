"""What one finished client request amounts to: the fact the audit trail, GenAI metrics and spans read.

The executor (or the app, for a request refused before routing) builds one `RequestOutcome` per
client request and hands it to every observer registered on the executor (`audit.AuditTrail`,
`genai.GenAIMetrics`, `tracing.SpanRecorder`). Observers never see the request body or headers:
only names from the config (policy, endpoints, models, detector names), counts, durations and
outcomes, so nothing an observer writes can quote a prompt, a matched value or a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .config import EndpointConfig, RouterConfig
from .policy import Decision
from .profile import RequestProfile

Location = Literal["local", "cloud"]

OPERATION_NAMES = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
"""Request kind -> GenAI `gen_ai.operation.name` well-known value."""


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """One client request, finished: routed and answered (or refused)."""

    finished_at: float
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
    privacy_reasons: tuple[str, ...]
    """header, policy, detector:<name>, unreadable:<kind>: names only, never what matched."""
    route_reason: str
    candidates: tuple[str, ...]
    attempted: tuple[tuple[str, Location], ...]
    """Every upstream attempt in order: (endpoint, local|cloud); repeats when an endpoint was retried."""
    endpoint: str
    """The endpoint that answered; empty when none did."""
    location: Location | None
    provider: str
    """The answering endpoint's provider (else the first candidate's); empty when there was none."""
    request_model: str
    """Model the router asked for first (the first candidate's configured model)."""
    response_model: str
    """Configured model of the endpoint that answered."""
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

    @property
    def fallback(self) -> bool:
        """The answer came from a later candidate or took more than one attempt."""
        first = self.candidates[0] if self.candidates else ""
        return len(self.attempted) > 1 or (bool(self.endpoint) and self.endpoint != first)

    @property
    def reached_cloud(self) -> bool:
        """Any byte of this request went to a cloud endpoint (attempted there, answered or not)."""
        return any(location == "cloud" for _, location in self.attempted)


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
    first = candidates[0].endpoint if candidates else None
    named = served or first
    return RequestOutcome(
        finished_at=finished_at,
        duration_s=duration_s,
        namespace=config.policy.namespace,
        policy=config.policy.name,
        config_hash=config.config_hash,
        operation=OPERATION_NAMES.get(kind, kind),
        stream=profile.stream if profile is not None else False,
        private=decision.private if decision is not None else bool(profile and profile.sensitive_reasons),
        privacy_reasons=profile.sensitive_reasons if profile is not None else (),
        route_reason=decision.reason if decision is not None else "",
        candidates=tuple(candidate.endpoint.name for candidate in candidates),
        attempted=tuple(attempted),
        endpoint=served.name if served is not None else "",
        location=location_of(served) if served is not None else None,
        provider=named.provider if named is not None else "",
        request_model=first.model if first is not None else "",
        response_model=served.model if served is not None else "",
        outcome=outcome,
        status=status,
        error_type=error_type,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        first_chunk_s=first_chunk_s,
        breaker_state=breaker_state,
    )
