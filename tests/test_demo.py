"""`make demo` end to end, short and without the real model, then `make demo-down`.

The real demo serves Gemma 3 270M through llama-cpp-python, which compiles llama.cpp on install: too
slow for CI. Here `--model-server simulator` puts a second upstream simulator behind the local
endpoint (the demo says so loudly); everything else is the real thing: control plane, operator,
Prometheus, router on the policy's ConfigMap, the `openai` SDK as the client, report and plot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e import processes

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL = "local-simulator"
CLOUD = "cloud-simulator"
# Shorter still than --short: the test needs every phase to send traffic, not a story to watch.
PHASE_FLAGS = ["--steady-seconds", "5", "--ramp-seconds", "4", "--peak-seconds", "6", "--recovery-seconds", "5"]

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.timeout(300)]


def _demo(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "e2e/demo.py", *args, "--dir", str(state)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _started_pids(state: Path) -> dict[str, int]:
    """Every daemon the demo has a pid file for and that is still the process it started."""
    names = [pidfile.stem for pidfile in state.glob("*.pid")]
    return {name: pid for name in names if (pid := processes.running_pid(state, name)) is not None}


def test_short_demo_routes_and_reports_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    up = _demo(state, "up", "--model-server", "simulator", "--short", *PHASE_FLAGS)
    try:
        assert up.returncode == 0, f"demo up failed:\n{up.stderr[-4000:]}"
        running = _started_pids(state)
    finally:
        down = _demo(state, "down")
    assert down.returncode == 0, down.stderr[-3000:]

    # The pieces came up: control plane, operator, both simulators, Prometheus and the router.
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "operator", "local-model"}
    assert expected | {"cloud-simulator", "prometheus", "router"} <= set(running)
    assert "SIMULATOR" in up.stderr
    assert "not a real model" in up.stderr

    # Traffic flowed through the router to both endpoints, each kind where the policy sends it.
    records = _jsonl(state / "requests.jsonl")
    assert len(records) >= 20
    assert [r for r in records if r["status"] != 200] == []
    by_kind: dict[str, set[str]] = {}
    for record in records:
        by_kind.setdefault(record["kind"], set()).add(record["endpoint"])
    assert by_kind["routine"] == {LOCAL}
    assert by_kind["complex"] == {CLOUD}
    assert by_kind["long-context"] == {CLOUD}
    # Private requests (header or an e-mail address in the text) only ever hit the local endpoint.
    private = [record for record in records if record["private"]]
    assert private
    assert {record["endpoint"] for record in private} == {LOCAL}

    # The live view saw Prometheus' p95 and the router's breakers for both endpoints.
    timeline = _jsonl(state / "timeline.jsonl")
    assert any(LOCAL in sample["p95_seconds"] and CLOUD in sample["p95_seconds"] for sample in timeline)
    assert timeline[-1]["breakers"] == {LOCAL: "closed", CLOUD: "closed"}

    # Report and plot were written and their paths printed.
    report = (state / "report.md").read_text()
    assert "served anywhere but local: **0**" in report
    assert "| peak | 4 |" in report
    png = (state / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000
    assert str(state / "report.md") in up.stderr
    assert str(state / "demo.png") in up.stderr

    # `down` stopped every daemon `up` started and left no pid file behind.
    assert [name for name, pid in running.items() if processes.is_alive(pid)] == []
    assert list(state.glob("*.pid")) == []
