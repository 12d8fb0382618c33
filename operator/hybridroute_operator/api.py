"""The typed API of hybridroute.io/v1alpha1: the one source of truth for both CRDs.

`crdgen` turns these models into the CRD YAML under crds/; the operator parses what the API server
hands it with the same models; `hybridroute validate` checks manifests offline with them. The
RoutingPolicy spec reuses the router's policy sections from `hybridroute_router.config` verbatim, so
what a user writes is exactly what the compiled router config carries.

Cross-field constraints live in `CROSS_FIELD_RULES`: each rule holds its CEL expression (published in
the CRD as `x-kubernetes-validations`) next to the same check in Python (run by the spec models'
validators), so the API server and the offline validator reject the same manifests.

Class and attribute docstrings become the schema descriptions `kubectl explain` prints: write them
for a newcomer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from hybridroute_router.config import (
    DNS_LABEL,
    BudgetConfig,
    Capabilities,
    CircuitBreakerConfig,
    Model,
    PolicySections,
    Pricing,
    RuleMatch,
    SecretKeyRef,
)

GROUP: Final = "hybridroute.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORIES: Final = ("hybridroute",)

ENDPOINT_KIND: Final = "InferenceEndpoint"
ENDPOINT_PLURAL: Final = "inferenceendpoints"
ENDPOINT_SINGULAR: Final = "inferenceendpoint"
ENDPOINT_SHORT_NAMES: Final = ("ie",)

POLICY_KIND: Final = "RoutingPolicy"
POLICY_PLURAL: Final = "routingpolicies"
POLICY_SINGULAR: Final = "routingpolicy"
POLICY_SHORT_NAMES: Final = ("rp",)

# Kubernetes resource quantity (the same expression controller-gen publishes for resource.Quantity).
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTP]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Label keys and values as Kubernetes accepts them (optional DNS prefix, then a name).
LABEL_KEY_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

# Names become Deployment and Service names, which must be DNS-1035 labels. (A root rule cannot set
# fieldPath to metadata, so the message names the field.)
METADATA_NAME_RULE: Final = {
    "rule": "self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": (
        "metadata.name must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter"
    ),
}
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# Schema hints crdgen reads from `json_schema_extra` (the names are the Kubernetes extensions).
ATOMIC_LIST: Final[dict[str, Any]] = {"x-kubernetes-list-type": "atomic"}


def keyed_list(*keys: str) -> dict[str, Any]:
    """Schema hint: a list whose items are identified by `keys` (unique; server-side apply merges by key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# --------------------------------------------------------------------------------------------------
# Conditions: types and reasons in one place
# --------------------------------------------------------------------------------------------------


class ConditionType:
    """Condition types the operator reports."""

    READY: Final = "Ready"
    PROGRESSING: Final = "Progressing"
    DEGRADED: Final = "Degraded"
    RESOLVED_REFS: Final = "ResolvedRefs"


class Reason:
    """Condition reasons (CamelCase, as metav1.Condition requires)."""

    # InferenceEndpoint, managed pool
    DEPLOYMENT_READY: Final = "DeploymentReady"
    DEPLOYMENT_PROGRESSING: Final = "DeploymentProgressing"
    DEPLOYMENT_UNAVAILABLE: Final = "DeploymentUnavailable"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    # InferenceEndpoint, existing server (url)
    ENDPOINT_REACHABLE: Final = "EndpointReachable"
    ENDPOINT_UNREACHABLE: Final = "EndpointUnreachable"
    ENDPOINT_BUSY: Final = "EndpointBusy"
    # InferenceEndpoint, cloud
    SECRET_FOUND: Final = "SecretFound"
    SECRET_MISSING: Final = "SecretMissing"
    SECRET_KEY_MISSING: Final = "SecretKeyMissing"
    SECRET_NOT_CHECKED: Final = "SecretNotChecked"
    # InferenceEndpoint, existing server (url) outside the operator's probe allow-list
    PROBE_NOT_ALLOWED: Final = "ProbeNotAllowed"
    # InferenceEndpoint, runtime health from the routers
    CIRCUIT_OPEN: Final = "CircuitOpen"
    LATENCY_ABOVE_SLO: Final = "LatencyAboveSLO"
    # Both kinds
    INVALID_SPEC: Final = "InvalidSpec"
    RECONCILE_FAILED: Final = "ReconcileFailed"
    OWNERSHIP_CONFLICT: Final = "OwnershipConflict"
    """A child's name is taken by an object the resource does not control; it is left untouched."""
    FIELD_CONFLICT: Final = "FieldConflict"
    """Someone else manages a field of an owned Deployment or Service; the operator does not force it."""
    HAND_EDIT_OVERWRITTEN: Final = "HandEditOverwritten"
    """Event: a policy's own ConfigMap was edited by hand and the compiled config was put back."""
    CONFIG_MAP_NOT_WRITABLE: Final = "ConfigMapNotWritable"
    """A policy's own ConfigMap was made immutable by hand: the compiled config cannot be written."""
    # RoutingPolicy
    COMPILED: Final = "Compiled"
    COMPILE_FAILED: Final = "CompileFailed"
    ENDPOINTS_RESOLVED: Final = "EndpointsResolved"
    ENDPOINTS_MISSING: Final = "EndpointsMissing"
    ENDPOINTS_NOT_READY: Final = "EndpointsNotReady"
    NO_ENDPOINTS_SELECTED: Final = "NoEndpointsSelected"
    NO_ENDPOINTS_READY: Final = "NoEndpointsReady"


# --------------------------------------------------------------------------------------------------
# Cross-field rules: CEL for the API server, the same check in Python
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossFieldRule:
    """A constraint across fields, stated once for the API server (CEL) and once for Python."""

    cel: str
    """CEL expression over `self` (the object the rule is attached to) that must be true."""
    message: str
    """What the user reads when the rule fails; names the fields involved."""
    holds: Callable[[Any], bool]
    """The same predicate over the parsed model instance."""
    field_path: str = ""
    """Where the API server reports the failure, relative to the object (e.g. `.cloud`); empty: the object."""
    reason: str = "FieldValueInvalid"
    """Kubernetes cause type: FieldValueInvalid, FieldValueRequired, FieldValueForbidden, FieldValueDuplicate."""


@dataclass(frozen=True)
class Violation:
    """One failed cross-field rule: where (path inside the validated object) and why."""

    path: tuple[str | int, ...]
    message: str


def _violations(instance: BaseModel, path: tuple[str | int, ...]) -> Iterator[Violation]:
    for rule in CROSS_FIELD_RULES.get(type(instance), ()):
        if not rule.holds(instance):
            extra = tuple(part for part in rule.field_path.split(".") if part)
            yield Violation(path + extra, rule.message)
    for name, field in type(instance).model_fields.items():
        key = field.alias or name
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            yield from _violations(value, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _violations(item, (*path, key, index))


def cross_field_violations(instance: BaseModel) -> list[Violation]:
    """Every cross-field rule that fails anywhere inside `instance`, with camelCase paths."""
    return list(_violations(instance, ()))


class CrossFieldChecked(Model):
    """Base for top-level specs: runs every cross-field rule of the tree after field validation."""

    @model_validator(mode="after")
    def _cross_field_rules_hold(self) -> CrossFieldChecked:
        violations = cross_field_violations(self)
        if violations:
            summary = "; ".join(f"{format_path(v.path) or '<self>'}: {v.message}" for v in violations)
            # ctx carries the structured violations so `validate` can print one line per field path.
            raise PydanticCustomError("cross_field", "{summary}", {"summary": summary, "violations": violations})
        return self


def format_path(path: tuple[str | int, ...]) -> str:
    """`("rules", 0, "match")` -> `rules[0].match`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# --------------------------------------------------------------------------------------------------
# InferenceEndpoint
# --------------------------------------------------------------------------------------------------

ServerKind = Literal["vllm", "ollama", "llamacpp"]
CloudProvider = Literal["openai", "anthropic", "openrouter", "azure-openai", "openai-compatible"]


def _is_quantity(value: str | int) -> str | int:
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
    return value


Quantity = Annotated[
    str | int,
    AfterValidator(_is_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


@dataclass(frozen=True)
class ServerDefaults:
    """What a managed pool uses when the spec leaves image or port unset."""

    image: str
    port: int


SERVER_DEFAULTS: Final[dict[str, ServerDefaults]] = {
    "vllm": ServerDefaults(image="vllm/vllm-openai:v0.6.3", port=8000),
    "ollama": ServerDefaults(image="ollama/ollama:0.3.14", port=11434),
    "llamacpp": ServerDefaults(image="ghcr.io/ggerganov/llama.cpp:server", port=8080),
}

PROVIDER_BASE_URLS: Final[dict[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}
"""Providers with a well-known OpenAI-compatible base URL; the others need spec.cloud.baseURL."""


class GPUSpec(Model):
    """GPUs requested by each replica of a managed pool, and which GPU nodes may run it."""

    count: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per replica (the container's resource limit). 0 runs on CPU only (small GGUF models)."""
    resource_name: Annotated[str, Field(min_length=1, max_length=253, pattern=LABEL_KEY_PATTERN)] = "nvidia.com/gpu"
    """Extended resource name the device plugin advertises, e.g. nvidia.com/gpu or amd.com/gpu."""
    product: Annotated[str | None, Field(min_length=1, max_length=63)] = None
    """GPU model to schedule on, matched against the node label nvidia.com/gpu.product (GPU feature
    discovery), e.g. NVIDIA-A100-SXM4-80GB. Unset: any node with the resource."""


class Toleration(Model):
    """Lets pool pods schedule onto tainted nodes (GPU pools are usually tainted). Same shape as a pod's."""

    key: Annotated[str | None, Field(max_length=316)] = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal: the taint's value must equal `value`; Exists: any value (leave `value` empty)."""
    value: Annotated[str | None, Field(max_length=63)] = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all effects."""
    toleration_seconds: Annotated[int | None, Field(ge=0)] = None
    """With effect NoExecute: how long the pod stays bound after the taint appears; unset is forever."""


class ResourceList(Model):
    """CPU and memory amounts as Kubernetes quantities (e.g. `4`, `500m`, `16Gi`)."""

    cpu: Quantity | None = None
    """CPU cores, e.g. 4 or 500m."""
    memory: Quantity | None = None
    """Memory, e.g. 16Gi."""


class ComputeResources(Model):
    """CPU and memory for the model server container (GPUs come from `gpu`)."""

    requests: ResourceList | None = None
    """Guaranteed amounts the scheduler reserves."""
    limits: ResourceList | None = None
    """Upper bounds the kubelet enforces."""


class LocalSpec(Model):
    """A model server on your own hardware: either a managed pool the operator runs (set `server`) or an
    existing server the operator only probes (set `url`). Exactly one of `server` and `url`."""

    model: Annotated[str, Field(min_length=1, max_length=512)]
    """Model to serve and to request, e.g. meta-llama/Llama-3.1-8B-Instruct (vLLM), llama3.1:8b (Ollama),
    or a GGUF path (llama.cpp)."""
    server: ServerKind | None = None
    """Managed pool: which model server the operator deploys (vllm, ollama, llamacpp)."""
    url: Annotated[str | None, Field(pattern=r"^https?://", max_length=2048)] = None
    """Existing server: its OpenAI-compatible base URL including /v1, e.g. http://workstation:11434/v1.
    The pool fields below are ignored."""
    quantization: Annotated[str | None, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9_-]+$")] = None
    """Managed pool: weight quantization passed to the server, e.g. awq, gptq, fp8 (vLLM --quantization)."""
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Managed pool: number of server pods; 0 parks the pool (the endpoint reports unavailable)."""
    gpu: GPUSpec = GPUSpec()
    """Managed pool: GPUs per replica and the GPU model to schedule on."""
    node_selector: Annotated[dict[str, str], Field(default_factory=dict, max_length=64)]
    """Managed pool: extra node labels the pods must land on (merged with the gpu.product label)."""
    tolerations: Annotated[list[Toleration], Field(default_factory=list, max_length=32)]
    """Managed pool: taints the pods tolerate, e.g. the GPU node pool's taint."""
    image: Annotated[str | None, Field(min_length=1, max_length=1024)] = None
    """Managed pool: container image; defaults per server (vllm/vllm-openai, ollama/ollama, llama.cpp server)."""
    extra_args: Annotated[list[str], Field(default_factory=list, max_length=64, json_schema_extra=ATOMIC_LIST)]
    """Managed pool: extra command-line arguments appended to the server's own, in order."""
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    """Managed pool: container port; defaults per server (vLLM 8000, Ollama 11434, llama.cpp 8080)."""
    max_context_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    """Context window in tokens (vLLM --max-model-len, llama.cpp --ctx-size); the router keeps larger
    requests away. Unset: the router assumes 8192."""
    max_concurrency: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """Managed pool: sequences the server runs at once (vLLM --max-num-seqs, llama.cpp --parallel)."""
    resources: ComputeResources | None = None
    """Managed pool: CPU and memory requests and limits for the server container."""

    @property
    def is_managed(self) -> bool:
        return self.server is not None

    def effective_image(self) -> str | None:
        """The image to run: the spec's, else the server's default; None for an existing server."""
        if self.server is None:
            return None
        return self.image or SERVER_DEFAULTS[self.server].image

    def effective_port(self) -> int | None:
        """The container port: the spec's, else the server's default; None for an existing server."""
        if self.server is None:
            return None
        return self.port or SERVER_DEFAULTS[self.server].port


class CloudSpec(Model):
    """A hosted model behind a provider's API. The API key stays in a Secret you create; the operator
    only checks that it exists and the router reads it at request time."""

    provider: CloudProvider
    """API flavour: openai, anthropic, openrouter, azure-openai or openai-compatible (any other vendor)."""
    model: Annotated[str, Field(min_length=1, max_length=512)]
    """Model name sent to the provider, e.g. gpt-4o-mini or claude-3-5-sonnet-latest."""
    api_key_secret_ref: SecretKeyRef
    """Secret (same namespace) and key holding the API key, e.g. {name: openai, key: api-key}."""
    base_url: Annotated[str | None, Field(alias="baseURL", pattern=r"^https?://", max_length=2048)] = None
    """OpenAI-compatible base URL including /v1. Defaults for openai, anthropic and openrouter; required
    for azure-openai and openai-compatible."""
    pricing: Pricing = Pricing()
    """USD per million input and output tokens; used for cost headers, metrics and budgets."""
    max_context_tokens: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    """Context window in tokens; the router keeps larger requests away. Unset: the router assumes 8192."""
    capabilities: Capabilities | None = None
    """What the model supports (tools, JSON schema, vision); overrides spec.capabilities."""

    def effective_base_url(self) -> str:
        """The spec's base URL, else the provider's well-known one (CEL guarantees one exists)."""
        return self.base_url or PROVIDER_BASE_URLS[self.provider]


class InferenceEndpointSpec(CrossFieldChecked):
    """Desired state of an InferenceEndpoint: a local model server or a cloud API the router may use."""

    type: Literal["local", "cloud"]
    """local: your own model server (fill spec.local); cloud: a provider API (fill spec.cloud)."""
    local: LocalSpec | None = None
    """Set when type is local: a model server on your own hardware, either a managed pool the operator
    deploys (set server) or an existing server it only probes (set url); model is always required."""
    cloud: CloudSpec | None = None
    """Set when type is cloud: the provider, the model to call, and the Secret holding the API key. The
    operator only checks that the Secret exists; the router reads the key at request time, and it never
    appears in status, events or the compiled config."""
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    """Lower is tried first among endpoints the policy prefers equally."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 100
    """Relative traffic share among endpoints of equal priority; 0 takes traffic only as a fallback."""
    capabilities: Capabilities | None = None
    """What the model supports (tools, JSON schema, vision); requests needing more skip this endpoint."""
    max_concurrency: Annotated[int | None, Field(ge=1, le=100_000)] = None
    """In-flight requests each router sends here at most; overflow moves to the next candidate."""

    def effective_capabilities(self) -> Capabilities:
        """spec.cloud.capabilities, else spec.capabilities, else the router's defaults."""
        if self.cloud is not None and self.cloud.capabilities is not None:
            return self.cloud.capabilities
        return self.capabilities or Capabilities()


class Condition(BaseModel):
    """The standard Kubernetes condition (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_attribute_docstrings=True)

    type: Annotated[str, Field(min_length=1, max_length=316)]
    """Condition type: Ready, Progressing, Degraded (endpoints); Ready, ResolvedRefs (policies)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase cause, for machines (e.g. SecretMissing)."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """metadata.generation the condition was computed from."""


class StatusModel(BaseModel):
    """Base for status: tolerant on read (other writers may add fields), camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
    )


ConditionList = Annotated[list[Condition], Field(default_factory=list, json_schema_extra=keyed_list("type"))]


class InferenceEndpointStatus(StatusModel):
    """Observed state of an InferenceEndpoint, written by the operator only."""

    conditions: ConditionList
    """Ready (usable by routers), Progressing (pool rolling out), Degraded (pool short of replicas)."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """metadata.generation this status describes."""
    url: str | None = None
    """Base URL the routers use (the pool's Service, the existing server, or the provider's API)."""
    model: str | None = None
    """Model served (spec.local.model or spec.cloud.model): the Model column of `kubectl get ie`."""
    ready_replicas: Annotated[int | None, Field(ge=0)] = None
    """Managed pool: pods passing their readiness probe."""
    latency_p95_ms: Annotated[int | None, Field(ge=0)] = None
    """Fleet-wide p95 upstream latency from Prometheus, in milliseconds."""
    circuit: Literal["closed", "open", "half-open"] | None = None
    """Circuit breaker state as the routers see it."""
    last_transition_reason: str | None = None
    """Reason of the most recent condition change, for a quick look."""


class InferenceEndpoint(Model):
    """A model server or cloud API that RoutingPolicies can route to."""

    api_version: Literal["hybridroute.io/v1alpha1"] = "hybridroute.io/v1alpha1"
    kind: Literal["InferenceEndpoint"] = ENDPOINT_KIND
    metadata: ObjectMeta
    spec: InferenceEndpointSpec
    status: InferenceEndpointStatus | None = None


# --------------------------------------------------------------------------------------------------
# RoutingPolicy
# --------------------------------------------------------------------------------------------------


class EndpointRef(Model):
    """An InferenceEndpoint in the policy's namespace, optionally re-ranked for this policy."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
    """InferenceEndpoint name."""
    priority: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Overrides the endpoint's priority in this policy (lower is tried first)."""
    weight: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Overrides the endpoint's weight in this policy."""


class LabelSelectorRequirement(Model):
    """One set-based label requirement."""

    key: Annotated[str, Field(min_length=1, max_length=316, pattern=LABEL_KEY_PATTERN)]
    """Label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """In / NotIn compare with `values`; Exists / DoesNotExist ignore values (leave them empty)."""
    values: Annotated[list[str], Field(default_factory=list, max_length=64)]
    """Label values for In and NotIn."""


class LabelSelector(Model):
    """Selects InferenceEndpoints in the policy's namespace by label; all conditions must hold."""

    match_labels: Annotated[dict[str, str], Field(default_factory=dict, max_length=64)]
    """Labels an endpoint must carry with exactly these values."""
    match_expressions: Annotated[
        list[LabelSelectorRequirement], Field(default_factory=list, max_length=32, json_schema_extra=ATOMIC_LIST)
    ]
    """Set-based requirements."""


class RoutingPolicySpec(CrossFieldChecked, PolicySections):
    """How requests for the policy's model aliases are routed among its endpoints."""

    endpoints: Annotated[list[EndpointRef] | None, Field(min_length=1, max_length=1000)] = None
    """Endpoints by name (each name once). Set this, endpointSelector, or both (the union is used)."""
    endpoint_selector: LabelSelector | None = None
    """Endpoints by label, in addition to `endpoints`."""


class ResolvedEndpoint(StatusModel):
    """One endpoint as the last compile saw it."""

    name: str
    """InferenceEndpoint name."""
    type: Literal["local", "cloud"] | None = None
    """Endpoint type; unset when the endpoint does not exist."""
    available: bool
    """Whether the compiled config lets routers use it."""
    reason: str | None = None
    """Why it is unavailable (missing, not ready, ...)."""


class BudgetStatus(StatusModel):
    """The fleet budget as the operator last read it from Prometheus (routers decide on their own reads)."""

    state: Literal["Ok", "Soft", "Exhausted", "Unknown"]
    """Exhausted: a cap is reached (the action applies); Soft: softPercent of a cap is spent; Unknown:
    Prometheus has not answered yet."""
    spent_today_usd: float | None = None
    """Spend since 00:00 UTC today in the budget's scope."""
    spent_this_month_usd: float | None = None
    """Spend since 00:00 UTC on the first of this month in the budget's scope."""
    stale: bool = False
    """True while Prometheus cannot be read: state and spend are the last values read, kept."""
    message: str = ""
    """What the state means for routing, or why it is stale."""
    last_evaluation_time: datetime | None = None
    """When Prometheus last answered the spend query."""


class RoutingPolicyStatus(StatusModel):
    """Observed state of a RoutingPolicy, written by the operator only."""

    conditions: ConditionList
    """Ready (a compiled config is published), ResolvedRefs (every referenced endpoint exists and is ready)."""
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    """metadata.generation this status describes."""
    config_hash: str | None = None
    """Content hash of the published router config (sha256:...)."""
    config_map: str | None = None
    """Name of the ConfigMap holding the compiled router config."""
    resolved_endpoints: Annotated[
        list[ResolvedEndpoint], Field(default_factory=list, json_schema_extra=keyed_list("name"))
    ]
    """Each endpoint the policy references or selects, and whether routers may use it."""
    budget: BudgetStatus | None = None
    """Fleet budget state (scope policy or namespace only)."""


class RoutingPolicy(Model):
    """Routing rules for a set of InferenceEndpoints, compiled into a router config ConfigMap."""

    api_version: Literal["hybridroute.io/v1alpha1"] = "hybridroute.io/v1alpha1"
    kind: Literal["RoutingPolicy"] = POLICY_KIND
    metadata: ObjectMeta
    spec: RoutingPolicySpec
    status: RoutingPolicyStatus | None = None


class ObjectMeta(BaseModel):
    """The parts of metadata the offline validator checks; the rest passes through."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


InferenceEndpoint.model_rebuild()
RoutingPolicy.model_rebuild()


# --------------------------------------------------------------------------------------------------
# The rules themselves (CEL next to Python)
# --------------------------------------------------------------------------------------------------


def _in_order(low: float | None, high: float | None) -> bool:
    return low is None or high is None or low <= high


CROSS_FIELD_RULES: Final[dict[type[BaseModel], tuple[CrossFieldRule, ...]]] = {
    InferenceEndpointSpec: (
        CrossFieldRule(
            cel="self.type != 'cloud' || has(self.cloud)",
            message="type cloud needs spec.cloud (provider, model, apiKeySecretRef)",
            holds=lambda spec: spec.type != "cloud" or spec.cloud is not None,
            field_path=".cloud",
            reason="FieldValueRequired",
        ),
        CrossFieldRule(
            cel="self.type != 'cloud' || !has(self.local)",
            message="type cloud must not set spec.local",
            holds=lambda spec: spec.type != "cloud" or spec.local is None,
            field_path=".local",
            reason="FieldValueForbidden",
        ),
        CrossFieldRule(
            cel="self.type != 'local' || has(self.local)",
            message="type local needs spec.local (server or url, and model)",
            holds=lambda spec: spec.type != "local" or spec.local is not None,
            field_path=".local",
            reason="FieldValueRequired",
        ),
        CrossFieldRule(
            cel="self.type != 'local' || !has(self.cloud)",
            message="type local must not set spec.cloud",
            holds=lambda spec: spec.type != "local" or spec.cloud is None,
            field_path=".cloud",
            reason="FieldValueForbidden",
        ),
    ),
    LocalSpec: (
        CrossFieldRule(
            cel="has(self.server) != has(self.url)",
            message="set exactly one of server (a managed pool the operator runs) or url (an existing server)",
            holds=lambda local: (local.server is None) != (local.url is None),
        ),
    ),
    CloudSpec: (
        CrossFieldRule(
            cel="self.provider in ['openai', 'anthropic', 'openrouter'] || has(self.baseURL)",
            message="baseURL is required for providers azure-openai and openai-compatible",
            holds=lambda cloud: cloud.provider in PROVIDER_BASE_URLS or cloud.base_url is not None,
            field_path=".baseURL",
            reason="FieldValueRequired",
        ),
    ),
    Toleration: (
        CrossFieldRule(
            cel="self.operator != 'Exists' || !has(self.value)",
            message="value must be empty when operator is Exists",
            holds=lambda toleration: toleration.operator != "Exists" or toleration.value is None,
            field_path=".value",
            reason="FieldValueForbidden",
        ),
        CrossFieldRule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds applies only to effect NoExecute",
            holds=lambda toleration: toleration.toleration_seconds is None or toleration.effect == "NoExecute",
            field_path=".tolerationSeconds",
        ),
    ),
    LabelSelectorRequirement: (
        CrossFieldRule(
            cel=(
                "self.operator in ['Exists', 'DoesNotExist']"
                " ? (!has(self.values) || size(self.values) == 0) : (has(self.values) && size(self.values) > 0)"
            ),
            message="values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
            holds=lambda req: (req.operator in ("Exists", "DoesNotExist")) == (not req.values),
            field_path=".values",
        ),
    ),
    RoutingPolicySpec: (
        CrossFieldRule(
            cel="has(self.endpoints) || has(self.endpointSelector)",
            message="set endpoints (by name) or endpointSelector (by label), or both",
            holds=lambda spec: spec.endpoints is not None or spec.endpoint_selector is not None,
            field_path=".endpoints",
            reason="FieldValueRequired",
        ),
    ),
    RuleMatch: (
        CrossFieldRule(
            cel="!has(self.minInputTokens) || !has(self.maxInputTokens) || self.minInputTokens <= self.maxInputTokens",
            message="minInputTokens must not exceed maxInputTokens",
            holds=lambda match: _in_order(match.min_input_tokens, match.max_input_tokens),
            field_path=".minInputTokens",
        ),
        CrossFieldRule(
            cel="!has(self.minComplexity) || !has(self.maxComplexity) || self.minComplexity <= self.maxComplexity",
            message="minComplexity must not exceed maxComplexity",
            holds=lambda match: _in_order(match.min_complexity, match.max_complexity),
            field_path=".minComplexity",
        ),
    ),
    BudgetConfig: (
        CrossFieldRule(
            cel="!has(self.scope) || self.scope == 'router' || has(self.prometheus)",
            message="scope policy and namespace count the fleet's spend in Prometheus: set prometheus.url",
            holds=lambda budget: not budget.fleet or budget.prometheus is not None,
            field_path=".prometheus",
            reason="FieldValueRequired",
        ),
        CrossFieldRule(
            cel="!has(self.softPercent) || has(self.dailyUsd) || has(self.monthlyUsd)",
            message="softPercent needs a cap to be a share of: set dailyUsd or monthlyUsd",
            holds=lambda budget: (
                budget.soft_percent is None or budget.daily_usd is not None or budget.monthly_usd is not None
            ),
            field_path=".softPercent",
            reason="FieldValueRequired",
        ),
    ),
    CircuitBreakerConfig: (
        CrossFieldRule(
            cel="!has(self.openSeconds) || !has(self.maxOpenSeconds) || self.openSeconds <= self.maxOpenSeconds",
            message="openSeconds must not exceed maxOpenSeconds",
            holds=lambda breaker: breaker.open_seconds <= breaker.max_open_seconds,
            field_path=".openSeconds",
        ),
    ),
}
"""Every cross-field rule, by the model it is attached to (crdgen publishes them on that schema)."""
