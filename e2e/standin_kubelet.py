"""The one stand-in: a fake node, for hardware that cannot exist here, and a "kubelet" that reports pods Ready.

Why: the local cluster has a real node (e2e/node.py) that runs every pod whose image exists here,
but it cannot be a node with a given GPU product (say `nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB`),
and a vLLM server cannot run without a GPU. For the operator's managed GPU pools, this module does
the two things a scheduler and a kubelet on such a node would do, through the same API calls they
use, and nothing else:

- `register_node`: create a Node with the labels and extended resources of a GPU node (say
  `nvidia.com/gpu: "1"`) and report it Ready through the `nodes/status` subresource;
- `mark_pods_ready`: bind pending pods to that node (`pods/binding`, as the scheduler does) unless the
  real scheduler already has, report them Running and Ready through `pods/status` (as a kubelet
  does), and finish graceful deletions of pods on the node (as a kubelet does once containers exit).
  The real ReplicaSet and Deployment controllers then compute readyReplicas and availableReplicas.

No container runs, so nothing listens on the pod IPs. Nothing renews this node's lease: with the
node-lifecycle controllers on (a cluster with a real node), it is marked unreachable after their
grace period (about 50 s), which is fine for a test that checks readiness at once. The demo, which
starts its cluster without a real node, keeps those controllers off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

# What an ordinary node offers besides the caller's extended resources (GPUs).
_BASE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
_NODE_IP = "127.0.0.1"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, now: str) -> dict[str, str]:
    return {"type": kind, "status": "True", "lastTransitionTime": now}


def _pod_ip(uid: str) -> str:
    """A stable, non-loopback address per pod: EndpointSlices refuse loopback endpoints."""
    digest = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:2], "big")
    return f"10.244.{digest >> 8}.{(digest & 0xFF) or 1}"


def register_node(
    api: client.ApiClient, name: str, labels: Mapping[str, str] | None = None, capacity: Mapping[str, str] | None = None
) -> None:
    """Create (or refresh) Node `name` with `labels` and `capacity`, Ready and untainted."""
    core = client.CoreV1Api(api)
    node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    node_labels.update(labels or {})
    try:
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=node_labels)))
    except ApiException as exc:
        if exc.status != HTTPStatus.CONFLICT:
            raise
        core.patch_node(name, {"metadata": {"labels": node_labels}})
    # The TaintNodesByCondition admission plugin marks a new node not-ready; a kubelet's first Ready
    # report makes the node-lifecycle controller lift that taint, which is off here, so lift it directly.
    core.patch_node(name, {"spec": {"taints": None}})
    resources = {**_BASE_CAPACITY, **(capacity or {})}
    now = _now()
    status = {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": _NODE_IP}, {"type": "Hostname", "address": name}],
        "conditions": [{**_condition("Ready", now), "reason": "KubeletReady", "lastHeartbeatTime": now}],
        "nodeInfo": {"kubeletVersion": "standin", "operatingSystem": "linux", "architecture": "amd64"},
    }
    core.patch_node_status(name, {"status": status})


def _running_status(pod: Mapping[str, Any], node_ip: str, now: str) -> dict[str, Any]:
    uid = pod["metadata"]["uid"]
    containers = [
        {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"containerd://standin-{uid}-{container['name']}",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": now}},
        }
        for container in pod["spec"]["containers"]
    ]
    init_containers = [
        {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        }
        for container in pod["spec"].get("initContainers", [])
    ]
    return {
        "phase": "Running",
        "hostIP": node_ip,
        "podIP": _pod_ip(uid),
        "startTime": now,
        "conditions": [_condition(kind, now) for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": containers,
        "initContainerStatuses": init_containers,
    }


def mark_pods_ready(api: client.ApiClient, namespace: str, label_selector: str, node: str) -> list[str]:
    """Bind the selected pods to `node` and report them Ready; return the names of the pods now Ready.

    Pods already bound to another node are left alone. Pods being deleted on `node` are removed for
    good, as their kubelet would once the containers stopped.
    """
    core = client.CoreV1Api(api)
    ready: list[str] = []
    now = _now()
    # Plain JSON rather than the generated models: the status patch below is built from the same shape.
    listing = core.list_namespaced_pod(namespace, label_selector=label_selector, _preload_content=False)
    # With _preload_content=False the call returns the raw HTTP response, not the typed V1PodList.
    for pod in json.loads(listing.data)["items"]:  # type: ignore[attr-defined]
        name: str = pod["metadata"]["name"]
        bound_to = pod["spec"].get("nodeName")
        if bound_to not in (None, node):
            continue
        if pod["metadata"].get("deletionTimestamp"):
            if bound_to == node:
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            continue
        if bound_to is None:
            binding = client.V1Binding(
                metadata=client.V1ObjectMeta(name=name),
                target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
            )
            try:
                # The generated client cannot parse the Status this call returns; the raw response is enough.
                core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)
            except ApiException as exc:
                # The real kube-scheduler may bind the pod first (to this node too: it fits here).
                if exc.status != HTTPStatus.CONFLICT:
                    raise
                if core.read_namespaced_pod(name, namespace).spec.node_name != node:
                    continue
        core.patch_namespaced_pod_status(name, namespace, {"status": _running_status(pod, _NODE_IP, now)})
        ready.append(name)
    return ready
