"""Decides how a Pod gets the router sidecar: a pure function from a Pod dict to a JSONPatch list.

The admission webhook (`webhook.py`) reads the policy's compiled ConfigMap and calls `build_patch`;
this module does no I/O, so every decision is tested without a cluster.

What an injected Pod gets:
- the router as a native sidecar (an init container with `restartPolicy: Always`, Kubernetes 1.29+):
  it starts, and passes its startup probe, before any app container runs, so the app never sees a
  refused connection on 127.0.0.1, and it does not keep a Job's Pod alive after the app exits;
- the policy's ConfigMap mounted read-only and passed as `--config`. A mounted ConfigMap needs no API
  access from the app's ServiceAccount (a ConfigMap watch would need RBAC in every app namespace);
  the price is reload lag: the kubelet refreshes the file within about a minute, and the router's
  file source picks the change up by itself;
- two listeners: the API on 127.0.0.1 (`--host`, always: it spends the pod's cloud keys, so it
  serves its own pod only, never the pod IP), and the operations listener (`--metrics-host`,
  `--metrics-port`, 0.0.0.0:8041 by default) serving only /metrics, /healthz and /readyz, declared as
  the container port `hr-metrics` that the chart's PodMonitor scrapes;
- HTTP probes against that port. With `metrics_address` set to loopback (no scraping wanted), the
  kubelet cannot reach it on the pod IP, so the probes run inside the container (`python -c`);
- every API-key Secret the policy references, as env vars named by `secret_env_name(ref)` (the
  router's key resolution reads exactly those names). They are `optional`, so a missing Secret makes
  that cloud endpoint unusable (the router fails over to local) instead of keeping the Pod from
  starting;
- the audit trail (`audit_enabled`, on by default): an emptyDir volume mounted at
  `/var/lib/hybridroute/audit`, passed as `--audit-file`. An emptyDir lives as long as the Pod, so
  the records survive a restart of the router container (a crash, an OOM kill, a liveness failure);
  its `sizeLimit` is the rotation bound (`audit_max_bytes * (audit_backups + 1)`) plus one file of
  slack, so the kubelet never evicts the Pod for the trail;
- OTLP traces when `otel_traces` is on (off by default): `--otel-traces` and the standard
  `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER(_ARG)` variables;
- `OPENAI_BASE_URL=http://127.0.0.1:PORT/v1` in each app container that does not set it already;
  the annotation `hybridroute.io/inject-skip-containers: a,b` opts containers out.

Idempotent: a Pod that already has the router container (regular or init) yields an empty patch, so
a re-invoked webhook (`reinvocationPolicy: IfNeeded`) or a re-submitted manifest changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hybridroute_router.config import CONFIGMAP_KEY, RouterConfig, SecretKeyRef, secret_env_name

POLICY_LABEL: Final = "hybridroute.io/policy"
SKIP_CONTAINERS_ANNOTATION: Final = "hybridroute.io/inject-skip-containers"
INJECTED_ANNOTATION: Final = "hybridroute.io/injected-policy"
ROUTER_CONTAINER: Final = "hybridroute-router"
CONFIG_VOLUME: Final = "hybridroute-config"
AUDIT_VOLUME: Final = "hybridroute-audit"
AUDIT_MOUNT_PATH: Final = "/var/lib/hybridroute/audit"
AUDIT_FILE: Final = "audit.jsonl"
BASE_URL_ENV: Final = "OPENAI_BASE_URL"
API_ADDRESS: Final = "127.0.0.1"
"""Where the router's API listens in an injected pod: loopback, never configurable."""
# Container port name of the operations listener; the chart's PodMonitor scrapes exactly this name,
# so it must not be a name app containers commonly use ("http", "metrics").
METRICS_PORT_NAME: Final = "hr-metrics"

JsonPatch = list[dict[str, Any]]


def _default_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


