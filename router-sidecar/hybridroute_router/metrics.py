"""Prometheus metrics of one router app, in a registry of its own (prefix `hybridroute_`).

A dedicated `CollectorRegistry` per app keeps tests that run several routers in one process apart.
`hybridroute_upstream_duration_seconds{namespace,policy,endpoint}` is a contract: the p95 breaker's
PromQL template (config.PrometheusBreakerConfig.query) and the operator's fleet queries read exactly
that name and those labels. Every series carries the policy's namespace: same-named policies in two
namespaces are different tenants. Scraped by a PodMonitor, the target's own `namespace` label (the
Pod's, which is the policy's) takes the name and ours becomes `exported_namespace`; scraped without
one, ours is the label. Either way `namespace` is the policy's namespace.

Hot path: labelled children are cached per label tuple, so a request costs dictionary lookups and a
few float additions. The breaker-state gauge is filled at scrape time from the registry's states
rather than on every transition, so it can never drift from the breakers themselves; the p95
evaluation gauges (`hybridroute_prometheus_up`, last evaluation time, `hybridroute_endpoint_p95_seconds`)
are filled the same way from the evaluator's last status, and so are the fleet budget gauges
(`hybridroute_budget_state`, `hybridroute_budget_cap_usd`, `hybridroute_budget_spent_usd`).

`hybridroute_cost_usd{namespace,policy,endpoint}` is a contract too: fleet budgets (fleetbudget.py) sum
its increase since the start of the UTC day and month. Its series start at zero when a config arrives
(`start_cost_series`): Prometheus' `increase()` cannot count a series' first sample, so a counter born
at its first spend would leave that spend out of every budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .config import RouterConfig
from .fleetbudget import Spend
from .p95 import EvaluationStatus

# Up to 120 s: local models on small GPUs can take a minute or two for long generations. Denser
# between 0.5 s and 15 s, where chat SLOs sit: the p95 breaker compares histogram_quantile() with the
# SLO, and a quantile can only be as sharp as the buckets around it (2.5 -> 5 s made a 3 s SLO coarse).
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    1.5,
    2,
    2.5,
    3,
    4,
    5,
    7.5,
    10,
    15,
    20,
    30,
    60,
    90,
    120,
)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 10)
BREAKER_STATES = ("closed", "half-open", "open")
BUDGET_STATES = ("ok", "soft", "exhausted")


class RouterMetrics:
    """All router metrics plus cached children for the labels seen on the hot path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "hybridroute_requests",
            "Client requests by serving endpoint (empty when none) and outcome.",
            ["namespace", "policy", "endpoint", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "hybridroute_upstream_duration_seconds",
            "Duration of upstream attempts, from send to the last byte.",
            ["namespace", "policy", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "hybridroute_upstream_ttft_seconds",
            "Time from sending an upstream attempt to its first body byte.",
            ["namespace", "policy", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.attempts = Histogram(
            "hybridroute_request_attempts",
            "Upstream attempts per client request.",
            ["namespace", "policy"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.upstream_attempts = Counter(
            "hybridroute_upstream_attempts",
            "Upstream attempts by endpoint and result.",
            ["namespace", "policy", "endpoint", "result"],
            registry=r,
        )
        self.fallbacks = Counter(
            "hybridroute_fallbacks",
            "Moves from one candidate to the next, by the endpoint left and why.",
            ["namespace", "policy", "endpoint", "reason"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "hybridroute_breaker_state",
            "Circuit breaker state per endpoint (1 for the current state).",
            ["namespace", "policy", "endpoint", "state"],
            registry=r,
        )
        self.prometheus_up = Gauge(
            "hybridroute_prometheus_up",
            "1 when the last p95 query to Prometheus answered, 0 when it failed; absent before the first.",
            ["namespace", "policy"],
            registry=r,
        )
        self.prometheus_last_evaluation = Gauge(
            "hybridroute_prometheus_last_evaluation_timestamp_seconds",
            "Unix time of the last p95 evaluation, answered or not.",
            ["namespace", "policy"],
            registry=r,
        )
        self.endpoint_p95 = Gauge(
            "hybridroute_endpoint_p95_seconds",
            "Endpoint p95 latency from the last evaluation; absent while unknown (no data, NaN, Prometheus down).",
            ["namespace", "policy", "endpoint"],
            registry=r,
        )
        self.capacity_skips = Counter(
            "hybridroute_capacity_skips",
            "Requests that skipped an endpoint at its maxConcurrency in this router (shed, never queued).",
            ["namespace", "policy", "endpoint"],
            registry=r,
        )
        self.tokens = Counter(
            "hybridroute_tokens",
            "Tokens by endpoint and direction (input/output), from upstream usage or estimates.",
            ["namespace", "policy", "endpoint", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "hybridroute_cost_usd",
            "Estimated spend in USD by endpoint.",
            ["namespace", "policy", "endpoint"],
            registry=r,
        )
        self.privacy_blocks = Counter(
            "hybridroute_privacy_blocks",
            "Sensitive requests kept away from cloud endpoints (outcome: served locally or rejected).",
            ["namespace", "policy", "outcome"],
            registry=r,
        )
        self.config_info = Gauge(
            "hybridroute_config_info",
            "The config being served (value 1).",
            ["namespace", "policy", "config_hash"],
            registry=r,
        )
        self.config_reload_failures = Counter(
            "hybridroute_config_reload_failures",
            "Config documents refused (invalid); the last good config kept serving.",
            ["source"],
            registry=r,
        )
        self.spills = Counter(
            "hybridroute_spills",
            "Public requests a local endpoint refused before sending (kind: saturation, lifecycle, slow-start).",
            ["namespace", "policy", "endpoint", "kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            "hybridroute_upstream_in_flight",
            "Upstream attempts in flight from this router (the fleet's load on servers without metrics).",
            ["namespace", "policy", "endpoint"],
            registry=r,
        )
        self._in_flight_source: Callable[[], tuple[str, Mapping[str, int]]] | None = None
        self.budget_state = Gauge(
            "hybridroute_budget_state",
            "Fleet budget state from the last answered spend query (1 for the current state: ok, soft, "
            "exhausted); absent before the first answer.",
            ["namespace", "policy", "scope", "state"],
            registry=r,
        )
        self.budget_cap = Gauge(
            "hybridroute_budget_cap_usd",
            "Fleet budget cap per UTC calendar window (day, month).",
            ["namespace", "policy", "scope", "window"],
            registry=r,
        )
        self.budget_spent = Gauge(
            "hybridroute_budget_spent_usd",
            "The scope's spend in the current UTC window as this router last read it from Prometheus.",
            ["namespace", "policy", "scope", "window"],
            registry=r,
        )
        self.budget_up = Gauge(
            "hybridroute_budget_prometheus_up",
            "1 when the last spend query answered, 0 when it failed (the last decision is kept).",
            ["namespace", "policy"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._namespace = "default"
        """The policy's namespace (PolicyRef's default until a config arrives)."""
        self._breaker_states: Callable[[], tuple[str, Mapping[str, str]]] | None = None
        self._p95_status: Callable[[], tuple[str, EvaluationStatus | None]] | None = None
        self._budget_status: Callable[[], tuple[RouterConfig | None, str | None]] | None = None
        self._budget_spend: Callable[[], tuple[bool | None, Spend | None]] | None = None

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), self._namespace, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self._namespace, *labels)
        return child

    # ---------------------------------------------------------------------------------------------
    # hot path

    def observe_request(self, policy: str, endpoint: str, outcome: str, attempts: int) -> None:
        self._child(self.requests, policy, endpoint, outcome).inc()
        if attempts:
            self._child(self.attempts, policy).observe(attempts)

    def observe_attempt(self, policy: str, endpoint: str, result: str, duration_s: float) -> None:
        self._child(self.upstream_attempts, policy, endpoint, result).inc()
        self._child(self.upstream_duration, policy, endpoint).observe(duration_s)

    def observe_ttft(self, policy: str, endpoint: str, seconds: float) -> None:
        self._child(self.ttft, policy, endpoint).observe(seconds)

    def observe_fallback(self, policy: str, endpoint: str, reason: str) -> None:
        self._child(self.fallbacks, policy, endpoint, reason).inc()

    def observe_usage(self, policy: str, endpoint: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        self._child(self.tokens, policy, endpoint, "input").inc(input_tokens)
        self._child(self.tokens, policy, endpoint, "output").inc(output_tokens)
        if cost:
            self._child(self.cost, policy, endpoint).inc(cost)

    def observe_privacy_block(self, policy: str, outcome: str) -> None:
        self._child(self.privacy_blocks, policy, outcome).inc()

    def observe_capacity_skip(self, policy: str, endpoint: str) -> None:
        self._child(self.capacity_skips, policy, endpoint).inc()

    def observe_spill(self, policy: str, endpoint: str, kind: str) -> None:
        self._child(self.spills, policy, endpoint, kind).inc()

    # ---------------------------------------------------------------------------------------------
    # config and scrape

    def set_config(self, policy: str, config_hash: str, namespace: str) -> None:
        """A config was swapped in: its hash, and the policy namespace every series carries from now on."""
        self._namespace = namespace
        self.config_info.clear()
        self.config_info.labels(namespace, policy, config_hash).set(1)

    def start_cost_series(self, config: RouterConfig) -> None:
        """Create each priced endpoint's cost series at zero, so budgets count its first spend."""
        for endpoint in config.endpoints:
            if endpoint.pricing.input_per_m_tok or endpoint.pricing.output_per_m_tok:
                self._child(self.cost, config.policy.name, endpoint.name)

    def config_refused(self, source: str) -> None:
        self.config_reload_failures.labels(source).inc()

    def follow_breakers(self, states: Callable[[], tuple[str, Mapping[str, str]]]) -> None:
        """Register the source of (policy, {endpoint: state}) read at every scrape."""
        self._breaker_states = states

    def follow_p95(self, status: Callable[[], tuple[str, EvaluationStatus | None]]) -> None:
        """Register the source of (policy, last p95 evaluation status) read at every scrape."""
        self._p95_status = status

    def follow_in_flight(self, source: Callable[[], tuple[str, Mapping[str, int]]]) -> None:
        """Register the source of (policy, {endpoint: attempts in flight}) read at every scrape."""
        self._in_flight_source = source

    def follow_budget(
        self,
        status: Callable[[], tuple[RouterConfig | None, str | None]],
        spend: Callable[[], tuple[bool | None, Spend | None]],
    ) -> None:
        """Register the sources of (config, budget state) and (query answered, last spend) read at scrape."""
        self._budget_status, self._budget_spend = status, spend

    def render(self) -> bytes:
        if self._in_flight_source is not None:
            policy, counts = self._in_flight_source()
            self.in_flight.clear()
            for endpoint, count in counts.items():
                self.in_flight.labels(self._namespace, policy, endpoint).set(count)
        if self._breaker_states is not None:
            policy, states = self._breaker_states()
            self.breaker_state.clear()
            for endpoint, current in states.items():
                for state in BREAKER_STATES:
                    self.breaker_state.labels(self._namespace, policy, endpoint, state).set(
                        1 if state == current else 0
                    )
        if self._p95_status is not None:
            self._render_p95(*self._p95_status())
        if self._budget_status is not None and self._budget_spend is not None:
            self._render_budget(*self._budget_status(), *self._budget_spend())
        return generate_latest(self.registry)

    def _render_p95(self, policy: str, status: EvaluationStatus | None) -> None:
        # Unknown is left absent rather than exported as 0 or NaN, so "no data" never reads as "fast".
        for gauge in (self.prometheus_up, self.prometheus_last_evaluation, self.endpoint_p95):
            gauge.clear()
        if status is None or status.up is None:
            return
        namespace = self._namespace
        self.prometheus_up.labels(namespace, policy).set(1 if status.up else 0)
        if status.last_evaluation is not None:
            self.prometheus_last_evaluation.labels(namespace, policy).set(status.last_evaluation)
        for endpoint, p95_ms in status.values.items():
            if p95_ms is not None:
                self.endpoint_p95.labels(namespace, policy, endpoint).set(p95_ms / 1000)

    def _render_budget(
        self, config: RouterConfig | None, state: str | None, up: bool | None, spend: Spend | None
    ) -> None:
        for gauge in (self.budget_state, self.budget_cap, self.budget_spent, self.budget_up):
            gauge.clear()
        if config is None:
            return
        namespace, policy, budget = config.policy.namespace, config.policy.name, config.budget
        for window, cap, spent in (
            ("day", budget.daily_usd, spend.today_usd if spend else None),
            ("month", budget.monthly_usd, spend.month_usd if spend else None),
        ):
            if cap is not None:
                self.budget_cap.labels(namespace, policy, budget.scope, window).set(cap)
            if spent is not None:
                self.budget_spent.labels(namespace, policy, budget.scope, window).set(spent)
        if up is not None:
            self.budget_up.labels(namespace, policy).set(1 if up else 0)
        if state is not None:
            for each in BUDGET_STATES:
                self.budget_state.labels(namespace, policy, budget.scope, each).set(1 if each == state else 0)
