"""Manifests for a managed local pool: the Deployment and Service an InferenceEndpoint owns.

Pure functions from the typed spec to plain dicts; no I/O, no string templating of manifests.
Each model server gets its own launch recipe (arguments, environment, readiness probe), and the pod
template carries a hash of itself so any spec change that alters the pods rolls the Deployment.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from hybridroute_operator.api import API_VERSION, ENDPOINT_KIND, LocalSpec

MANAGED_BY: Final = "hybridroute"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
ENDPOINT_LABEL: Final = "hybridroute.io/endpoint"
SPEC_HASH_ANNOTATION: Final = "hybridroute.io/spec-hash"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
CONTAINER_NAME: Final = "server"
PORT_NAME: Final = "http"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The custom resource that children belong to (garbage collection follows its uid)."""

    name: str
    namespace: str
    uid: str
    kind: str = ENDPOINT_KIND

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ManagedPool:
    deployment: Manifest
    service: Manifest
    url: str
    """Cluster-local OpenAI-compatible base URL of the Service."""


@dataclass(frozen=True)
class Launch:
    """How one model server is started and judged ready."""

    args: list[str]
    readiness: dict[str, Any]
    env: list[dict[str, str]] = field(default_factory=list)
    lifecycle: dict[str, Any] | None = None
    volumes: dict[str, str] = field(default_factory=dict)
    """emptyDir volumes: name -> mount path (model caches, shared memory)."""


def selector_labels(endpoint_name: str) -> dict[str, str]:
    """The Deployment's selector: stable for the pool's life (a selector cannot change)."""
    return {ENDPOINT_LABEL: endpoint_name, MANAGED_BY_LABEL: MANAGED_BY}


def pool_labels(endpoint_name: str, server: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": server,
        "app.kubernetes.io/instance": endpoint_name,
        "app.kubernetes.io/component": "model-server",
        **selector_labels(endpoint_name),
    }


def service_url(name: str, namespace: str, port: int) -> str:
    """Cluster-local base URL (OpenAI-compatible, including /v1) of a pool's Service."""
    return f"http://{name}.{namespace}.svc:{port}/v1"


