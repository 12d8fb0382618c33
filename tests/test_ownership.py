"""Ownership rules (pure): which live objects the operator may write, hand edits, 409 summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hybridroute_operator.ownership import (
    claim_conflict,
    controlled_by,
    field_conflicts,
    hand_editors,
    managers_of,
    stray_content,
)
from hybridroute_operator.render import Owner

OWNER = Owner(name="llama", namespace="team-a", uid="uid-1")


def desired(kind: str = "Service") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "llama", "ownerReferences": [OWNER.reference()]}}


def test_absent_or_controlled_by_this_very_resource_may_be_written() -> None:
    assert claim_conflict(None, desired()) is None
    assert claim_conflict({"ownerReferences": [OWNER.reference()]}, desired()) is None


@pytest.mark.parametrize(
    ("live", "holder"),
    [
        ({}, "it has no controller (created by someone else)"),
        ({"ownerReferences": [{**OWNER.reference(), "controller": False}]}, "it has no controller"),
        (
            {"ownerReferences": [{**OWNER.reference(), "uid": "uid-0"}]},
            "it belongs to an earlier InferenceEndpoint llama (uid uid-0), awaiting garbage collection",
        ),
        (
            {"ownerReferences": [{"kind": "HelmRelease", "name": "payments", "uid": "x", "controller": True}]},
            "it is controlled by HelmRelease payments",
        ),
    ],
)
def test_anything_else_is_refused_naming_the_object_and_its_holder(live: dict[str, Any], holder: str) -> None:
    message = claim_conflict(live, desired("Deployment"))
    assert message is not None
    assert message.startswith("Deployment llama exists and is not owned by InferenceEndpoint llama: ")
    assert holder in message


def test_a_rendered_child_without_a_controller_reference_is_a_bug() -> None:
    with pytest.raises(ValueError, match="controller ownerReference"):
        claim_conflict({}, {"kind": "Service", "metadata": {"name": "x"}})


def test_controlled_by_checks_kind_and_name_of_the_controller() -> None:
    metadata = {"ownerReferences": [{"kind": "RoutingPolicy", "name": "chat", "controller": True}]}
    assert controlled_by(metadata, "RoutingPolicy", "chat")
    assert not controlled_by(metadata, "RoutingPolicy", "other")
    assert not controlled_by({"ownerReferences": [{"kind": "RoutingPolicy", "name": "chat"}]}, "RoutingPolicy", "chat")


def test_hand_editors_are_other_managers_of_the_content() -> None:
    managed = [
        {"manager": "hybridroute-operator", "operation": "Apply", "fieldsV1": {"f:data": {"f:config.json": {}}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:config.json": {}}}},
        {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
    ]
    assert hand_editors({"managedFields": managed}, "hybridroute-operator") == ["kubectl-edit"]
    assert hand_editors({"managedFields": managed[:1]}, "hybridroute-operator") == []
    assert hand_editors(None, "hybridroute-operator") == []


def test_who_made_a_config_map_immutable_and_an_emptied_entry_is_no_edit() -> None:
    managed = [
        {"manager": "hybridroute-operator", "operation": "Apply", "fieldsV1": {"f:data": {"f:config.json": {}}}},
        {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": {"f:immutable": {}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {}}},
    ]
    assert managers_of({"managedFields": managed}, ("f:immutable",), "hybridroute-operator") == ["kubectl-patch"]
    assert hand_editors({"managedFields": managed}, "hybridroute-operator") == []


def test_stray_content_is_every_key_the_compiler_does_not_render() -> None:
    desired = {"data": {"config.json": "{}"}}
    assert stray_content({"data": {"config.json": "{...}"}}, desired) is None
    live = {"data": {"config.json": "{}", "extra.json": "{}"}, "binaryData": {"config.json": "e30="}}
    assert stray_content(live, desired) == {"data": {"extra.json": None}, "binaryData": {"config.json": None}}


def test_field_conflicts_name_field_and_manager() -> None:
    body = json.dumps(
        {
            "message": "Apply failed with 1 conflict",
            "details": {
                "causes": [
                    {
                        "reason": "FieldManagerConflict",
                        "message": 'conflict with "kubectl-edit" using apps/v1',
                        "field": '.spec.template.spec.containers[name="server"].image',
                    }
                ]
            },
        }
    )
    summary = field_conflicts(body)
    assert "image" in summary
    assert "(held by kubectl-edit)" in summary
    assert field_conflicts("not json") == "fields managed by someone else"
