"""`helm install charts/hybridroute` on the real node: the operator runs as pods from the images built here.

The operator and router images come from the project's Dockerfile (e2e/images.py), imported into the
node's containerd. The chart's Deployment then runs two operator replicas as real pods: they must
become Running and Ready through their own probes, as the chart's ServiceAccount (not an admin),
non-root, on a read-only root filesystem, and reach the API server through the `kubernetes` Service
as any in-cluster client does. The admission webhook is then served by those pods through the
chart's Service: a labelled pod is admitted with the router injected as a native sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from e2e import images
from e2e.localcluster import KubectlError, LocalCluster
from tests.fixtures.helm import CHART, Helm
from tests.test_localcluster import eventually
from tests.test_webhook import RELEASE, adopt_existing, helm_cluster_args

pytestmark = [pytest.mark.cluster, pytest.mark.images]
FULLNAME = f"{RELEASE}-hybridroute"


def _repository_and_tag(image: images.Image) -> tuple[str, str]:
    repository, tag = image.ref.rsplit(":", 1)
    return repository, tag


@pytest.fixture(scope="module")
def project_images(local_cluster: LocalCluster) -> dict[str, images.Image]:
    """The operator and router images, built from the Dockerfile (cached) and imported into the node."""
    built = {image.name: image for image in images.build(["operator", "router"])}
    node = local_cluster.node
    assert node is not None
    for image in built.values():
        node.import_image(image.archive)
    return built


@pytest.fixture
def released(
    helm: Helm, local_cluster: LocalCluster, k8s_namespace: str, project_images: dict[str, images.Image]
) -> Iterator[str]:
    """The chart installed with the images built here; `--wait` returns once its Deployment is available."""
    operator_repository, operator_tag = _repository_and_tag(project_images["operator"])
    router_repository, router_tag = _repository_and_tag(project_images["router"])
    adopt_existing(local_cluster, k8s_namespace, "inferenceendpoints.hybridroute.io", "routingpolicies.hybridroute.io")
    helm.run(
        "install",
        RELEASE,
        str(CHART),
        *helm_cluster_args(local_cluster, k8s_namespace),
        "--set",
        f"image.repository={operator_repository}",
        "--set",
        f"image.tag={operator_tag}",
        "--set",
        f"injection.image.repository={router_repository}",
        "--set",
        f"injection.image.tag={router_tag}",
        "--wait",
        "--timeout=240s",
        timeout=300,
    )
    yield k8s_namespace
    helm.run("uninstall", RELEASE, *helm_cluster_args(local_cluster, k8s_namespace), "--wait", timeout=180)


def _operator_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/name=hybridroute"
    return [pod for pod in core.list_namespaced_pod(namespace, label_selector=selector).items if pod.spec.containers]


def test_two_operator_replicas_run_ready_as_the_chart_service_account_non_root_read_only(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released

    pods = _operator_pods(core, namespace)

    assert len(pods) == 2, [pod.metadata.name for pod in pods]
    for pod in pods:
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        assert pod.spec.service_account_name == FULLNAME
        uid = local_cluster.kubectl("exec", "-n", namespace, pod.metadata.name, "--", "id", "-u").strip()
        assert uid != "0"
        with pytest.raises(KubectlError, match="Read-only file system"):
            local_cluster.kubectl("exec", "-n", namespace, pod.metadata.name, "--", "touch", "/probe")
    # Both replicas talk to the API server as the chart's ServiceAccount: kopf peering lists them.
    peering = json.loads(local_cluster.kubectl("get", "clusterkopfpeering", "hybridroute", "-o", "json"))
    assert len(peering.get("status", {})) == 2, peering.get("status")
    # The webhook answers through the chart's Service, which lists both pods.
    slices = client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={FULLNAME}"
    )
    ready = {ep.target_ref.name for s in slices.items for ep in s.endpoints or [] if ep.conditions.ready}
    assert ready == {pod.metadata.name for pod in pods}


def test_one_replica_killed_the_other_keeps_serving(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released
    victim, survivor = (pod.metadata.name for pod in _operator_pods(core, namespace))

    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)

    def replaced() -> list[str] | None:
        pods = _operator_pods(core, namespace)
        names = [
            p.metadata.name
            for p in pods
            if {c.type: c.status for c in p.status.conditions or []}.get("Ready") == "True"
        ]
        return names if len(names) == 2 and victim not in names else None

    assert survivor in eventually(replaced, "the Deployment to replace the killed replica", 180)
