"""The compiled router config: the one contract between the operator and the router.

The router owns this model. The operator imports it twice: its RoutingPolicy CRD schema reuses the
policy sections below (privacy, rules, slo, complexity, fallback, circuitBreaker, budget, rollout), and
its compiler renders a `RouterConfig` into the policy's ConfigMap. The router loads that document
(from a file or the ConfigMap), validates it with the same model, and refuses anything that does not
parse, keeping the last good config.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
Secrets never appear here: endpoints carry a *reference* to an API key, resolved by the router at
request time from its environment or a mounted file (see `ApiKeyRef`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .regexengine import PatternError, compile_pattern

SCHEMA_VERSION: Final = "hybridroute.io/router-config/v1"
CONFIGMAP_KEY = "config.json"

# Kubernetes-style name: what an endpoint reference must look like.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Model(BaseModel):
    """Base for every config model: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


# --------------------------------------------------------------------------------------------------
# Policy sections (shared verbatim with the RoutingPolicy CRD spec)
# --------------------------------------------------------------------------------------------------

BuiltinDetector = Literal["email", "phone", "card", "nationalId"]


class RegexDetector(Model):
    """A named regular expression that marks a request as sensitive when it matches any string in it."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """Detector name, reported in metrics and the explain endpoint."""
    pattern: Annotated[str, Field(min_length=1, max_length=1024)]
    """RE2 regular expression searched in every message's text (linear time: no backreferences or
    look-around). A pattern RE2 refuses makes the policy fail to compile, naming the detector."""


class HeaderMatch(Model):
    """Matches a request header against a set of values (case-insensitive)."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    """Header name, case-insensitive."""
    values: Annotated[list[str], Field(default_factory=list, max_length=64)]
    """Accepted values; empty means the header only has to be present."""


class PrivacyConfig(Model):
    """Which requests are sensitive, and what happens to them."""

    all_requests_sensitive: bool = False
    """Treat every request under this policy as sensitive (policy-wide flag)."""
    header: HeaderMatch = HeaderMatch(name="x-hybridroute-privacy", values=["restricted", "private", "sensitive"])
    """A request carrying this header is sensitive: every occurrence and every comma-separated value is read;
    any value other than `public` (one of the listed values, an unknown value, an empty one) makes it sensitive."""
    builtin_detectors: Annotated[list[BuiltinDetector], Field(default_factory=list, max_length=4)]
    """Built-in content detectors: email, phone, card (Luhn-checked), nationalId (US SSN shape)."""
    detectors: Annotated[list[RegexDetector], Field(default_factory=list, max_length=32)]
    """Extra regex detectors applied to every string of the request body and the forwarded headers."""
    unreadable_content: Literal["sensitive", "ignore"] = "sensitive"
    """Content the detectors cannot read (token-id prompts; image, audio and file parts; base64 data) when any
    detector is configured: sensitive (fail-closed, the default) or ignore (only the readable text decides)."""
    action: Literal["localOnly"] = "localOnly"
    """localOnly: a sensitive request is never sent to a cloud endpoint, under any failure."""


class RuleMatch(Model):
    """Conditions of a rule; all given conditions must hold (AND). An empty match always matches."""

    models: Annotated[list[str], Field(default_factory=list, max_length=64)]
    """Requested model aliases this rule applies to."""
    headers: Annotated[list[HeaderMatch], Field(default_factory=list, max_length=16)]
    """Request headers that must match."""
    min_input_tokens: Annotated[int | None, Field(ge=0)] = None
    """Estimated input tokens at least this many."""
    max_input_tokens: Annotated[int | None, Field(ge=0)] = None
    """Estimated input tokens at most this many."""
    min_tools: Annotated[int | None, Field(ge=0)] = None
    """At least this many tools declared (tool-chain length)."""
    structured_output: bool | None = None
    """True: only requests asking for a JSON schema / JSON object response; false: only others."""
    min_complexity: Annotated[float | None, Field(ge=0, le=1)] = None
    """Complexity score at least this (0..1)."""
    max_complexity: Annotated[float | None, Field(ge=0, le=1)] = None
    """Complexity score at most this (0..1)."""


class RuleAction(Model):
    """What a matching rule does to the candidate order."""

    prefer: Literal["local", "cloud"] | None = None
    """Put endpoints of this type first (the others stay as fallbacks)."""
    endpoints: Annotated[list[str], Field(default_factory=list, max_length=64)]
    """Restrict candidates to these endpoint names, in this order."""


class Rule(Model):
    """One ordered routing rule: the first rule that matches decides the preference."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """Rule name, reported in the x-hybridroute-reason header."""
    match: RuleMatch = RuleMatch()
    """When the rule applies."""
    action: RuleAction
    """What it does."""


class SLOConfig(Model):
    """Latency objectives; they drive timeouts and the p95 breaker."""

    p95_latency_ms: Annotated[int, Field(ge=1, le=600_000)] = 5_000
    """Target p95 end-to-end latency per endpoint; above it for long enough the breaker opens."""
    ttft_ms: Annotated[int, Field(ge=1, le=600_000)] = 10_000
    """Time to the first streamed byte from an upstream before a streaming attempt counts as timed out."""
    request_timeout_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 120_000
    """Total time for one upstream attempt. It alone bounds a non-streaming answer, whose headers servers
    send only once generation has ended."""
    connect_timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 2_000
    """TCP/TLS connect timeout for one upstream attempt."""


class ComplexityConfig(Model):
    """Complexity scoring (0..1) from the seeds' signals; requests at or above threshold are 'complex'."""

    threshold: Annotated[float, Field(ge=0, le=1)] = 0.6
    """Score at or above which a request counts as complex (prefers cloud unless a rule says otherwise)."""
    base_score: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Score every request starts from."""
    keywords: Annotated[list[str], Field(max_length=256)] = [
        "reason",
        "plan",
        "analyze",
        "analyse",
        "compare",
        "prove",
        "step by step",
        "architecture",
        "trade-off",
    ]
    """Case-insensitive words/phrases signalling multi-step reasoning."""
    keyword_weight: Annotated[float, Field(ge=0, le=1)] = 0.4
    """Added when any keyword matches."""
    long_input_tokens: Annotated[int, Field(ge=1)] = 4_000
    """Input token estimate above which the request counts as long."""
    long_input_weight: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Added for long inputs."""
    tools_weight: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Added per declared tool, up to toolsCap."""
    tools_cap: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Most the tools signal can add."""
    schema_weight: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Added when structured output (JSON schema) is requested."""


FallbackStatus = Literal["429", "5xx", "timeout", "connect"]


class FallbackConfig(Model):
    """Failover to the next candidate, before the first byte reaches the client only."""

    enabled: bool = True
    """Try the next candidate when an attempt fails."""
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Upper bound on upstream attempts per request (first try included)."""
    retry_budget_percent: Annotated[int, Field(ge=0, le=100)] = 20
    """Retries allowed as a share of recent requests, so a sick upstream cannot multiply load."""
    on_status: Annotated[list[FallbackStatus], Field(max_length=4)] = ["429", "5xx", "timeout", "connect"]
    """Failure kinds that trigger failover."""
    validate_structured_output: bool = True
    """For JSON-schema requests served locally: validate, retry local once, then escalate (unless private)."""
    max_retry_after_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0
    """A 429's Retry-After up to this long is honoured by waiting; longer skips to the next candidate."""


