"""Fleet view (operator side): Prometheus answers -> per-endpoint p95/circuit, and when status changes."""

from __future__ import annotations

from typing import Any

import pytest

from hybridroute_operator import fleet
from hybridroute_operator.apply import Cluster
from hybridroute_operator.fleet import FleetObservation
from hybridroute_operator.handlers.fleet import merge_view
from hybridroute_operator.settings import OperatorState, Tuning


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [0, v]} for m, v in series]},
    }


def test_parse_p95_rounds_ms_and_drops_nan() -> None:
    body = vector(
        ({"namespace": "team-a", "endpoint": "local"}, "0.2504"),
        ({"namespace": "team-a", "endpoint": "cloud"}, "NaN"),
        ({"endpoint": "no-namespace"}, "1"),
    )
    # a series without a namespace is nobody's: never attributed to an endpoint of that name
    assert fleet.parse_p95(body) == {("team-a", "local"): 250}


def test_parse_rejects_failed_queries() -> None:
    with pytest.raises(ValueError, match="failed"):
        fleet.parse_p95({"status": "error"})


@pytest.mark.parametrize(
    ("per_state", "expected"),
    [
        ({"closed": 3, "open": 0, "half-open": 0}, "closed"),
        ({"closed": 2, "open": 1, "half-open": 0}, "half-open"),
        ({"closed": 2, "open": 0, "half-open": 1}, "half-open"),
        ({"closed": 1, "open": 1, "half-open": 0}, "open"),
        ({"closed": 0, "open": 3}, "open"),
        ({}, None),
        ({"closed": 0, "open": 0}, None),
    ],
)
def test_fleet_circuit_summarises_routers(per_state: dict[str, float], expected: str | None) -> None:
    assert fleet.fleet_circuit(per_state) == expected


def test_parse_circuits_counts_states_per_endpoint() -> None:
    body = vector(
        ({"namespace": "ns", "endpoint": "local", "state": "open"}, "2"),
        ({"namespace": "ns", "endpoint": "local", "state": "closed"}, "1"),
        ({"namespace": "ns", "endpoint": "cloud", "state": "closed"}, "3"),
        ({"namespace": "ns", "endpoint": "cloud", "state": "open"}, "0"),
    )
    assert fleet.parse_circuits(body) == {("ns", "local"): "open", ("ns", "cloud"): "closed"}


def test_lookup_is_scoped_to_the_namespace() -> None:
    view = {("ns", "a"): FleetObservation(10, "closed"), ("team-b", "a"): FleetObservation(99, "open")}
    assert fleet.lookup(view, "ns", "a") == FleetObservation(10, "closed")
    assert fleet.lookup(view, "other", "a") is None
    assert fleet.lookup(view, "ns", "missing") is None


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        (None, FleetObservation(100, "closed"), True),
        (FleetObservation(100, "closed"), FleetObservation(105, "closed"), False),  # 5 %: noise
        (FleetObservation(100, "closed"), FleetObservation(120, "closed"), False),  # under 25 ms
        (FleetObservation(1000, "closed"), FleetObservation(1050, "closed"), False),  # under 10 %
        (FleetObservation(1000, "closed"), FleetObservation(1200, "closed"), True),
        (FleetObservation(1000, "closed"), FleetObservation(1000, "open"), True),
        (FleetObservation(None, "closed"), FleetObservation(50, "closed"), True),
    ],
)
def test_meaningful_change(old: FleetObservation | None, new: FleetObservation, changed: bool) -> None:
    assert fleet.meaningful_change(old, new) is changed


def state() -> OperatorState:
    return OperatorState(cluster=Cluster.__new__(Cluster), tuning=Tuning())


def test_merge_view_reports_only_meaningful_changes_and_keeps_last_p95() -> None:
    shared = state()
    assert merge_view(shared, {("ns", "a"): FleetObservation(1000, "closed")}) == [("ns", "a")]
    assert merge_view(shared, {("ns", "a"): FleetObservation(1010, "closed")}) == []
    # no traffic in the window: p95 vanishes, but absence of data is not a latency
    assert merge_view(shared, {("ns", "a"): FleetObservation(None, "open")}) == [("ns", "a")]
    assert shared.fleet[("ns", "a")] == FleetObservation(1000, "open")
