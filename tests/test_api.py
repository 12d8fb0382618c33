"""The typed API on its own: parsing, cross-field rules in Python, defaults, helpers. No cluster."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from hybridroute_operator import api
from hybridroute_router.config import Capabilities

SAMPLES = Path(__file__).resolve().parents[1] / "crds" / "samples"


def _cloud(**overrides: Any) -> dict[str, Any]:
    cloud = {"provider": "openai", "model": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}
    return {"type": "cloud", "cloud": cloud | overrides}


def _violations(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    [error] = caught.value.errors()
    assert error["type"] == "cross_field"
    return [(api.format_path(v.path), v.message) for v in error["ctx"]["violations"]]


def test_every_sample_parses_with_the_models() -> None:
    kinds = {api.ENDPOINT_KIND: api.InferenceEndpoint, api.POLICY_KIND: api.RoutingPolicy}
    parsed = [
        kinds[document["kind"]].model_validate(document)
        for path in sorted(SAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document["kind"] in kinds
    ]
    assert sorted(type(item).__name__ for item in parsed) == [
        "InferenceEndpoint",
        "InferenceEndpoint",
        "InferenceEndpoint",
        "RoutingPolicy",
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"type": "cloud"}, [("cloud", "type cloud needs spec.cloud (provider, model, apiKeySecretRef)")]),
        (
            {**_cloud(), "local": {"url": "http://h:1/v1", "model": "m"}},
            [("local", "type cloud must not set spec.local")],
        ),
        ({"type": "local"}, [("local", "type local needs spec.local (server or url, and model)")]),
        (
            {"type": "local", "local": {"server": "vllm", "url": "http://h:1/v1", "model": "m"}},
            [("local", "set exactly one of server (a managed pool the operator runs) or url (an existing server)")],
        ),
        (
            _cloud(provider="azure-openai"),
            [("cloud.baseURL", "baseURL is required for providers azure-openai and openai-compatible")],
        ),
    ],
)
def test_endpoint_cross_field_rules_name_the_field(data: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert _violations(api.InferenceEndpointSpec, data) == expected


def test_policy_cross_field_rules_reach_into_the_router_sections() -> None:
    data = {
        "rules": [
            {"name": "ok", "action": {"prefer": "local"}},
            {"name": "r", "match": {"minInputTokens": 9, "maxInputTokens": 3}, "action": {"prefer": "cloud"}},
        ],
        "circuitBreaker": {"openSeconds": 500},  # above the default maxOpenSeconds (300)
    }
    assert _violations(api.RoutingPolicySpec, data) == [
        ("endpoints", "set endpoints (by name) or endpointSelector (by label), or both"),
        ("rules[1].match.minInputTokens", "minInputTokens must not exceed maxInputTokens"),
        ("circuitBreaker.openSeconds", "openSeconds must not exceed maxOpenSeconds"),
    ]


def test_a_selector_alone_is_enough_and_requirements_need_values_for_in() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert api.RoutingPolicySpec.model_validate({"endpointSelector": selector}).endpoints is None
    bad = {"endpointSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}
    assert [path for path, _ in _violations(api.RoutingPolicySpec, bad)] == [
        "endpointSelector.matchExpressions[0].values"
    ]


def test_tolerations_follow_the_pod_rules() -> None:
    local = {"server": "vllm", "model": "m", "tolerations": [{"operator": "Exists", "tolerationSeconds": 5}]}
    assert [path for path, _ in _violations(api.InferenceEndpointSpec, {"type": "local", "local": local})] == [
        "local.tolerations[0].tolerationSeconds"
    ]


@pytest.mark.parametrize("quantity", [4, "500m", "16Gi", "1.5", "2e3"])
def test_resource_quantities_accept_kubernetes_forms(quantity: str | int) -> None:
    assert api.ResourceList(cpu=quantity).cpu == quantity


def test_resource_quantities_reject_words() -> None:
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        api.ResourceList(memory="lots")


def test_managed_pool_defaults_come_from_the_server_kind() -> None:
    pool = api.LocalSpec(server="ollama", model="llama3.1:8b")
    assert (pool.effective_image(), pool.effective_port()) == (api.SERVER_DEFAULTS["ollama"].image, 11434)
    assert (pool.replicas, pool.gpu.count, pool.gpu.resource_name) == (1, 1, "nvidia.com/gpu")
    pinned = api.LocalSpec(server="vllm", model="m", image="registry.local/vllm:1", port=9000)
    assert (pinned.effective_image(), pinned.effective_port()) == ("registry.local/vllm:1", 9000)
    existing = api.LocalSpec(url="http://workstation:11434/v1", model="llama3.1:8b")
    assert (existing.is_managed, existing.effective_image(), existing.effective_port()) == (False, None, None)


def test_cloud_base_url_defaults_per_provider() -> None:
    spec = api.InferenceEndpointSpec.model_validate(_cloud(provider="openrouter"))
    assert spec.cloud is not None
    assert spec.cloud.effective_base_url() == "https://openrouter.ai/api/v1"
    custom = api.InferenceEndpointSpec.model_validate(_cloud(provider="openai-compatible", baseURL="https://x/v1"))
    assert custom.cloud is not None
    assert custom.cloud.effective_base_url() == "https://x/v1"


def test_cloud_capabilities_override_the_endpoint_wide_ones() -> None:
    both = _cloud(capabilities={"vision": True}) | {"capabilities": {"tools": False}}
    assert api.InferenceEndpointSpec.model_validate(both).effective_capabilities() == Capabilities(vision=True)
    endpoint_wide = _cloud() | {"capabilities": {"tools": False}}
    assert api.InferenceEndpointSpec.model_validate(endpoint_wide).effective_capabilities() == Capabilities(tools=False)


def test_status_serializes_as_the_api_server_expects() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    condition = api.Condition(
        type=api.ConditionType.READY, status="True", reason=api.Reason.SECRET_FOUND, last_transition_time=when
    )
    status = api.InferenceEndpointStatus(conditions=[condition], latency_p95_ms=812, circuit="half-open")
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped == {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "SecretFound",
                "message": "",
                "lastTransitionTime": "2024-05-01T12:00:00Z",
            }
        ],
        "latencyP95Ms": 812,
        "circuit": "half-open",
    }


def test_status_read_back_tolerates_fields_other_writers_add() -> None:
    status = api.RoutingPolicyStatus.model_validate({"configHash": "sha256:ab", "kopf": {"progress": {}}})
    assert status.config_hash == "sha256:ab"


def test_reasons_satisfy_the_condition_reason_pattern() -> None:
    pattern = api.Condition.model_fields["reason"].metadata
    regex = next(item.pattern for item in pattern if getattr(item, "pattern", None))
    reasons = [value for name, value in vars(api.Reason).items() if name.isupper()]
    assert len(reasons) == len(set(reasons)) >= 10
    assert all(re.match(regex, reason) for reason in reasons)


def test_every_cross_field_rule_points_at_a_field_of_its_model() -> None:
    for model, rules in api.CROSS_FIELD_RULES.items():
        aliases = {field.alias or name for name, field in model.model_fields.items()}
        for rule in rules:
            assert rule.cel
            assert rule.message
            if rule.field_path:
                assert rule.field_path.removeprefix(".") in aliases, (model.__name__, rule.field_path)


def test_manifest_names_must_be_dns_1035_labels() -> None:
    document = {"metadata": {"name": "8b-pool"}, "spec": _cloud()}
    with pytest.raises(ValidationError) as caught:
        api.InferenceEndpoint.model_validate(document)
    assert [error["loc"] for error in caught.value.errors()] == [("metadata", "name")]
