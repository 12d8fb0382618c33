"""The local cluster's node is a real one: containers run, probes decide readiness, Services route.

The session's `local_cluster` runs the node (containerd, kubelet, kube-proxy, kube-scheduler, CNI);
these tests run pods from images built here (tests/fixtures/tinyhttp.c, the pause image) and check
what a kubelet, a scheduler and kube-proxy do for real. The last test starts and stops a cluster of
its own through the command line and checks that `stop` leaves nothing behind on the host.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from e2e import node, podnet, processes, sandboximage, toolchain
from e2e.localcluster import LocalCluster
from tests.test_localcluster import eventually

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cluster


def _http_get(url: str) -> str | None:
    """The body of a GET, or None while nothing answers (for polling)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _pod(name: str, image: str, **container: object) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name=name, image=image, image_pull_policy="Never", **container)],
            termination_grace_period_seconds=2,
        ),
    )


def _ready(core: client.CoreV1Api, name: str, namespace: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return pod if conditions.get("Ready") == "True" else None


def test_node_is_ready_untainted_and_advertises_a_gpu(local_cluster: LocalCluster, kube_api: client.ApiClient) -> None:
    found = client.CoreV1Api(kube_api).read_node(node.NODE_NAME)
    assert {c.type: c.status for c in found.status.conditions}["Ready"] == "True"
    assert not [t.key for t in found.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]
    assert found.status.node_info.kubelet_version == toolchain.KUBERNETES_VERSION
    assert found.status.node_info.container_runtime_version.startswith("containerd://")
    assert local_cluster.network is not None
    assert {a.type: a.address for a in found.status.addresses}["InternalIP"] == local_cluster.network.node_ip
    assert found.status.capacity["nvidia.com/gpu"] == "1"
    assert found.status.allocatable["nvidia.com/gpu"] == "1"


def test_probe_makes_a_pod_ready_and_logs_exec_and_its_service_work(
    local_cluster: LocalCluster, kube_api: client.ApiClient, k8s_namespace: str, tinyhttp_image: str
) -> None:
    core = client.CoreV1Api(kube_api)
    probe = client.V1Probe(http_get=client.V1HTTPGetAction(path="/healthz", port=8080), period_seconds=1)
    core.create_namespaced_pod(
        k8s_namespace, _pod("web", tinyhttp_image, args=["serve", "8080"], readiness_probe=probe)
    )
    service = core.create_namespaced_service(
        k8s_namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
        ),
    )

    pod = eventually(lambda: _ready(core, "web", k8s_namespace), "the readiness probe to make the pod Ready", 120)

    network = local_cluster.network
    assert network is not None
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(network.pod_cidr)
    assert _http_get(f"http://{pod.status.pod_ip}:8080/") == "hello from web\n"
    assert "GET /healthz" in local_cluster.kubectl("logs", "web", "-n", k8s_namespace)
    assert local_cluster.kubectl("exec", "web", "-n", k8s_namespace, "--", "/tinyhttp", "hostname") == "web\n"
    cluster_ip = service.spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(network.service_cidr)
    # kube-proxy programs the Service once the EndpointSlice lists the Ready pod.
    answer = eventually(lambda: _http_get(f"http://{cluster_ip}/"), "kube-proxy to route the ClusterIP to the pod")
    assert answer == "hello from web\n"


def test_a_pod_requesting_a_gpu_schedules_and_one_asking_for_more_waits(
    local_cluster: LocalCluster, kube_api: client.ApiClient, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)

    def wants_gpus(count: int) -> client.V1ResourceRequirements:
        return client.V1ResourceRequirements(limits={"nvidia.com/gpu": str(count)})

    core.create_namespaced_pod(k8s_namespace, _pod("one-gpu", sandboximage.SANDBOX_IMAGE, resources=wants_gpus(1)))
    core.create_namespaced_pod(k8s_namespace, _pod("two-gpus", sandboximage.SANDBOX_IMAGE, resources=wants_gpus(2)))

    running = eventually(lambda: _ready(core, "one-gpu", k8s_namespace), "the one-GPU pod to run", 120)
    assert running.spec.node_name == node.NODE_NAME

    def unschedulable() -> str | None:
        conditions = core.read_namespaced_pod("two-gpus", k8s_namespace).status.conditions or []
        waiting = [c for c in conditions if c.type == "PodScheduled" and c.reason == "Unschedulable"]
        return waiting[0].message if waiting else None

    assert "Insufficient nvidia.com/gpu" in eventually(unschedulable, "the scheduler to refuse the two-GPU pod")


def _iptables_host() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def test_cli_stop_leaves_no_process_interface_netns_chain_mount_or_cgroup(tmp_path: Path) -> None:
    state = tmp_path / "cli-node"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        script = [sys.executable, str(REPO_ROOT / "e2e" / "localcluster.py"), *args, "--dir", str(state)]
        return subprocess.run(script, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    started = cli("start")
    assert started.returncode == 0, started.stderr
    cluster = LocalCluster(state)
    network, real_node = cluster.network, cluster.node
    assert network is not None
    assert real_node is not None
    # A pod with a Service: a sandbox, a container, a pod network namespace, CNI and kube-proxy rules.
    cluster.kubectl("run", "idle", f"--image={sandboximage.SANDBOX_IMAGE}", "--image-pull-policy=Never", "--port=80")
    cluster.kubectl("expose", "pod", "idle", "--port=80")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/idle", "--timeout=120s")
    assert "KUBE-SERVICES" in network.exec("iptables-save")
    components = {pid for pid in cluster.pids().values() if pid is not None}
    shims, containers = set(real_node.shims()), real_node.pod_pids()
    assert shims, "the pod's shim was running"
    assert containers, "the pod's processes were running"

    stopped = cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert cli("status").returncode == 3
    # Exited processes may linger as zombies until their parent (init, for shims and containers) reaps them.
    assert [pid for pid in components | shims | containers if processes.is_alive(pid)] == []
    assert real_node.leftovers() == []
    assert podnet.leftovers(network.name) == []
    host_routes = json.loads(subprocess.run(["ip", "-json", "route"], capture_output=True, text=True).stdout)
    block = ipaddress.ip_network(network.block)
    assert [r for r in host_routes if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).overlaps(block)] == []
    host_rules = _iptables_host()
    assert network.block.rsplit(".", 2)[0] + "." not in host_rules
    assert "KUBE-" not in host_rules
    assert "CNI-" not in host_rules
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(state) in line]
