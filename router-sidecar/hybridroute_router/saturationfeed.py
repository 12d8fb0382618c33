"""Local pools' saturation from Prometheus: what the model servers already export, read periodically.

Every `saturation.evaluationSeconds` each router runs one instant query per signal and turns the
answers into a `PoolLoad` per local endpoint. Each signal is a PromQL `or` over the families a pool
may speak, first match per endpoint wins:

| signal | vLLM | llama.cpp server (`--metrics`) | any server (the routers' own metrics) |
| --- | --- | --- | --- |
| waiting | `vllm:num_requests_waiting` | `llamacpp:requests_deferred` | in flight over all routers |
| running | `vllm:num_requests_running` | `llamacpp:requests_processing` | |
| KV cache | `vllm:kv_cache_usage_perc` | `llamacpp:kv_cache_usage_ratio` | |
| tokens/s per request | 1 / time per output token | predicted tokens / seconds | output tokens / upstream s |
| mean output tokens | `vllm:request_generation_tokens` | | output tokens / successful attempts |

Model-server series must carry the pool's endpoint name as `endpoint` and the namespace as
`namespace` (the chart's model-server PodMonitor relabels the operator's `hybridroute.io/endpoint`
pod label into it). The routers' fallback counts every router's in-flight attempts, so a pool whose
server exports nothing (Ollama) is still seen fleet-wide; its tokens/s include queueing, which errs
towards a longer estimate.

Unknown is kept apart from zero: a query that fails leaves its signal None for every endpoint, an
endpoint without a series has None for that signal, and `saturation.judge` never spills on None.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Final

import aiohttp

from .config import RouterConfig
from .p95 import render_query, vector_by_endpoint
from .periodic import run_every
from .saturation import PoolLoad

log = logging.getLogger("hybridroute.router.saturation")

_SERVER = '{namespace="$namespace"}'
_ROUTER = '{namespace="$namespace", policy="$policy"}'
_OUTPUT = '{namespace="$namespace", policy="$policy", direction="output"}'

QUERIES: Final[Mapping[str, str]] = {
    "waiting": (
        f"sum by (endpoint) (vllm:num_requests_waiting{_SERVER})"
        f" or sum by (endpoint) (llamacpp:requests_deferred{_SERVER})"
    ),
    "running": (
        f"sum by (endpoint) (vllm:num_requests_running{_SERVER})"
        f" or sum by (endpoint) (llamacpp:requests_processing{_SERVER})"
    ),
    "in_flight": f"sum by (endpoint) (hybridroute_upstream_in_flight{_ROUTER})",
    "kv_cache": (
        f"max by (endpoint) (vllm:kv_cache_usage_perc{_SERVER})"
        f" or max by (endpoint) (llamacpp:kv_cache_usage_ratio{_SERVER})"
    ),
    "tokens_per_second": (
        f"sum by (endpoint) (rate(vllm:time_per_output_token_seconds_count{_SERVER}[$window]))"
        f" / sum by (endpoint) (rate(vllm:time_per_output_token_seconds_sum{_SERVER}[$window]))"
        f" or sum by (endpoint) (rate(llamacpp:tokens_predicted_total{_SERVER}[$window]))"
        f" / sum by (endpoint) (rate(llamacpp:tokens_predicted_seconds_total{_SERVER}[$window]))"
        f" or sum by (endpoint) (rate(hybridroute_tokens_total{_OUTPUT}[$window]))"
        f" / sum by (endpoint) (rate(hybridroute_upstream_duration_seconds_sum{_ROUTER}[$window]))"
    ),
    "mean_output_tokens": (
        f"sum by (endpoint) (rate(vllm:request_generation_tokens_sum{_SERVER}[$window]))"
        f" / sum by (endpoint) (rate(vllm:request_generation_tokens_count{_SERVER}[$window]))"
        f" or sum by (endpoint) (rate(hybridroute_tokens_total{_OUTPUT}[$window]))"
        f' / sum by (endpoint) (rate(hybridroute_upstream_attempts_total{{namespace="$namespace", '
        f'policy="$policy", result="ok"}}[$window]))'
    ),
    "replicas": (
        f"count by (endpoint) (vllm:num_requests_running{_SERVER})"
        f" or count by (endpoint) (llamacpp:requests_processing{_SERVER})"
    ),
}

Signals = Mapping[str, Mapping[str, float] | None]
"""Per signal: {endpoint: value}, or None when its query failed."""


def pool_loads(endpoints: list[str], signals: Signals, read_at: float) -> dict[str, PoolLoad]:
    """One `PoolLoad` per endpoint from the signals' answers (pure)."""

    def value(signal: str, endpoint: str) -> float | None:
        answer = signals.get(signal)
        found = None if answer is None else answer.get(endpoint)
        return found if found is not None and math.isfinite(found) else None

    loads = {}
    for name in endpoints:
        waiting, running = value("waiting", name), value("running", name)
        in_flight = value("in_flight", name)
        if waiting is None and in_flight is not None:
            waiting, running = in_flight, 0.0  # no server metrics: everything in flight counts as queued
        replicas = value("replicas", name)
        loads[name] = PoolLoad(
            read_at=read_at,
            waiting=waiting,
            running=running,
            kv_cache_ratio=value("kv_cache", name),
            tokens_per_second=value("tokens_per_second", name),
            mean_output_tokens=value("mean_output_tokens", name),
            replicas=int(replicas) if replicas is not None else None,
        )
    return loads


class SaturationFeed:
    """Reads the saturation signals periodically; `loads` is the latest reading per local endpoint."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        current_config: Callable[[], RouterConfig | None],
        clock: Callable[[], float],
        on_reading: Callable[[Mapping[str, PoolLoad]], None],
    ) -> None:
        self._session = session
        self._on_reading = on_reading
        self._current_config = current_config
        self._clock = clock
        self.loads: dict[str, PoolLoad] = {}
        self.up: bool | None = None

    async def read_once(self) -> dict[str, PoolLoad]:
        config = self._current_config()
        url = config.circuit_breaker.prometheus.url if config else None
        if config is None or url is None or not config.saturation.enabled:
            self.loads = {}
            self._on_reading(self.loads)
            return self.loads
        read_at = self._clock()
        names = [endpoint.name for endpoint in config.endpoints if endpoint.is_local]
        timeout = aiohttp.ClientTimeout(total=config.circuit_breaker.prometheus.timeout_seconds)
        window = config.saturation.window
        signals: dict[str, Mapping[str, float] | None] = {}
        for signal, template in QUERIES.items():
            query = render_query(template, config.policy.name, window, namespace=config.policy.namespace)
            try:
                async with self._session.get(
                    f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout
                ) as response:
                    signals[signal] = vector_by_endpoint(await response.json(content_type=None))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                signals[signal] = None
                log.warning(
                    "saturation query failed; signal unknown", extra={"signal": signal, "error": type(exc).__name__}
                )
        self.up = any(answer is not None for answer in signals.values())
        self.loads = pool_loads(names, signals, read_at)
        self._on_reading(self.loads)
        return self.loads

    def interval(self) -> float:
        config = self._current_config()
        return config.saturation.evaluation_seconds if config else 2.0

    async def run(self) -> None:
        """Read forever, once per interval (cancel the task to stop)."""
        await run_every(self.read_once, self.interval, "saturation reading")
