"""The audit trail (`audit`), its reader (`auditquery`) and `hybridroute audit`.

The end-to-end test runs the real router process with `--audit-file`, sends requests with the real
`openai` SDK to real local and cloud upstreams on loopback, restarts the router on the same file,
and asks the real `hybridroute audit` command about a period spanning both router lifetimes.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from hybridroute_operator.usercli import hybridroute
from hybridroute_router.audit import AuditTrail, rotated_path
from hybridroute_router.auditquery import AuditSummary, read_paths, summarize
from hybridroute_router.outcome import RequestOutcome
from tests.fixtures.upstreams import endpoint, router_config

PII = "jane.doe@example.com"


def outcome(**fields: Any) -> RequestOutcome:
    """A served public request, with `fields` changed (`reached_cloud` follows `attempts`)."""
    values: dict[str, Any] = {
        "ts": 1_000.0,
        "duration_s": 0.01,
        "namespace": "team-a",
        "policy": "chat",
        "config_hash": "abc",
        "operation": "chat",
        "stream": False,
        "private": False,
        "privacy": (),
        "reason": "routine",
        "candidates": ["local-a", "cloud-a"],
        "attempts": [("local-a", "local")],
        "endpoint": "local-a",
        "location": "local",
        "provider": "vllm",
        "request_model": "m",
        "response_model": "m",
        "outcome": "success",
        "status": 200,
        "error_type": "",
        "input_tokens": 3,
        "output_tokens": 5,
        "cost_usd": 0.0,
        "first_chunk_s": None,
        "breaker_state": "closed",
        "fallback": False,
        **fields,
    }
    values["reached_cloud"] = any(location == "cloud" for _, location in values["attempts"])
    return cast(RequestOutcome, values)


def line(**fields: Any) -> bytes:
    """One record as `AuditTrail` writes it (without the newline)."""
    return orjson.dumps({"v": 1, "pod": "pod-1", **outcome(**fields)})


# -------------------------------------------------------------------------------------------------
# the writer


def test_every_record_is_one_line_appended_and_a_reopened_trail_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    trail = AuditTrail(path, pod="pod-1")
    trail(outcome(ts=1.0))
    trail(outcome(ts=2.0, private=True, privacy=("detector:email",)))
    # Written before close: another process reading now sees both (one write(2) each, no buffer).
    assert len(path.read_bytes().splitlines()) == 2
    trail.close()
    again = AuditTrail(path, pod="pod-1")
    again(outcome(ts=3.0))
    again.close()
    records = [orjson.loads(raw) for raw in path.read_bytes().splitlines()]
    assert [record["ts"] for record in records] == [1.0, 2.0, 3.0]
    assert records[1]["privacy"] == ["detector:email"]
    assert records[1]["attempts"] == [["local-a", "local"]]
    assert records[1]["pod"] == "pod-1"


def test_rotation_bounds_the_trail_and_keeps_the_newest_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, max_bytes=2048, backups=2, pod="p")
    for index in range(200):
        trail(outcome(ts=float(index)))
    trail.close()
    files = sorted(tmp_path.iterdir())
    assert files == [path, rotated_path(path, 1), rotated_path(path, 2)]
    assert all(each.stat().st_size <= 2048 for each in files)
    kept = [orjson.loads(raw)["ts"] for each in files for raw in each.read_bytes().splitlines()]
    assert max(kept) == 199.0
    assert len(kept) < 200  # the oldest were dropped: the bound holds
    assert sorted(kept) == [float(i) for i in range(200 - len(kept), 200)]


def test_a_failed_write_never_raises_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(path, pod="p")
    trail.close()  # the descriptor is gone: writes fail with EBADF
    trail(outcome())
    trail(outcome())
    assert trail.failed_writes == 2
    registry = CollectorRegistry()
    registry.register(trail)
    assert registry.get_sample_value("hybridroute_audit_records_lost_total") == 2


# -------------------------------------------------------------------------------------------------
# the reader


def test_summary_counts_private_requests_and_finds_one_that_reached_a_cloud_endpoint() -> None:
    lines = [
        line(ts=10.0),
        line(ts=11.0, private=True, privacy=("header",)),
        line(ts=12.0, private=True, endpoint=None, location=None, outcome="upstream_error", status=503),
        line(
            ts=13.0,
            private=True,
            attempts=(("local-a", "local"), ("cloud-a", "cloud")),
            endpoint="local-a",
        ),
        line(ts=14.0, attempts=(("cloud-a", "cloud"),), endpoint="cloud-a", location="cloud"),
        line(ts=99.0, private=True, attempts=(("cloud-b", "cloud"),)),  # outside the period
    ]
    summary = summarize(lines, since=10.0, until=99.0)
    assert (summary.records, summary.private, summary.private_served, summary.private_refused) == (5, 3, 2, 1)
    assert (summary.public, summary.public_cloud) == (2, 1)
    assert [(v.ts, v.cloud_endpoints, v.pod) for v in summary.violations] == [(13.0, ("cloud-a",), "pod-1")]
    assert summarize(lines, since=10.0, until=13.0).violations == []


def test_lines_that_are_not_records_are_counted_unreadable() -> None:
    lines = [b"not json", b'{"v": 99, "ts": 1}', b'{"v":1,"ts":"x","private":true,"attempts":[]}', line()]
    summary = summarize(lines, None, None)
    assert (summary.records, summary.unreadable) == (1, 3)


def test_a_directory_is_read_with_its_rotations(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").write_bytes(line(ts=1.0) + b"\n")
    (tmp_path / "audit.jsonl.1").write_bytes(line(ts=2.0) + b"\n" + line(ts=3.0) + b"\n")
    (tmp_path / "notes.txt").write_text("ignored")
    summary = AuditSummary()
    summarize(read_paths([tmp_path], summary), None, None, summary)
    assert summary.records == 3
    assert len(summary.files) == 2


# -------------------------------------------------------------------------------------------------
# the command's verdicts


@pytest.mark.parametrize(
    ("lines", "args", "code", "says"),
    [
        ([line()], [], 0, "private requests that reached a cloud endpoint: 0"),
        ([line(private=True, attempts=(("cloud-a", "cloud"),))], [], 1, "VIOLATION"),
        ([line(ts=5.0)], ["--since", "1970-01-01T00:00:10Z"], 3, "records: 0"),
        ([b"garbage", line()], [], 3, "records: 1"),
    ],
)
def test_audit_command_exit_codes(tmp_path: Path, lines: list[bytes], args: list[str], code: int, says: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(hybridroute, ["audit", str(path), *args])
    assert result.exit_code == code, result.output
    assert says in result.output


def test_audit_command_refuses_an_empty_period_and_reports_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(hybridroute, ["audit", str(tmp_path), "--since", "20", "--until", "10"])
    assert result.exit_code == 2
    missing = CliRunner().invoke(hybridroute, ["audit", str(tmp_path / "gone.jsonl")])
    assert missing.exit_code == 3
    assert "unreadable file" in missing.output


# -------------------------------------------------------------------------------------------------
# end to end: real router process, restarted, and the real command


def test_audit_answers_from_real_router_records_across_a_restart(
    upstream_sim: Any, router_process: Any, sdk_client: Any, tmp_path: Path
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config_path = tmp_path / "router.yaml"
    config = {
        "endpoints": [endpoint("local-a", local), endpoint("cloud-a", cloud, "cloud")],
        "rules": [{"name": "to-cloud", "match": {}, "action": {"prefer": "cloud"}}],
        "privacy": {"builtinDetectors": ["email"]},
    }
    config_path.write_text(yaml.safe_dump(config))
    audit_file = tmp_path / "volume" / "audit.jsonl"
    since = time.time()

    def traffic(running: Any) -> None:
        client = sdk_client(running)
        public = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert public.model  # answered
        private = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"write to {PII} about zebra-quartz"}]
        )
        assert private.headers["x-hybridroute-endpoint"] == "local-a"
        stream = client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "private"}],
            stream=True,
            extra_headers={"x-hybridroute-privacy": "private"},
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    first = router_process(config_path, "--audit-file", str(audit_file))
    traffic(first)
    first.process.kill()  # as a crash or an OOM kill: no shutdown, no flush
    first.process.wait(10)
    second = router_process(config_path, "--audit-file", str(audit_file))
    traffic(second)
    until = time.time() + 1
    with urllib.request.urlopen(f"{second.metrics_url}/metrics", timeout=10) as response:
        assert "hybridroute_audit_records_lost_total 0.0" in response.read().decode()

    command = [str(Path(sys.executable).parent / "hybridroute"), "audit", str(audit_file.parent)]
    window = ["--since", str(since), "--until", str(until), "--json"]
    result = subprocess.run([*command, *window], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    counts = orjson.loads(result.stdout)
    assert counts["records"] == 6
    assert (counts["private"], counts["privateServed"], counts["privateReachedCloud"]) == (4, 4, 0)
    assert (counts["public"], counts["publicServedByCloud"]) == (2, 2)
    text = audit_file.read_text()
    assert PII not in text  # reasons are named, never what matched
    assert "zebra-quartz" not in text
    pods = {orjson.loads(raw)["pod"] for raw in text.splitlines()}
    assert len(pods) == 1  # the same pod (host) across the restart

    # A period before the traffic: nothing to vouch for.
    early = subprocess.run([*command, "--until", str(since)], capture_output=True, timeout=60)
    assert early.returncode == 3


def test_requests_refused_before_any_attempt_are_recorded_too(
    upstream_sim: Any, router: Any, sdk_client: Any, tmp_path: Path
) -> None:
    import openai

    cloud = upstream_sim("cloud")
    running = router(router_config(endpoint("cloud-a", cloud, "cloud")))
    trail = AuditTrail(tmp_path / "audit.jsonl", pod="p")
    running.app.executor.observers.append(trail)
    client = sdk_client(running)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], extra_headers={"x-hybridroute-privacy": "y"}
        )
    assert refused.value.status_code == 503
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-alias", messages=[{"role": "user", "content": "x"}])
    trail.close()

    private, unknown = (orjson.loads(raw) for raw in (tmp_path / "audit.jsonl").read_bytes().splitlines())
    assert (private["outcome"], private["status"], private["private"]) == ("rejected", 503, True)
    assert (private["privacy"], private["attempts"], private["endpoint"]) == (["header"], [], None)
    assert (unknown["outcome"], unknown["status"], unknown["private"]) == ("rejected", 404, False)
    assert cloud.requests == []


def test_a_failing_observer_neither_fails_the_answer_nor_silences_the_others(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    running = router(router_config(endpoint("local-a", upstream_sim("local"))))
    seen: list[RequestOutcome] = []

    def broken(_: RequestOutcome) -> None:
        raise RuntimeError("observer bug")

    running.app.executor.observers[:0] = [broken]  # first, before the GenAI metrics
    running.app.executor.observers.append(seen.append)
    answer = sdk_client(running).chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content
    assert [record["outcome"] for record in seen] == ["success"]
