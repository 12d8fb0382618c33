"""Reads audit records (`audit.AuditTrail`'s files) and answers the compliance question for a period.

"Did any private request reach a cloud endpoint between T1 and T2, and how many private requests
were served?" A private request counts as having reached the cloud when any of its attempts went to
a cloud endpoint, answered or not. Lines that are not records of this format (a torn write, a wrong
file) are counted as unreadable rather than skipped in silence: the trail cannot vouch for them.

Pure apart from `read_paths`, which only opens files: `hybridroute audit` prints what `summarize`
returns and maps its verdict to an exit code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .audit import RECORD_VERSION


@dataclass(frozen=True, slots=True)
class Violation:
    """A private request one of whose attempts went to a cloud endpoint (no text: names and times)."""

    ts: float
    namespace: str
    pod: str
    policy: str
    cloud_endpoints: tuple[str, ...]


@dataclass(slots=True)
class AuditSummary:
    """Counts over the records of one period."""

    records: int = 0
    private: int = 0
    private_served: int = 0
    """Private requests answered (a 2xx/4xx from an endpoint: served locally, by the promise)."""
    private_refused: int = 0
    public: int = 0
    public_cloud: int = 0
    unreadable: int = 0
    """Lines that are not audit records: not valid JSON or not this format."""
    first_ts: float | None = None
    last_ts: float | None = None
    violations: list[Violation] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "private": self.private,
            "privateServed": self.private_served,
            "privateRefused": self.private_refused,
            "privateReachedCloud": len(self.violations),
            "public": self.public,
            "publicServedByCloud": self.public_cloud,
            "unreadableLines": self.unreadable,
            "firstRecord": self.first_ts,
            "lastRecord": self.last_ts,
            "files": self.files,
            "unreadableFiles": self.unreadable_files,
            "violations": [
                {
                    "ts": v.ts,
                    "namespace": v.namespace,
                    "pod": v.pod,
                    "policy": v.policy,
                    "cloudEndpoints": list(v.cloud_endpoints),
                }
                for v in self.violations
            ],
        }


def audit_files(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file given, and in each directory every `*.jsonl` file and its rotations."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and ".jsonl" in p.name)
        else:
            found.append(path)
    return found


def read_paths(paths: Iterable[Path], summary: AuditSummary) -> Iterator[bytes]:
    """Every line of every audit file; a file that cannot be read is noted in `summary`."""
    for path in audit_files(paths):
        try:
            with path.open("rb") as lines:  # line by line: a pod's trail may be hundreds of MB
                summary.files.append(str(path))
                yield from (line for line in lines if line.strip())
        except OSError:
            summary.unreadable_files.append(str(path))


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION:
        return None
    if not isinstance(record.get("ts"), int | float) or not isinstance(record.get("private"), bool):
        return None
    attempts = record.get("attempts")
    if not isinstance(attempts, list) or not all(isinstance(a, list) and len(a) == 2 for a in attempts):
        return None
    return record


def summarize(
    lines: Iterable[bytes], since: float | None, until: float | None, summary: AuditSummary | None = None
) -> AuditSummary:
    """Count the records with `since <= ts < until` (either bound may be open)."""
    summary = summary if summary is not None else AuditSummary()
    for line in lines:
        record = _record(line)
        if record is None:
            summary.unreadable += 1
            continue
        ts = float(record["ts"])
        if (since is not None and ts < since) or (until is not None and ts >= until):
            continue
        summary.records += 1
        summary.first_ts = ts if summary.first_ts is None else min(summary.first_ts, ts)
        summary.last_ts = ts if summary.last_ts is None else max(summary.last_ts, ts)
        cloud = tuple(str(name) for name, location in record["attempts"] if location == "cloud")
        served = record.get("endpoint") is not None and record.get("outcome") != "rejected"
        if record["private"]:
            summary.private += 1
            summary.private_served += served
            summary.private_refused += not served
            if cloud or record.get("location") == "cloud":
                summary.violations.append(
                    Violation(
                        ts,
                        str(record.get("namespace", "")),
                        str(record.get("pod", "")),
                        str(record.get("policy", "")),
                        cloud or (str(record.get("endpoint")),),
                    )
                )
        else:
            summary.public += 1
            summary.public_cloud += served and record.get("location") == "cloud"
    return summary
