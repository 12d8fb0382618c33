"""Which keys a Secret holds, read from its metadata alone (managedFields), never from its data. Pure.

The operator asks for Secret metadata only, and metadata lists no keys. But every writer's
managedFields entry names the fields it set, `f:data` / `f:stringData` keys included (names, no
values), so together they name the keys the Secret holds. Where an object carries no managedFields
(cleared, or written before the API server tracked them), nothing is known and nothing is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTENT_FIELDS = ("f:data", "f:stringData")


def known_keys(metadata: Mapping[str, Any]) -> frozenset[str] | None:
    """The Secret's keys as its writers' managedFields name them; None when there are no such records."""
    entries = [entry for entry in metadata.get("managedFields") or [] if entry.get("fieldsV1")]
    if not entries:
        return None
    keys: set[str] = set()
    for entry in entries:
        for section in CONTENT_FIELDS:
            keys.update(name[2:] for name in entry["fieldsV1"].get(section) or {} if name.startswith("f:"))
    return frozenset(keys)


def holds_key(metadata: Mapping[str, Any], key: str) -> bool | None:
    """Whether the Secret holds `key`, as far as its metadata tells (None: it does not tell)."""
    keys = known_keys(metadata)
    return None if keys is None else key in keys
