"""The operator's only conversation with the Kubernetes API (besides kopf's own watches).

Synchronous `kubernetes` client calls; handlers run them with `asyncio.to_thread`. Children are
written with server-side apply under one field manager: creating, updating and adopting are the
same idempotent call, and an apply that changes nothing is not persisted (no new resourceVersion, so
no watch event and no reconcile loop). Responses are read as raw JSON (camelCase, as on the wire).

Secrets: only their existence is checked, by asking for `PartialObjectMetadata`, so the key material
never leaves the API server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import kubernetes

FIELD_MANAGER: Final = "hybridroute-operator"
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
METADATA_ONLY: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
REQUEST_TIMEOUT_SECONDS: Final = 30


class Cluster:
    """Typed-enough access to the few API calls the operator makes."""

    def __init__(self, api_client: Any) -> None:
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls) -> Cluster:
        """In-cluster service account when running in a pod, else the kubeconfig ($KUBECONFIG)."""
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(kubernetes.client.ApiClient())

    # ---- children -------------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply a Deployment, Service or ConfigMap; returns the live object (with status).

        `force` takes fields back from other managers (someone edited our child); without it a
        field owned by someone else is a 409 Conflict, which is how an object we never created is
        left alone.
        """
        appliers = {
            ("apps/v1", "Deployment"): self._apps.patch_namespaced_deployment,
            ("v1", "Service"): self._core.patch_namespaced_service,
            ("v1", "ConfigMap"): self._core.patch_namespaced_config_map,
        }
        kind = (manifest["apiVersion"], manifest["kind"])
        metadata = manifest["metadata"]
        response = appliers[kind](
            metadata["name"],
            metadata["namespace"],
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=force,
            _content_type=APPLY_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
        return _json(response)

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read_or_none(self._core.read_namespaced_config_map, namespace, name)

    # ---- secrets: existence only ----------------------------------------------------------------

    def secret_exists(self, namespace: str, name: str) -> bool:
        """True when the Secret exists. Asks for metadata only, so no key material is transferred."""
        found = self._read_or_none(
            self._core.read_namespaced_secret, namespace, name, _headers={"Accept": METADATA_ONLY}
        )
        return found is not None

    # ---- custom resources: status only ----------------------------------------------------------

    def patch_status(
        self, *, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the status subresource; spec and metadata are never written."""
        try:
            self._custom.patch_namespaced_custom_object_status(
                group,
                version,
                namespace,
                plural,
                name,
                {"status": dict(status)},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    # ---- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _read_or_none(read: Any, namespace: str, name: str, **options: Any) -> dict[str, Any] | None:
        try:
            response = read(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS, **options
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)


def _json(response: Any) -> dict[str, Any]:
    document = json.loads(response.data)
    if not isinstance(document, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(document).__name__}")
    return document
