"""The operator's only conversation with the Kubernetes API (besides kopf's own watches).

Synchronous `kubernetes` client calls; handlers run them with `asyncio.to_thread`. Children are
written with server-side apply under one field manager: creating and updating are the same
idempotent call, and an apply that changes nothing is not persisted (no new resourceVersion, so no
watch event and no reconcile loop). Responses are read as raw JSON (camelCase, as on the wire).

Ownership: `claim` reads a child's metadata first and refuses (`OwnershipConflict`) an object of the
same name that our resource does not control, so nothing is ever adopted, and therefore nothing the
operator did not create is ever garbage-collected with our resources. Applies do not force: a field
someone else manages is a 409 the caller reports. The one exception is a policy's own ConfigMap,
whose content must reach the routers (see `apply_config_map`).

Secrets: only their existence is checked, and only their names are watched, by asking for
`PartialObjectMetadata`, so the key material never leaves the API server. Where the operator has no
grant on Secrets (the chart grants it namespace by namespace), a 403 means "not checked".
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any, Final

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from hybridroute_operator import ownership

FIELD_MANAGER: Final = "hybridroute-operator"
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
METADATA_ONLY: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
REQUEST_TIMEOUT_SECONDS: Final = 30
CONFIG_MAP_APPLY_ATTEMPTS: Final = 3
"""A policy's ConfigMap changed between its claim and its apply this many times in a row: give up for now."""
APPLY_ATTEMPTS: Final = 3
"""A pool child changed between its claim and its pinned apply this many times in a row: report it (next pass)."""


class OwnershipConflict(Exception):
    """An object with a child's name exists and our resource does not control it (message says whose)."""


class SecretsNotPermitted(Exception):
    """The operator may not read Secrets in this namespace (no RoleBinding to the secret-check role)."""