class PrometheusBreakerConfig(Model):
    """Fleet-wide p95 from Prometheus, evaluated periodically by each router."""

    url: str | None = None
    """Prometheus base URL; unset disables p95-driven breaking."""
    query: Annotated[str, Field(max_length=4096)] = (
        "histogram_quantile(0.95, sum by (le, endpoint) "
        '(rate(hybridroute_upstream_duration_seconds_bucket{namespace="$namespace", policy="$policy"}[$window]))) '
        "and on (endpoint) sum by (endpoint) "
        '(rate(hybridroute_upstream_duration_seconds_count{namespace="$namespace", policy="$policy"}[$window])) > 0'
    )
    """PromQL template; $namespace, $policy and $window are substituted (the policy's namespace and
    name: same-named policies in other namespaces are other tenants); must return one series per
    `endpoint` label."""
    window: Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")] = "30s"
    """Range for rate() in the query."""
    evaluation_seconds: Annotated[float, Field(ge=0.5, le=600)] = 5
    """How often the query runs."""
    timeout_seconds: Annotated[float, Field(ge=0.1, le=60)] = 2
    """Bound on one query; a timeout counts as unknown data."""
    consecutive_breaches: Annotated[int, Field(ge=1, le=100)] = 2
    """Evaluations above the SLO in a row before the breaker opens."""
    stale_after_seconds: Annotated[float, Field(ge=1, le=3600)] = 60
    """A p95-opened breaker expires once its data is this old (Prometheus gone quiet)."""
    recovery_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Hysteresis: a p95-opened breaker closes only when p95 < SLO x recoveryRatio."""


class CircuitBreakerConfig(Model):
    """Per-endpoint breaker: passive (what this router sees) plus Prometheus p95 (fleet view)."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    """Failures in a row that open the breaker."""
    failure_rate_percent: Annotated[int, Field(ge=1, le=100)] = 50
    """Failure share over the window that opens the breaker."""
    slow_call_rate_percent: Annotated[int, Field(ge=1, le=100)] = 80
    """Share of calls slower than the SLO's p95 over the window that opens the breaker."""
    window_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    """Sliding window for the rates."""
    minimum_calls: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Calls in the window before rates are judged."""
    open_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 10
    """First open period; doubles on each re-open (jittered) up to maxOpenSeconds."""
    max_open_seconds: Annotated[float, Field(ge=0.1, le=86_400)] = 300
    """Cap for the exponential open period."""
    half_open_probes: Annotated[int, Field(ge=1, le=100)] = 3
    """Requests admitted while half-open; all must succeed to close."""
    prometheus: PrometheusBreakerConfig = PrometheusBreakerConfig()
    """p95-driven breaking from Prometheus."""


class SaturationConfig(Model):
    """Spill before it hurts: predictive admission from model-server saturation (docs/saturation.md).

    Every `evaluationSeconds` each router reads the local pools' queue, running requests, KV-cache use
    and generation rate from Prometheus (`circuitBreaker.prometheus.url`): vLLM's and llama.cpp
    server's own metrics, else the routers' `hybridroute_` in-flight totals. Per request it estimates
    the local latency; a public request whose estimate breaks its latency budget or the SLO goes to
    the cloud first, a private one waits locally, bounded by its budget. Unknown data never spills.
    """

    enabled: bool = True
    """Predictive admission on; without a Prometheus URL or with unknown data it never spills."""
    evaluation_seconds: Annotated[float, Field(ge=0.5, le=600)] = 2
    """How often the saturation queries run."""
    window: Annotated[str, Field(pattern=r"^[0-9]+(ms|s|m|h)$")] = "30s"
    """Range for the generation-rate and request-rate rate() queries."""
    stale_after_seconds: Annotated[float, Field(ge=1, le=3600)] = 15
    """Signals older than this are unknown (never spill)."""
    slo_fraction: Annotated[float, Field(gt=0, le=10)] = 0.8
    """A public request spills when its estimated local latency exceeds slo.p95LatencyMs x this."""
    kv_cache_spill_percent: Annotated[int, Field(ge=1, le=100)] = 95
    """A pool whose KV cache is at least this full (vLLM, llama.cpp) takes no new public requests."""
    slow_start_seconds: Annotated[float, Field(ge=0, le=3600)] = 30
    """After a recovery (breaker closed, saturation cleared, replicas back) the local share of public
    traffic ramps linearly over this long (Envoy's slow start); 0 returns it at once."""
    slow_start_min_percent: Annotated[int, Field(ge=0, le=100)] = 10
    """Local share of public traffic at the start of the ramp."""


BudgetScope = Literal["router", "policy", "namespace"]


class BudgetPrometheusConfig(Model):
    """Where fleet budgets read the fleet's spend: the Prometheus that scrapes every router."""

    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)]
    """Prometheus base URL, e.g. http://prometheus.monitoring:9090."""
    evaluation_seconds: Annotated[float, Field(ge=1, le=3600)] = 15
    """How often each router (and the operator, for status) asks for the spend so far."""
    timeout_seconds: Annotated[float, Field(ge=0.1, le=60)] = 5
    """Bound on each query; a slow Prometheus delays the next evaluation, never a request."""


