"""Status builders: what an InferenceEndpoint or RoutingPolicy reports, computed from observed facts.

Pure functions, no I/O. Conditions have the metav1.Condition shape. A condition keeps its
`lastTransitionTime` while its status stays the same, so rewriting an unchanged status is a no-op
and the API server records no new resourceVersion (and wakes no watcher).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hybridroute_operator.api import ConditionType, Reason
from hybridroute_operator.fleet import FleetObservation

Condition = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """One condition's desired truth value with its reason, before timestamps are attached."""

    type: str
    status: bool
    reason: str
    message: str


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serializes."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Iterable[Mapping[str, Any]],
    verdicts: Sequence[Verdict],
    *,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Conditions for `verdicts`, keeping each one's lastTransitionTime when its status is unchanged.

    Conditions of other types found in `previous` are kept as they are (another writer may own them).
    """
    previous_by_type = {str(condition.get("type")): condition for condition in previous}
    merged: list[Condition] = []
    for verdict in verdicts:
        status = "True" if verdict.status else "False"
        before = previous_by_type.pop(verdict.type, None)
        unchanged = before is not None and before.get("status") == status and before.get("lastTransitionTime")
        merged.append(
            {
                "type": verdict.type,
                "status": status,
                "reason": verdict.reason,
                "message": verdict.message,
                "observedGeneration": generation,
                "lastTransitionTime": before["lastTransitionTime"] if unchanged and before else timestamp(now),
            }
        )
    merged.extend(dict(condition) for condition in previous_by_type.values())
    return merged


def find_condition(conditions: Iterable[Mapping[str, Any]], condition_type: str) -> Mapping[str, Any] | None:
    return next((condition for condition in conditions if condition.get("type") == condition_type), None)


def is_true(conditions: Iterable[Mapping[str, Any]], condition_type: str) -> bool:
    condition = find_condition(conditions, condition_type)
    return condition is not None and condition.get("status") == "True"


def status_changes(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields of `desired` that differ from `current` (a merge patch)."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


# --------------------------------------------------------------------------------------------------
# InferenceEndpoint
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointHealth:
    """What the operator observed about one endpoint, reduced to the three conditions."""

    ready: Verdict
    progressing: Verdict
    degraded: Verdict
    ready_replicas: int | None = None


def _health(
    ready: tuple[bool, str, str],
    progressing: tuple[bool, str, str],
    degraded: tuple[bool, str, str],
    ready_replicas: int | None = None,
) -> EndpointHealth:
    return EndpointHealth(
        ready=Verdict(ConditionType.READY, *ready),
        progressing=Verdict(ConditionType.PROGRESSING, *progressing),
        degraded=Verdict(ConditionType.DEGRADED, *degraded),
        ready_replicas=ready_replicas,
    )


def managed_pool_health(deployment: Mapping[str, Any] | None) -> EndpointHealth:
    """Health of a managed pool from its Deployment as the API server returned it (None: not there)."""
    if deployment is None:
        return _health(
            (False, Reason.DEPLOYMENT_PROGRESSING, "the Deployment does not exist yet"),
            (True, Reason.DEPLOYMENT_PROGRESSING, "creating the Deployment"),
            (False, Reason.DEPLOYMENT_PROGRESSING, ""),
            ready_replicas=0,
        )
    observed = deployment.get("status") or {}
    desired = int((deployment.get("spec") or {}).get("replicas", 1))
    ready = int(observed.get("readyReplicas") or 0)
    updated = int(observed.get("updatedReplicas") or 0)
    total = int(observed.get("replicas") or 0)
    counts = f"{ready}/{desired} replicas ready"
    if desired == 0:
        parked = (False, Reason.SCALED_TO_ZERO, "spec.local.replicas is 0")
        return _health(parked, parked, parked, ready_replicas=0)

    generation_seen = int(observed.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation", 0))
    rolled_out = generation_seen and updated >= desired and total == desired and ready >= desired
    failure = _deployment_failure(observed.get("conditions") or [])
    if failure is not None:
        degraded = (True, Reason.DEPLOYMENT_UNAVAILABLE, f"{counts}; {failure}")
    elif rolled_out or ready >= desired:
        degraded = (False, Reason.DEPLOYMENT_READY, counts)
    elif generation_seen and updated >= desired and ready == 0:
        degraded = (False, Reason.DEPLOYMENT_PROGRESSING, f"waiting for readiness: {counts}")
    else:
        degraded = (False, Reason.DEPLOYMENT_PROGRESSING, counts)

    if ready > 0:
        ready_verdict = (True, Reason.DEPLOYMENT_READY, counts)
    elif failure is not None:
        ready_verdict = (False, Reason.DEPLOYMENT_UNAVAILABLE, f"{counts}; {failure}")
    else:
        ready_verdict = (False, Reason.DEPLOYMENT_PROGRESSING, counts)

    if rolled_out:
        progressing = (False, Reason.DEPLOYMENT_READY, f"rollout complete, {counts}")
    else:
        progressing = (True, Reason.DEPLOYMENT_PROGRESSING, f"{updated}/{desired} replicas updated, {counts}")
    return _health(ready_verdict, progressing, degraded, ready_replicas=ready)


def _deployment_failure(conditions: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the Deployment controller gave up, if it did (progress deadline, quota, admission...)."""
    progressing = find_condition(conditions, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return f"ProgressDeadlineExceeded: {progressing.get('message', '')}"
    replica_failure = find_condition(conditions, "ReplicaFailure")
    if replica_failure is not None and replica_failure.get("status") == "True":
        return f"ReplicaFailure: {replica_failure.get('message', '')}"
    return None


def external_server_health(url: str, error: str | None, *, busy: bool = False) -> EndpointHealth:
    """Health of an existing server given by `spec.local.url`; `error` is the probe failure, if any.

    `busy`: the probe timed out on a server that was Ready. A local model server answers /models only
    after the requests queued ahead of it, so a slow answer under load means busy, not gone: it stays
    Ready (Degraded says so) and the routers' breakers deal with its latency. Dropping it would leave
    private requests with nowhere to go. Refused connections and DNS failures are unreachable, and
    `error` is one of the generic words of `probes.Outcome` (never a connection error's text).
    """
    if error is None:
        verdict = (True, Reason.ENDPOINT_REACHABLE, f"{url} answered")
        return _health(verdict, _settled(verdict), _settled(verdict))
    if busy:
        message = f"{url}: {error}; it was ready, so it is treated as busy (routers' breakers handle latency)"
        return _health(
            (True, Reason.ENDPOINT_BUSY, message),
            (False, Reason.ENDPOINT_BUSY, message),
            (True, Reason.ENDPOINT_BUSY, message),
        )
    verdict = (False, Reason.ENDPOINT_UNREACHABLE, f"{url}: {error}")
    return _health(verdict, _settled(verdict), (True, verdict[1], verdict[2]))


def probe_not_allowed_health(url: str) -> EndpointHealth:
    """An existing server the operator may not probe: its host is outside the probe allow-list."""
    message = (
        f"{url} was not probed: its host is outside the operator's probe allow-list "
        "(chart value probes.allowedHosts, flag --probe-allowed-hosts)"
    )
    verdict = (False, Reason.PROBE_NOT_ALLOWED, message)
    return _health(verdict, _settled(verdict), (True, verdict[1], verdict[2]))


def cloud_health(
    secret_name: str, key: str, secret_exists: bool | None, *, has_key: bool | None = None
) -> EndpointHealth:
    """Health of a cloud endpoint from its API key Secret's metadata (the key is never read).

    `secret_exists` None: the operator may not see Secrets in this namespace (the chart grants that
    per namespace, `secretCheck.namespaces`), so the Secret is not checked and the endpoint counts as
    Ready; a missing key then shows in the routers, which skip the endpoint. Where the Secret is
    seen, `has_key` is what its managedFields tell (secretkeys.py): False is a missing key, None
    means its metadata does not tell.
    """
    if secret_exists is None:
        message = f"Secret {secret_name} not checked: the operator may not read Secrets in this namespace"
        verdict = (True, Reason.SECRET_NOT_CHECKED, message)
        return _health(verdict, _settled(verdict), (False, verdict[1], verdict[2]))
    if secret_exists and has_key is False:
        message = f"Secret {secret_name} has no key {key} (from the names its writers set; no value is read)"
        verdict = (False, Reason.SECRET_KEY_MISSING, message)
        return _health(verdict, _settled(verdict), (True, verdict[1], verdict[2]))
    if secret_exists:
        if has_key:
            message = f"Secret {secret_name} exists and holds key {key} (from its metadata; no value is read)"
        else:
            message = f"Secret {secret_name} exists (key {key} not verified: the operator reads Secret metadata only)"
        verdict = (True, Reason.SECRET_FOUND, message)
        return _health(verdict, _settled(verdict), _settled(verdict))
    verdict = (False, Reason.SECRET_MISSING, f"Secret {secret_name} not found")
    return _health(verdict, _settled(verdict), (True, verdict[1], verdict[2]))


def failed_health(reason: str, message: str) -> EndpointHealth:
    """The operator could not bring the endpoint up (invalid spec, children rejected by the API)."""
    verdict = (False, reason, message)
    return _health(verdict, _settled(verdict), (True, reason, message))


def _settled(verdict: tuple[bool, str, str]) -> tuple[bool, str, str]:
    """A False condition carrying the same reason, for conditions that do not apply (nothing rolls out)."""
    return (False, verdict[1], verdict[2])


def endpoint_status(
    health: EndpointHealth,
    *,
    url: str,
    model: str,
    generation: int,
    previous: Mapping[str, Any],
    now: datetime,
    fleet: FleetObservation | None = None,
) -> dict[str, Any]:
    """The InferenceEndpoint status fields the operator owns, with the fleet's p95/circuit when known."""
    conditions = merge_conditions(
        previous.get("conditions") or [],
        [health.ready, health.progressing, health.degraded],
        generation=generation,
        now=now,
    )
    status: dict[str, Any] = {
        "conditions": conditions,
        "observedGeneration": generation,
        "url": url,
        "model": model,
        "lastTransitionReason": _last_transition_reason(conditions),
    }
    if health.ready_replicas is not None:
        status["readyReplicas"] = health.ready_replicas
    if fleet is not None and fleet.latency_p95_ms is not None:
        status["latencyP95Ms"] = fleet.latency_p95_ms
    if fleet is not None and fleet.circuit is not None:
        status["circuit"] = fleet.circuit
    return status


def _last_transition_reason(conditions: Sequence[Mapping[str, Any]]) -> str:
    latest = max(conditions, key=lambda condition: str(condition.get("lastTransitionTime", "")))
    return str(latest.get("reason", ""))


# --------------------------------------------------------------------------------------------------
# RoutingPolicy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedRef:
    """One endpoint reference of a policy as the compiler resolved it."""

    name: str
    type: str | None
    available: bool
    reason: str | None = None

    def as_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "available": self.available}
        if self.type is not None:
            entry["type"] = self.type
        if self.reason:
            entry["reason"] = self.reason
        return entry


