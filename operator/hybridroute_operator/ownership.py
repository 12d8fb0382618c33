"""Which objects the operator may write: the children it created, never anything else. Pure, no I/O.

A child (a managed pool's Deployment and Service, a policy's ConfigMap) is ours when its controller
ownerReference points at the very custom resource, by uid, that renders it. Anything else with the
same name is someone else's: a team's Service, a ConfigMap made by hand, or the child of an earlier
object of the same name that the garbage collector has not removed yet. The operator refuses those
(`claim_conflict`) instead of taking them over, because a controller reference it added would make
the garbage collector delete the object with our resource.

Server-side apply's 409 answers are summarised here too (`field_conflicts`), as are the hand edits
of our own objects that a forced apply is about to overwrite (`hand_editors`) and the content of a
policy's ConfigMap the compiler does not render (`stray_content`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

DATA_SECTIONS = ("data", "binaryData")
"""A ConfigMap's content."""
DATA_FIELDS = tuple(f"f:{section}" for section in DATA_SECTIONS)
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


def controlled_by_uid(live_metadata: Mapping[str, Any], uid: str) -> bool:
    """Whether the object's controller ownerReference is the resource with this uid."""
    references = live_metadata.get("ownerReferences") or []
    controller = next((reference for reference in references if reference.get("controller")), None)
    return controller is not None and controller.get("uid") == uid


def hand_editors(live_metadata: Mapping[str, Any] | None, our_manager: str) -> list[str]:
    """Field managers other than ours that own a ConfigMap's content: someone edited it by hand."""
    # a map field counts when the manager owns something in it (an emptied entry is not an edit)
    return managers_of(live_metadata, DATA_FIELDS, our_manager, within=True)


def managers_of(
    live_metadata: Mapping[str, Any] | None, fields: Sequence[str], our_manager: str, *, within: bool = False
) -> list[str]:
    """Field managers other than ours that own any of the top-level `fields` (fieldsV1 names: f:immutable),
    or, `within`, anything inside them."""
    if live_metadata is None:
        return []
    editors = set()
    for entry in live_metadata.get("managedFields") or []:
        if entry.get("manager") == our_manager:
            continue
        owned = entry.get("fieldsV1") or {}
        if any(owned[field] if within else True for field in fields if field in owned):
            editors.add(str(entry.get("manager") or "unknown"))
    return sorted(editors)


def stray_content(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch removing the ConfigMap content `desired` does not render, or None if none.

    Keys someone added to `data`, and every `binaryData` key (the compiler renders none; a key there
    may also shadow a `data` key, which the API refuses to hold twice).
    """
    patch: dict[str, Any] = {}
    for section in DATA_SECTIONS:
        extra = sorted(set(live.get(section) or {}) - set(desired.get(section) or {}))
        if extra:
            patch[section] = dict.fromkeys(extra)
    return patch or None


def field_conflicts(body: str | bytes | None) -> str:
    """A 409 from server-side apply, as "FIELD (held by MANAGER)" parts; the causes the API returned."""
    try:
        status = json.loads(body or b"{}")
    except ValueError:
        return "fields managed by someone else"
    causes: Sequence[Mapping[str, Any]] = ((status.get("details") or {}).get("causes")) or []
    parts = [_cause(cause) for cause in causes if cause.get("field") or cause.get("message")]
    return "; ".join(parts) if parts else str(status.get("message") or "fields managed by someone else")


def conflict_managers(body: str | bytes | None) -> set[str]:
    """The field managers a 409 from server-side apply names (empty when it names none)."""
    try:
        status = json.loads(body or b"{}")
    except ValueError:
        return set()
    causes: Sequence[Mapping[str, Any]] = ((status.get("details") or {}).get("causes")) or []
    return {manager for cause in causes if (manager := _manager(cause)) is not None}


def _cause(cause: Mapping[str, Any]) -> str:
    message = str(cause.get("message") or "")
    return f"{cause.get('field') or message} (held by {_manager(cause) or 'another manager'})"


def _manager(cause: Mapping[str, Any]) -> str | None:
    message = str(cause.get("message") or "")
    # API wording: `conflict with "kubectl-edit" using v1: .spec.selector`
    return message.split('"')[1] if message.count('"') >= 2 else None