class BudgetConfig(Model):
    """Cloud spend caps per UTC calendar day and month, estimated from token counts and endpoint pricing."""

    daily_usd: Annotated[float | None, Field(ge=0)] = None
    """Cap per UTC day; unset means none."""
    monthly_usd: Annotated[float | None, Field(ge=0)] = None
    """Cap per UTC month; unset means none."""
    action: Literal["localOnly", "reject"] = "localOnly"
    """When a cap is reached: route local only, or reject (429) requests that would need cloud."""
    scope: BudgetScope = "router"
    """Whose spend counts against the caps: router (this sidecar alone, in memory; N replicas spend up to
    N times the cap), policy (every router serving this policy, from Prometheus), or namespace (every
    router of every policy in the namespace: a team budget, from Prometheus)."""
    soft_percent: Annotated[int | None, Field(ge=1, le=99)] = None
    """Warn (an Event and a metric) once this share of a cap is spent; routing is unchanged."""
    prometheus: BudgetPrometheusConfig | None = None
    """Required for scope policy and namespace: the Prometheus holding the routers' cost counters."""

    @property
    def fleet(self) -> bool:
        """Whether the caps count the fleet's spend (from Prometheus) rather than this router's."""
        return self.scope != "router"


class RolloutConfig(Model):
    """Gradual migration of eligible traffic to local endpoints (seed: 10% -> 50% -> 100%)."""

    local_percent: Annotated[int, Field(ge=0, le=100)] = 100
    """Share of requests, eligible for both, that are offered to local endpoints first."""


