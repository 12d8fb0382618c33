"""InferenceEndpoint reconciler: converge children, observe health, write status (never spec).

- managed pool (`spec.local.server`): claim the Deployment and Service (an object of that name the
  endpoint does not control is refused, never adopted: Ready=False, OwnershipConflict), server-side
  apply them without force (a field someone else manages: Ready=False, FieldConflict), then read
  readiness from the Deployment the API server returned; events on the owned Deployment wake the
  reconciler so readiness flows into status promptly;
- existing server (`spec.local.url`): GET {url}/models with a short timeout on every pass, only
  where the probe allow-list admits the host (probes.py); status carries generic outcomes only;
- a cloud or existing-server endpoint that ran a managed pool before scales that pool's Deployment
  to 0 (only its own, by uid; a PoolStopped event says so), so no GPU serves a pool nobody routes to;
- cloud: the API key Secret must exist and, as far as its metadata's managedFields tell, hold the
  referenced key (metadata-only check; the key is never read); a watch on the
  namespace's Secrets (handlers/secrets.py) wakes the reconciler when it appears or goes. Where the
  operator may not see Secrets, the endpoint is Ready with reason SecretNotChecked.
The resync period re-runs every pass even without events (external probes above all).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes
from pydantic import ValidationError

from hybridroute_operator import fleet, ownership, probes, render, secretkeys, status
from hybridroute_operator.api import ENDPOINT_PLURAL, GROUP, VERSION, InferenceEndpointSpec, Reason
from hybridroute_operator.apply import OwnershipConflict, SecretsNotPermitted
from hybridroute_operator.compile import plain_copy
from hybridroute_operator.handlers import reconcile_until_stopped
from hybridroute_operator.settings import OperatorState, state_of

log = logging.getLogger("hybridroute.operator.endpoint")


@kopf.on.event(GROUP, VERSION, ENDPOINT_PLURAL)
def endpoint_changed(type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    key = (namespace or "", name)
    if type == "DELETED":
        state_of(memo).endpoint_doorbells.gone(key, body["metadata"]["uid"])
        state_of(memo).secret_users.forget(key)
    else:
        state_of(memo).endpoint_doorbells.ring(key)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={render.MANAGED_BY_LABEL: render.MANAGED_BY, render.ENDPOINT_LABEL: kopf.PRESENT},
)
def pool_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    state_of(memo).endpoint_doorbells.ring((namespace or "", labels[render.ENDPOINT_LABEL]))


@kopf.daemon(GROUP, VERSION, ENDPOINT_PLURAL, cancellation_backoff=2.0, cancellation_timeout=5.0)
async def endpoint_reconciler(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    state = state_of(memo)
    key, uid = (namespace or "", name), body["metadata"]["uid"]
    with state.endpoint_doorbells.installed(key) as bell:
        await reconcile_until_stopped(
            lambda: reconcile_endpoint(body, state),
            bell=bell,
            stopped=stopped,
            gone=lambda: state.endpoint_doorbells.is_gone(key, uid),
            resync_seconds=state.tuning.resync_seconds,
            error_backoff_seconds=state.tuning.error_backoff_seconds,
            logger=logger,
        )


async def reconcile_endpoint(body: kopf.Body, state: OperatorState) -> None:
    """One level-based pass over an InferenceEndpoint; `body` is kopf's live view of it."""
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    try:
        spec = InferenceEndpointSpec.model_validate(plain_copy(body.get("spec") or {}))
    except ValidationError as exc:
        reason = f"spec rejected: {exc.error_count()} problems, first: {exc.errors()[0]['msg']}"
        await _report(body, state, status.failed_health(Reason.INVALID_SPEC, reason), url="", model="")
        return

    url, model = "", ""
    failure: Exception | None = None
    if spec.cloud is not None:
        url, model = spec.cloud.effective_base_url(), spec.cloud.model
        secret = spec.cloud.api_key_secret_ref
        state.secret_users.uses((namespace, name), secret.name)
        if state.secret_watches is not None:
            state.secret_watches.ensure(namespace)  # its events wake this reconciler (handlers/secrets.py)
        try:
            found = await asyncio.to_thread(state.cluster.secret_metadata, namespace, secret.name)
        except SecretsNotPermitted:
            health = status.cloud_health(secret.name, secret.key, None)
        else:
            has_key = None if found is None else secretkeys.holds_key(found, secret.key)
            health = status.cloud_health(secret.name, secret.key, found is not None, has_key=has_key)
    elif spec.local is not None and spec.local.url is not None:
        url, model = spec.local.url, spec.local.model
        timeout = state.tuning.probe_timeout_seconds
        outcome = await probes.probe_server(url, allow=state.tuning.probe_allow_list, timeout_seconds=timeout)
        was_ready = status.is_true((body.get("status") or {}).get("conditions") or [], "Ready")
        if outcome is probes.Outcome.NOT_ALLOWED:
            health = status.probe_not_allowed_health(url)
        else:
            busy = outcome is probes.Outcome.TIMED_OUT and was_ready
            health = status.external_server_health(url, outcome.problem(timeout), busy=busy)
    elif spec.local is not None:
        model = spec.local.model
        owner = render.Owner(name=name, namespace=namespace, uid=metadata["uid"])
        pool = render.managed_pool(owner, spec.local)
        url = pool.url
        try:
            for child in (pool.service, pool.deployment):  # both claimed before either is written
                await asyncio.to_thread(state.cluster.claim, child)
            await asyncio.to_thread(state.cluster.apply, pool.service)
            deployment = await asyncio.to_thread(state.cluster.apply, pool.deployment)
        except OwnershipConflict as exc:
            health = status.failed_health(Reason.OWNERSHIP_CONFLICT, str(exc))
        except kubernetes.client.ApiException as exc:
            if exc.status == 409 and ownership.conflict_managers(exc.body):
                conflicts = ownership.field_conflicts(exc.body)
                message = f"fields of the pool managed by someone else, not overwritten: {conflicts}"
                health = status.failed_health(Reason.FIELD_CONFLICT, message)
            else:
                failure = exc
                message = f"applying children failed: {_api_reason(exc)}"
                health = status.failed_health(Reason.RECONCILE_FAILED, message)
        else:
            health = status.managed_pool_health(deployment)
    else:  # CEL rejects this shape; keep the status honest if an old schema let it in
        health = status.failed_health(Reason.INVALID_SPEC, "spec.local or spec.cloud is required")

    if spec.cloud is not None or (spec.local is not None and spec.local.url is not None):
        await _stop_former_pool(body, state)
    await _report(body, state, health, url=url, model=model)
    if failure is not None:
        raise failure  # after reporting: the loop logs it and retries with backoff


