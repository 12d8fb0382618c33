"""The generated CRDs in a real API server: malformed manifests rejected naming the field, samples
accepted with the models' defaults, `kubectl explain` and `kubectl get` useful.

Uses the same malformed manifests as the offline validator (tests/manifests/invalid/), so the two
cannot drift apart: each one must be rejected by both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.localcluster import KubectlError, LocalCluster
from hybridroute_operator import api, crdgen
from tests.test_validate_cli import INVALID_MANIFESTS, SAMPLES, expected_field

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crds(local_cluster: LocalCluster) -> LocalCluster:
    """The committed CRDs applied (server-side, idempotent across test modules) and established."""
    for kind in crdgen.KINDS:
        manifest = REPO_ROOT / crdgen.CRD_DIR / crdgen.file_name(kind)
        local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    local_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{kind.plural}.{api.GROUP}" for kind in crdgen.KINDS),
    )
    return local_cluster


@pytest.mark.parametrize("manifest", INVALID_MANIFESTS, ids=lambda path: path.stem)
def test_api_server_rejects_each_malformed_manifest_naming_the_field(
    crds: LocalCluster, k8s_namespace: str, manifest: Path
) -> None:
    with pytest.raises(KubectlError) as rejected:
        crds.kubectl("create", "-n", k8s_namespace, "-f", "-", input=manifest.read_text())
    assert expected_field(manifest) in rejected.value.stderr
    assert "is invalid" in rejected.value.stderr or "strict decoding error" in rejected.value.stderr


def _sample_documents() -> list[dict[str, Any]]:
    return [document for path in sorted(SAMPLES.glob("*.yaml")) for document in yaml.safe_load_all(path.read_text())]


def test_samples_are_accepted_and_read_back_as_the_models_parse_them(crds: LocalCluster, k8s_namespace: str) -> None:
    samples = _sample_documents()
    crds.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump_all(samples))
    stored = json.loads(crds.kubectl("get", "-n", k8s_namespace, "ie,rp", "-o", "json"))["items"]
    models = {api.ENDPOINT_KIND: api.InferenceEndpointSpec, api.POLICY_KIND: api.RoutingPolicySpec}
    sent = {(doc["kind"], doc["metadata"]["name"]): doc["spec"] for doc in samples if doc["kind"] in models}
    assert {(item["kind"], item["metadata"]["name"]) for item in stored} == set(sent)
    for item in stored:
        # The API server applied the CRD's defaults; the models apply theirs. Both must agree.
        model = models[item["kind"]]
        assert model.model_validate(item["spec"]) == model.model_validate(sent[item["kind"], item["metadata"]["name"]])
    policy = next(item for item in stored if item["kind"] == api.POLICY_KIND)
    assert policy["spec"]["slo"]["connectTimeoutMs"] == 2000  # defaulted by the API server


def test_printer_columns_show_status(crds: LocalCluster, k8s_namespace: str) -> None:
    cloud = next(
        doc for doc in _sample_documents() if doc["kind"] == api.ENDPOINT_KIND and doc["spec"]["type"] == "cloud"
    )
    crds.kubectl("create", "-n", k8s_namespace, "-f", "-", input=yaml.safe_dump(cloud))
    status = api.InferenceEndpointStatus(
        conditions=[
            api.Condition(
                type=api.ConditionType.READY,
                status="True",
                reason=api.Reason.SECRET_FOUND,
                last_transition_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            )
        ],
        model="gpt-4o-mini",
        latency_p95_ms=812,
        circuit="closed",
    )
    patch = json.dumps({"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)})
    name = cloud["metadata"]["name"]
    crds.kubectl("patch", "-n", k8s_namespace, "ie", name, "--subresource=status", "--type=merge", "-p", patch)
    header, row = crds.kubectl("get", "-n", k8s_namespace, "ie", name).splitlines()
    assert header.split() == ["NAME", "TYPE", "MODEL", "READY", "P95", "CIRCUIT", "AGE"]
    assert row.split()[:6] == [name, "cloud", "gpt-4o-mini", "True", "812", "closed"]


def test_kubectl_explain_helps_a_newcomer(crds: LocalCluster) -> None:
    explained = crds.kubectl("explain", "inferenceendpoint.spec.cloud")
    flat = " ".join(explained.split())
    for name in ("provider", "model", "apiKeySecretRef", "baseURL", "pricing", "maxContextTokens", "capabilities"):
        assert f" {name} <" in flat, name
    # The descriptions are the models' docstrings, word for word.
    cloud = api.InferenceEndpointSpec.model_fields["cloud"].description
    assert cloud is not None
    assert " ".join(cloud.split()) in flat
    secret_ref = api.CloudSpec.model_fields["api_key_secret_ref"].description
    assert secret_ref is not None
    assert " ".join(secret_ref.split()) in flat
    assert "apiKeySecretRef <Object> -required-" in flat
