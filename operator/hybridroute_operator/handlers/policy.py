"""RoutingPolicy reconciler: compile against the namespace's endpoints, publish the ConfigMap, report.

A kopf index keeps a snapshot of every InferenceEndpoint per namespace; any endpoint event (appears,
changes, becomes ready, disappears) rings the doorbells of that namespace's policies, which
recompile from the index. The compile is pure and cheap; the ConfigMap write is a server-side apply
that the API server drops when nothing changed, so a recompile that yields the same hash costs two
requests (claim, apply) and changes nothing. A policy that fails to compile leaves the last good
ConfigMap alone and reports Ready=False (CompileFailed) with a Warning event. A ConfigMap of the
policy's name that the policy does not control is refused (Ready=False, OwnershipConflict); the
policy's own ConfigMap always gets the compiled content back, and nothing else (keys added by hand
are removed), with a Warning event when that overwrote a hand edit; one made immutable by hand is
reported (Ready=False, ConfigMapNotWritable) until someone deletes it, as is any failed write. A
watch on the policies' ConfigMaps (by label) brings the compiled config back within a second of a
hand edit or deletion.
A policy with a fleet budget (scope policy or namespace) also reads its spend from Prometheus on
every pass, resyncs at least every `budget.prometheus.evaluationSeconds`, and shows the result in
status.budget (budgetstatus.py), with an Event when the budget's state changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes
from pydantic import ValidationError

from hybridroute_operator import budgetstatus, status
from hybridroute_operator.api import (
    ENDPOINT_PLURAL,
    GROUP,
    POLICY_PLURAL,
    VERSION,
    ConditionType,
    Reason,
    RoutingPolicySpec,
)
from hybridroute_operator.apply import NotWritable, OwnershipConflict
from hybridroute_operator.compile import (
    POLICY_LABEL,
    CompileError,
    EndpointSnapshot,
    PolicyInput,
    compile_policy,
    config_map,
    plain_copy,
    policy_owner,
    resolve_refs,
)
from hybridroute_operator.handlers import reconcile_until_stopped
from hybridroute_operator.render import MANAGED_BY, MANAGED_BY_LABEL
from hybridroute_operator.settings import OperatorState, state_of


@kopf.index(GROUP, VERSION, ENDPOINT_PLURAL)
def endpoints_by_namespace(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, EndpointSnapshot]:
    return {namespace or "": EndpointSnapshot.of(body)}


@kopf.on.event(GROUP, VERSION, ENDPOINT_PLURAL)
def endpoint_seen(namespace: str | None, memo: Any, **_: Any) -> None:
    state_of(memo).policy_doorbells.ring_namespace(namespace or "")


@kopf.on.event("", "v1", "configmaps", labels={MANAGED_BY_LABEL: MANAGED_BY, POLICY_LABEL: kopf.PRESENT})
def config_map_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    # A policy's ConfigMap edited or deleted by hand: put the compiled config back now, not at the
    # next resync, before the kubelet's next volume refresh is likely to hand the edit to routers.
    # (One that loses its labels in the edit ends this watch with a DELETED event: also a ring.)
    state_of(memo).policy_doorbells.ring((namespace or "", name))


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL)
def policy_changed(type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    key = (namespace or "", name)
    if type == "DELETED":
        state_of(memo).policy_doorbells.gone(key, body["metadata"]["uid"])
    else:
        state_of(memo).policy_doorbells.ring(key)


@kopf.daemon(GROUP, VERSION, POLICY_PLURAL, cancellation_backoff=2.0, cancellation_timeout=5.0)
async def policy_reconciler(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    # kopf passes each index as a keyword named after its function
    endpoints: kopf.Index[str, EndpointSnapshot] = kwargs["endpoints_by_namespace"]
    state = state_of(memo)
    key, uid = (namespace or "", name), body["metadata"]["uid"]
    with state.policy_doorbells.installed(key) as bell:
        await reconcile_until_stopped(
            lambda: reconcile_policy(body, state, endpoints.get(namespace or "", [])),
            bell=bell,
            stopped=stopped,
            gone=lambda: state.policy_doorbells.is_gone(key, uid),
            resync_seconds=lambda: resync_seconds(body, state.tuning.resync_seconds),
            error_backoff_seconds=state.tuning.error_backoff_seconds,
            logger=logger,
        )


def resync_seconds(body: kopf.Body, default: float) -> float:
    """The resync period; shorter for a fleet budget, whose status follows spend rather than events."""
    budget = (body.get("spec") or {}).get("budget") or {}
    if budget.get("scope") not in ("policy", "namespace"):
        return default
    return min(default, float((budget.get("prometheus") or {}).get("evaluationSeconds", 15)))


async def reconcile_policy(body: kopf.Body, state: OperatorState, snapshots: Iterable[EndpointSnapshot]) -> None:
    """One pass: compile, publish when it compiles, report either way; `body` is kopf's live view."""
    metadata = body["metadata"]
    namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
    generation = int(metadata.get("generation", 0))
    endpoints = {snapshot.name: snapshot for snapshot in snapshots}
    current = plain_copy(body.get("status") or {})

    refs: list[status.ResolvedRef] = []
    failure: tuple[str, str] | None = None
    compiled = None
    budget: dict[str, Any] | None = None
    try:
        spec = RoutingPolicySpec.model_validate(plain_copy(body.get("spec") or {}))
    except ValidationError as exc:
        failure = (Reason.INVALID_SPEC, f"spec rejected: {exc.errors()[0]['msg']}")
    except Exception as exc:  # whatever a spec makes validation raise, it is reported, never a crash
        failure = (Reason.INVALID_SPEC, f"spec rejected: validation failed ({type(exc).__name__})")
    else:
        if spec.budget.fleet:
            reading = await budgetstatus.read_spend(spec.budget, namespace, name, state.tuning.prometheus_url)
            previous_budget = current.get("budget")
            budget = budgetstatus.budget_status(
                spec.budget, namespace, name, reading, previous_budget, datetime.now(UTC)
            )
        policy = PolicyInput(name=name, namespace=namespace, generation=generation, spec=spec)
        try:
            compiled = compile_policy(policy, endpoints)
        except CompileError as exc:
            failure = (exc.reason, exc.message)
            refs = resolve_refs(policy, endpoints)
        except Exception as exc:  # a compiler bug on one policy must still leave a status, not a crash loop
            failure = (Reason.COMPILE_FAILED, f"compile failed ({type(exc).__name__})")
            refs = resolve_refs(policy, endpoints)
        else:
            refs = compiled.refs

    config_hash = None
    publish_error: Exception | None = None
    if compiled is not None:
        config_hash = compiled.config.config_hash
        manifest = config_map(policy_owner(name, namespace, uid), compiled.config)
        try:
            overwritten = await asyncio.to_thread(state.cluster.apply_config_map, manifest)
        except OwnershipConflict as exc:
            # Someone else's ConfigMap has the policy's name: never overwrite or adopt it.
            failure = (Reason.OWNERSHIP_CONFLICT, str(exc))
        except NotWritable as exc:
            failure = (Reason.CONFIG_MAP_NOT_WRITABLE, str(exc))
        except kubernetes.client.ApiException as exc:
            # Reported before the loop retries with backoff: status must not keep saying Ready.
            failure = (Reason.RECONCILE_FAILED, f"writing ConfigMap {name} failed: {exc.status} {exc.reason}")
            publish_error = exc
        else:
            if overwritten:
                editors = ", ".join(overwritten)
                message = f"ConfigMap {name} was edited by hand ({editors}); the compiled config was put back"
                kopf.event(body, type="Warning", reason=Reason.HAND_EDIT_OVERWRITTEN, message=message)

    desired = status.policy_status(
        generation=generation,
        refs=refs,
        config_hash=config_hash,
        config_map=name,
        failure=failure,
        previous=current,
        now=datetime.now(UTC),
    )
    desired["budget"] = budget
    changes = status.status_changes(current, desired)
    if changes:
        await asyncio.to_thread(
            state.cluster.patch_status,
            group=GROUP,
            version=VERSION,
            plural=POLICY_PLURAL,
            namespace=namespace,
            name=name,
            status=changes,
        )
        _announce(body, current, failure, config_hash, compiled.warnings if compiled else [])
        if budget is not None and (event := budgetstatus.budget_event(current.get("budget"), budget)) is not None:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if publish_error is not None:
        raise publish_error  # after reporting: the loop logs it and retries with backoff


def _announce(
    body: kopf.Body,
    previous: dict[str, Any],
    failure: tuple[str, str] | None,
    config_hash: str | None,
    warnings: list[str],
) -> None:
    """Events for what changed: a new config (with its warnings) or a new failure, once each."""
    if failure is not None:
        before = status.find_condition(previous.get("conditions") or [], ConditionType.READY)
        if before is None or before.get("status") != "False" or before.get("message") != failure[1]:
            kopf.event(body, type="Warning", reason=failure[0], message=failure[1])
        return
    if config_hash != previous.get("configHash"):
        kopf.event(body, type="Normal", reason=Reason.COMPILED, message=f"published config {config_hash}")
        for warning in warnings:
            kopf.event(body, type="Warning", reason=Reason.COMPILED, message=warning)