async def _stop_former_pool(body: kopf.Body, state: OperatorState) -> None:
    """An endpoint switched from a managed pool to a cloud API or an existing server: its former pool
    (its own Deployment, by uid; never a same-named object of someone else) is scaled to 0."""
    metadata = body["metadata"]
    try:
        stopped = await asyncio.to_thread(
            state.cluster.stop_pool, metadata["namespace"], metadata["name"], metadata["uid"]
        )
    except kubernetes.client.ApiException as exc:
        log.warning("could not stop the former pool of %s: %s", metadata["name"], _api_reason(exc))
        return
    if stopped:
        message = "scaled the former managed pool to 0 replicas: the endpoint no longer runs a pool"
        kopf.event(body, type="Normal", reason="PoolStopped", message=message)


async def _report(
    body: kopf.Body, state: OperatorState, health: status.EndpointHealth, *, url: str, model: str
) -> None:
    metadata = body["metadata"]
    current = plain_copy(body.get("status") or {})
    desired = status.endpoint_status(
        health,
        url=url,
        model=model,
        generation=int(metadata.get("generation", 0)),
        previous=current,
        now=datetime.now(UTC),
        fleet=fleet.lookup(state.fleet, metadata["namespace"], metadata["name"]),
    )
    changes = status.status_changes(current, desired)
    if not changes:
        return
    await asyncio.to_thread(
        state.cluster.patch_status,
        group=GROUP,
        version=VERSION,
        plural=ENDPOINT_PLURAL,
        namespace=metadata["namespace"],
        name=metadata["name"],
        status=changes,
    )
    _announce_circuit(body, current.get("circuit"), desired.get("circuit"))
    before = status.find_condition(current.get("conditions") or [], health.ready.type)
    if before is None or (before.get("status") == "True") != health.ready.status:
        kind = "Normal" if health.ready.status else "Warning"
        kopf.event(body, type=kind, reason=health.ready.reason, message=health.ready.message)


CIRCUIT_EVENT_REASONS = {"open": "CircuitOpened", "half-open": "CircuitHalfOpen", "closed": "CircuitClosed"}


def _announce_circuit(body: kopf.Body, before: Any, after: Any) -> None:
    """One Event per fleet circuit transition (the first observation is not a transition)."""
    if before is None or after is None or before == after:
        return
    kind = "Warning" if after == "open" else "Normal"
    kopf.event(
        body, type=kind, reason=CIRCUIT_EVENT_REASONS[after], message=f"circuit {before} -> {after} (fleet view)"
    )


def _api_reason(exc: kubernetes.client.ApiException) -> str:
    return f"{exc.status} {exc.reason}"
