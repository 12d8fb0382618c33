"""RoutingPolicy + the InferenceEndpoints it names → the router's compiled config and its ConfigMap.

Pure: the caller passes what it knows about the endpoints (from kopf's index); nothing here talks
to the API. The output is the router's own `RouterConfig`, finalized with its content hash.

Decisions the CRD schema cannot express are made here:
- An endpoint that is named but missing, invalid, or not Ready is still compiled, marked
  `available: false` with the reason, so rules keep their meaning and routers skip it; a missing
  one gets an unresolvable placeholder URL (`*.invalid`, RFC 6761) and type local (no key, no cloud).
- No endpoint selected at all (no names, selector matches nothing) fails: a router config needs one.
- A rule naming an endpoint the policy does not select fails (a typo would silently drop traffic).
- `privacy.allRequestsSensitive` with no local endpoint fails: every request would be refused.
  Detectors or the privacy header without a local endpoint only warn: sensitive requests are
  refused (privacy holds), the rest still routes.
- Two API-key references that would reach the router as one environment variable fail (one
  provider's key would be sent to another); `secret_env_name` makes that impossible, and the
  check keeps it so.
Secrets appear only as references (`ApiKeyRef`), never values: the operator never reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from hybridroute_operator.api import (
    POLICY_KIND,
    ConditionType,
    EndpointRef,
    InferenceEndpointSpec,
    LabelSelector,
    LocalSpec,
    Reason,
    RoutingPolicySpec,
)
from hybridroute_operator.render import MANAGED_BY, MANAGED_BY_LABEL, Owner, service_url
from hybridroute_operator.status import ResolvedRef, find_condition
from hybridroute_router.config import (
    CONFIGMAP_KEY,
    ApiKeyRef,
    EndpointConfig,
    PolicyRef,
    Pricing,
    RouterConfig,
    SecretKeyRef,
    secret_env_name,
)

POLICY_LABEL: Final = "hybridroute.io/policy"
CONFIG_HASH_ANNOTATION: Final = "hybridroute.io/config-hash"


class CompileError(Exception):
    """The policy cannot be compiled; `reason` is the condition reason, `message` says what to fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class EndpointSnapshot:
    """An InferenceEndpoint as the operator last saw it (a copy, safe to keep in an index)."""

    name: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> EndpointSnapshot:
        metadata = body.get("metadata") or {}
        return cls(
            name=str(metadata["name"]),
            labels=dict(metadata.get("labels") or {}),
            spec=plain_copy(body.get("spec") or {}),
            status=plain_copy(body.get("status") or {}),
        )


@dataclass(frozen=True)
class PolicyInput:
    name: str
    namespace: str
    generation: int
    spec: RoutingPolicySpec


@dataclass(frozen=True)
class Compiled:
    config: RouterConfig
    """Finalized (its config_hash is set)."""
    refs: list[ResolvedRef]
    warnings: list[str] = field(default_factory=list)


def compile_policy(policy: PolicyInput, endpoints: Mapping[str, EndpointSnapshot]) -> Compiled:
    """Compile `policy` against the endpoints of its namespace (by name); raise CompileError."""
    compiled = _resolve(policy, endpoints)
    if not compiled:
        raise CompileError(Reason.NO_ENDPOINTS_SELECTED, "no endpoint selected: name endpoints or widen the selector")
    refs = [resolved for _, resolved in compiled]
    _check_rules(policy.spec, {ref.name for ref in refs})
    warnings = _check_privacy(policy.spec, refs) + _check_query_scope(policy.spec)
    check_secret_env_names(endpoint.api_key.secret_ref for endpoint, _ in compiled if endpoint.api_key)
    spec = policy.spec
    try:
        config = RouterConfig(
            policy=PolicyRef(namespace=policy.namespace, name=policy.name, generation=policy.generation),
            endpoints=[endpoint for endpoint, _ in compiled],
            **spec.policy_sections(),
        ).finalize()
    except ValidationError as exc:
        raise CompileError(Reason.COMPILE_FAILED, f"router config invalid: {_first_errors(exc)}") from None
    return Compiled(config=config, refs=refs, warnings=warnings)