def content_hash(document: Any) -> str:
    """Short, stable hash of a JSON-serializable document (sorted keys)."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def managed_pool(owner: Owner, local: LocalSpec) -> ManagedPool:
    """Deployment + Service for a managed pool (`local.server` set)."""
    server, image, port = local.server, local.effective_image(), local.effective_port()
    if server is None or image is None or port is None:
        raise ValueError("managed_pool needs spec.local.server (an existing server has no pool)")
    labels = pool_labels(owner.name, server)
    metadata = {
        "name": owner.name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }
    template = _pod_template(local, server=server, image=image, port=port, labels=labels)
    gpu_pool = local.gpu.count > 0
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": local.replicas,
            "selector": {"matchLabels": selector_labels(owner.name)},
            # GPUs are scarce: surging a new pod next to the old one would wait for a GPU that only
            # frees up when the old pod goes, so GPU pools replace pods one at a time instead (the
            # routers fail over meanwhile). CPU pools surge as usual.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}
                if gpu_pool
                else {"maxSurge": "25%", "maxUnavailable": 0},
            },
            # Model downloads and loading take long; give the rollout time before calling it stuck.
            "progressDeadlineSeconds": 1800,
            "template": template,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
    return ManagedPool(deployment=deployment, service=service, url=service_url(owner.name, owner.namespace, port))


def _pod_template(local: LocalSpec, *, server: str, image: str, port: int, labels: dict[str, str]) -> Manifest:
    launch = LAUNCHERS[server](local, port)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "args": [*launch.args, *local.extra_args],
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": launch.readiness,
        "resources": _resources(local),
    }
    if launch.env:
        container["env"] = launch.env
    if launch.lifecycle:
        container["lifecycle"] = launch.lifecycle
    if launch.volumes:
        container["volumeMounts"] = [{"name": name, "mountPath": path} for name, path in launch.volumes.items()]
    pod_spec: dict[str, Any] = {"containers": [container]}
    if launch.volumes:
        pod_spec["volumes"] = [_empty_dir(name) for name in launch.volumes]
    node_selector = _node_selector(local)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(local)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "metadata": {"labels": labels, "annotations": {SPEC_HASH_ANNOTATION: content_hash(pod_spec)}},
        "spec": pod_spec,
    }


def _resources(local: LocalSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if local.resources is not None:
        for target, amounts in ((requests, local.resources.requests), (limits, local.resources.limits)):
            if amounts is not None:
                target.update(amounts.model_dump(exclude_none=True))
    if local.gpu.count > 0:
        # Extended resources are requested through limits; the API server copies them to requests.
        limits[local.gpu.resource_name] = local.gpu.count
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _node_selector(local: LocalSpec) -> dict[str, str]:
    selector = dict(local.node_selector)
    if local.gpu.count > 0 and local.gpu.product:
        selector[GPU_PRODUCT_LABEL] = local.gpu.product
    return selector


def _tolerations(local: LocalSpec) -> list[dict[str, Any]]:
    tolerations = [toleration.model_dump(by_alias=True, exclude_none=True) for toleration in local.tolerations]
    if local.gpu.count > 0:
        # GPU node pools are commonly tainted with the GPU resource name (what the
        # ExtendedResourceToleration admission plugin would add where it is enabled).
        implied = {"key": local.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
        if implied not in tolerations:
            tolerations.append(implied)
    return tolerations


def _empty_dir(name: str) -> dict[str, Any]:
    # /dev/shm must be RAM-backed for the tensor-parallel workers of vLLM.
    return {"name": name, "emptyDir": {"medium": "Memory"} if name == "dshm" else {}}


def _http_probe(path: str) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def _vllm(local: LocalSpec, port: int) -> Launch:
    args = ["--model", local.model, "--served-model-name", local.model, "--host", "0.0.0.0", "--port", str(port)]
    if local.quantization:
        args += ["--quantization", local.quantization]
    if local.max_context_tokens:
        args += ["--max-model-len", str(local.max_context_tokens)]
    if local.max_concurrency:
        args += ["--max-num-seqs", str(local.max_concurrency)]
    if local.gpu.count > 1:
        args += ["--tensor-parallel-size", str(local.gpu.count)]
    return Launch(
        args=args,
        readiness=_http_probe("/health"),
        volumes={"hf-cache": "/root/.cache/huggingface", "dshm": "/dev/shm"},
    )


def _ollama(local: LocalSpec, port: int) -> Launch:
    # Ollama picks quantization through the model tag (llama3.1:8b-instruct-q4_K_M), so there is no
    # flag for it. The server starts empty: postStart pulls the model once the API answers, and the
    # readiness probe passes only when the model is present, so traffic waits for the pull.
    env = [{"name": "OLLAMA_HOST", "value": f"0.0.0.0:{port}"}]
    if local.max_context_tokens:
        env.append({"name": "OLLAMA_CONTEXT_LENGTH", "value": str(local.max_context_tokens)})
    if local.max_concurrency:
        env.append({"name": "OLLAMA_NUM_PARALLEL", "value": str(local.max_concurrency)})
    model = shlex.quote(local.model)
    pull = f"until ollama list >/dev/null 2>&1; do sleep 1; done; ollama pull {model}"
    return Launch(
        args=["serve"],
        env=env,
        readiness={
            "exec": {"command": ["ollama", "show", local.model]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        lifecycle={"postStart": {"exec": {"command": ["/bin/sh", "-c", pull]}}},
        volumes={"models": "/root/.ollama"},
    )


def _llamacpp(local: LocalSpec, port: int) -> Launch:
    # The GGUF file fixes the quantization; `-m` takes its path inside the image or a mounted volume.
    args = ["-m", local.model, "--host", "0.0.0.0", "--port", str(port), "--alias", local.model]
    args.append("--metrics")  # /metrics for the routers' saturation signals (scraped by the chart's PodMonitor)
    if local.max_context_tokens:
        args += ["-c", str(local.max_context_tokens)]
    if local.max_concurrency:
        args += ["--parallel", str(local.max_concurrency)]
    if local.gpu.count > 0:
        args += ["--n-gpu-layers", "999"]  # offload every layer to the GPU
    return Launch(args=args, readiness=_http_probe("/health"))


LAUNCHERS: Final = {"vllm": _vllm, "ollama": _ollama, "llamacpp": _llamacpp}
