"""RoutingPolicy compile: samples compile, refs resolve, semantic checks fail clearly, no secret values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridroute_operator.api import RoutingPolicySpec
from hybridroute_operator.compile import (
    CONFIG_HASH_ANNOTATION,
    CompileError,
    EndpointSnapshot,
    PolicyInput,
    compile_policy,
    config_map,
    policy_owner,
    resolve_refs,
)
from hybridroute_router.config import CONFIGMAP_KEY, parse_config

SAMPLES = Path(__file__).resolve().parent.parent / "crds" / "samples"
READY = {"conditions": [{"type": "Ready", "status": "True", "reason": "DeploymentReady", "message": ""}]}
NOT_READY = {"conditions": [{"type": "Ready", "status": "False", "reason": "SecretMissing", "message": "no openai"}]}


def sample_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def sample_endpoints(status: dict[str, Any] = READY) -> dict[str, EndpointSnapshot]:
    snapshots = [
        EndpointSnapshot.of({**document, "status": status})
        for document in sample_documents()
        if document["kind"] == "InferenceEndpoint"
    ]
    return {snapshot.name: snapshot for snapshot in snapshots}


def sample_policy(**overrides: Any) -> PolicyInput:
    (document,) = [document for document in sample_documents() if document["kind"] == "RoutingPolicy"]
    spec = RoutingPolicySpec.model_validate({**document["spec"], **overrides})
    return PolicyInput(name="default", namespace="apps", generation=3, spec=spec)


def endpoint(
    name: str, spec: dict[str, Any], labels: dict[str, str] | None = None, status: dict[str, Any] = READY
) -> EndpointSnapshot:
    return EndpointSnapshot.of({"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status})


LOCAL = {"type": "local", "local": {"server": "llamacpp", "model": "/m/gemma.gguf", "gpu": {"count": 0}}}
CLOUD = {
    "type": "cloud",
    "cloud": {"provider": "openai", "model": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
}


def test_the_samples_compile_into_a_config_the_router_accepts() -> None:
    compiled = compile_policy(sample_policy(), sample_endpoints())
    document = compiled.config.to_json()
    reparsed = parse_config(document)
    assert reparsed.config_hash == compiled.config.config_hash
    assert reparsed.policy.name == "default"
    assert reparsed.policy.generation == 3
    assert [e.name for e in reparsed.endpoints] == ["llama-8b-vllm", "workstation-ollama", "openai-gpt-4o-mini"]
    vllm = reparsed.endpoint("llama-8b-vllm")
    assert vllm is not None
    assert vllm.base_url == "http://llama-8b-vllm.apps.svc:8000/v1"
    assert vllm.provider == "vllm"
    assert vllm.max_context_tokens == 16384
    workstation = reparsed.endpoint("workstation-ollama")
    assert workstation is not None
    assert workstation.base_url == "http://workstation.lan:11434/v1"
    assert workstation.weight == 20  # the policy's override beats the endpoint's own weight
    cloud = reparsed.endpoint("openai-gpt-4o-mini")
    assert cloud is not None
    assert cloud.base_url == "https://api.openai.com/v1"
    assert cloud.api_key is not None
    assert cloud.api_key.secret_ref is not None
    assert (cloud.api_key.secret_ref.name, cloud.api_key.secret_ref.key) == ("openai", "api-key")
    assert cloud.pricing.output_per_m_tok == 0.6
    assert reparsed.rollout.local_percent == 50
    assert [rule.name for rule in reparsed.rules] == ["long-context-to-cloud", "simple-chat-local"]
    assert "sk-replace-me" not in document  # the sample Secret's value never reaches the config


def test_the_hash_depends_on_content_only() -> None:
    first = compile_policy(sample_policy(), sample_endpoints()).config.config_hash
    assert first == compile_policy(sample_policy(), sample_endpoints()).config.config_hash
    assert first.startswith("sha256:")
    assert compile_policy(sample_policy(), sample_endpoints(NOT_READY)).config.config_hash != first


def test_missing_and_not_ready_endpoints_are_compiled_unavailable() -> None:
    endpoints = sample_endpoints()
    endpoints["openai-gpt-4o-mini"] = EndpointSnapshot.of(
        {**sample_documents_by_name()["openai-gpt-4o-mini"], "status": NOT_READY}
    )
    del endpoints["workstation-ollama"]
    compiled = compile_policy(sample_policy(), endpoints)
    missing = compiled.config.endpoint("workstation-ollama")
    assert missing is not None
    assert (missing.available, missing.unavailable_reason) == (False, "InferenceEndpoint not found")
    assert missing.base_url.endswith(".invalid/v1")
    cloud = compiled.config.endpoint("openai-gpt-4o-mini")
    assert cloud is not None
    assert (cloud.available, cloud.unavailable_reason) == (False, "SecretMissing: no openai")
    refs = {ref.name: ref for ref in compiled.refs}
    assert refs["workstation-ollama"].type is None
    assert refs["openai-gpt-4o-mini"].available is False
    assert refs["llama-8b-vllm"].available is True


def sample_documents_by_name() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in sample_documents() if d["kind"] == "InferenceEndpoint"}


def test_an_endpoint_without_status_is_not_ready_yet() -> None:
    compiled = compile_policy(policy_for(["a"]), {"a": endpoint("a", LOCAL, status={})})
    assert compiled.refs[0].available is False
    assert compiled.refs[0].reason == "not reconciled yet"


def policy_for(names: list[str], **spec: Any) -> PolicyInput:
    document = {"endpoints": [{"name": name} for name in names], **spec} if names else spec
    return PolicyInput(name="p", namespace="ns", generation=1, spec=RoutingPolicySpec.model_validate(document))


def test_selector_adds_matching_endpoints_after_named_ones() -> None:
    endpoints = {
        "b-local": endpoint("b-local", LOCAL, {"tier": "local"}),
        "a-local": endpoint("a-local", LOCAL, {"tier": "local"}),
        "cloud": endpoint("cloud", CLOUD, {"tier": "cloud"}),
    }
    policy = policy_for(
        ["cloud"],
        endpointSelector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["local", "cloud"]}]},
    )
    assert [e.name for e in compile_policy(policy, endpoints).config.endpoints] == ["cloud", "a-local", "b-local"]
    only_local = policy_for([], endpointSelector={"matchLabels": {"tier": "local"}})
    assert [e.name for e in compile_policy(only_local, endpoints).config.endpoints] == ["a-local", "b-local"]


def test_nothing_selected_fails() -> None:
    policy = policy_for([], endpointSelector={"matchLabels": {"tier": "gpu"}})
    with pytest.raises(CompileError) as failure:
        compile_policy(policy, {"a": endpoint("a", LOCAL)})
    assert failure.value.reason == "NoEndpointsSelected"


def test_rule_naming_an_unselected_endpoint_fails_and_says_which() -> None:
    policy = policy_for(["a"], rules=[{"name": "r", "action": {"endpoints": ["a", "typo"]}}])
    with pytest.raises(CompileError) as failure:
        compile_policy(policy, {"a": endpoint("a", LOCAL)})
    assert failure.value.reason == "CompileFailed"
    assert "rules[0] (r)" in failure.value.message
    assert "typo" in failure.value.message
    assert [ref.name for ref in resolve_refs(policy, {"a": endpoint("a", LOCAL)})] == ["a"]


def test_all_requests_sensitive_without_a_local_endpoint_fails() -> None:
    policy = policy_for(["cloud"], privacy={"allRequestsSensitive": True})
    with pytest.raises(CompileError, match="allRequestsSensitive"):
        compile_policy(policy, {"cloud": endpoint("cloud", CLOUD)})


def test_privacy_detection_without_a_local_endpoint_only_warns() -> None:
    compiled = compile_policy(policy_for(["cloud"]), {"cloud": endpoint("cloud", CLOUD)})
    assert compiled.warnings == ["the policy has no local endpoint: requests detected as sensitive will be refused"]
    assert compile_policy(policy_for(["a"]), {"a": endpoint("a", LOCAL)}).warnings == []


def test_a_p95_query_that_reads_every_namespace_is_warned_about() -> None:
    endpoints = {"a": endpoint("a", LOCAL)}
    unscoped = {"url": "http://prometheus:9090", "query": 'max by (endpoint) (p95{policy="$policy"})'}
    compiled = compile_policy(policy_for(["a"], circuitBreaker={"prometheus": unscoped}), endpoints)
    assert len(compiled.warnings) == 1
    assert "$namespace" in compiled.warnings[0]
    default_query = {"url": "http://prometheus:9090"}
    assert compile_policy(policy_for(["a"], circuitBreaker={"prometheus": default_query}), endpoints).warnings == []


def test_config_map_is_owned_by_the_policy_and_carries_the_hash() -> None:
    compiled = compile_policy(sample_policy(), sample_endpoints())
    manifest = config_map(policy_owner("default", "apps", "uid-1"), compiled.config)
    assert manifest["metadata"]["name"] == "default"
    assert manifest["metadata"]["namespace"] == "apps"
    assert manifest["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == compiled.config.config_hash
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "RoutingPolicy",
        "default",
        "uid-1",
        True,
    )
    assert parse_config(manifest["data"][CONFIGMAP_KEY]).config_hash == compiled.config.config_hash


def test_a_managed_pools_replicas_and_slots_reach_the_config_and_an_external_server_has_none() -> None:
    rolling = {**READY, "readyReplicas": 1}
    pool = {"type": "local", "local": {**LOCAL["local"], "replicas": 3, "maxConcurrency": 2}}
    external = {"type": "local", "local": {"url": "http://workstation.lan:11434/v1", "model": "llama3"}}
    compiled = compile_policy(
        policy_for(["pool", "ext"]), {"pool": endpoint("pool", pool, status=rolling), "ext": endpoint("ext", external)}
    )
    managed = compiled.config.endpoint("pool")
    assert managed is not None
    assert (managed.desired_replicas, managed.ready_replicas, managed.parallel_slots) == (3, 1, 2)
    unmanaged = compiled.config.endpoint("ext")
    assert unmanaged is not None
    assert (unmanaged.desired_replicas, unmanaged.ready_replicas, unmanaged.parallel_slots) == (None, None, None)