def resolve_refs(policy: PolicyInput, endpoints: Mapping[str, EndpointSnapshot]) -> list[ResolvedRef]:
    """How each selected endpoint resolves, without compiling (for the status of a failed compile)."""
    return [resolved for _, resolved in _resolve(policy, endpoints)]


def _resolve(
    policy: PolicyInput, endpoints: Mapping[str, EndpointSnapshot]
) -> list[tuple[EndpointConfig, ResolvedRef]]:
    selected = select_endpoints(policy.spec, endpoints)
    return [_endpoint_config(ref, endpoints.get(ref.name), policy.namespace) for ref in selected]


def select_endpoints(spec: RoutingPolicySpec, endpoints: Mapping[str, EndpointSnapshot]) -> list[EndpointRef]:
    """Named references first (in order), then selector matches not already named (by name)."""
    named = list(spec.endpoints or [])
    seen = {ref.name for ref in named}
    if spec.endpoint_selector is not None:
        for name in sorted(endpoints):
            if name not in seen and matches(spec.endpoint_selector, endpoints[name].labels):
                named.append(EndpointRef(name=name))
                seen.add(name)
    return named


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (an empty selector matches everything)."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def _endpoint_config(
    ref: EndpointRef, snapshot: EndpointSnapshot | None, namespace: str
) -> tuple[EndpointConfig, ResolvedRef]:
    if snapshot is None:
        return _placeholder(ref, "InferenceEndpoint not found"), ResolvedRef(ref.name, None, False, "NotFound")
    try:
        spec = InferenceEndpointSpec.model_validate(snapshot.spec)
    except ValidationError as exc:
        reason = f"{Reason.INVALID_SPEC}: {_first_errors(exc)}"
        return _placeholder(ref, reason), ResolvedRef(ref.name, str(snapshot.spec.get("type")), False, reason)

    ready = find_condition(snapshot.status.get("conditions") or [], ConditionType.READY)
    available = ready is not None and ready.get("status") == "True"
    unavailable_reason = None if available else _not_ready_reason(ready)
    common: dict[str, Any] = {
        "name": ref.name,
        "type": spec.type,
        "priority": spec.priority if ref.priority is None else ref.priority,
        "weight": spec.weight if ref.weight is None else ref.weight,
        "capabilities": spec.effective_capabilities(),
        "available": available,
        "unavailable_reason": unavailable_reason,
    }
    if spec.max_concurrency is not None:
        common["max_concurrency"] = spec.max_concurrency
    if spec.cloud is not None:
        cloud = spec.cloud
        endpoint = EndpointConfig(
            **common,
            base_url=cloud.effective_base_url(),
            model=cloud.model,
            provider=cloud.provider,
            api_key=ApiKeyRef(secret_ref=cloud.api_key_secret_ref),
            pricing=cloud.pricing,
            **_context(cloud.max_context_tokens),
        )
    elif spec.local is not None:
        local = spec.local
        port = local.effective_port()
        base_url = local.url if local.url is not None or port is None else service_url(ref.name, namespace, port)
        if local.max_concurrency is not None and "max_concurrency" not in common:
            common["max_concurrency"] = local.max_concurrency
        if local.url is None:
            common.update(_lifecycle(local, snapshot.status))
        endpoint = EndpointConfig(
            **common,
            base_url=base_url,
            model=local.model,
            provider=local.server or "openai-compatible",
            pricing=Pricing(),
            **_context(local.max_context_tokens),
        )
    else:  # the CEL rules make this unreachable for objects the API server accepted
        return _placeholder(ref, Reason.INVALID_SPEC), ResolvedRef(ref.name, spec.type, False, Reason.INVALID_SPEC)
    return endpoint, ResolvedRef(ref.name, spec.type, available, unavailable_reason)


def _lifecycle(local: LocalSpec, status: Mapping[str, Any]) -> dict[str, int]:
    """A managed pool's replicas (desired, ready) and llama.cpp's `--parallel` slots, for admission."""
    fields = {"desired_replicas": local.replicas, "ready_replicas": int(status.get("readyReplicas") or 0)}
    if local.server == "llamacpp" and local.max_concurrency is not None:
        fields["parallel_slots"] = local.max_concurrency
    return fields


