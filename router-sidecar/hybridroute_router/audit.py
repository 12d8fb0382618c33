"""The audit trail: one JSON line per client request, appended to a file of its own.

Regulated users must show that no private request reached a cloud endpoint in a period. The
decision log cannot: routine requests are only summarised there and it shares stderr with every
other line. This sink writes every request, routine or not, to its own file (`--audit-file`; the
injected sidecar puts it on an emptyDir volume, which outlives a restart of the router container):

    {"v":1,"pod":"app-7d9f","ts":1764646800.123,"duration_s":0.84,"namespace":"team-a",
     "policy":"chat","config_hash":"sha256:…","operation":"chat","stream":false,"private":true,
     "privacy":["detector:email"],"reason":"private","candidates":["gpu-pool"],
     "attempts":[["gpu-pool","local"]],"endpoint":"gpu-pool","location":"local", …,
     "outcome":"success","status":200,"input_tokens":12,"output_tokens":30,"cost_usd":0.0,
     "reached_cloud":false}

(every field: `outcome.RequestOutcome`).

Never text: `privacy` names the reasons and detector classes that matched, not what matched.

Durability: each record is one `write(2)` on an `O_APPEND` descriptor, so it is in the kernel's
page cache (and survives the router process, killed or not) before the request's bookkeeping ends;
no fsync per record (a node crash can lose the last seconds, as it loses the pod's emptyDir anyway).
Rotation keeps the trail bounded: when the file would pass `max_bytes`, it becomes `<file>.1`
(older ones shift up to `<file>.<backups>`, the oldest is dropped), so the trail takes at most
`max_bytes * (backups + 1)` bytes. `hybridroute audit` reads the file and its rotations.

A write that fails (disk full, volume gone) never fails the request: it is counted, logged once
per failure streak (without the record), and exported as `hybridroute_audit_records_lost_total`
once the trail is registered on the router's metrics registry (`collect`), so a trail with gaps can
raise an alert instead of passing for complete.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .outcome import RequestOutcome

RECORD_VERSION = 1
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BACKUPS = 3

log = logging.getLogger("hybridroute.router.audit")


class AuditTrail(Collector):
    """Appends one record per request to `path`, rotating at `max_bytes` and keeping `backups` old files."""

    def __init__(
        self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS, pod: str | None = None
    ) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1024")
        if backups < 0:
            raise ValueError("backups must not be negative")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        # In a pod the hostname is the pod's name (unless the pod sets spec.hostname).
        self.pod = pod if pod is not None else os.environ.get("HOSTNAME") or socket.gethostname()
        # Every line starts with the version and the pod: encoded once, not per record.
        self._prefix = orjson.dumps({"v": RECORD_VERSION, "pod": self.pod})[:-1] + b","
        self.failed_writes = 0
        """Failures in the current streak (reset by the next successful write)."""
        self.lost = 0
        """Records never written, since the start."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size

    def __call__(self, outcome: RequestOutcome) -> None:
        self.write(outcome)

    def write(self, record: Mapping[str, Any]) -> None:
        line = self._prefix + orjson.dumps(record)[1:] + b"\n"
        try:
            if self._size + len(line) > self.max_bytes and self._size > 0:
                self._rotate()
            os.write(self._fd, line)
        except OSError as exc:
            if self.failed_writes == 0:
                log.error("audit record not written", extra={"path": str(self.path), "errno": exc.errno})
            self.failed_writes += 1
            self.lost += 1
            return
        self._size += len(line)
        if self.failed_writes:
            log.warning("audit records written again", extra={"path": str(self.path), "lost": self.failed_writes})
            self.failed_writes = 0

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = rotated_path(self.path, index)
                if older.exists():
                    older.replace(rotated_path(self.path, index + 1))
            self.path.replace(rotated_path(self.path, 1))
        self._open()

    def collect(self) -> Iterator[Metric]:
        lost = CounterMetricFamily(
            "hybridroute_audit_records_lost", "Audit records that could not be written (the trail has gaps)."
        )
        lost.add_metric([], self.lost)
        yield lost

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def rotated_path(path: Path, index: int) -> Path:
    """`<file>.<index>`: where rotation moves older records."""
    return path.with_name(f"{path.name}.{index}")
