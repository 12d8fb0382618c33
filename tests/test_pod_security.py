"""Pod Security "restricted" on the real API server: the pods hybridroute adds to a cluster.

A namespace labelled `pod-security.kubernetes.io/enforce=restricted` (PodSecurity admission is on by
default) must admit the operator's Pod (the chart's Deployment template) and an application Pod
with the router injected exactly as the webhook patches it. Server-side dry runs: admission runs
in full, nothing is stored. A managed pool's Pod runs the model server image as its authors built
it (vLLM and Ollama run as root and write under /root), so it is held to the baseline level only.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest
from kubernetes import client

from hybridroute_operator.api import LocalSpec
from hybridroute_operator.injection import InjectionSettings, build_patch
from hybridroute_operator.render import Owner, managed_pool
from hybridroute_router.config import SecretKeyRef
from tests.fixtures.helm import Helm
from tests.fixtures.operator import Kube

pytestmark = pytest.mark.cluster


def labelled(kube: Kube, level: str) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": level for mode in ("enforce", "warn")}
    kube.core.patch_namespace(kube.namespace, {"metadata": {"labels": labels}})


def dry_run_pod(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    """Create the Pod as a dry run: raises ApiException (403) when Pod Security refuses it."""
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    kube.core.create_namespaced_pod(kube.namespace, body, dry_run="All")


RESTRICTED_APP = {
    "name": "app",
    "image": "registry.example/app:1",
    "securityContext": {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def test_the_operator_and_an_injected_app_pod_are_admitted_as_restricted(kube: Kube, helm: Helm) -> None:
    labelled(kube, "restricted")
    # Proof that the level is enforced here: the plain app container without its securityContext.
    with pytest.raises(client.ApiException) as refused:
        dry_run_pod(kube, "plain", {"containers": [{"name": "app", "image": "registry.example/app:1"}]})
    assert refused.value.status == 403
    assert "restricted" in str(refused.value.body)

    (operator,) = [doc for doc in helm.template() if doc["kind"] == "Deployment"]
    pod_spec = dict(operator["spec"]["template"]["spec"])
    pod_spec.pop("serviceAccountName")  # the release's ServiceAccount is not installed here; no bearing on the level
    dry_run_pod(kube, "operator", pod_spec)

    app = {"metadata": {"labels": {"hybridroute.io/policy": "default"}}, "spec": {"containers": [RESTRICTED_APP]}}
    settings = InjectionSettings(image="registry.example/hybridroute-router:1", audit_enabled=True)
    patch = build_patch(app, "default", [SecretKeyRef(name="openai", key="api-key")], settings)
    injected = jsonpatch.apply_patch(app, patch)
    assert injected["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    dry_run_pod(kube, "app", injected["spec"])


def test_a_managed_pool_pod_is_admitted_as_baseline(kube: Kube) -> None:
    labelled(kube, "baseline")
    owner = Owner(name="llama", namespace=kube.namespace, uid="00000000-0000-0000-0000-000000000001")
    for server in ("vllm", "ollama", "llamacpp"):
        local = LocalSpec.model_validate({"server": server, "model": "m", "gpu": {"count": 0}})
        dry_run_pod(kube, f"pool-{server}", managed_pool(owner, local).deployment["spec"]["template"]["spec"])
