"""Fleet-wide p95 latency from Prometheus, fed into the circuit breakers on a fixed period.

Each router asks Prometheus every `circuitBreaker.prometheus.evaluationSeconds` for every endpoint's
p95 (the policy's PromQL template) and hands each value to that endpoint's breaker. The breaker owns
the semantics (consecutive breaches, hysteresis, staleness); this module only turns HTTP answers into
"a number of milliseconds" or "unknown". Unknown is deliberately distinct from any number: Prometheus
down, a timeout, an error status, an empty result or NaN all become `None`, which never opens or closes
a breaker by itself.

The query runs on the event loop with aiohttp and a hard timeout, so a slow Prometheus can delay only
the next evaluation, never a request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .config import PrometheusBreakerConfig, RouterConfig
from .periodic import run_every

log = logging.getLogger("hybridroute.router.p95")

Observation = Mapping[str, float | None]
"""p95 in milliseconds per endpoint name; None means unknown for that endpoint."""


def render_query(template: str, policy: str, window: str, *, namespace: str = "default") -> str:
    """Substitute $namespace, $policy and $window in the PromQL template (namespace: PolicyRef's default)."""
    return template.replace("$namespace", namespace).replace("$policy", policy).replace("$window", window)


def parse_query_result(body: Any) -> dict[str, float]:
    """Map a Prometheus instant-vector answer of seconds to {endpoint: p95 ms} (see `vector_by_endpoint`)."""
    return {endpoint: seconds * 1000.0 for endpoint, seconds in vector_by_endpoint(body).items()}


def vector_by_endpoint(body: Any) -> dict[str, float]:
    """Map a Prometheus instant-vector answer to {endpoint label: value}, dropping NaN/Inf/unlabelled series.

    Raises ValueError when the answer is not a successful vector result: the caller treats that as
    unknown data, like an unreachable server.
    """
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ValueError(f"query failed: {body.get('error') if isinstance(body, dict) else body!r}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"expected a vector result, got {data.get('resultType')!r}")
    values: dict[str, float] = {}
    for series in data.get("result", []):
        endpoint = series.get("metric", {}).get("endpoint")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if endpoint and math.isfinite(value):
            values[endpoint] = value
    return values


def observation_for(endpoints: list[str], values: Mapping[str, float] | None) -> dict[str, float | None]:
    """Per-endpoint view: a number where Prometheus gave one, None (unknown) everywhere else."""
    if values is None:
        return dict.fromkeys(endpoints)
    return {name: values.get(name) for name in endpoints}


@dataclass
class EvaluationStatus:
    """What the last evaluation saw; exported as metrics and by the explain endpoint."""

    up: bool | None = None
    last_evaluation: float | None = None
    last_error: str | None = None
    values: dict[str, float | None] = field(default_factory=dict)


async def query_p95(
    session: aiohttp.ClientSession, cfg: PrometheusBreakerConfig, policy: str, namespace: str
) -> dict[str, float]:
    """One bounded instant query; raises on any failure (connection, timeout, status, shape)."""
    assert cfg.url is not None
    params = {"query": render_query(cfg.query, policy, cfg.window, namespace=namespace)}
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds)
    async with session.get(f"{cfg.url.rstrip('/')}/api/v1/query", params=params, timeout=timeout) as response:
        body = await response.json(content_type=None)
    return parse_query_result(body)


class P95Evaluator:
    """Runs `query_p95` periodically and feeds each endpoint's breaker via `observe`.

    `observe(endpoint, p95_ms_or_none)` is the breaker registry's hook; `current_config` returns the
    config being served (it may be swapped between evaluations).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        current_config: Callable[[], RouterConfig | None],
        observe: Callable[[str, float | None], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._current_config = current_config
        self._observe = observe
        self._clock = clock
        self.status = EvaluationStatus()

    async def evaluate_once(self) -> EvaluationStatus:
        config = self._current_config()
        if config is None or config.circuit_breaker.prometheus.url is None:
            return self.status
        cfg = config.circuit_breaker.prometheus
        names = [endpoint.name for endpoint in config.endpoints]
        try:
            values: dict[str, float] | None = await query_p95(
                self._session, cfg, config.policy.name, config.policy.namespace
            )
            self.status.up, self.status.last_error = True, None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            values = None
            self.status.up, self.status.last_error = False, type(exc).__name__
            log.warning("prometheus query failed; treating p95 as unknown", extra={"error": type(exc).__name__})
        self.status.values = observation_for(names, values)
        self.status.last_evaluation = self._clock()
        for name, p95_ms in self.status.values.items():
            self._observe(name, p95_ms)
        return self.status

    def interval(self) -> float:
        config = self._current_config()
        return config.circuit_breaker.prometheus.evaluation_seconds if config else 5.0

    async def run(self) -> None:
        """Evaluate forever, one evaluation per interval (cancel the task to stop)."""
        await run_every(self.evaluate_once, self.interval, "p95 evaluation")
