"""Which objects the operator may write: the children it created, never anything else. Pure, no I/O.

A child (a managed pool's Deployment and Service, a policy's ConfigMap) is ours when its controller
ownerReference points at the very custom resource, by uid, that renders it. Anything else with the
same name is someone else's: a team's Service, a ConfigMap made by hand, or the child of an earlier
object of the same name that the garbage collector has not removed yet. The operator refuses those
(`claim_conflict`) instead of taking them over, because a controller reference it added would make
the garbage collector delete the object with our resource.

Server-side apply's 409 answers are summarised here too (`field_conflicts`), as are the hand edits
of our own objects that a forced apply is about to overwrite (`hand_editors`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

DATA_FIELDS = ("f:data", "f:binaryData")
"""The managedFields entries that carry a ConfigMap's content."""


def controller_reference(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The controller ownerReference a rendered child carries (every child renders exactly one)."""
    references = (manifest.get("metadata") or {}).get("ownerReferences") or []
    for reference in references:
        if reference.get("controller"):
            return dict(reference)
    raise ValueError("a rendered child must carry a controller ownerReference")


def claim_conflict(live_metadata: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> str | None:
    """Why the live object may not be written for `desired`, or None when it is absent or ours.

    The message names the object, the resource it would belong to, and who holds it now.
    """
    if live_metadata is None:
        return None
    owner = controller_reference(desired)
    references = live_metadata.get("ownerReferences") or []
    controller = next((reference for reference in references if reference.get("controller")), None)
    if controller is not None and controller.get("uid") == owner["uid"]:
        return None
    what = f"{desired['kind']} {desired['metadata']['name']}"
    mine = f"{owner['kind']} {owner['name']}"
    if controller is None:
        holder = "it has no controller (created by someone else)"
    elif (controller.get("kind"), controller.get("name")) == (owner["kind"], owner["name"]):
        holder = f"it belongs to an earlier {mine} (uid {controller.get('uid')}), awaiting garbage collection"
    else:
        holder = f"it is controlled by {controller.get('kind')} {controller.get('name')}"
    return f"{what} exists and is not owned by {mine}: {holder}; it is left untouched"


def controlled_by(live_metadata: Mapping[str, Any], kind: str, name: str) -> bool:
    """Whether the object's controller ownerReference names `kind`/`name` (uid not known to the caller)."""
    references = live_metadata.get("ownerReferences") or []
    controller = next((reference for reference in references if reference.get("controller")), None)
    return controller is not None and (controller.get("kind"), controller.get("name")) == (kind, name)


def hand_editors(live_metadata: Mapping[str, Any] | None, our_manager: str) -> list[str]:
    """Field managers other than ours that own a ConfigMap's content: someone edited it by hand."""
    if live_metadata is None:
        return []
    editors = set()
    for entry in live_metadata.get("managedFields") or []:
        if entry.get("manager") == our_manager:
            continue
        fields = entry.get("fieldsV1") or {}
        if any(fields.get(key) for key in DATA_FIELDS):
            editors.add(str(entry.get("manager") or "unknown"))
    return sorted(editors)


def field_conflicts(body: str | bytes | None) -> str:
    """A 409 from server-side apply, as "FIELD (held by MANAGER)" parts; the causes the API returned."""
    try:
        status = json.loads(body or b"{}")
    except ValueError:
        return "fields managed by someone else"
    causes: Sequence[Mapping[str, Any]] = ((status.get("details") or {}).get("causes")) or []
    parts = [_cause(cause) for cause in causes if cause.get("field") or cause.get("message")]
    return "; ".join(parts) if parts else str(status.get("message") or "fields managed by someone else")


def _cause(cause: Mapping[str, Any]) -> str:
    message = str(cause.get("message") or "")
    # API wording: `conflict with "kubectl-edit" using v1: .spec.selector`
    manager = message.split('"')[1] if message.count('"') >= 2 else "another manager"
    return f"{cause.get('field') or message} (held by {manager})"
