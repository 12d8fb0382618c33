"""The operator touches only what it owns, on the real API server (issue 11, items 1, 2 and 7).

- A managed endpoint whose name is taken by a team's Service or Deployment refuses it (Ready=False,
  OwnershipConflict) and never adds a controller reference, so deleting the endpoint can never
  garbage-collect the team's object; a field of its own Deployment that someone else manages is
  reported (FieldConflict), not forced. A controller reference removed between the operator's
  ownership check and its write is refused too: the write is pinned to the version it checked.
- A policy's own ConfigMap gets the compiled content back after a hand edit (with an Event), and
  later policy changes still reach it; a ConfigMap of the same name it does not control is refused.
- An endpoint switched from a managed pool to a cloud API scales its former pool to 0 (its own
  Deployment only, by uid); a same-named object of a team is never touched.
- No finalizer: with the operator stopped, deleting endpoints, policies and their namespace completes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hybridroute_operator import render
from hybridroute_operator.api import ENDPOINT_PLURAL, GROUP, POLICY_PLURAL, VERSION, LocalSpec
from hybridroute_operator.apply import FIELD_MANAGER, Cluster, OwnershipConflict
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


def test_a_child_someone_disowned_is_refused_and_the_endpoint_recovers_once_it_is_gone(
    kube: Kube, running_operator: Path
) -> None:
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)
    eventually(lambda: kube.deployment("llama"), "the pool's Deployment")
    eventually(lambda: kube.service_exists("llama"), "the pool's Service")
    # Someone strips the controller reference (kubectl edit): the Service is no longer the endpoint's,
    # so the operator must not write it again, nor let the garbage collector take it.
    kube.core.patch_namespaced_service("llama", kube.namespace, [{"op": "remove", "path": "/metadata/ownerReferences"}])
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Ready", "False", "OwnershipConflict"), "OwnershipConflict"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "llama", "Ready") or {})["message"]
    assert "Service llama exists and is not owned by InferenceEndpoint llama" in message
    assert "no controller" in message

    # Its holder deletes it: the endpoint takes its name back by itself (next pass, no restart).
    kube.core.delete_namespaced_service("llama", kube.namespace)

    def owned_service() -> bool:
        if not kube.service_exists("llama"):
            return False
        service = kube.core.read_namespaced_service("llama", kube.namespace)
        return any(reference.controller for reference in service.metadata.owner_references or [])

    eventually(owned_service, "the endpoint's own Service again")
    eventually(
        lambda: (kube.condition(ENDPOINT_PLURAL, "llama", "Ready") or {}).get("reason") != "OwnershipConflict",
        "the conflict cleared",
    )


def test_a_child_disowned_between_the_ownership_check_and_the_write_is_refused(
    kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind the test above, made certain: the write is pinned to the version that was checked."""
    kube.create(ENDPOINT_PLURAL, "racer", MANAGED_POOL)
    endpoint = kube.get(ENDPOINT_PLURAL, "racer")
    assert endpoint is not None
    owner = render.Owner(name="racer", namespace=kube.namespace, uid=endpoint["metadata"]["uid"])
    pool = render.managed_pool(owner, LocalSpec.model_validate(MANAGED_POOL["local"]))
    cluster = Cluster(kube.core.api_client)
    cluster.apply(pool.service)  # created, and ours

    checked = cluster._claimed

    def checked_then_disowned(manifest: Mapping[str, Any], *, whole: bool) -> dict[str, Any] | None:
        live = checked(manifest, whole=whole)
        if live is not None and (live["metadata"].get("ownerReferences") or []):
            kube.core.patch_namespaced_service(  # someone strips the reference right after the check
                "racer", kube.namespace, [{"op": "remove", "path": "/metadata/ownerReferences"}]
            )
        return live

    monkeypatch.setattr(cluster, "_claimed", checked_then_disowned)
    with pytest.raises(OwnershipConflict, match="Service racer exists and is not owned by InferenceEndpoint racer"):
        cluster.apply(pool.service)
    assert not kube.core.read_namespaced_service("racer", kube.namespace).metadata.owner_references


OPENAI = {"provider": "openai", "model": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}


