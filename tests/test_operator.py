"""The operator against the real local control plane: children, readiness, Secrets, probes, policies.

Each test runs the real `hybridroute-operator` CLI as a subprocess watching only the test's namespace
(resync 1 s so level-based re-checks show up quickly), and polls the API with bounded timeouts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from e2e.localcluster import LocalCluster
from e2e.upstream_sim import UpstreamSim
from hybridroute_operator.api import ENDPOINT_PLURAL, POLICY_PLURAL
from hybridroute_operator.compile import CONFIG_HASH_ANNOTATION
from hybridroute_operator.render import SPEC_HASH_ANNOTATION
from hybridroute_router.config import CONFIGMAP_KEY, parse_config
from tests.fixtures.operator import SECRET_VALUE, Kube, eventually

pytestmark = pytest.mark.cluster


def test_managed_pool_lifecycle(local_cluster: LocalCluster, kube: Kube, running_operator: Path) -> None:
    kube.create(
        ENDPOINT_PLURAL,
        "llama",
        {
            "type": "local",
            "local": {
                "server": "vllm",
                "model": "meta-llama/Llama-3.1-8B-Instruct",
                "quantization": "awq",
                "maxContextTokens": 8192,
                "gpu": {"count": 1, "product": "NVIDIA-A100-SXM4-80GB"},
            },
        },
    )
    deployment = eventually(lambda: kube.deployment("llama"), "the pool's Deployment")
    assert kube.service_exists("llama")
    pod_spec = deployment.spec.template.spec
    server = pod_spec.containers[0]
    assert server.resources.limits == {"nvidia.com/gpu": "1"}
    assert server.args[server.args.index("--quantization") + 1] == "awq"
    assert server.args[server.args.index("--max-model-len") + 1] == "8192"
    assert pod_spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("InferenceEndpoint", "llama", True)
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Progressing", "True", "DeploymentProgressing"),
        "Progressing=True before any pod is ready",
    )

    # The stand-in kubelet binds the pod to a GPU node and reports it ready.
    local_cluster.register_fake_node(labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    eventually(lambda: local_cluster.mark_pods_ready(kube.namespace, "hybridroute.io/endpoint=llama"), "a ready pod")
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "llama", "Ready", "True", "DeploymentReady"), "Ready=True")
    status = (kube.get(ENDPOINT_PLURAL, "llama") or {})["status"]
    assert status["readyReplicas"] == 1
    assert status["url"] == f"http://llama.{kube.namespace}.svc:8000/v1"
    assert status["observedGeneration"] == 1

    # A spec change rolls the Deployment: a new pod template (hash) with the new arguments.
    before = deployment.spec.template.metadata.annotations[SPEC_HASH_ANNOTATION]
    kube.patch_spec(ENDPOINT_PLURAL, "llama", {"local": {"quantization": "gptq"}})

    def rolled() -> client.V1Deployment | None:
        current = kube.deployment("llama")
        annotations = current.spec.template.metadata.annotations if current else {}
        return current if annotations[SPEC_HASH_ANNOTATION] != before else None

    rolled_deployment = eventually(rolled, "the Deployment's pod template to change")
    args = rolled_deployment.spec.template.spec.containers[0].args
    assert args[args.index("--quantization") + 1] == "gptq"
    eventually(lambda: (kube.get(ENDPOINT_PLURAL, "llama") or {})["status"]["observedGeneration"] == 2, "generation 2")

    # Status only: the operator never changed spec (generation moved once, for our own patch).
    endpoint = kube.get(ENDPOINT_PLURAL, "llama") or {}
    assert endpoint["metadata"]["generation"] == 2
    assert endpoint["spec"]["local"]["quantization"] == "gptq"
    operator_writes = [e for e in endpoint["metadata"]["managedFields"] if e["manager"] == "hybridroute-operator"]
    assert operator_writes, "the operator's status writes carry its field manager"
    assert {entry.get("subresource") for entry in operator_writes} == {"status"}
    # kopf's own bookkeeping: nothing at all (no finalizer, no annotations).
    assert not endpoint["metadata"].get("finalizers")
    assert not endpoint["metadata"].get("annotations")

    # Deleting the endpoint garbage-collects its children (the real controller-manager does it).
    kube.delete(ENDPOINT_PLURAL, "llama")
    eventually(lambda: kube.get(ENDPOINT_PLURAL, "llama") is None, "the endpoint gone")
    # The garbage collector discovers new resource types (our CRDs) on a 30 s cycle, so the first
    # collection in a fresh control plane can take that long on top of its own work.
    eventually(
        lambda: kube.deployment("llama") is None and not kube.service_exists("llama"),
        "children collected",
        timeout=90,
    )


def test_cloud_endpoint_waits_for_its_secret(kube: Kube, running_operator: Path) -> None:
    kube.create(
        ENDPOINT_PLURAL,
        "openai",
        {
            "type": "cloud",
            "cloud": {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
        },
    )
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "False", "SecretMissing"), "SecretMissing")
    # kopf posts events from a queue, so the event may land after the status patch
    eventually(lambda: kube.events("openai", "SecretMissing"), "a Warning event explains the missing Secret")
    kube.create_secret("openai")
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "True", "SecretFound"), "Ready=True")
    endpoint = kube.get(ENDPOINT_PLURAL, "openai") or {}
    assert SECRET_VALUE not in str(endpoint)
    assert endpoint["status"]["url"] == "https://api.openai.com/v1"


def test_existing_server_is_probed(
    kube: Kube, running_operator: Path, upstream_sim: Callable[..., UpstreamSim]
) -> None:
    sim = upstream_sim("workstation")
    kube.create(ENDPOINT_PLURAL, "workstation", {"type": "local", "local": {"url": sim.base_url, "model": "m"}})
    kube.create(ENDPOINT_PLURAL, "gone", {"type": "local", "local": {"url": "http://127.0.0.1:9/v1", "model": "m"}})
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "workstation", "Ready", "True", "EndpointReachable"), "reachable"
    )
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "gone", "Ready", "False", "EndpointUnreachable"), "unreachable"
    )


def secret_free_config(kube: Kube, name: str) -> tuple[client.V1ConfigMap, str]:
    config_map = kube.config_map(name)
    assert config_map is not None
    document = config_map.data[CONFIGMAP_KEY]
    assert SECRET_VALUE not in document
    return config_map, document


def test_policy_compiles_recompiles_and_keeps_the_last_good_config(kube: Kube, running_operator: Path) -> None:
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
    kube.create(
        POLICY_PLURAL,
        "default",
        {"endpoints": [{"name": "cloud"}, {"name": "local"}], "rollout": {"localPercent": 10}},
    )

    # The referenced local endpoint does not exist yet: compiled unavailable and published, but the
    # policy is not what it declares, so it is not Ready (EndpointsMissing) and ResolvedRefs names it.
    eventually(
        lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "False", "EndpointsMissing"), "first compile"
    )
    eventually(
        lambda: kube.condition_is(POLICY_PLURAL, "default", "ResolvedRefs", "False", "EndpointsMissing"), "missing ref"
    )
    assert "local" in (kube.condition(POLICY_PLURAL, "default", "ResolvedRefs") or {})["message"]
    assert "local" in (kube.condition(POLICY_PLURAL, "default", "Ready") or {})["message"]
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "cloud", "Ready", "True", "SecretFound"), "cloud ready")

    def published_hash() -> str | None:
        policy = kube.get(POLICY_PLURAL, "default") or {}
        config_map = kube.config_map("default")
        status_hash = (policy.get("status") or {}).get("configHash")
        if config_map is None or config_map.metadata.annotations.get(CONFIG_HASH_ANNOTATION) != status_hash:
            return None
        config = parse_config(config_map.data[CONFIGMAP_KEY])
        cloud = config.endpoint("cloud")
        return status_hash if cloud is not None and cloud.available else None

    first_hash = eventually(published_hash, "a config with the cloud endpoint available")
    config_map, document = secret_free_config(kube, "default")
    config = parse_config(document)
    assert config.policy.name == "default"
    assert config.rollout.local_percent == 10
    missing = config.endpoint("local")
    assert missing is not None
    assert missing.available is False
    owner = config_map.metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("RoutingPolicy", "default")

    # The endpoint appears (and is compiled in), then changes: each gives a new hash.
    kube.create(ENDPOINT_PLURAL, "local", {"type": "local", "local": {"url": "http://127.0.0.1:9/v1", "model": "m"}})
    second_hash = eventually(
        lambda: (h := published_hash()) and h != first_hash and h, "a new hash once the endpoint exists"
    )
    kube.patch_spec(ENDPOINT_PLURAL, "cloud", {"priority": 7})

    def cloud_priority_is_seven() -> bool:
        current = kube.config_map("default")
        endpoint = parse_config(current.data[CONFIGMAP_KEY]).endpoint("cloud") if current else None
        return endpoint is not None and endpoint.priority == 7

    eventually(cloud_priority_is_seven, "the endpoint change in the config")
    third_hash = eventually(lambda: (h := published_hash()) and h not in (first_hash, second_hash) and h, "new hash")
    good = kube.config_map("default")
    assert good is not None

    # A policy the schema accepts but the compiler cannot: a rule names an endpoint it does not select.
    kube.patch_spec(POLICY_PLURAL, "default", {"rules": [{"name": "typo", "action": {"endpoints": ["clod"]}}]})
    eventually(lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "False", "CompileFailed"), "CompileFailed")
    assert "clod" in (kube.condition(POLICY_PLURAL, "default", "Ready") or {})["message"]
    eventually(lambda: kube.events("default", "CompileFailed"), "a CompileFailed event")
    policy = kube.get(POLICY_PLURAL, "default") or {}
    assert policy["status"]["configHash"] == third_hash
    assert policy["status"]["observedGeneration"] == policy["metadata"]["generation"]
    kept = kube.config_map("default")
    assert kept is not None
    assert kept.metadata.resource_version == good.metadata.resource_version  # untouched
    assert kept.data == good.data


def test_detector_patterns_the_engine_refuses_are_compile_failures_not_crashes(
    local_cluster: LocalCluster, kube: Kube, running_operator: Path
) -> None:
    """A pattern RE2 refuses fails the compile (naming the detector); one Python's `re` cannot even compile
    (RecursionError) is fine on RE2. Either way the operator keeps reconciling and writes status."""
    kube.create(ENDPOINT_PLURAL, "local", {"type": "local", "local": {"url": "http://127.0.0.1:9/v1", "model": "m"}})
    refused = {"detectors": [{"name": "backref", "pattern": r"(\d+)-\1"}]}
    kube.create(POLICY_PLURAL, "guarded", {"endpoints": [{"name": "local"}], "privacy": refused})

    eventually(lambda: kube.condition_is(POLICY_PLURAL, "guarded", "Ready", "False", "CompileFailed"), "CompileFailed")
    message = (kube.condition(POLICY_PLURAL, "guarded", "Ready") or {})["message"]
    assert "privacy.detectors[backref].pattern" in message
    assert "invalid escape sequence" in message
    assert kube.config_map("guarded") is None

    nested = {"detectors": [{"name": "nested", "pattern": "(" * 500 + "a" + ")" * 500}]}
    kube.patch_spec(POLICY_PLURAL, "guarded", {"privacy": nested})
    # Compiled and published; Ready stays False only because nothing listens at the endpoint's URL.
    eventually(
        lambda: kube.condition_is(POLICY_PLURAL, "guarded", "Ready", "False", "NoEndpointsReady"), "compiled on RE2"
    )
    config_map = eventually(lambda: kube.config_map("guarded"), "the policy's ConfigMap")
    assert [detector.name for detector in parse_config(config_map.data[CONFIGMAP_KEY]).privacy.detectors] == ["nested"]