def _placeholder(ref: EndpointRef, reason: str) -> EndpointConfig:
    return EndpointConfig(
        name=ref.name,
        type="local",
        base_url=f"http://{ref.name}.invalid/v1",
        model=ref.name,
        available=False,
        unavailable_reason=reason,
    )


def _context(max_context_tokens: int | None) -> dict[str, int]:
    return {} if max_context_tokens is None else {"max_context_tokens": max_context_tokens}


def _not_ready_reason(ready: Mapping[str, Any] | None) -> str:
    if ready is None:
        return "not reconciled yet"
    message = str(ready.get("message") or "")
    return f"{ready.get('reason', 'NotReady')}: {message}" if message else str(ready.get("reason", "NotReady"))


def _check_rules(spec: RoutingPolicySpec, selected: set[str]) -> None:
    for index, rule in enumerate(spec.rules):
        unknown = [name for name in rule.action.endpoints if name not in selected]
        if unknown:
            raise CompileError(
                Reason.COMPILE_FAILED,
                f"rules[{index}] ({rule.name}) names endpoints the policy does not select: {', '.join(unknown)}",
            )


def _check_privacy(spec: RoutingPolicySpec, refs: Sequence[ResolvedRef]) -> list[str]:
    if any(ref.type == "local" for ref in refs):
        return []
    if spec.privacy.all_requests_sensitive:
        raise CompileError(
            Reason.COMPILE_FAILED,
            "privacy.allRequestsSensitive is set but the policy has no local endpoint: every request would be refused",
        )
    return ["the policy has no local endpoint: requests detected as sensitive will be refused"]


def _check_query_scope(spec: RoutingPolicySpec) -> list[str]:
    """A custom p95 query that does not filter on $namespace reads every tenant's series."""
    prometheus = spec.circuit_breaker.prometheus
    if prometheus.url is None or "$namespace" in prometheus.query:
        return []
    return [
        "circuitBreaker.prometheus.query does not filter on $namespace: a policy of the same name in "
        "another namespace can move this policy's breakers"
    ]


def check_secret_env_names(
    refs: Iterable[SecretKeyRef | None], env_name: Callable[[SecretKeyRef], str] = secret_env_name
) -> None:
    """Refuse two different Secret references that would reach the router as one environment variable.

    The injector puts each referenced key into the router's environment under `env_name(ref)`; a
    shared name would hand one endpoint's key to another provider.
    """
    seen: dict[str, SecretKeyRef] = {}
    for ref in refs:
        if ref is None:
            continue
        name = env_name(ref)
        other = seen.setdefault(name, ref)
        if other != ref:
            raise CompileError(
                Reason.COMPILE_FAILED,
                f"API key references {other.name}/{other.key} and {ref.name}/{ref.key} would share the "
                f"environment variable {name}: rename one Secret or key",
            )


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '<root>'}: {error['msg']}" for error in exc.errors()[:limit]
    ]
    return "; ".join(problems)


def plain_copy(value: Any) -> Any:
    """Deep copy of kopf's live views (Body, Spec, Status) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): plain_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_copy(item) for item in value]
    return value


def config_map(policy: Owner, config: RouterConfig) -> dict[str, Any]:
    """The ConfigMap (named after the policy, owned by it) that carries the compiled config."""
    finalized = config if config.config_hash else config.finalize()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": policy.name,
            "namespace": policy.namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                "app.kubernetes.io/component": "router-config",
                POLICY_LABEL: policy.name,
            },
            "annotations": {CONFIG_HASH_ANNOTATION: finalized.config_hash},
            "ownerReferences": [policy.reference()],
        },
        "data": {CONFIGMAP_KEY: finalized.to_json()},
    }


def policy_owner(name: str, namespace: str, uid: str) -> Owner:
    return Owner(name=name, namespace=namespace, uid=uid, kind=POLICY_KIND)
