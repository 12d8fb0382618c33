"""The generated CRDs: committed files match the models, and the schemas are structural and explained."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridroute_operator import api, crdgen
from hybridroute_router.config import SLOConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
OPEN_API_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load((REPO_ROOT / crdgen.CRD_DIR / crdgen.file_name(kind)).read_text()) for kind in crdgen.KINDS]


def _root(crd: Mapping[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node with its dotted path (`[]` for list items)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def _spec_and_status_nodes() -> Iterator[tuple[str, Mapping[str, Any]]]:
    for crd in _crds():
        kind = crd["spec"]["names"]["kind"]
        for section in ("spec", "status"):
            yield from _nodes(_root(crd)["properties"][section], f"{kind}.{section}")


def test_committed_files_match_the_models() -> None:
    assert crdgen.drifted(REPO_ROOT) == [], "run `python -m hybridroute_operator.crdgen` and commit the result"


def test_check_flag_fails_on_drift_and_passes_after_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert "crds/hybridroute.io_inferenceendpoints.yaml: out of date" in capsys.readouterr().err
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / crdgen.CHART_CRD_DIR / crdgen.file_name(crdgen.KINDS[1])
    stale.write_text(stale.read_text().replace("RoutingPolicy", "RoutingPolice", 1))
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1


def test_generation_is_deterministic() -> None:
    assert crdgen.generated_files() == crdgen.generated_files()


def test_every_node_is_structural() -> None:
    for path, node in _spec_and_status_nodes():
        assert not {"$ref", "allOf", "oneOf", "not", "nullable", "title", "$defs"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert node.get("type") in OPEN_API_TYPES, path
        assert "anyOf" not in node, path
        # Kubernetes forbids additionalProperties next to properties (pruning does that job).
        assert not ("properties" in node and "additionalProperties" in node), path


def test_every_field_is_described_for_kubectl_explain() -> None:
    undescribed = [
        path
        for path, node in _spec_and_status_nodes()
        if not path.endswith(("[]", ".*")) and not node.get("description")
    ]
    assert undescribed == []
    for crd in _crds():
        root = _root(crd)
        assert root["description"]
        assert root["properties"]["metadata"] == {"type": "object"}  # the API server owns metadata's schema


def test_every_list_declares_its_type_and_map_keys_are_required() -> None:
    for path, node in _spec_and_status_nodes():
        if node.get("type") != "array":
            continue
        list_type = node.get("x-kubernetes-list-type")
        assert list_type in ("atomic", "set", "map"), path
        if list_type == "map":
            assert set(node["x-kubernetes-list-map-keys"]) <= set(node["items"].get("required", [])), path
        if list_type == "set":
            assert node["items"]["type"] != "object", path


def test_list_types_where_they_matter() -> None:
    nodes = dict(_spec_and_status_nodes())
    assert nodes["RoutingPolicy.spec.endpoints"]["x-kubernetes-list-map-keys"] == ["name"]
    assert nodes["RoutingPolicy.spec.rules"]["x-kubernetes-list-type"] == "map"
    assert nodes["RoutingPolicy.spec.modelAliases"]["x-kubernetes-list-type"] == "set"
    assert nodes["InferenceEndpoint.spec.local.extraArgs"]["x-kubernetes-list-type"] == "atomic"
    assert nodes["InferenceEndpoint.status.conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_defaults_are_short_scalars_equal_to_the_model_defaults() -> None:
    nodes = dict(_spec_and_status_nodes())
    defaults = {path: node["default"] for path, node in nodes.items() if "default" in node}
    assert defaults["InferenceEndpoint.spec.local.replicas"] == 1
    assert defaults["InferenceEndpoint.spec.local.gpu.resourceName"] == "nvidia.com/gpu"
    assert defaults["RoutingPolicy.spec.slo.p95LatencyMs"] == SLOConfig().p95_latency_ms
    assert "RoutingPolicy.spec.circuitBreaker.prometheus.query" not in defaults  # a template must not freeze
    assert "RoutingPolicy.spec.modelAliases" not in defaults
    for path, value in defaults.items():
        assert isinstance(value, bool | int | float | str), path
        assert not isinstance(value, str) or len(value) <= 63, path


def test_enums_and_bounds_come_from_the_models() -> None:
    nodes = dict(_spec_and_status_nodes())
    assert nodes["InferenceEndpoint.spec.cloud.provider"]["enum"] == [
        "openai",
        "anthropic",
        "openrouter",
        "azure-openai",
        "openai-compatible",
    ]
    replicas = nodes["InferenceEndpoint.spec.local.replicas"]
    assert (replicas["minimum"], replicas["maximum"]) == (0, 100)
    recovery = nodes["RoutingPolicy.spec.circuitBreaker.prometheus.recoveryRatio"]
    assert (recovery["minimum"], recovery["exclusiveMinimum"], recovery["maximum"]) == (0, True, 1)
    assert nodes["InferenceEndpoint.spec.local.nodeSelector"]["additionalProperties"] == {"type": "string"}
    assert nodes["InferenceEndpoint.spec.cloud"]["required"] == ["provider", "model", "apiKeySecretRef"]


def test_every_cross_field_rule_is_published_as_cel() -> None:
    published = [
        validation["rule"]
        for _, node in _spec_and_status_nodes()
        for validation in node.get("x-kubernetes-validations", [])
    ]
    expected = [rule.cel for rules in api.CROSS_FIELD_RULES.values() for rule in rules]
    assert sorted(set(published)) == sorted(expected)
    cloud = dict(_spec_and_status_nodes())["InferenceEndpoint.spec.cloud"]
    assert cloud["x-kubernetes-validations"][0]["fieldPath"] == ".baseURL"


def test_crd_identity_status_subresource_and_names() -> None:
    endpoint, policy = _crds()
    assert endpoint["metadata"]["name"] == "inferenceendpoints.hybridroute.io"
    assert policy["metadata"]["name"] == "routingpolicies.hybridroute.io"
    for crd, short in ((endpoint, "ie"), (policy, "rp")):
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["shortNames"] == [short]
        assert crd["spec"]["names"]["categories"] == ["hybridroute"]
        version = crd["spec"]["versions"][0]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


def test_printer_columns_point_at_fields_in_the_schema() -> None:
    for crd in _crds():
        version = crd["spec"]["versions"][0]
        paths = {path.removeprefix(".") for path, _ in _nodes(_root(crd))}
        for column in version["additionalPrinterColumns"]:
            field = column["jsonPath"].split("[?")[0].lstrip(".")
            assert field == "metadata.creationTimestamp" or field in paths, column
    names = [column["name"] for column in _crds()[0]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert names == ["Type", "Model", "Ready", "P95", "Circuit", "Age"]


def test_helm_copy_is_the_same_crd_behind_enabled_and_keep() -> None:
    for kind in crdgen.KINDS:
        template = (REPO_ROOT / crdgen.CHART_CRD_DIR / crdgen.file_name(kind)).read_text()
        lines = template.splitlines()
        assert lines[1] == "{{- if .Values.crds.enabled }}"
        assert lines[-1] == "{{- end }}"
        assert "  {{- if .Values.crds.keep }}\n  annotations:\n    helm.sh/resource-policy: keep\n" in template
        # Rendered with keep=false the template is exactly the plain CRD.
        without_actions = "\n".join(
            line for line in lines if "{{" not in line and "annotations:" not in line and "resource-policy" not in line
        )
        assert yaml.safe_load(without_actions) == crdgen.crd(kind)
        assert template.count("{{") == 4  # no description smuggles a template action in
