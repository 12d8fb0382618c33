"""The fleet's view of each endpoint, from Prometheus: p95 latency and circuit state for status.

Why Prometheus is the channel: every router sidecar already exports
`hybridroute_upstream_duration_seconds{namespace,policy,endpoint}` and
`hybridroute_breaker_state{namespace,policy,endpoint,state}`, and Prometheus already aggregates them
across the fleet. Reading them here needs no new protocol and, above all, no write access to
InferenceEndpoints from application pods (sidecars patching status would need RBAC on every app's
ServiceAccount).

Series are keyed by (namespace, endpoint): an endpoint is named within its namespace, and endpoints
of the same name in two namespaces belong to different tenants. The router labels every series with
its policy's namespace (a PodMonitor's target label carries the same value), so a series without a
namespace is not a router's and is ignored: it is never attributed to endpoints of that name in
some namespace.

The fleet circuit is a summary of many routers' breakers: `open` when at least half of the routers
reporting the endpoint have it open, `half-open` when any has it open or half-open, else `closed`.

Everything but `query_fleet` is pure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

Circuit = Literal["closed", "open", "half-open"]
EndpointKey = tuple[str, str]
"""(namespace, endpoint name)"""

P95_QUERY = (
    "histogram_quantile(0.95, sum by (le, namespace, endpoint) "
    "(rate(hybridroute_upstream_duration_seconds_bucket[$window])))"
)
CIRCUIT_QUERY = "sum by (namespace, endpoint, state) (hybridroute_breaker_state)"

P95_RELATIVE_CHANGE = 0.10
"""A p95 moving less than this share (and less than P95_ABSOLUTE_CHANGE_MS) is not worth a status patch."""
P95_ABSOLUTE_CHANGE_MS = 25


@dataclass(frozen=True)
class FleetObservation:
    """What the fleet reports for one endpoint; None where Prometheus has nothing."""

    latency_p95_ms: int | None = None
    circuit: Circuit | None = None


def _vector(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ValueError("prometheus query failed")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError("expected a vector result")
    return list(data.get("result") or [])


def _key(series: Mapping[str, Any]) -> EndpointKey | None:
    metric = series.get("metric") or {}
    endpoint, namespace = metric.get("endpoint"), metric.get("namespace")
    return (namespace, endpoint) if endpoint and namespace else None


def parse_p95(body: Any) -> dict[EndpointKey, int]:
    """{(namespace, endpoint): p95 ms} from a histogram_quantile answer; NaN and Inf are dropped."""
    values: dict[EndpointKey, int] = {}
    for series in _vector(body):
        key = _key(series)
        try:
            seconds = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if key is not None and math.isfinite(seconds):
            values[key] = round(seconds * 1000)
    return values


def parse_circuits(body: Any) -> dict[EndpointKey, Circuit]:
    """{(namespace, endpoint): fleet circuit} from per-state router counts."""
    counts: dict[EndpointKey, dict[str, float]] = defaultdict(dict)
    for series in _vector(body):
        key = _key(series)
        state = (series.get("metric") or {}).get("state")
        try:
            count = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if key is not None and state and math.isfinite(count):
            counts[key][state] = count
    return {key: summary for key, per_state in counts.items() if (summary := fleet_circuit(per_state)) is not None}


def fleet_circuit(routers_per_state: Mapping[str, float]) -> Circuit | None:
    """Summarise how many routers see each state; None when no router reports the endpoint."""
    total = sum(routers_per_state.values())
    if total <= 0:
        return None
    opened = routers_per_state.get("open", 0)
    if opened * 2 >= total:
        return "open"
    if opened + routers_per_state.get("half-open", 0) > 0:
        return "half-open"
    return "closed"


def observations(
    p95: Mapping[EndpointKey, int], circuits: Mapping[EndpointKey, Circuit]
) -> dict[EndpointKey, FleetObservation]:
    keys = set(p95) | set(circuits)
    return {key: FleetObservation(p95.get(key), circuits.get(key)) for key in keys}


def lookup(view: Mapping[EndpointKey, FleetObservation], namespace: str, name: str) -> FleetObservation | None:
    """The observation for an endpoint: the series of its own namespace only."""
    return view.get((namespace, name))


def meaningful_change(old: FleetObservation | None, new: FleetObservation | None) -> bool:
    """Whether status should change: any circuit change, p95 appearing/disappearing or moving enough."""
    old = old or FleetObservation()
    new = new or FleetObservation()
    if old.circuit != new.circuit:
        return True
    if (old.latency_p95_ms is None) != (new.latency_p95_ms is None):
        return True
    if old.latency_p95_ms is None or new.latency_p95_ms is None:
        return False
    delta = abs(new.latency_p95_ms - old.latency_p95_ms)
    return delta >= P95_ABSOLUTE_CHANGE_MS and delta >= P95_RELATIVE_CHANGE * old.latency_p95_ms


async def query_fleet(
    session: aiohttp.ClientSession, prometheus_url: str, *, window: str = "1m", timeout_seconds: float = 5.0
) -> dict[EndpointKey, FleetObservation]:
    """Both instant queries, bounded; raises on any failure (the caller keeps the previous view)."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    bodies = []
    for query in (P95_QUERY.replace("$window", window), CIRCUIT_QUERY):
        async with session.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout
        ) as response:
            bodies.append(await response.json(content_type=None))
    return observations(parse_p95(bodies[0]), parse_circuits(bodies[1]))
