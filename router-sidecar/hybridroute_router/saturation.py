"""Predictive admission, pure: from a local pool's load, estimate a request's local latency and judge it.

The model is a pool of `lanes` generation slots, each producing `tokens_per_second` for the request
it holds (llama.cpp's slots, vLLM's running batch). A new request starts at once while a lane is
free; otherwise it waits for `queued + 1/2` completions (the half: requests already generating are,
on average, half done), which the pool delivers at `lanes x tokens_per_second / mean_output_tokens`
per second. Its own generation then takes `own_tokens / tokens_per_second`. Prefill is left out: for
chat-sized prompts it is small next to generation, and leaving it out errs towards keeping traffic
local, never towards spilling it.

Lanes: `parallel_slots x replicas` when the operator knows the slots; otherwise the requests the pool
is generating now (at least one), and only a queue the server itself reports counts as waiting.

Unknown data never decides (as with p95): no generation rate, no queue figure, or a reading older
than `staleAfterSeconds` gives no estimate, and no estimate never spills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import SaturationConfig

__all__ = ["PoolLoad", "Verdict", "estimate_latency_ms", "judge"]


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """A local pool's fleet-wide load as last read from Prometheus; None is unknown."""

    read_at: float
    """Clock reading when it was read (the same clock `judge` gets as `now`)."""
    waiting: float | None = None
    """Requests queued in the model servers (vLLM num_requests_waiting, llama.cpp requests_deferred)."""
    running: float | None = None
    """Requests generating now (vLLM num_requests_running, llama.cpp requests_processing)."""
    kv_cache_ratio: float | None = None
    """KV-cache use, 0..1 (the fullest replica)."""
    tokens_per_second: float | None = None
    """Generation rate of one request while it generates."""
    mean_output_tokens: float | None = None
    """Recent mean completion length."""
    replicas: int | None = None
    """Replicas reporting."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What admission thinks of sending one request to one local pool now."""

    spill: bool
    estimate_ms: float | None
    """Estimated local latency; None when the data is unknown."""
    detail: str
    """Numbers only (for the explain endpoint, headers and the 503 message)."""


def estimate_latency_ms(
    load: PoolLoad, own_tokens: int, *, parallel_slots: int | None = None, unseen: int = 0
) -> float | None:
    """Estimated latency of a request of `own_tokens` output tokens; None when it cannot be known.

    `unseen`: requests this router sent the pool since `load` was read (Prometheus cannot know them yet).
    """
    rate = load.tokens_per_second
    if rate is None or not math.isfinite(rate) or rate <= 0 or load.waiting is None:
        return None
    waiting = max(0.0, load.waiting)
    running = max(0.0, load.running or 0.0)
    mean = load.mean_output_tokens
    mean_tokens = mean if mean is not None and math.isfinite(mean) and mean > 0 else float(own_tokens)
    if parallel_slots is not None:
        lanes = float(parallel_slots * max(1, load.replicas or 1))
        ahead = waiting + running + unseen - lanes
    else:
        lanes = max(1.0, running)
        ahead = waiting + unseen if waiting > 0 else -1.0
    queue_s = 0.0 if ahead < 0 else (ahead + 0.5) * mean_tokens / (lanes * rate)
    return (queue_s + own_tokens / rate) * 1000.0


def judge(
    load: PoolLoad | None,
    config: SaturationConfig,
    *,
    now: float,
    own_tokens: int,
    limit_ms: float,
    parallel_slots: int | None = None,
    unseen: int = 0,
) -> Verdict:
    """Spill when the KV cache is full or the estimate exceeds `limit_ms`; unknown or stale never spills."""
    if load is None or now - load.read_at > config.stale_after_seconds:
        return Verdict(False, None, "saturation unknown")
    kv = load.kv_cache_ratio
    if kv is not None and math.isfinite(kv) and kv * 100 >= config.kv_cache_spill_percent:
        return Verdict(True, None, f"KV cache {kv * 100:.0f}% >= {config.kv_cache_spill_percent}%")
    estimate = estimate_latency_ms(load, own_tokens, parallel_slots=parallel_slots, unseen=unseen)
    if estimate is None:
        return Verdict(False, None, "saturation unknown")
    queue = f"{load.waiting:g} waiting, {load.running or 0:g} running"
    if estimate > limit_ms:
        return Verdict(True, estimate, f"estimated local latency {estimate:.0f} ms > {limit_ms:.0f} ms ({queue})")
    return Verdict(False, estimate, f"estimated local latency {estimate:.0f} ms <= {limit_ms:.0f} ms ({queue})")
