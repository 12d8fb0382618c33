"""Prometheus answers → pool loads: first family wins, the routers' in-flight stands in, failures are unknown."""

from __future__ import annotations

import math

from hybridroute_router.p95 import render_query
from hybridroute_router.saturationfeed import QUERIES, pool_loads


def test_server_metrics_become_a_load_per_endpoint() -> None:
    signals = {
        "waiting": {"gpu": 3.0},
        "running": {"gpu": 1.0},
        "in_flight": {"gpu": 9.0},
        "kv_cache": {"gpu": 0.4},
        "tokens_per_second": {"gpu": 55.0},
        "mean_output_tokens": {"gpu": 120.0},
        "replicas": {"gpu": 2.0},
    }
    [load] = pool_loads(["gpu"], signals, read_at=7.0).values()
    assert (load.waiting, load.running, load.kv_cache_ratio) == (3.0, 1.0, 0.4)
    assert (load.tokens_per_second, load.mean_output_tokens, load.replicas, load.read_at) == (55.0, 120.0, 2, 7.0)


def test_without_server_metrics_the_fleets_in_flight_counts_as_queued() -> None:
    [load] = pool_loads(["ollama"], {"waiting": {}, "in_flight": {"ollama": 4.0}}, read_at=0.0).values()
    assert (load.waiting, load.running) == (4.0, 0.0)


def test_failed_queries_missing_series_and_nan_are_unknown() -> None:
    signals = {"waiting": None, "running": {"other": 1.0}, "tokens_per_second": {"gpu": math.nan}}
    [load] = pool_loads(["gpu"], signals, read_at=0.0).values()
    assert (load.waiting, load.running, load.tokens_per_second, load.kv_cache_ratio) == (None, None, None, None)


def test_every_query_is_scoped_to_the_policys_namespace() -> None:
    for signal, template in QUERIES.items():
        query = render_query(template, "chat", "30s", namespace="team-a")
        assert 'namespace="team-a"' in query, signal
        assert "$" not in query, signal