def test_an_endpoint_that_stops_running_a_pool_stops_its_own_pool_and_nothing_else(
    kube: Kube, running_operator: Path
) -> None:
    kube.create(ENDPOINT_PLURAL, "llama", MANAGED_POOL)
    eventually(lambda: kube.deployment("llama"), "the pool's Deployment")
    # A cloud endpoint named like a team's Deployment: it never ran a pool, and the Deployment is not its.
    team = team_deployment(kube, "openai")
    kube.create_secret("openai")
    kube.create(ENDPOINT_PLURAL, "openai", {"type": "cloud", "cloud": OPENAI})

    # The pool is replaced by a cloud API: its GPU pods must not keep running for nobody.
    kube.patch_spec(ENDPOINT_PLURAL, "llama", {"type": "cloud", "local": None, "cloud": OPENAI})
    eventually(lambda: (kube.deployment("llama") or team).spec.replicas == 0, "the former pool scaled to 0")
    eventually(lambda: kube.events("llama", "PoolStopped"), "an event says the pool was stopped")
    assert kube.get(ENDPOINT_PLURAL, "llama") is not None, "the endpoint itself stays"

    eventually(lambda: kube.condition(ENDPOINT_PLURAL, "openai", "Ready"), "the cloud endpoint reconciled")
    after = kube.deployment("openai")
    assert after is not None
    assert after.metadata.generation == team.metadata.generation, "a team's Deployment is never touched"
    assert after.spec.replicas == team.spec.replicas
    assert FIELD_MANAGER not in {entry.manager for entry in after.metadata.managed_fields or []}
    assert not kube.events("openai", "PoolStopped")

    # Back to a managed pool: it runs again.
    kube.patch_spec(ENDPOINT_PLURAL, "llama", {**MANAGED_POOL, "cloud": None})
    eventually(lambda: (kube.deployment("llama") or team).spec.replicas != 0, "the pool scaled up again")


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
            "cloud": {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
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


def test_a_hand_edit_is_undone_by_a_watch_not_the_resync(kube: Kube, operator_factory: OperatorProcesses) -> None:
    """The routers' volume refreshes on the kubelet's own schedule: a hand edit (a loosened privacy
    rule, say) must be gone before it is likely to reach one, not at the next 30 s resync."""
    operator_factory({"HYBRIDROUTE_RESYNC_SECONDS": "3600"})  # only a watch can bring the config back
    cloud_endpoint_and_policy(kube)
    eventually(lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled"), "compiled")
    seconds = []
    for attempt in range(3):
        edited = json.dumps({"hand": attempt})
        started = time.monotonic()
        kube.core.patch_namespaced_config_map(
            "default", kube.namespace, {"data": {CONFIGMAP_KEY: edited}}, field_manager="kubectl-edit"
        )

        def restored(edited: str = edited) -> bool:
            config_map = kube.config_map("default")
            if config_map is None or (config_map.data or {}).get(CONFIGMAP_KEY) == edited:
                return False
            return published_config(kube) is not None  # what status says was compiled, in the ConfigMap

        eventually(restored, "the compiled config back")
        seconds.append(time.monotonic() - started)
    # One whose labels were taken off (it leaves the label-selected watch) gets them back.
    kube.core.patch_namespaced_config_map(
        "default", kube.namespace, {"metadata": {"labels": None}}, field_manager="kubectl-edit"
    )

    def labelled() -> bool:
        config_map = kube.config_map("default")
        return config_map is not None and (config_map.metadata.labels or {}).get("hybridroute.io/policy") == "default"

    eventually(labelled, "the labels back")
    # And one deleted by hand is written again.
    kube.core.delete_namespaced_config_map("default", kube.namespace)
    eventually(lambda: published_config(kube), "the ConfigMap written again")
    print(f"\nhand edit -> compiled config back: {', '.join(f'{value:.3f}s' for value in seconds)} (resync 3600 s)")


def test_keys_a_hand_edit_adds_to_the_policy_config_map_are_removed_and_reported_once(
    kube: Kube, running_operator: Path
) -> None:
    cloud_endpoint_and_policy(kube, {"endpoints": [{"name": "cloud"}], "rollout": {"localPercent": 10}})
    eventually(lambda: published_config(kube), "the compiled ConfigMap")

    # Keys of its own the operator never renders: another file for the routers' volume, and the
    # config moved to binaryData (a key may not be in both, so the compiled data could not come back).
    blob = base64.b64encode(b"{}").decode()
    kube.core.patch_namespaced_config_map(
        "default",
        kube.namespace,
        {"data": {CONFIGMAP_KEY: None, "extra.json": "{}"}, "binaryData": {CONFIGMAP_KEY: blob}},
        field_manager="kubectl-edit",
    )

    def only_the_compiled_config() -> bool:
        config_map = kube.config_map("default")
        return (
            config_map is not None
            and set(config_map.data or {}) == {CONFIGMAP_KEY}
            and not config_map.binary_data
            and published_config(kube) is not None
        )

    eventually(only_the_compiled_config, "the ConfigMap holding the compiled config and nothing else")
    eventually(lambda: kube.events("default", "HandEditOverwritten"), "a HandEditOverwritten event")

    # Passes after the repair find nothing to repair: a policy change goes through, its Compiled
    # Event is posted after any earlier Event, and the hand edit was reported once.
    kube.patch_spec(POLICY_PLURAL, "default", {"rollout": {"localPercent": 0}})

    def rollout_zero_announced() -> bool:
        published = published_config(kube)
        if published is None or parse_config(published[1]).rollout.local_percent != 0:
            return False
        return any(published[0] in (event.message or "") for event in kube.events("default", "Compiled"))

    eventually(rollout_zero_announced, "the policy change published and announced")
    assert len(kube.events("default", "HandEditOverwritten")) == 1
    assert kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled")


def test_a_policy_config_map_made_immutable_by_hand_is_reported_and_recreated_once_deleted(
    kube: Kube, running_operator: Path
) -> None:
    cloud_endpoint_and_policy(kube, {"endpoints": [{"name": "cloud"}], "rollout": {"localPercent": 10}})
    eventually(lambda: published_config(kube), "the compiled ConfigMap")
    kube.core.patch_namespaced_config_map("default", kube.namespace, {"immutable": True}, field_manager="kubectl-edit")

    # A change that cannot be written says so (the API refuses any change to an immutable ConfigMap).
    kube.patch_spec(POLICY_PLURAL, "default", {"rollout": {"localPercent": 0}})
    eventually(
        lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "False", "ConfigMapNotWritable"),
        "ConfigMapNotWritable",
    )
    message = (kube.condition(POLICY_PLURAL, "default", "Ready") or {})["message"]
    assert "ConfigMap default is immutable" in message
    eventually(lambda: kube.events("default", "ConfigMapNotWritable"), "a Warning event says so")

    # Deleting it (what the message asks for) lets the operator publish the change.
    kube.core.delete_namespaced_config_map("default", kube.namespace)

    def rollout_zero() -> bool:
        published = published_config(kube)
        return published is not None and parse_config(published[1]).rollout.local_percent == 0

    eventually(rollout_zero, "the policy change in a new ConfigMap")
    eventually(lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled"), "Ready again")


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
