"""Serves sidecar injection as a kopf mutating admission handler: settings, registration, the handler.

One call from the operator's startup handler, `configure(settings, memo, WebhookSettings...)`, does
everything: it points kopf's webhook server at the mounted TLS certificate, registers the handler
and leaves the webhook *configuration* alone (`settings.admission.managed = None`): the Helm chart
owns the MutatingWebhookConfiguration, so the operator needs no admissionregistration rights and
every replica serves the same certificate (kopf-managed self-signed certificates would differ per
replica). kopf re-reads the certificate files when they change, so cert-manager renewals need no
restart. Registering at startup rather than at import keeps a disabled webhook (or a test that
imports this module) from leaving an admission handler without a server.

Per request, the handler reads the policy's compiled ConfigMap for the API-key Secret references and
lets `injection.build_patch` decide the rest. A Pod naming a policy that has no valid compiled
config is refused with a message saying so; the ReplicaSet controller retries, so Pods appear once
the policy compiles. Admitting it without the router instead would let the app reach a cloud API
directly, bypassing the policy's privacy rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jsonpatch
import kopf

from hybridroute_operator import ownership
from hybridroute_operator.api import POLICY_KIND
from hybridroute_operator.injection import (
    POLICY_LABEL,
    InjectionSettings,
    build_patch,
    configmap_name,
    is_injected,
    secret_refs,
)
from hybridroute_router.config import CONFIGMAP_KEY, ConfigError, SecretKeyRef, parse_config

# kopf serves a handler at /<id>; the chart's webhook clientConfig.service.path is "/inject-router".
WEBHOOK_ID: Final = "inject-router"
MEMO_KEY: Final = "hybridroute_injector"
# The API server shows the message of a refused Pod as "admission webhook ... denied the request".
REFUSED: Final = 403


class ConfigMapReader(Protocol):
    """What the handler needs from the cluster (apply.Cluster provides it)."""

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class WebhookSettings:
    """Where the webhook listens and what it injects; the chart sets these as HYBRIDROUTE_* env vars."""

    cert_dir: Path
    """Directory with tls.crt and tls.key (a mounted kubernetes.io/tls Secret)."""
    injection: InjectionSettings
    port: int = 9443
    listen_address: str = "0.0.0.0"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings | None:
        """Settings from the environment; None when HYBRIDROUTE_WEBHOOK_ENABLED is not true."""
        env = os.environ if environ is None else environ
        if env.get("HYBRIDROUTE_WEBHOOK_ENABLED", "false").strip().lower() != "true":
            return None

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ValueError(f"{name} must be set when HYBRIDROUTE_WEBHOOK_ENABLED=true")
            return value

        defaults = InjectionSettings(image="")
        injection = InjectionSettings(
            image=required("HYBRIDROUTE_ROUTER_IMAGE"),
            port=_int(env, "HYBRIDROUTE_ROUTER_PORT", defaults.port),
            metrics_port=_int(env, "HYBRIDROUTE_ROUTER_METRICS_PORT", defaults.metrics_port),
            metrics_address=env.get("HYBRIDROUTE_ROUTER_METRICS_ADDRESS", defaults.metrics_address),
            image_pull_policy=env.get("HYBRIDROUTE_ROUTER_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            config_mount_path=env.get("HYBRIDROUTE_ROUTER_CONFIG_MOUNT_PATH", defaults.config_mount_path),
            resources=_resources(env.get("HYBRIDROUTE_ROUTER_RESOURCES")) or defaults.resources,
            audit_enabled=_bool(env, "HYBRIDROUTE_ROUTER_AUDIT_ENABLED", defaults.audit_enabled),
            audit_max_bytes=_int(env, "HYBRIDROUTE_ROUTER_AUDIT_MAX_BYTES", defaults.audit_max_bytes),
            audit_backups=_int(env, "HYBRIDROUTE_ROUTER_AUDIT_BACKUPS", defaults.audit_backups),
            otel_traces=_bool(env, "HYBRIDROUTE_ROUTER_OTEL_TRACES", defaults.otel_traces),
            otlp_endpoint=env.get("HYBRIDROUTE_ROUTER_OTLP_ENDPOINT", defaults.otlp_endpoint),
            traces_sample_ratio=_float(env, "HYBRIDROUTE_ROUTER_TRACES_SAMPLE_RATIO", defaults.traces_sample_ratio),
        )
        return cls(
            cert_dir=Path(required("HYBRIDROUTE_WEBHOOK_CERT_DIR")),
            injection=injection,
            port=_int(env, "HYBRIDROUTE_WEBHOOK_PORT", cls.port),
            listen_address=env.get("HYBRIDROUTE_WEBHOOK_LISTEN_ADDRESS", cls.listen_address),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _resources(raw: str | None) -> dict[str, dict[str, str]] | None:
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"HYBRIDROUTE_ROUTER_RESOURCES is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("HYBRIDROUTE_ROUTER_RESOURCES must be a JSON object (requests/limits)")
    return {kind: {name: str(amount) for name, amount in amounts.items()} for kind, amounts in parsed.items()}


@dataclass(frozen=True)
class Injector:
    """Turns an admitted Pod into a body transformation (kopf applies it and diffs the JSONPatch)."""

    settings: InjectionSettings
    configmaps: ConfigMapReader

    def mutation_for(self, pod: Mapping[str, Any]) -> Callable[[kopf.RawBody], None] | None:
        """The transformation for `pod`, or None when it already has the router."""
        if is_injected(pod):
            return None
        metadata = pod.get("metadata", {})
        policy = (metadata.get("labels") or {}).get(POLICY_LABEL, "")
        namespace = metadata.get("namespace") or ""
        refs = self._secret_refs(namespace, policy)

        def mutate(body: kopf.RawBody) -> None:
            # Computed from the body being built, so a second registration of this handler in one
            # operator (tests, a re-run startup) sees the router already there and adds nothing.
            jsonpatch.apply_patch(body, build_patch(body, policy, refs, self.settings), in_place=True)

        return mutate

    def _secret_refs(self, namespace: str, policy: str) -> list[SecretKeyRef]:
        name = configmap_name(policy)
        where = f"RoutingPolicy {namespace}/{policy}"
        try:
            configmap = self.configmaps.read_config_map(namespace, name)
        except Exception as exc:
            # Refused like any other missing config: admitting the Pod without its router would let
            # it bypass the privacy rules. (failurePolicy covers only an unreachable webhook.)
            raise kopf.AdmissionError(f"{where}: reading ConfigMap {name} failed ({type(exc).__name__})") from None
        if configmap is None:
            raise kopf.AdmissionError(
                f"{where} has no compiled router config yet (ConfigMap {name} not found); "
                "check `kubectl get rp` for why, the Pod is admitted once it compiles",
                code=REFUSED,
            )
        if not ownership.controlled_by(configmap.get("metadata") or {}, POLICY_KIND, policy):
            # Only the compiled config is trusted: a ConfigMap someone else made under the policy's
            # name could point the router, and the Pod's API keys, anywhere.
            raise kopf.AdmissionError(
                f"{where}: ConfigMap {name} is not the policy's compiled config (not controlled by it)",
                code=REFUSED,
            )
        document = (configmap.get("data") or {}).get(CONFIGMAP_KEY)
        if document is None:
            raise kopf.AdmissionError(f"{where}: ConfigMap {name} has no {CONFIGMAP_KEY}", code=REFUSED)
        try:
            config = parse_config(document)
        except ConfigError as exc:
            message = f"{where}: ConfigMap {name} is not a valid router config: {exc}"
            raise kopf.AdmissionError(message, code=REFUSED) from None
        return secret_refs(config)


def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    webhook: WebhookSettings | None,
    configmaps: ConfigMapReader,
    registry: kopf.OperatorRegistry | None = None,
) -> None:
    """Serve and register the injection webhook (call from the startup handler); None leaves it off."""
    if webhook is None:
        return
    settings.admission.server = kopf.WebhookServer(
        addr=webhook.listen_address,
        port=webhook.port,
        certfile=str(webhook.cert_dir / "tls.crt"),
        pkeyfile=str(webhook.cert_dir / "tls.key"),
    )
    settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration
    memo[MEMO_KEY] = Injector(webhook.injection, configmaps)
    kopf.on.mutate(
        "pods",
        id=WEBHOOK_ID,
        operations=["CREATE"],
        labels={POLICY_LABEL: kopf.PRESENT},
        registry=registry if registry is not None else kopf.get_default_registry(),
    )(inject_router)


def inject_router(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Admission handler: add the router sidecar to a Pod labelled hybridroute.io/policy."""
    injector = memo[MEMO_KEY]
    if not isinstance(injector, Injector):
        raise kopf.AdmissionError("sidecar injection is not configured in this operator")
    mutation = injector.mutation_for(body)
    if mutation is not None:
        patch.fns.append(mutation)
