"""The demo's host-process shape end to end, short and without the real model, then `make demo-down`; and
its pure parts.

`make demo` runs as pods on the real node (images, Helm, a llama.cpp pod: minutes, not for this test).
Here `--host-processes --model-server simulator` runs the older shape with a second upstream
simulator behind the local endpoint (the demo says so loudly); everything else is the real thing:
control plane, operator, Prometheus, router on the policy's ConfigMap, the `openai` SDK as the
client, report and plot.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e import processes
from e2e.dashboard import Sample, parse_breaker_states, parse_p95
from e2e.modelserver import GEMMA_CONTEXT_TOKENS
from e2e.report import breaker_changes, markdown, percentile, phase_rows, spills
from e2e.traffic import MIX, Phase, RequestRecord, demo_phases, plan_request, totals

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL = "local-simulator"
CLOUD = "cloud-simulator"
# Shorter still than --short: the test needs every phase to send traffic, not a story to watch.
PHASE_FLAGS = ["--steady-seconds", "5", "--ramp-seconds", "4", "--peak-seconds", "6", "--recovery-seconds", "5"]


def _demo(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "e2e/demo.py", *args, "--dir", str(state)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _started_pids(state: Path) -> dict[str, int]:
    """Every daemon the demo has a pid file for and that is still the process it started."""
    names = [pidfile.stem for pidfile in state.glob("*.pid")]
    return {name: pid for name in names if (pid := processes.running_pid(state, name)) is not None}


@pytest.mark.cluster
@pytest.mark.prometheus
@pytest.mark.timeout(300)
def test_short_demo_routes_and_reports_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    up = _demo(state, "up", "--host-processes", "--model-server", "simulator", "--short", *PHASE_FLAGS)
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

    # The CRD samples are listed too, each as honest as its situation: the vLLM pool Ready through the
    # stand-in kubelet, the OpenAI endpoint Ready (its Secret exists), the absent workstation not Ready.
    def row(namespace: str, name: str) -> list[str]:
        rows = [line.split() for line in up.stdout.splitlines() if line.startswith(namespace) and f"/{name} " in line]
        assert len(rows) == 1, up.stdout
        return rows[0]

    assert "True" in row("hybridroute-samples", "llama-8b-vllm")
    assert "True" in row("hybridroute-samples", "openai-gpt-4o-mini")
    assert "False" in row("hybridroute-samples", "workstation-ollama")
    # The operator read the fleet's p95 and circuit from the demo's Prometheus into status (columns
    # NAMESPACE NAME TYPE MODEL READY P95 CIRCUIT AGE).
    for endpoint_name in (LOCAL, CLOUD):
        _, _, _, _, ready, p95, circuit, _ = row("hybridroute-demo", endpoint_name)
        assert (ready, circuit) == ("True", "closed")
        assert int(p95) > 0

    # `down` stopped every daemon `up` started and left no pid file behind.
    assert [name for name, pid in running.items() if processes.is_alive(pid)] == []
    assert list(state.glob("*.pid")) == []


# --------------------------------------------------------------------------------------------------
# pure parts: no cluster, no network


def _record(at: float, kind: str, endpoint: str, status: int = 200, seconds: float = 1.0) -> RequestRecord:
    private = kind.startswith("private")
    return RequestRecord(at, seconds, "peak", 4, kind, private, status, endpoint, "", 1, 1000, 100)


def test_planned_requests_carry_what_the_policy_routes_on() -> None:
    rng = random.Random(3)
    planned = {kind: plan_request(kind, rng) for kind, _ in MIX}
    assert planned["private-header"].headers == {"x-data-classification": "confidential"}
    assert "@example.com" in planned["private-email"].messages[0]["content"]
    assert not planned["routine"].private
    assert {kind for kind, request in planned.items() if request.private} == {"private-header", "private-email"}
    # Long-context requests cannot fit the local model's window, so only the cloud can take them.
    long_context = planned["long-context"]
    assert long_context.estimated_input_tokens + long_context.max_tokens > GEMMA_CONTEXT_TOKENS
    assert planned["routine"].estimated_input_tokens + planned["routine"].max_tokens < GEMMA_CONTEXT_TOKENS


def test_phases_rise_to_the_peak_and_come_back_down() -> None:
    phases = demo_phases(steady_s=1, ramp_s=2, peak_s=3, recovery_s=4, peak=10)
    assert [phase.concurrency for phase in phases] == [1, 5, 10, 5, 1]
    assert sum(phase.seconds for phase in phases) == 12


def test_totals_count_private_requests_served_off_local_and_price_only_cloud_ones() -> None:
    records = [
        _record(0, "routine", "local"),
        _record(1, "private-email", "local"),
        _record(2, "complex", "cloud"),
        _record(3, "private-header", "cloud"),  # a privacy violation the demo must surface
        _record(4, "routine", "", status=503),
    ]
    done = totals(records, "local")
    assert done.requests == 5
    assert done.failed == 1
    assert done.private_not_local == 1
    assert done.served == {"local": 2, "cloud": 2}
    assert done.share("local") == 0.5
    per_request = records[0].cloud_price_usd
    assert done.spend_usd == pytest.approx(2 * per_request)
    assert done.cloud_only_usd == pytest.approx(4 * per_request)


def test_breaker_states_come_from_the_gauge_that_is_one() -> None:
    metrics = """# TYPE hybridroute_breaker_state gauge
