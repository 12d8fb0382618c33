"""The local cluster is a real one: pinned version, TLS + RBAC enforced, controllers and a node running.

The cluster tests share the session's `local_cluster`; the CLI test starts and stops a control plane
without a node (tests/test_realnode.py covers the node's own start and stop). The PKI and toolchain
tests need no cluster.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import pki, processes, toolchain
from e2e.localcluster import COMPONENTS, KubectlError, LocalCluster
from e2e.node import NODE_NAME

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll `probe` until it returns something other than None; controllers act asynchronously."""
    deadline = time.monotonic() + timeout
    while (result := probe()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return result


# -- no cluster needed --------------------------------------------------------------------------------
def test_admin_certificate_carries_the_masters_group() -> None:
    ca = pki.CertificateAuthority()
    cert = x509.load_pem_x509_certificate(ca.client_pair("alice", ("system:masters",)).cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    assert cert.issuer == x509.load_pem_x509_certificate(ca.pair.cert_pem).subject


def test_serving_certificate_covers_loopback_and_service_names() -> None:
    cert = x509.load_pem_x509_certificate(pki.CertificateAuthority().serving_pair(("127.0.0.1",)).cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_missing_go_fails_with_install_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDROUTE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH, so no `go`
    with pytest.raises(toolchain.ToolchainError, match=r"go\.dev/doc/install"):
        toolchain.build(toolchain.ETCD)


# -- against the session's control plane --------------------------------------------------------------
@pytest.mark.cluster
def test_server_runs_the_pinned_version_and_kubeconfig_is_cluster_admin(local_cluster: LocalCluster) -> None:
    version = json.loads(local_cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == toolchain.KUBERNETES_VERSION
    identity = json.loads(local_cluster.kubectl("auth", "whoami", "-o", "json"))
    assert "system:masters" in identity["status"]["userInfo"]["groups"]
    # The API server binds the host end of the node's link: the node and its pods reach it there.
    assert local_cluster.network is not None
    assert local_cluster.server.startswith(f"https://{local_cluster.network.host_ip}:")


@pytest.mark.cluster
def test_requests_without_a_client_identity_are_rejected(local_cluster: LocalCluster) -> None:
    context = ssl.create_default_context(cafile=str(local_cluster.dir / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(local_cluster.server + "/api/v1/namespaces", context=context, timeout=10)
    rejected.value.close()
    assert rejected.value.code == HTTPStatus.UNAUTHORIZED


@pytest.mark.cluster
def test_rbac_limits_a_service_account_to_what_it_was_granted(
    local_cluster: LocalCluster, kube_api: client.ApiClient, k8s_namespace: str, tmp_path: Path
) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(k8s_namespace, client.V1ServiceAccount(metadata={"name": "reader"}))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = core.create_namespaced_service_account_token("reader", k8s_namespace, request).status.token
    as_reader = local_cluster.token_kubeconfig(tmp_path / "reader.kubeconfig", token)

    def can_i(*what: str) -> str:
        try:
            return local_cluster.kubectl("auth", "can-i", *what, "-n", k8s_namespace, kubeconfig=as_reader).strip()
        except KubectlError as exc:  # `can-i` answers "no" with exit status 1
            return exc.stdout.strip()

    assert can_i("list", "secrets") == "no"
    with pytest.raises(KubectlError, match="Forbidden"):
        local_cluster.kubectl("get", "secrets", "-n", k8s_namespace, kubeconfig=as_reader)
    rbac.create_namespaced_role(
        k8s_namespace,
        client.V1Role(
            metadata={"name": "read-configmaps"},
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        k8s_namespace,
        client.V1RoleBinding(
            metadata={"name": "reader-reads-configmaps"},
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=k8s_namespace)],
        ),
    )
    assert can_i("list", "configmaps") == "yes"
    assert can_i("list", "secrets") == "no"


@pytest.mark.cluster
def test_garbage_collector_deletes_what_an_owner_owned(kube_api: client.ApiClient, k8s_namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(k8s_namespace, client.V1ConfigMap(metadata={"name": "owner"}))
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        k8s_namespace, client.V1ConfigMap(metadata={"name": "owned", "ownerReferences": [reference]})
    )
    core.create_namespaced_config_map(k8s_namespace, client.V1ConfigMap(metadata={"name": "bystander"}))

    core.delete_namespaced_config_map("owner", k8s_namespace)

    def owned_is_gone() -> bool | None:
        try:
            core.read_namespaced_config_map("owned", k8s_namespace)
        except ApiException as exc:
            return True if exc.status == HTTPStatus.NOT_FOUND else None
        return None

    assert eventually(owned_is_gone, "the garbage collector to delete the owned ConfigMap")
    assert core.read_namespaced_config_map("bystander", k8s_namespace).metadata.name == "bystander"


def _deployment(
    name: str, container: client.V1Container, node_selector: dict[str, str] | None = None
) -> client.V1Deployment:
    return client.V1Deployment(
        metadata={"name": name},
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata={"labels": {"app": name}},
                spec=client.V1PodSpec(containers=[container], node_selector=node_selector),
            ),
        ),
    )


def _available_replicas(apps: client.AppsV1Api, name: str, namespace: str) -> int | None:
    status = apps.read_namespaced_deployment_status(name, namespace).status
    return status.ready_replicas if status.available_replicas == 1 else None


@pytest.mark.cluster
def test_deployment_becomes_available_on_the_real_node(
    kube_api: client.ApiClient, k8s_namespace: str, tinyhttp_image: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    container = client.V1Container(
        name="web",
        image=tinyhttp_image,
        image_pull_policy="Never",
        args=["serve", "8080"],
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/", port=8080), period_seconds=1),
    )
    apps.create_namespaced_deployment(k8s_namespace, _deployment("web", container))

    assert eventually(lambda: _available_replicas(apps, "web", k8s_namespace), "a Ready, available replica", 120) == 1
    pods = core.list_namespaced_pod(k8s_namespace, label_selector="app=web").items
    assert [pod.spec.node_name for pod in pods] == [NODE_NAME]
    assert pods[0].status.container_statuses[0].state.running is not None


@pytest.mark.cluster
def test_standin_node_stands_in_for_a_gpu_product_that_cannot_exist_here(
    local_cluster: LocalCluster, kube_api: client.ApiClient, k8s_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    product = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    node = local_cluster.register_fake_node("gpu-node-a", labels=product)
    container = client.V1Container(
        name="server",
        image="registry.invalid/model-server:1",
        resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
    )
    # The real node has no A100, so only the stand-in node fits this pod.
    apps.create_namespaced_deployment(k8s_namespace, _deployment("model", container, node_selector=product))

    replica_sets = eventually(
        lambda: apps.list_namespaced_replica_set(k8s_namespace, label_selector="app=model").items or None,
        "the deployment controller to create a ReplicaSet",
    )
    assert replica_sets[0].metadata.owner_references[0].name == "model"
    ready_pods = eventually(
        lambda: local_cluster.mark_pods_ready(k8s_namespace, "app=model") or None,
        "the ReplicaSet controller to create a pod",
    )
    assert len(ready_pods) == 1
    assert core.read_namespaced_pod(ready_pods[0], k8s_namespace).spec.node_name == node

    ready = eventually(lambda: _available_replicas(apps, "model", k8s_namespace), "the pod Ready and available")
    assert ready == 1
    assert core.read_node(node).status.allocatable["nvidia.com/gpu"] == "1"


# -- its own control plane, through the command line ---------------------------------------------------
@pytest.mark.cluster
def test_cli_start_status_stop_without_a_node_leaves_nothing_running(tmp_path: Path) -> None:
    """The control plane alone (`--no-node`); tests/test_realnode.py stops a cluster with its node."""
    state = tmp_path / "cli-cluster"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        extra = ("--no-node",) if args[0] == "start" else ()
        script = [sys.executable, str(REPO_ROOT / "e2e" / "localcluster.py"), *args, *extra, "--dir", str(state)]
        return subprocess.run(script, capture_output=True, text=True, timeout=240, cwd=tmp_path)

    started = cli("start")
    assert started.returncode == 0, started.stderr
    assert f"export KUBECONFIG={state / 'kubeconfig'}" in started.stdout
    pids = LocalCluster(state).pids()
    assert sorted(pids) == sorted(COMPONENTS)
    assert all(pids.values()), pids
    assert LocalCluster(state).server.startswith("https://127.0.0.1:")
    assert cli("status").returncode == 0

    stopped = cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert [name for name, pid in pids.items() if pid is not None and processes.is_alive(pid)] == []
    assert cli("status").returncode == 3
