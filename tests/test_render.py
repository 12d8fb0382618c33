"""Managed-pool manifests: owner, labels, GPU scheduling, per-server launch recipes, rolling hash."""

from __future__ import annotations

from typing import Any

import pytest

from hybridroute_operator.api import LocalSpec
from hybridroute_operator.render import (
    ENDPOINT_LABEL,
    GPU_PRODUCT_LABEL,
    SPEC_HASH_ANNOTATION,
    Owner,
    managed_pool,
)

OWNER = Owner(name="llama", namespace="models", uid="0000-1111")


def local(**fields: Any) -> LocalSpec:
    return LocalSpec.model_validate({"model": "meta-llama/Llama-3.1-8B-Instruct", "server": "vllm", **fields})


def container(spec: LocalSpec) -> dict[str, Any]:
    containers = managed_pool(OWNER, spec).deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_children_are_owned_by_the_endpoint_for_garbage_collection() -> None:
    pool = managed_pool(OWNER, local())
    for child in (pool.deployment, pool.service):
        (reference,) = child["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "hybridroute.io/v1alpha1",
            "kind": "InferenceEndpoint",
            "name": "llama",
            "uid": "0000-1111",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "models"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hybridroute"
        assert child["metadata"]["labels"][ENDPOINT_LABEL] == "llama"


def test_service_selects_the_deployment_pods_and_gives_a_cluster_url() -> None:
    pool = managed_pool(OWNER, local())
    selector = pool.deployment["spec"]["selector"]["matchLabels"]
    pod_labels = pool.deployment["spec"]["template"]["metadata"]["labels"]
    assert pool.service["spec"]["selector"] == selector
    assert selector.items() <= pod_labels.items()
    assert pool.service["spec"]["ports"][0]["port"] == 8000
    assert pool.url == "http://llama.models.svc:8000/v1"


def test_vllm_arguments_carry_model_quantization_and_context() -> None:
    spec = local(quantization="awq", maxContextTokens=16384, maxConcurrency=64, extraArgs=["--enable-prefix-caching"])
    server = container(spec)
    args = server["args"]
    assert args[args.index("--model") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert args[args.index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert args[args.index("--quantization") + 1] == "awq"
    assert args[args.index("--max-model-len") + 1] == "16384"
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert args[args.index("--port") + 1] == "8000"
    assert args[-1] == "--enable-prefix-caching"  # extra args come last, so they can override
    assert server["image"].startswith("vllm/vllm-openai")
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"


def test_gpu_limits_node_selector_and_tolerations() -> None:
    spec = local(
        gpu={"count": 2, "product": "NVIDIA-A100-SXM4-80GB"},
        nodeSelector={"node-pool": "gpu"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        resources={"requests": {"cpu": 4, "memory": "32Gi"}},
    )
    pod = managed_pool(OWNER, spec).deployment["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": 2}
    assert resources["requests"] == {"cpu": 4, "memory": "32Gi"}
    assert pod["nodeSelector"] == {"node-pool": "gpu", GPU_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"


def test_custom_gpu_resource_and_cpu_only_pools() -> None:
    amd = managed_pool(OWNER, local(gpu={"count": 1, "resourceName": "amd.com/gpu"})).deployment
    assert amd["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"amd.com/gpu": 1}
    cpu = managed_pool(OWNER, local(server="llamacpp", model="/models/gemma.gguf", gpu={"count": 0})).deployment
    pod = cpu["spec"]["template"]["spec"]
    assert "limits" not in pod["containers"][0]["resources"]
    assert "tolerations" not in pod
    assert "--n-gpu-layers" not in pod["containers"][0]["args"]
    # a CPU pool may surge; a GPU pool must free its GPU first
    assert cpu["spec"]["strategy"]["rollingUpdate"]["maxSurge"] != 0
    assert amd["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_llamacpp_arguments() -> None:
    server = container(local(server="llamacpp", model="/models/gemma-3-270m.gguf", maxContextTokens=4096))
    args = server["args"]
    assert args[args.index("-m") + 1] == "/models/gemma-3-270m.gguf"
    assert args[args.index("-c") + 1] == "4096"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "8080"
    assert "--metrics" in args  # the saturation signals the routers read (llama.cpp server's /metrics)
    assert "llama.cpp" in server["image"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"


def test_ollama_listens_on_all_interfaces_and_pulls_its_model_safely() -> None:
    server = container(local(server="ollama", model="llama3.1:8b; rm -rf /"))
    assert {"name": "OLLAMA_HOST", "value": "0.0.0.0:11434"} in server["env"]
    script = server["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert "ollama pull 'llama3.1:8b; rm -rf /'" in script  # quoted: the model name is data, not shell
    assert server["readinessProbe"]["exec"]["command"] == ["ollama", "show", "llama3.1:8b; rm -rf /"]
    assert server["image"].startswith("ollama/ollama")


def test_image_and_port_overrides() -> None:
    pool = managed_pool(OWNER, local(image="registry.local/vllm:custom", port=9000))
    server = pool.deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == "registry.local/vllm:custom"
    assert server["ports"][0]["containerPort"] == 9000
    assert pool.url.endswith(":9000/v1")


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        ({"quantization": "gptq"}, True),
        ({"extraArgs": ["--enforce-eager"]}, True),
        ({"gpu": {"count": 2}}, True),
        ({"replicas": 3}, False),  # scaling is not a new pod template
    ],
)
def test_spec_hash_changes_exactly_when_the_pods_change(change: dict[str, Any], rolls: bool) -> None:
    def template_hash(spec: LocalSpec) -> str:
        return str(
            managed_pool(OWNER, spec).deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        )

    before = template_hash(local(quantization="awq"))
    assert before == template_hash(local(quantization="awq"))  # deterministic
    assert (template_hash(local(**{"quantization": "awq", **change})) != before) is rolls


def test_an_existing_server_has_no_pool() -> None:
    with pytest.raises(ValueError, match="server"):
        managed_pool(OWNER, LocalSpec.model_validate({"model": "m", "url": "http://workstation:11434/v1"}))
