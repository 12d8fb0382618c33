"""A Secret's keys from its managedFields alone (issue 11, item 3): names its writers set, no values."""

from __future__ import annotations

from hybridroute_operator.secretkeys import holds_key, known_keys


def entry(manager: str, fields: dict[str, object]) -> dict[str, object]:
    return {"manager": manager, "operation": "Update", "fieldsV1": fields}


def test_keys_are_the_union_of_what_every_writer_set() -> None:
    metadata = {
        "managedFields": [
            entry("kubectl-create", {"f:data": {".": {}, "f:api-key": {}}, "f:type": {}}),
            entry("kubectl-edit", {"f:stringData": {"f:org.id": {}}}),
            entry("kubectl-label", {"f:metadata": {"f:labels": {"f:team": {}}}}),
        ]
    }
    assert known_keys(metadata) == {"api-key", "org.id"}
    assert holds_key(metadata, "api-key") is True
    assert holds_key(metadata, "org.id") is True
    assert holds_key(metadata, "API_KEY") is False


def test_without_records_nothing_is_claimed() -> None:
    assert holds_key({}, "api-key") is None
    assert holds_key({"managedFields": [{}]}, "api-key") is None  # what clearing managedFields leaves
    # Records, but none sets data: the Secret holds no key at all.
    assert holds_key({"managedFields": [entry("kubectl-create", {"f:type": {}})]}, "api-key") is False