# --------------------------------------------------------------------------------------------------
# Endpoints as the router sees them
# --------------------------------------------------------------------------------------------------


class Pricing(Model):
    """Price per million tokens in USD."""

    input_per_m_tok: Annotated[float, Field(ge=0, alias="inputPerMTok")] = 0
    """USD per million input tokens."""
    output_per_m_tok: Annotated[float, Field(ge=0, alias="outputPerMTok")] = 0
    """USD per million output tokens."""


class Capabilities(Model):
    """What an endpoint can do beyond plain chat."""

    tools: bool = True
    """Accepts tool/function definitions."""
    json_schema: bool = True
    """Honours response_format json_schema."""
    vision: bool = False
    """Accepts image inputs."""


class SecretKeyRef(Model):
    """Reference to one key of a Secret in the policy's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Secret name."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """Key inside the Secret."""


class ApiKeyRef(Model):
    """Where the router finds an endpoint's API key. Never the key itself.

    Resolution order: `env` if set; otherwise the environment variable derived from the secret
    reference (`secret_env_name`), then the file `<secretsDir>/<name>/<key>` (a mounted Secret).
    """

    secret_ref: SecretKeyRef | None = None
    """The Kubernetes Secret holding the key."""
    env: Annotated[str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = None
    """Read the key from this environment variable (standalone mode)."""


def secret_env_name(ref: SecretKeyRef) -> str:
    """Environment variable the sidecar injector uses for a secret reference; one per reference.

    `HYBRIDROUTE_SECRET_<NAME>_<KEY>_<HASH>`: the readable part alone would fold distinct references
    together (`llm-keys/openai` and `llm.keys/openai`; `providers/OPENAI_KEY` and
    `providers/openai-key`), and one provider's key could be sent to another. The hash is of the exact
    `name/key` (`/` cannot occur in either), so distinct references get distinct names; the operator
    also refuses to compile a policy where two references would share one (compile.py).
    """
    readable = re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()
    digest = hashlib.sha256(f"{ref.name}/{ref.key}".encode()).hexdigest()[:12].upper()
    return f"HYBRIDROUTE_SECRET_{readable}_{digest}"


class EndpointConfig(Model):
    """One upstream, resolved from an InferenceEndpoint."""

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
    """InferenceEndpoint name."""
    type: Literal["local", "cloud"]
    """local: a model server we run or know; cloud: a provider API."""
    base_url: Annotated[str, Field(alias="baseURL", pattern=r"^https?://")]
    """OpenAI-compatible base URL including /v1 (requests go to {baseURL}/chat/completions)."""
    model: Annotated[str, Field(min_length=1)]
    """Model name sent upstream."""
    provider: str = "openai-compatible"
    """Provider flavour (openai, anthropic, openrouter, azure-openai, openai-compatible, vllm, ollama, llamacpp)."""
    api_key: ApiKeyRef | None = None
    """Where the key comes from; None for local servers without auth."""
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    """Lower is tried first within the same preference class."""
    weight: Annotated[int, Field(ge=0, le=1000)] = 100
    """Relative share among endpoints of equal priority."""
    pricing: Pricing = Pricing()
    """Price used for cost estimates and budgets."""
    max_context_tokens: Annotated[int, Field(ge=1)] = 8192
    """Context window: input estimate + requested output must fit."""
    max_concurrency: Annotated[int | None, Field(ge=1)] = None
    """In-flight request cap per router; overflow moves to the next candidate."""
    capabilities: Capabilities = Capabilities()
    """Feature support used by hard filters."""
    available: bool = True
    """False when the operator found it missing or not ready; the router skips it."""
    unavailable_reason: str | None = None
    """Why it is unavailable (operator's words)."""
    desired_replicas: Annotated[int | None, Field(ge=0)] = None
    """Managed pool: replicas asked for (operator); with readyReplicas, the lifecycle signal."""
    ready_replicas: Annotated[int | None, Field(ge=0)] = None
    """Managed pool: replicas serving now; below desiredReplicas (rolling, scaling from zero) the pool
    takes only its ready share of public traffic, the rest goes to the cloud."""
    parallel_slots: Annotated[int | None, Field(ge=1)] = None
    """Requests one replica generates at once (llama.cpp `--parallel`); unknown: only a reported
    queue counts as waiting."""

    @property
    def is_local(self) -> bool:
        return self.type == "local"


class PolicyRef(Model):
    """Which RoutingPolicy produced this config."""

    namespace: str = "default"
    name: str = "standalone"
    generation: int = 0


class PolicySections(Model):
    """The routing policy proper: written by users in a RoutingPolicy spec, served by routers as is.

    Both `RouterConfig` and the operator's `RoutingPolicySpec` inherit these fields, so a section
    added here reaches the CRD schema, the compiler and the router at once.
    """

    model_aliases: Annotated[list[str], Field(min_length=1, max_length=64)] = ["auto"]
    """Model names clients send (the `model` field); /v1/models lists them."""
    privacy: PrivacyConfig = PrivacyConfig()
    """Which requests are sensitive; a sensitive request never goes to a cloud endpoint."""
    rules: Annotated[list[Rule], Field(default_factory=list, max_length=256)]
    """Ordered rules; the first that matches sets the local/cloud preference or the endpoint list."""
    slo: SLOConfig = SLOConfig()
    """Latency objectives: timeouts and the p95 that opens circuit breakers."""
    complexity: ComplexityConfig = ComplexityConfig()
    """Complexity scoring; complex requests prefer cloud unless a rule says otherwise."""
    fallback: FallbackConfig = FallbackConfig()
    """Failover to the next candidate before the first byte, bounded by attempts and a retry budget."""
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    """Per-endpoint circuit breaker: passive failure counting plus Prometheus p95."""
    budget: BudgetConfig = BudgetConfig()
    """Cloud spend caps and what happens when one is reached."""
    rollout: RolloutConfig = RolloutConfig()
    """Share of eligible traffic offered to local endpoints first (gradual migration)."""
    saturation: SaturationConfig = SaturationConfig()
    """Predictive spill to the cloud from local model-server saturation, and slow start on recovery."""

    def policy_sections(self) -> dict[str, Any]:
        """These fields only, as model instances (to build another PolicySections subclass from)."""
        return {name: getattr(self, name) for name in PolicySections.model_fields}


class RouterConfig(PolicySections):
    """The compiled config document the router serves from."""

    schema_version: Literal["hybridroute.io/router-config/v1"] = SCHEMA_VERSION
    """Document format version; a router refuses versions it does not know."""
    policy: PolicyRef = PolicyRef()
    endpoints: Annotated[list[EndpointConfig], Field(min_length=1, max_length=1000)]
    config_hash: str = ""
    """sha256 of the canonical document without this field; filled by `finalize`."""

    @model_validator(mode="after")
    def _references_resolve(self) -> RouterConfig:
        for detector in self.privacy.detectors:
            try:
                compile_pattern(detector.pattern)
            except PatternError as exc:
                raise ValueError(f"privacy.detectors[{detector.name}].pattern: {exc}") from None
        names = [endpoint.name for endpoint in self.endpoints]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"endpoints: duplicate names {duplicates}")
        known = set(names)
        for index, rule in enumerate(self.rules):
            unknown = [name for name in rule.action.endpoints if name not in known]
            if unknown:
                raise ValueError(f"rules[{index}].action.endpoints: unknown endpoints {unknown}")
        return self

    def endpoint(self, name: str) -> EndpointConfig | None:
        return next((endpoint for endpoint in self.endpoints if endpoint.name == name), None)

    def canonical_json(self) -> bytes:
        """Deterministic JSON (sorted keys, camelCase, no hash) that the hash covers."""
        document = self.model_dump(mode="json", by_alias=True, exclude={"config_hash"})
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    def finalize(self) -> RouterConfig:
        """Return a copy with `config_hash` set from the canonical content."""
        digest = hashlib.sha256(self.canonical_json()).hexdigest()
        return self.model_copy(update={"config_hash": f"sha256:{digest}"})

    def to_json(self) -> str:
        """Serialized document as written to the ConfigMap (finalized, sorted keys, indented)."""
        document = self.finalize().model_dump(mode="json", by_alias=True)
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()


class ConfigError(ValueError):
    """A config document was refused; the message says which field and why."""


def parse_config(raw: bytes | str | dict[str, Any]) -> RouterConfig:
    """Parse and validate a config document (JSON text or mapping); raise ConfigError on any problem.

    A document whose stored hash does not match its content is refused too (a hand edit or a
    truncated write), unless the hash is empty (hand-written standalone configs).
    """
    from pydantic import ValidationError

    try:
        document = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError("config must be a JSON object")
    try:
        config = RouterConfig.model_validate(document)
        expected = config.finalize().config_hash
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except Exception as exc:  # whatever a document makes validation raise, it is a refused document
        raise ConfigError(f"invalid router config: validation failed ({type(exc).__name__})") from None
    if config.config_hash and config.config_hash != expected:
        raise ConfigError(f"configHash {config.config_hash} does not match content ({expected})")
    return config.model_copy(update={"config_hash": expected})


def _describe(exc: Any) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "<root>"
        problems.append(f"{location}: {error['msg']}")
    return "invalid router config: " + "; ".join(problems)
