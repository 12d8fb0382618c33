"""Conditions keep their transition time; endpoint health from Deployments, Secrets, probes; policy status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridroute_operator.status import (
    ResolvedRef,
    Verdict,
    cloud_health,
    endpoint_status,
    external_server_health,
    find_condition,
    managed_pool_health,
    merge_conditions,
    policy_ready_verdict,
    policy_status,
    status_changes,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def deployment(
    *,
    replicas: int = 1,
    ready: int = 0,
    updated: int | None = None,
    generation: int = 1,
    observed: int = 1,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas if updated is None else updated,
            "readyReplicas": ready,
            "conditions": conditions or [],
        },
    }


def test_last_transition_time_is_kept_while_status_is_unchanged() -> None:
    first = merge_conditions([], [Verdict("Ready", False, "DeploymentProgressing", "0/1")], generation=1, now=T0)
    same = merge_conditions(
        first, [Verdict("Ready", False, "DeploymentProgressing", "0/1 still")], generation=2, now=T1
    )
    flipped = merge_conditions(same, [Verdict("Ready", True, "DeploymentReady", "1/1")], generation=2, now=T1)
    assert first[0]["lastTransitionTime"] == "2025-01-01T12:00:00Z"
    assert same[0]["lastTransitionTime"] == "2025-01-01T12:00:00Z"
    assert same[0]["message"] == "0/1 still"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2025-01-01T12:05:00Z"
    assert flipped[0]["status"] == "True"


def test_conditions_owned_by_others_survive() -> None:
    foreign = {"type": "LatencyOK", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t"}
    merged = merge_conditions([foreign], [Verdict("Ready", True, "R", "")], generation=1, now=T0)
    assert foreign in merged


def test_rewriting_an_unchanged_status_is_a_no_op() -> None:
    health = managed_pool_health(deployment(ready=1))
    first = endpoint_status(health, url="http://u/v1", model="m", generation=1, previous={}, now=T0)
    again = endpoint_status(health, url="http://u/v1", model="m", generation=1, previous=first, now=T1)
    assert status_changes(first, again) == {}
    assert status_changes(first, {**again, "url": "http://v/v1"}) == {"url": "http://v/v1"}


def conditions_of(health: Any) -> dict[str, tuple[bool, str]]:
    return {
        verdict.type: (verdict.status, verdict.reason)
        for verdict in (health.ready, health.progressing, health.degraded)
    }


def test_missing_deployment_is_progressing() -> None:
    assert conditions_of(managed_pool_health(None)) == {
        "Ready": (False, "DeploymentProgressing"),
        "Progressing": (True, "DeploymentProgressing"),
        "Degraded": (False, "DeploymentProgressing"),
    }


def test_ready_rolled_out_pool() -> None:
    health = managed_pool_health(deployment(replicas=2, ready=2))
    assert conditions_of(health) == {
        "Ready": (True, "DeploymentReady"),
        "Progressing": (False, "DeploymentReady"),
        "Degraded": (False, "DeploymentReady"),
    }
    assert health.ready_replicas == 2


def test_rolling_update_keeps_serving_while_progressing() -> None:
    health = managed_pool_health(deployment(replicas=2, ready=1, updated=1, generation=3, observed=3))
    assert conditions_of(health)["Ready"] == (True, "DeploymentReady")
    assert conditions_of(health)["Progressing"] == (True, "DeploymentProgressing")


def test_unobserved_generation_is_still_progressing() -> None:
    health = managed_pool_health(deployment(ready=1, generation=4, observed=3))
    assert conditions_of(health)["Progressing"] == (True, "DeploymentProgressing")


def test_progress_deadline_exceeded_is_degraded() -> None:
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}
    health = managed_pool_health(deployment(ready=0, conditions=[stuck]))
    assert conditions_of(health)["Ready"] == (False, "DeploymentUnavailable")
    assert conditions_of(health)["Degraded"] == (True, "DeploymentUnavailable")
    assert "ProgressDeadlineExceeded" in health.degraded.message


def test_scaled_to_zero() -> None:
    health = managed_pool_health(deployment(replicas=0))
    assert conditions_of(health)["Ready"] == (False, "ScaledToZero")


def test_cloud_and_external_health() -> None:
    assert conditions_of(cloud_health("openai", "k", secret_exists=False))["Ready"] == (False, "SecretMissing")
    assert conditions_of(cloud_health("openai", "k", secret_exists=True))["Ready"] == (True, "SecretFound")
    missing_key = conditions_of(cloud_health("openai", "k", secret_exists=True, has_key=False))
    assert missing_key["Ready"] == (False, "SecretKeyMissing")
    assert conditions_of(cloud_health("openai", "k", secret_exists=True, has_key=True))["Ready"] == (
        True,
        "SecretFound",
    )
    unchecked = conditions_of(cloud_health("openai", "k", secret_exists=None))
    assert unchecked["Ready"] == (True, "SecretNotChecked")
    assert unchecked["Degraded"] == (False, "SecretNotChecked")
    down = external_server_health("http://ws:11434/v1", "no answer within 3s")
    assert conditions_of(down)["Ready"] == (False, "EndpointUnreachable")
    assert "no answer" in down.ready.message
    assert conditions_of(external_server_health("http://ws:11434/v1", None))["Ready"] == (True, "EndpointReachable")


def test_endpoint_status_fields() -> None:
    status = endpoint_status(
        managed_pool_health(deployment(ready=1)), url="http://u/v1", model="m", generation=7, previous={}, now=T0
    )
    assert status["observedGeneration"] == 7
    assert status["readyReplicas"] == 1
    assert status["url"] == "http://u/v1"
    assert status["model"] == "m"
    assert status["lastTransitionReason"] == "DeploymentReady"
    assert "readyReplicas" not in endpoint_status(
        cloud_health("s", "k", True), url="u", model="m", generation=1, previous={}, now=T0
    )


def test_policy_status_names_missing_and_not_ready_endpoints() -> None:
    refs = [
        ResolvedRef("a", "local", True),
        ResolvedRef("b", None, False, "NotFound"),
        ResolvedRef("c", "cloud", False, "SecretMissing"),
    ]
    status = policy_status(
        generation=2, refs=refs, config_hash="sha256:x", config_map="p", failure=None, previous={}, now=T0
    )
    resolved = find_condition(status["conditions"], "ResolvedRefs")
    assert resolved is not None
    assert resolved["status"] == "False"
    assert resolved["reason"] == "EndpointsMissing"
    assert resolved["message"] == "missing: b; not ready: c"
    assert status["configHash"] == "sha256:x"
    assert status["resolvedEndpoints"][1] == {"name": "b", "available": False, "reason": "NotFound"}


def test_failed_compile_keeps_the_last_good_hash() -> None:
    good = policy_status(
        generation=1,
        refs=[ResolvedRef("a", "local", True)],
        config_hash="sha256:good",
        config_map="p",
        failure=None,
        previous={},
        now=T0,
    )
    failed = policy_status(
        generation=2,
        refs=[ResolvedRef("a", "local", True)],
        config_hash=None,
        config_map="p",
        failure=("CompileFailed", "rules[0] names x"),
        previous=good,
        now=T1,
    )
    assert "configHash" not in status_changes(good, failed)  # a merge patch leaves it as it was
    ready = find_condition(failed["conditions"], "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False",
        "CompileFailed",
        "2025-01-01T12:05:00Z",
    )


def test_busy_external_server_stays_ready_but_degraded() -> None:
    busy = conditions_of(external_server_health("http://ws:11434/v1", "no answer within 3s", busy=True))
    assert busy["Ready"] == (True, "EndpointBusy")
    assert busy["Degraded"] == (True, "EndpointBusy")
    # the same timeout on a server that never was ready is simply unreachable
    gone = conditions_of(external_server_health("http://ws:11434/v1", "no answer within 3s", busy=False))
    assert gone["Ready"] == (False, "EndpointUnreachable")


@pytest.mark.parametrize(
    ("refs", "failure", "expected"),
    [
        ([ResolvedRef("a", "local", True)], None, (True, "Compiled")),
        # some exist but are not Ready: routers serve with the others
        ([ResolvedRef("a", "local", True), ResolvedRef("c", "cloud", False)], None, (True, "Compiled")),
        # a named endpoint does not exist: the policy is not what it declares
        (
            [ResolvedRef("a", "local", True), ResolvedRef("b", None, False, "NotFound")],
            None,
            (False, "EndpointsMissing"),
        ),
        ([ResolvedRef("c", "cloud", False)], None, (False, "NoEndpointsReady")),
        ([ResolvedRef("a", "local", True)], ("CompileFailed", "rules[0] ..."), (False, "CompileFailed")),
    ],
)
def test_policy_ready_means_usable_as_declared(
    refs: list[ResolvedRef], failure: tuple[str, str] | None, expected: tuple[bool, str]
) -> None:
    verdict = policy_ready_verdict(refs, "sha256:x", "p", failure)
    assert (verdict.status, verdict.reason) == expected
    if expected[1] == "EndpointsMissing":
        assert "b" in verdict.message
        assert "sha256:x" in verdict.message  # published anyway
