"""The operator touches only what it owns, on the real API server (issue 11, items 1, 2 and 7).

- A managed endpoint whose name is taken by a team's Service or Deployment refuses it (Ready=False,
  OwnershipConflict) and never adds a controller reference, so deleting the endpoint can never
  garbage-collect the team's object; a field of its own Deployment that someone else manages is
  reported (FieldConflict), not forced.
- A policy's own ConfigMap gets the compiled content back after a hand edit (with an Event), and
  later policy changes still reach it; a ConfigMap of the same name it does not control is refused.
- No finalizer: with the operator stopped, deleting endpoints, policies and their namespace completes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from hybridroute_operator.api import ENDPOINT_PLURAL, GROUP, POLICY_PLURAL, VERSION
from hybridroute_operator.compile import CONFIG_HASH_ANNOTATION
from hybridroute_router.config import CONFIGMAP_KEY, parse_config
from tests.fixtures.operator import Kube, OperatorProcesses, eventually

pytestmark = pytest.mark.cluster

MANAGED_POOL = {"type": "local", "local": {"server": "vllm", "model": "meta-llama/Llama-3.1-8B-Instruct"}}


def team_service(kube: Kube, name: str) -> client.V1Service:
    return kube.core.create_namespaced_service(
        kube.namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name, labels={"team": "payments"}),
            spec=client.V1ServiceSpec(selector={"app": "payments"}, ports=[client.V1ServicePort(port=8080)]),
        ),
    )


def team_deployment(kube: Kube, name: str) -> client.V1Deployment:
    labels = {"app": "payments"}
    container = client.V1Container(name="app", image="registry.example/payments:1")
    return kube.apps.create_namespaced_deployment(
        kube.namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(containers=[container])
                ),
            ),
        ),
    )


def ready_reason(kube: Kube, plural: str, name: str) -> tuple[str, str, str] | None:
    condition = kube.condition(plural, name, "Ready")
    return None if condition is None else (condition["status"], condition["reason"], condition["message"])


def test_a_managed_endpoint_refuses_a_teams_service_and_deleting_it_leaves_the_service(
    kube: Kube, running_operator: Path
) -> None:
    before = team_service(kube, "llama")
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)

    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Ready", "False", "OwnershipConflict"), "OwnershipConflict"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "llama", "Ready") or {})["message"]
    assert "Service llama exists and is not owned by InferenceEndpoint llama" in message
    # kopf posts events from a queue, so the event may land after the status patch
    eventually(lambda: kube.events("llama", "OwnershipConflict"), "a Warning event names the conflict")
    service = kube.core.read_namespaced_service("llama", kube.namespace)
    assert service.metadata.owner_references is None, "no controller reference: the GC can never take it"
    assert service.spec.selector == {"app": "payments"}
    assert service.metadata.resource_version == before.metadata.resource_version, "not written at all"
    assert kube.deployment("llama") is None, "both children are claimed before either is written"

    kube.delete(ENDPOINT_PLURAL, "llama")
    eventually(lambda: kube.get(ENDPOINT_PLURAL, "llama") is None, "the endpoint gone")
    assert kube.core.read_namespaced_service("llama", kube.namespace).spec.selector == {"app": "payments"}


def test_a_managed_endpoint_refuses_a_teams_deployment(kube: Kube, running_operator: Path) -> None:
    before = team_deployment(kube, "llama")
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)

    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Ready", "False", "OwnershipConflict"), "OwnershipConflict"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "llama", "Ready") or {})["message"]
    assert "Deployment llama exists and is not owned by InferenceEndpoint llama" in message
    after = kube.deployment("llama")
    assert after is not None
    assert after.metadata.owner_references is None
    assert after.spec.template.spec.containers[0].image == "registry.example/payments:1"
    assert after.metadata.generation == before.metadata.generation
    assert not kube.service_exists("llama"), "nothing is written while a child is someone else's"


def test_a_hand_edited_field_of_an_owned_deployment_is_reported_not_forced(kube: Kube, running_operator: Path) -> None:
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)
    deployment = eventually(lambda: kube.deployment("llama"), "the pool's Deployment")
    ours = deployment.spec.template.spec.containers[0].image
    # An update by another manager takes the image field from the operator.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "registry.example/mine:1"}]}}}}
    kube.apps.patch_namespaced_deployment("llama", kube.namespace, patch, field_manager="kubectl-edit")

    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Ready", "False", "FieldConflict"), "FieldConflict")
    message = (kube.condition(ENDPOINT_PLURAL, "llama", "Ready") or {})["message"]
    assert "kubectl-edit" in message
    assert "image" in message
    current = kube.deployment("llama")
    assert current is not None
    assert current.spec.template.spec.containers[0].image == "registry.example/mine:1" != ours


def cloud_endpoint_and_policy(kube: Kube, policy_spec: dict[str, object] | None = None) -> None:
    kube.create_secret("openai")
    kube.create(
        ENDPOINT_PLURAL,
        "cloud",
        {
            "type": "cloud",
            "cloud": {"provider": "openai", "model": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "k"}},
        },
    )
    kube.create(POLICY_PLURAL, "default", policy_spec or {"endpoints": [{"name": "cloud"}]})


def published_config(kube: Kube) -> tuple[str, str] | None:
    """(config hash in status, config.json) once the ConfigMap carries what status says."""
    policy = kube.get(POLICY_PLURAL, "default") or {}
    config_map = kube.config_map("default")
    status_hash = (policy.get("status") or {}).get("configHash")
    if config_map is None or not status_hash:
        return None
    if (config_map.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION) != status_hash:
        return None
    document = (config_map.data or {}).get(CONFIGMAP_KEY, "")
    return (status_hash, document) if parse_config(document).config_hash == status_hash else None


def test_a_hand_edit_of_the_policy_config_map_is_overwritten_and_changes_keep_flowing(
    kube: Kube, running_operator: Path
) -> None:
    cloud_endpoint_and_policy(kube, {"endpoints": [{"name": "cloud"}], "rollout": {"localPercent": 10}})
    eventually(lambda: published_config(kube), "the compiled ConfigMap")

    # Someone loosens the routers' config by hand under another field manager.
    edited = json.dumps({"hand": "edit"})
    kube.core.patch_namespaced_config_map(
        "default", kube.namespace, {"data": {CONFIGMAP_KEY: edited}}, field_manager="kubectl-edit"
    )
    eventually(lambda: kube.events("default", "HandEditOverwritten"), "a HandEditOverwritten event")
    event = kube.events("default", "HandEditOverwritten")[0]
    assert event.type == "Warning"
    assert "kubectl-edit" in event.message
    # Back in place: a compiled config whose hash is the one status reports (endpoint readiness may
    # have changed it since the first publication, so the hash itself is not pinned).
    _, restored = eventually(lambda: published_config(kube), "the compiled config back in place")
    assert restored != edited

    # ... and the next policy change (tightening the rollout) still reaches the ConfigMap.
    kube.patch_spec(POLICY_PLURAL, "default", {"rollout": {"localPercent": 0}})

    def rollout_zero() -> bool:
        published = published_config(kube)
        return published is not None and parse_config(published[1]).rollout.local_percent == 0

    eventually(rollout_zero, "the policy change in the ConfigMap")
    assert kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled")


def test_a_config_map_of_the_policy_name_it_does_not_control_is_refused(kube: Kube, running_operator: Path) -> None:
    # No field in common with the compiled ConfigMap: a plain apply would merge into it and adopt it.
    before = kube.core.create_namespaced_config_map(
        kube.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="default"), data={"team": "settings"})
    )
    cloud_endpoint_and_policy(kube)

    eventually(
        lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "False", "OwnershipConflict"), "OwnershipConflict"
    )
    message = (kube.condition(POLICY_PLURAL, "default", "Ready") or {})["message"]
    assert "ConfigMap default exists and is not owned by RoutingPolicy default" in message
    after = kube.config_map("default")
    assert after is not None
    assert after.data == {"team": "settings"}
    assert after.metadata.owner_references is None
    assert after.metadata.resource_version == before.metadata.resource_version


def test_without_a_running_operator_deletion_completes(kube: Kube, operator_factory: OperatorProcesses) -> None:
    # An object an older operator put its finalizer on: the new operator takes it off.
    kube.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        kube.namespace,
        ENDPOINT_PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceEndpoint",
            "metadata": {"name": "legacy", "finalizers": ["hybridroute.io/finalizer"]},
            "spec": {"type": "local", "local": {"url": "http://127.0.0.1:9/v1", "model": "m"}},
        },
    )
    log = operator_factory()
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)
    cloud_endpoint_and_policy(kube, {"endpoints": [{"name": "cloud"}, {"name": "llama"}]})
    eventually(lambda: kube.deployment("llama"), "the pool's Deployment")
    eventually(lambda: published_config(kube), "the compiled ConfigMap")
    eventually(
        lambda: not (kube.get(ENDPOINT_PLURAL, "legacy") or {})["metadata"].get("finalizers"), "old finalizer gone"
    )
    for plural, name in ((ENDPOINT_PLURAL, "llama"), (ENDPOINT_PLURAL, "cloud"), (POLICY_PLURAL, "default")):
        assert not (kube.get(plural, name) or {})["metadata"].get("finalizers"), f"{plural}/{name} has a finalizer"

    operator_factory.stop(log)  # as after `helm uninstall` with the CRDs kept, or a crash loop
    kube.delete(POLICY_PLURAL, "default")
    kube.delete(ENDPOINT_PLURAL, "cloud")
    eventually(lambda: kube.get(POLICY_PLURAL, "default") is None, "the policy deleted without an operator")
    eventually(lambda: kube.get(ENDPOINT_PLURAL, "cloud") is None, "the endpoint deleted without an operator")

    kube.core.delete_namespace(kube.namespace)  # llama and legacy go with their namespace

    def namespace_gone() -> bool:
        return not any(item.metadata.name == kube.namespace for item in kube.core.list_namespace().items)

    eventually(namespace_gone, "the namespace deleted without an operator", timeout=120)