@dataclass(frozen=True)
class InjectionSettings:
    """How the router container looks; the chart's `injection.*` values end up here."""

    image: str
    """Router image reference (repository:tag or @digest)."""
    port: int = 8040
    """Port the router serves its OpenAI-compatible API on (127.0.0.1 only)."""
    metrics_port: int = 8041
    """Port of the operations listener: /metrics, /healthz, /readyz (never the API)."""
    metrics_address: str = "0.0.0.0"
    """Address the operations listener binds; 0.0.0.0 lets Prometheus scrape it and the kubelet probe it."""
    image_pull_policy: str = "IfNotPresent"
    config_mount_path: str = "/etc/hybridroute"
    """Directory the policy's ConfigMap is mounted at; the router reads `<path>/config.json`."""
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=_default_resources)
    """Kubernetes resource requests/limits for the router container."""
    audit_enabled: bool = True
    """Write the audit trail (one record per request) to an emptyDir that outlives the container."""
    audit_max_bytes: int = 64 * 1024 * 1024
    """Size at which the audit file is rotated."""
    audit_backups: int = 3
    """Rotated audit files kept."""
    otel_traces: bool = False
    """Export one span per request over OTLP/HTTP."""
    otlp_endpoint: str = ""
    """OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT); empty: the SDK's default, http://localhost:4318."""
    traces_sample_ratio: float = 1.0
    """Share of requests traced (parent-based trace-id ratio sampler)."""


def configmap_name(policy: str) -> str:
    """The compiled config's ConfigMap: named after the RoutingPolicy (DESIGN.md)."""
    return policy


def secret_refs(config: RouterConfig) -> list[SecretKeyRef]:
    """The API-key Secrets a compiled config references, each once, in a stable order."""
    refs = (endpoint.api_key.secret_ref for endpoint in config.endpoints if endpoint.api_key is not None)
    return _unique(ref for ref in refs if ref is not None)


def skipped_containers(pod: Mapping[str, Any]) -> frozenset[str]:
    """Container names listed in the opt-out annotation (comma-separated, blanks ignored)."""
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(SKIP_CONTAINERS_ANNOTATION, "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def is_injected(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec", {})
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(container.get("name") == ROUTER_CONTAINER for container in containers)


def build_patch(
    pod: Mapping[str, Any],
    policy: str,
    secret_refs: Iterable[SecretKeyRef],
    settings: InjectionSettings,
) -> JsonPatch:
    """JSONPatch operations that inject the router for `policy` into `pod`; empty if already injected."""
    if is_injected(pod):
        return []
    spec = pod.get("spec", {})
    patch: JsonPatch = []
    patch += _prepend("/spec/initContainers", spec.get("initContainers"), router_container(secret_refs, settings))
    patch += _append("/spec/volumes", spec.get("volumes"), _config_volume(policy))
    if settings.audit_enabled:
        patch.append({"op": "add", "path": "/spec/volumes/-", "value": _audit_volume(settings)})
    skipped = skipped_containers(pod)
    base_url = {"name": BASE_URL_ENV, "value": f"http://127.0.0.1:{settings.port}/v1"}
    for index, container in enumerate(spec.get("containers") or []):
        if container.get("name") in skipped or _sets_env(container, BASE_URL_ENV):
            continue
        patch += _append(f"/spec/containers/{index}/env", container.get("env"), base_url)
    patch += _set_annotation(pod, INJECTED_ANNOTATION, policy)
    return patch