def resolved_refs_verdict(refs: Sequence[ResolvedRef]) -> Verdict:
    """ResolvedRefs: True when every referenced endpoint exists and is Ready; else names the others."""
    if not refs:
        return Verdict(ConditionType.RESOLVED_REFS, False, Reason.NO_ENDPOINTS_SELECTED, "no endpoint matches")
    missing = [ref.name for ref in refs if ref.type is None]
    not_ready = [ref.name for ref in refs if ref.type is not None and not ref.available]
    if not missing and not not_ready:
        return Verdict(ConditionType.RESOLVED_REFS, True, Reason.ENDPOINTS_RESOLVED, f"{len(refs)} endpoints ready")
    parts = []
    if missing:
        parts.append("missing: " + ", ".join(missing))
    if not_ready:
        parts.append("not ready: " + ", ".join(not_ready))
    reason = Reason.ENDPOINTS_MISSING if missing else Reason.ENDPOINTS_NOT_READY
    return Verdict(ConditionType.RESOLVED_REFS, False, reason, "; ".join(parts))


def policy_ready_verdict(
    refs: Sequence[ResolvedRef], config_hash: str | None, config_map: str | None, failure: tuple[str, str] | None
) -> Verdict:
    """Ready means usable: a published config that routes to every endpoint the policy names.

    - no config published (compile failure, ConfigMap conflict): False with that reason;
    - a named endpoint does not exist: False, EndpointsMissing. The config is still published (routers
      skip the missing one), but the policy is not what was declared: a typo or a missing manifest,
      which a GitOps health check must show (Argo CD: Degraded);
    - no endpoint can take traffic: False, NoEndpointsReady (pools starting; Argo CD: Progressing);
    - otherwise True, also when some existing endpoints are not Ready yet: routers serve with the
      others and fail over; ResolvedRefs=False names the ones waiting, and each endpoint reports its
      own health.
    """
    if failure is not None:
        return Verdict(ConditionType.READY, False, *failure)
    published = f"config {config_hash} in ConfigMap {config_map}"
    missing = [ref.name for ref in refs if ref.type is None]
    if missing:
        message = f"endpoints not found: {', '.join(missing)}; {published} routes without them"
        return Verdict(ConditionType.READY, False, Reason.ENDPOINTS_MISSING, message)
    if not any(ref.available for ref in refs):
        message = f"no endpoint is Ready yet ({', '.join(ref.name for ref in refs)}); {published}"
        return Verdict(ConditionType.READY, False, Reason.NO_ENDPOINTS_READY, message)
    return Verdict(ConditionType.READY, True, Reason.COMPILED, published)


def policy_status(
    *,
    generation: int,
    refs: Sequence[ResolvedRef],
    config_hash: str | None,
    config_map: str | None,
    failure: tuple[str, str] | None,
    previous: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """RoutingPolicy status. On a compile `failure` (reason, message) the last good hash is kept."""
    conditions = merge_conditions(
        previous.get("conditions") or [],
        [policy_ready_verdict(refs, config_hash, config_map, failure), resolved_refs_verdict(refs)],
        generation=generation,
        now=now,
    )
    status: dict[str, Any] = {
        "conditions": conditions,
        "observedGeneration": generation,
        "resolvedEndpoints": [ref.as_status() for ref in refs],
    }
    if failure is None:
        status["configHash"] = config_hash
        status["configMap"] = config_map
    return status
