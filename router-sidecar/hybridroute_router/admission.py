"""Local admission: turns saturation, pool lifecycle and slow start into per-request spill reasons.

For one request and each local endpoint it answers "should this endpoint refuse public traffic
now, and why" (`spills`), which `policy.decide` applies as its `saturation` filter, and, for a
private request, whether its wait would exceed its budget (`private_refusal`). Three sources, in
order:

1. saturation (`saturation.judge`): the estimated local latency would exceed the request's latency
   budget (`x-hybridroute-latency-budget-ms`) or `slo.p95LatencyMs x saturation.sloFraction`, or the
   KV cache is full;
2. lifecycle: a managed pool with fewer ready than desired replicas (rolling, scaling) takes only
   the ready share of public traffic;
3. slow start (`slowstart.SlowStart`): after a recovery the share ramps up.

Unknown saturation never spills. Private requests never spill; they only learn, before they are
sent, when the estimate already says the wait would exceed their budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import EndpointConfig, RouterConfig
from .profile import RequestProfile
from .saturation import PoolLoad, Verdict, judge
from .slowstart import SlowStart

__all__ = ["LocalAdmission", "Spill", "lifecycle_share"]


@dataclass(frozen=True, slots=True)
class Spill:
    """Why a local endpoint refuses a public request: `kind` for metrics, `detail` for people."""

    kind: str
    """saturation, lifecycle or slow-start."""
    detail: str


def lifecycle_share(endpoint: EndpointConfig) -> float:
    """Share of public traffic a managed pool can take from its replicas (1 when not known)."""
    desired, ready = endpoint.desired_replicas, endpoint.ready_replicas
    if not desired or ready is None:
        return 1.0
    return min(1.0, ready / desired)


class LocalAdmission:
    """Holds the latest pool loads and the slow-start state; everything else is computed per request."""

    def __init__(self, clock: Callable[[], float], in_flight: Callable[[str], int]) -> None:
        self._clock = clock
        self._in_flight = in_flight
        self.slow_start = SlowStart(clock)
        self._loads: Mapping[str, PoolLoad] = {}
        self._in_flight_at_read: dict[str, int] = {}

    def update(self, loads: Mapping[str, PoolLoad]) -> None:
        """A new reading; this router's in-flight counts now are what that reading may already include."""
        self._loads = loads
        self._in_flight_at_read = {name: self._in_flight(name) for name in loads}

    def verdict(self, endpoint: EndpointConfig, config: RouterConfig, own_tokens: int, limit_ms: float) -> Verdict:
        """`saturation.judge` for one local endpoint with what this router sent since the reading."""
        name = endpoint.name
        load = self._loads.get(name)
        mine = self._in_flight(name)
        unseen = max(0, mine - self._in_flight_at_read.get(name, 0))
        if load is not None and load.waiting is not None:
            # The reading lags the scrape: this router's own in-flight count is a floor for the queue.
            unseen = max(unseen, mine - round(load.waiting + (load.running or 0)))
        return judge(
            load,
            config.saturation,
            now=self._clock(),
            own_tokens=own_tokens,
            limit_ms=limit_ms,
            parallel_slots=endpoint.parallel_slots,
            unseen=unseen,
        )

    def spills(
        self, profile: RequestProfile, config: RouterConfig, breakers: Mapping[str, str], roll: float
    ) -> dict[str, Spill]:
        """Local endpoints that should refuse this request if it is public, and why.

        Also advances slow start for every local endpoint (for private requests too, so a ramp's
        clock does not depend on the traffic mix). `roll` is uniform in [0, 1).
        """
        saturation = config.saturation
        if not saturation.enabled:
            return {}
        slo_limit = config.slo.p95_latency_ms * saturation.slo_fraction
        budget = profile.latency_budget_ms
        limit = min(slo_limit, budget) if budget else slo_limit
        spills: dict[str, Spill] = {}
        for endpoint in config.endpoints:
            if not endpoint.is_local:
                continue
            name = endpoint.name
            load = self._loads.get(name)
            typical = load.mean_output_tokens if load and load.mean_output_tokens else profile.max_output_tokens
            pool = self.verdict(endpoint, config, int(typical), slo_limit)
            lifecycle = lifecycle_share(endpoint)
            self.slow_start.observe(name, breakers.get(name, "closed") != "closed" or pool.spill or lifecycle < 1)
            mine = self.verdict(endpoint, config, profile.max_output_tokens, limit)
            if mine.spill:
                spills[name] = Spill("saturation", mine.detail)
                continue
            ramp = self.slow_start.share(name, saturation.slow_start_seconds, saturation.slow_start_min_percent)
            if roll >= lifecycle * ramp:
                if lifecycle < 1:
                    ready = f"{endpoint.ready_replicas}/{endpoint.desired_replicas} replicas ready"
                    spills[name] = Spill("lifecycle", f"{ready}: local share {lifecycle:.0%}")
                else:
                    spills[name] = Spill("slow-start", f"recovering: local share {ramp:.0%}")
        return spills

    def private_refusal(self, profile: RequestProfile, config: RouterConfig) -> str | None:
        """Why a private request should be refused before it is sent, or None to send it.

        Only when every local endpoint's estimate exceeds its budget (the latency-budget header, else
        `slo.requestTimeoutMs`): waiting would only end in a timeout. Unknown estimates send it.
        """
        if not config.saturation.enabled:
            return None
        budget = profile.latency_budget_ms or config.slo.request_timeout_ms
        details = []
        for endpoint in config.endpoints:
            if not endpoint.is_local or not endpoint.available:
                continue
            verdict = self.verdict(endpoint, config, profile.max_output_tokens, budget)
            if verdict.estimate_ms is None or verdict.estimate_ms <= budget:
                return None
            details.append(f"{endpoint.name}: estimated local latency {verdict.estimate_ms:.0f} ms")
        if not details:
            return None
        return f"{'; '.join(details)} exceeds the latency budget of {budget} ms; waited 0 ms"