def router_container(secret_refs: Iterable[SecretKeyRef], settings: InjectionSettings) -> dict[str, Any]:
    """The router as a native sidecar container."""
    loopback_only = settings.metrics_address.startswith("127.") or settings.metrics_address in ("::1", "localhost")

    def probe(path: str, **timing: int) -> dict[str, Any]:
        if not loopback_only:
            return {"httpGet": {"path": path, "port": METRICS_PORT_NAME}, "timeoutSeconds": 3, **timing}
        url = f"http://127.0.0.1:{settings.metrics_port}{path}"
        check = f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"
        return {"exec": {"command": ["python", "-c", check]}, "timeoutSeconds": 3, **timing}

    return {
        "name": ROUTER_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        # Native sidecar: runs for the Pod's whole life, started before the app containers.
        "restartPolicy": "Always",
        "args": [
            f"--config={settings.config_mount_path}/{CONFIGMAP_KEY}",
            f"--host={API_ADDRESS}",
            f"--port={settings.port}",
            f"--metrics-host={settings.metrics_address}",
            f"--metrics-port={settings.metrics_port}",
            *_observability_args(settings),
        ],
        # Only the operations listener is a container port: the API is not reachable from outside the pod.
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"}],
        "env": [*(_secret_env(ref) for ref in _unique(secret_refs)), *_otel_env(settings)],
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": settings.config_mount_path, "readOnly": True},
            *([{"name": AUDIT_VOLUME, "mountPath": AUDIT_MOUNT_PATH}] if settings.audit_enabled else []),
        ],
        "resources": {kind: dict(amounts) for kind, amounts in settings.resources.items()},
        # The app containers start once this passes: a loaded, valid config (not just a live process).
        "startupProbe": probe("/readyz", periodSeconds=1, failureThreshold=60),
        "livenessProbe": probe("/healthz", periodSeconds=30, failureThreshold=3),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _config_volume(policy: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": configmap_name(policy), "items": [_config_item()]}}


def _audit_volume(settings: InjectionSettings) -> dict[str, Any]:
    bound = settings.audit_max_bytes * (settings.audit_backups + 2)  # the trail's bound plus one file of slack
    return {"name": AUDIT_VOLUME, "emptyDir": {"sizeLimit": str(bound)}}


def _observability_args(settings: InjectionSettings) -> list[str]:
    args = []
    if settings.audit_enabled:
        args += [
            f"--audit-file={AUDIT_MOUNT_PATH}/{AUDIT_FILE}",
            f"--audit-max-bytes={settings.audit_max_bytes}",
            f"--audit-backups={settings.audit_backups}",
        ]
    if settings.otel_traces:
        args.append("--otel-traces")
    return args


def _otel_env(settings: InjectionSettings) -> list[dict[str, str]]:
    if not settings.otel_traces:
        return []
    env = [
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": str(settings.traces_sample_ratio)},
    ]
    if settings.otlp_endpoint:
        env.insert(0, {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint})
    return env


def _config_item() -> dict[str, str]:
    return {"key": CONFIGMAP_KEY, "path": CONFIGMAP_KEY}


def _secret_env(ref: SecretKeyRef) -> dict[str, Any]:
    return {
        "name": secret_env_name(ref),
        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": True}},
    }


def _unique(refs: Iterable[SecretKeyRef]) -> list[SecretKeyRef]:
    """Distinct references in a stable order (two endpoints may share one key)."""
    return sorted(set(refs), key=lambda ref: (ref.name, ref.key))


def _sets_env(container: Mapping[str, Any], name: str) -> bool:
    return any(variable.get("name") == name for variable in container.get("env") or [])


def _append(path: str, existing: Sequence[Any] | None, item: Any) -> JsonPatch:
    """Append `item` to the list at `path`, creating the list when the Pod has none."""
    if existing:
        return [{"op": "add", "path": f"{path}/-", "value": item}]
    return [{"op": "add", "path": path, "value": [item]}]


def _prepend(path: str, existing: Sequence[Any] | None, item: Any) -> JsonPatch:
    """Insert `item` first in the list at `path` (a sidecar must start before other init containers)."""
    if existing:
        return [{"op": "add", "path": f"{path}/0", "value": item}]
    return [{"op": "add", "path": path, "value": [item]}]


def _set_annotation(pod: Mapping[str, Any], key: str, value: str) -> JsonPatch:
    if pod.get("metadata", {}).get("annotations"):
        escaped = key.replace("~", "~0").replace("/", "~1")
        return [{"op": "add", "path": f"/metadata/annotations/{escaped}", "value": value}]
    return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