class NotWritable(Exception):
    """Our own child refuses the change and only a person can undo why (message says what to do)."""


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

    def claim(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live metadata of a child about to be applied (None: absent); raises OwnershipConflict.

        Checked for every child before any of them is written, so a conflict leaves nothing half done.
        """
        live = self._claimed(manifest, whole=False)
        return None if live is None else dict(live.get("metadata") or {})

    def _claimed(self, manifest: Mapping[str, Any], *, whole: bool) -> dict[str, Any] | None:
        """The live child (metadata only unless `whole`), None when absent; raises OwnershipConflict."""
        metadata = manifest["metadata"]
        readers = {
            ("apps/v1", "Deployment"): self._apps.read_namespaced_deployment,
            ("v1", "Service"): self._core.read_namespaced_service,
            ("v1", "ConfigMap"): self._core.read_namespaced_config_map,
        }
        read = readers[(manifest["apiVersion"], manifest["kind"])]
        options = {} if whole else {"_headers": {"Accept": METADATA_ONLY}}
        live = self._read_or_none(read, metadata["namespace"], metadata["name"], **options)
        conflict = ownership.claim_conflict(None if live is None else live.get("metadata") or {}, manifest)
        if conflict is not None:
            raise OwnershipConflict(conflict)
        return live

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply a child we own, without force; returns the live object.

        Claimed again right before the write, and the write is pinned to the resourceVersion that
        claim read: an object whose controller reference someone removed between the check and the
        write is a 409, claimed once more (and then refused), never written back to us. A status
        update in between (the Deployment controller's) is the same 409 and just claims again.

        A field someone else manages is a 409 Conflict (`ownership.field_conflicts` reads it): the
        operator reports it rather than taking the field. A conflict with nobody but the operator
        itself (its own update that scaled a former pool to 0, `stop_pool`) takes nothing from anyone:
        that apply is forced.
        """
        attempts_left = APPLY_ATTEMPTS
        while True:
            live = self._claimed(manifest, whole=False)
            pinned = manifest if live is None else _pinned(manifest, live["metadata"]["resourceVersion"])
            try:
                return self._apply_unless_others_hold_fields(pinned)
            except ApiException as exc:
                attempts_left -= 1
                changed_since_claim = exc.status == HTTPStatus.CONFLICT and not ownership.conflict_managers(exc.body)
                if not changed_since_claim or not attempts_left:
                    raise

    def _apply_unless_others_hold_fields(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._apply(manifest, force=False)
        except ApiException as exc:
            if exc.status == HTTPStatus.CONFLICT and ownership.conflict_managers(exc.body) == {FIELD_MANAGER}:
                return self._apply(manifest, force=True)
            raise

    def stop_pool(self, namespace: str, name: str, owner_uid: str) -> bool:
        """Scale the pool Deployment of an endpoint that no longer runs a pool to 0; True when it did.

        Only a Deployment whose controller reference is this endpoint, by uid: a team's object of the
        same name is never touched. The patch is pinned to the resourceVersion just read, so a
        Deployment changed in between is left for the next pass. Nothing is deleted (the operator has
        no delete right): the Deployment and its Service go with the endpoint, through the garbage
        collector, or run again if the endpoint becomes a managed pool once more.
        """
        live = self._read_or_none(self._apps.read_namespaced_deployment, namespace, name)
        if live is None or not ownership.controlled_by_uid(live.get("metadata") or {}, owner_uid):
            return False
        if (live.get("spec") or {}).get("replicas") == 0:
            return False
        patch = {"metadata": {"resourceVersion": live["metadata"]["resourceVersion"]}, "spec": {"replicas": 0}}
        try:
            self._apps.patch_namespaced_deployment(
                name,
                namespace,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status in (HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT):
                return False  # gone already, or changed since the read: the next pass decides again
            raise
        return True

    def apply_config_map(self, manifest: Mapping[str, Any]) -> list[str]:
        """Publish a policy's ConfigMap; returns the managers whose hand edit of its content it overwrote.

        Claimed first, like every child. When it exists and is ours, the apply is forced: a hand edit
        (another field manager on `data`) would otherwise 409 every later apply, and a policy change,
        a privacy-tightening one included, would never reach the routers. Content the compiler does
        not render (extra keys, any `binaryData`) is removed, so the routers read exactly the compiled
        config. Every write carries the resourceVersion it claimed, so an object replaced in between
        is a 409, never taken over.
        """
        attempts_left = CONFIG_MAP_APPLY_ATTEMPTS
        while True:
            try:
                return self._publish_config_map(manifest)
            except ApiException as exc:
                # Changed between the claim and the apply (a hand edit landing, say): claim it again.
                attempts_left -= 1
                if exc.status != HTTPStatus.CONFLICT or not attempts_left:
                    raise

    def _publish_config_map(self, manifest: Mapping[str, Any]) -> list[str]:
        live = self._claimed(manifest, whole=True)
        if live is None:
            self._apply(manifest, force=False)
            return []
        live_metadata = live["metadata"]
        version = live_metadata["resourceVersion"]
        strays = ownership.stray_content(live, manifest)
        if live.get("immutable") and (strays is not None or live.get("data") != manifest.get("data")):
            # Set by hand; the API refuses every content change from now on and never lets it be unset.
            who = ", ".join(ownership.managers_of(live_metadata, ("f:immutable",), FIELD_MANAGER)) or "someone"
            name = manifest["metadata"]["name"]
            raise NotWritable(
                f"ConfigMap {name} is immutable (set by {who}), so the compiled config cannot reach it; "
                "delete the ConfigMap and the operator writes it again"
            )
        if strays is not None:
            # Keys nobody renders (added by hand, or the config moved to binaryData, which would make
            # the compiled `data` key a duplicate the API refuses): a forced apply keeps fields it
            # does not set, so they are removed first, at the version just claimed.
            patch = {**strays, "metadata": {"resourceVersion": version}}
            metadata = manifest["metadata"]
            response = self._core.patch_namespaced_config_map(
                metadata["name"],
                metadata["namespace"],
                patch,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            version = _json(response)["metadata"]["resourceVersion"]
        self._apply(_pinned(manifest, version), force=True)
        return ownership.hand_editors(live_metadata, FIELD_MANAGER)

    def _apply(self, manifest: Mapping[str, Any], *, force: bool) -> dict[str, Any]:
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

    # ---- secrets: metadata only, where granted --------------------------------------------------

    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret's metadata (None: absent); raises SecretsNotPermitted where the operator may not
        read Secrets there (403).

        Asks for metadata only, so no key material is transferred. (Whatever the client asks for,
        an RBAC grant on Secrets would let it read their data: the chart grants it per namespace.)
        """
        try:
            found = self._read_or_none(
                self._core.read_namespaced_secret, namespace, name, _headers={"Accept": METADATA_ONLY}
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 403:
                raise SecretsNotPermitted(namespace) from None
            raise
        return None if found is None else dict(found.get("metadata") or {})

    def secret_names(self, namespace: str, *, watch_seconds: int) -> Iterator[str]:
        """Names of the namespace's Secrets: every one listed, then each one added, changed or deleted.

        Metadata only (a list, then a watch from its resourceVersion), for about `watch_seconds`;
        it returns when the watch ends or expires (410 Gone), and the caller starts it again.
        Raises ApiException (403 where the operator may not list Secrets).
        """
        listed = _json(
            self._core.list_namespaced_secret(
                namespace,
                _headers={"Accept": METADATA_LIST},
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        )
        for item in listed.get("items") or []:
            yield str(item["metadata"]["name"])
        version = listed["metadata"]["resourceVersion"]
        response: Any = self._core.list_namespaced_secret(
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=watch_seconds,
            _headers={"Accept": METADATA_ONLY},
            _preload_content=False,
            _request_timeout=(REQUEST_TIMEOUT_SECONDS, watch_seconds + REQUEST_TIMEOUT_SECONDS),
        )
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                if event.get("type") == "ERROR":  # 410 Gone: the caller lists again
                    return
                if event.get("type") != "BOOKMARK":
                    yield str(event["object"]["metadata"]["name"])
        finally:
            response.release_conn()

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


def _pinned(manifest: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
    """`manifest` as a write that the API server refuses (409) unless the object is still at that version."""
    return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": resource_version}}


def _json(response: Any) -> dict[str, Any]:
    document = json.loads(response.data)
    if not isinstance(document, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(document).__name__}")
    return document