hybridroute_breaker_state{policy="demo",endpoint="local",state="closed"} 0.0
hybridroute_breaker_state{policy="demo",endpoint="local",state="open"} 1.0
hybridroute_breaker_state{policy="demo",endpoint="cloud",state="closed"} 1.0
# TYPE hybridroute_requests_total counter
hybridroute_requests_total{policy="demo",endpoint="local",outcome="ok"} 3.0
"""
    assert parse_breaker_states(metrics) == {"local": "open", "cloud": "closed"}


def test_p95_without_data_is_absent_not_zero() -> None:
    answer = {
        "data": {
            "result": [
                {"metric": {"endpoint": "local"}, "value": [0, "2.5"]},
                {"metric": {"endpoint": "cloud"}, "value": [0, "NaN"]},
            ]
        }
    }
    assert parse_p95(answer) == {"local": 2.5}


def test_report_tells_phases_breaker_changes_and_privacy() -> None:
    phases = (Phase("steady", 1, 10), Phase("peak", 4, 10))
    records = [_record(1, "routine", "local", seconds=0.5), _record(12, "routine", "cloud", seconds=0.8)]
    records = [
        RequestRecord(r.at, r.seconds, "steady" if r.at < 10 else "peak", 1, r.kind, r.private, r.status,
                      r.endpoint, "", 1, 10, 10)
        for r in records
    ]  # fmt: skip
    timeline = [
        Sample(0, "steady", 1, {}, {"local": "closed"}),
        Sample(5, "steady", 1, {"local": 6.0}, {"local": "open"}),
        Sample(6, "steady", 1, {"local": 6.0}, {"local": "open"}),
        Sample(15, "peak", 4, {"local": 1.0}, {"local": "closed"}),
    ]
    assert breaker_changes(timeline, "local") == [(0, "closed"), (5, "open"), (15, "closed")]
    rows = phase_rows(records, phases, "local")
    assert [(row.phase, row.requests, row.local_share) for row in rows] == [("steady", 1, 1.0), ("peak", 1, 0.0)]
    text = markdown(records, timeline, phases, "local", "cloud", 5.0, "the SIMULATOR")
    assert "served anywhere but local: **0**" in text
    assert "- t=5 s: open" in text
    assert "| steady | 1 | 1 | 100% | 0.50 s | - | 0 |" in text
    assert "- no request was spilled" in text


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(value) for value in range(1, 101)], 0.95) == 95.0


def test_the_report_marks_spilled_requests_and_when_spilling_began() -> None:
    phases = (Phase("steady", 1, 10), Phase("peak", 4, 10))

    def record(at: float, endpoint: str, reason: str) -> RequestRecord:
        phase = "steady" if at < 10 else "peak"
        return RequestRecord(at, 0.7, phase, 1, "routine", False, 200, endpoint, reason, 1, 10, 10)

    records = [record(1, "local", "routine"), record(14, "cloud", "spill"), record(12, "cloud", "spill"),
               record(13, "cloud", "routine;fallback")]  # fmt: skip
    assert [r.at for r in spills(records)] == [12, 14]
    assert totals(records, "local").spilled == 2
    text = markdown(records, [], phases, "local", "cloud", 5.0, "the SIMULATOR")
    assert "- first spill at t=12 s; spilled requests per phase: steady 0, peak 2" in text
