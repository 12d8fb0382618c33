"""Offline validation of InferenceEndpoint and RoutingPolicy manifests, without a cluster.

Checks each document with the same models the CRDs are generated from (types, enums, bounds, unknown
fields, the cross-field rules the CRDs carry as CEL) and the list types the CRDs declare (set items and
map keys unique), so a manifest that passes here passes the API server's schema too. A RoutingPolicy's
custom detector patterns are compiled on the router's engine (RE2) as well: the API server cannot
judge them, and the operator would report the policy CompileFailed. Other kinds are skipped. Reading
files is kept apart from judging documents: `check_document` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError

from hybridroute_operator import api, crdgen
from hybridroute_router.regexengine import PatternError, compile_pattern

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
_MODELS: Final[dict[str, type[BaseModel]]] = {
    api.ENDPOINT_KIND: api.InferenceEndpoint,
    api.POLICY_KIND: api.RoutingPolicy,
}


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with a document: the field (dotted path, `[i]` for list items) and why."""

    field: str
    message: str


@dataclass(frozen=True)
class Problem:
    """A field problem located in a file: `file:docIndex: kind/name: field: message`."""

    source: str
    doc_index: int
    """0-based position of the document in a multi-document YAML stream."""
    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.doc_index}: {self.kind}/{self.name}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Report:
    """What a validation run looked at and found."""

    files: int
    checked: int
    """Documents of the two hybridroute kinds that were validated."""
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def is_hybridroute_kind(document: Any) -> bool:
    """True for documents this validator judges; everything else (Secrets, Deployments, ...) is skipped."""
    return (
        isinstance(document, Mapping)
        and document.get("kind") in _MODELS
        and str(document.get("apiVersion", "")).startswith(f"{api.GROUP}/")
    )


def check_document(document: Mapping[str, Any]) -> list[FieldProblem]:
    """Every problem in one InferenceEndpoint or RoutingPolicy document (empty when valid)."""
    model = _MODELS[document["kind"]]
    try:
        validated = model.model_validate(document)
    except ValidationError as exc:
        problems = list(_field_problems(exc))
    else:
        problems = list(_detector_problems(validated))
    return problems + _list_type_problems(document)


def _detector_problems(document: BaseModel) -> Iterator[FieldProblem]:
    if not isinstance(document, api.RoutingPolicy):
        return
    for index, detector in enumerate(document.spec.privacy.detectors):
        try:
            compile_pattern(detector.pattern)
        except PatternError as exc:
            yield FieldProblem(f"spec.privacy.detectors[{index}].pattern", f"detector {detector.name}: {exc}")


def _field_problems(exc: ValidationError) -> Iterator[FieldProblem]:
    for error in exc.errors(include_input=False, include_url=False):
        location = tuple(error["loc"])
        if error["type"] == "cross_field":
            # One pydantic error carries every failed cross-field rule of the spec; split it again.
            for violation in error["ctx"]["violations"]:
                yield FieldProblem(api.format_path(location + violation.path), violation.message)
        else:
            yield FieldProblem(api.format_path(location) or "<document>", error["msg"].removeprefix("Value error, "))


# --------------------------------------------------------------------------------------------------
# List types: the API server rejects duplicates in sets and duplicate keys in maps
# --------------------------------------------------------------------------------------------------


@cache
def _spec_schemas() -> dict[str, dict[str, Any]]:
    return {kind.kind: crdgen.structural(kind.spec) for kind in crdgen.KINDS}


def _list_type_problems(document: Mapping[str, Any]) -> list[FieldProblem]:
    schema = _spec_schemas()[document["kind"]]
    return list(_duplicates(document.get("spec"), schema, ("spec",)))


def _duplicates(value: Any, schema: Mapping[str, Any], path: tuple[str | int, ...]) -> Iterator[FieldProblem]:
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        for key, child in value.items():
            if key in properties:
                yield from _duplicates(child, properties[key], (*path, key))
    elif isinstance(value, list) and "items" in schema:
        yield from _duplicate_items(value, schema, path)
        for index, item in enumerate(value):
            yield from _duplicates(item, schema["items"], (*path, index))


def _duplicate_items(
    items: list[Any], schema: Mapping[str, Any], path: tuple[str | int, ...]
) -> Iterator[FieldProblem]:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: set[str] = set()
    for index, item in enumerate(items):
        if list_type == "map":
            if not isinstance(item, Mapping):
                continue
            identity = repr([item.get(key) for key in keys])
            what = ", ".join(f"{key}={item.get(key)!r}" for key in keys)
        else:
            identity, what = repr(item), repr(item)
        if identity in seen:
            yield FieldProblem(api.format_path((*path, index)), f"duplicate value: {what}")
        seen.add(identity)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, plus every YAML/JSON file under the directories named, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES))
        else:
            found.append(path)
    return found


def _name(document: Mapping[str, Any]) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(name) if name else "<unnamed>"


def check_file(path: Path) -> tuple[int, list[Problem]]:
    """Validate every hybridroute document in one file: (documents checked, problems)."""
    source = str(path)
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return 0, [Problem(source, 0, "<file>", "<unreadable>", "<document>", _one_line(str(exc)))]
    checked = 0
    problems: list[Problem] = []
    for index, document in enumerate(documents):
        if not is_hybridroute_kind(document):
            continue
        checked += 1
        for problem in check_document(document):
            problems.append(Problem(source, index, document["kind"], _name(document), problem.field, problem.message))
    return checked, problems


def _one_line(text: str) -> str:
    return " ".join(text.split())


def validate_paths(paths: Iterable[Path]) -> Report:
    """Validate every manifest file under `paths`."""
    files = manifest_files(paths)
    checked = 0
    problems: list[Problem] = []
    for path in files:
        file_checked, file_problems = check_file(path)
        checked += file_checked
        problems.extend(file_problems)
    return Report(files=len(files), checked=checked, problems=tuple(problems))
