"""What the router costs: the same upstream simulator reached directly, through the router, and
(with `--litellm`) through the LiteLLM proxy, in one run.

    .venv/bin/python bench/router_overhead.py [--duration 3] [--rounds 3] [--litellm]

For non-streaming and streaming chat completions at concurrency 1 and 32 it measures requests per
second, latency percentiles, the latency added over the direct baseline, each proxy's CPU time per
request (from /proc) and resident memory.

Processes, each on its own: the upstream simulator (`e2e/upstream_sim.py`, aiohttp + uvloop, 8
streamed chunks, no artificial latency), the router (`hybridroute-router` CLI: one uvicorn worker,
uvloop + httptools, as deployed, logging at INFO unless told otherwise), LiteLLM (`litellm` CLI, one
worker), and for every measurement a fresh load generator (`bench/loadgen.py`, httptools client).
This script only orchestrates and sleeps while they run.

LiteLLM lives in its own virtual environment, `bench/.venv-litellm` (git-ignored), created and filled
with `litellm[proxy]` from PyPI on the first `--litellm` run, so its pins never touch the project's.
If it cannot be installed or started, the run says so loudly and reports no LiteLLM numbers.

`--audit` runs the router with its audit trail on (`--audit-file` in the run's temporary folder).
`--baseline-ref REF` adds a target `baseline`: the router's code at git ref REF (`git archive`, run
from the same virtual environment with the same flags less the audit ones), so a change to the hot
path is measured as a ratio against the code before it, in the same run (`x base` columns).

Noise: on a small shared machine, the targets, the simulator and the load generator compete for the
same cores, and other jobs come and go. `--rounds N` measures every target N times, interleaved, and
keeps each target's median round (by req/s); compare targets within one run, not across runs.

Before/after in one run: `--baseline-src DIR` also starts a router from another source tree (for
example `git archive main | tar -x -C DIR`) as target `baseline`, with the same plain config; compare
`router` with `baseline` row by row. `--fleet-budget` gives this tree's router a fleet budget (scope
policy, evaluated every second against a Prometheus this script starts, scraping the router), so
the hot path pays for the budget decision on every request.

Results: a markdown table on stdout and the full JSON under bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LOADGEN = ROOT / "bench" / "loadgen.py"
SIMULATOR = ROOT / "e2e" / "upstream_sim.py"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 16}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Issue 3's targets for the router on one worker.
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_AT_32 = 2500
TARGET_LITELLM_RATIO = 15
TARGET_RSS_MB = 80


class LiteLLMUnavailable(RuntimeError):
    """LiteLLM could not be installed or started here; the message says why."""


@dataclass
class Target:
    name: str
    url: str
    pid: int | None
    """The process whose CPU time and memory are reported (None for the simulator baseline)."""
    bearer: str = "bench"
    """Authorization bearer token the load generator sends."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}); log tail:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s; log tail:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def memory_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process (Linux /proc), in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": round(values.get("VmRSS", 0), 1), "peak_rss_mb": round(values.get("VmHWM", 0), 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (LiteLLM forks a worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a proxy's workers count towards its CPU and memory)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(member) for member in process_tree(pid) if Path(f"/proc/{member}").exists())


def tree_memory_mb(pid: int) -> dict[str, float]:
    totals = {"rss_mb": 0.0, "peak_rss_mb": 0.0}
    for member in process_tree(pid):
        with suppress(FileNotFoundError):  # a worker may exit between listing and reading
            for key, value in memory_mb(member).items():
                totals[key] = round(totals[key] + value, 1)
    return totals


def load(target: Target, stream: bool, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement by a fresh load-generator process; the target's CPU time per request added."""
    body = json.dumps({**BODY, "stream": stream})
    command = [sys.executable, str(LOADGEN), "--url", target.url, "--body", body, "--bearer", target.bearer]
    command += ["--concurrency", str(concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup)]
    cpu_before = tree_cpu_seconds(target.pid) if target.pid else 0.0
    finished = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.duration * 5 + 60)
    cpu_after = tree_cpu_seconds(target.pid) if target.pid else 0.0
    result: dict[str, Any] = json.loads(finished.stdout)
    completed = result["requests_with_warmup"]
    per_request = (cpu_after - cpu_before) / completed * 1e6 if target.pid and completed else None
    result["cpu_us_per_request"] = None if per_request is None else round(per_request)
    return result


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def start_baseline(ref: str, router_cmd: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The router's code at git ref `ref`, run from the same venv on ports of its own."""
    source = workdir / "baseline"
    source.mkdir()
    git_archive = ["git", "-C", str(ROOT), "archive", ref, "router-sidecar"]
    archive = subprocess.run(git_archive, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    port = free_port()
    command = [*router_cmd]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--metrics-port") + 1] = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(source / "router-sidecar")}
    log = workdir / "baseline.log"
    process = start(command, log, env)
    wait_http(f"http://127.0.0.1:{port}/readyz", process, log)
    check = [sys.executable, "-c", "import hybridroute_router; print(hybridroute_router.__file__)"]
    where = subprocess.run(check, capture_output=True, text=True, env=env, check=True).stdout.strip()
    if not where.startswith(str(source)):
        raise RuntimeError(f"baseline imports {where}, not the archived {ref}")
    return process, port


def start_router(
    config: Path, port: int, metrics_port: int, args: argparse.Namespace, log: Path, source: Path | None = None
) -> subprocess.Popen[bytes]:
    """The router CLI on `config`; from another source tree's router-sidecar/ when `source` is given."""
    command = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(config)]
    command += ["--port", str(port), "--metrics-port", str(metrics_port), "--log-level", args.router_log_level]
    env = None
    if source is not None:
        env = {**os.environ, "PYTHONPATH": str(source.resolve() / "router-sidecar"), "PYTHONSAFEPATH": "1"}
    return start(command, log, env)


def fleet_budget(prometheus_url: str) -> dict[str, Any]:
    """A fleet budget that never trips (the bench measures its cost, not its effect)."""
    return {"dailyUsd": 1e9, "scope": "policy", "prometheus": {"url": prometheus_url, "evaluationSeconds": 1}}


def start_prometheus(workdir: Path, metrics_port: int, processes: list[subprocess.Popen[bytes]]) -> str:
    """Debian's prometheus scraping the router every second; its base URL once ready."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}"]
    command += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    log = workdir / "prometheus.log"
    process = start(command, log)
    processes.append(process)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready", process, log)
    return url


def litellm_binary() -> Path:
    """The `litellm` CLI from its own venv, installing `litellm[proxy]` there on first use."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy] into {LITELLM_VENV.relative_to(ROOT)} (benchmark peer, not a dependency)...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "litellm[proxy]"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LiteLLMUnavailable(f"installing litellm[proxy] failed: {exc}") from None
    if not binary.exists():
        raise LiteLLMUnavailable(f"litellm[proxy] installed but {binary} is missing")
    return binary


def start_litellm(workdir: Path, sim_base: str, log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """The proxy on a free loopback port: (process, chat completions URL, its master key)."""
    # Recent LiteLLM refuses to start without a master key; a random one per run, sent as the bearer.
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = {
        "model_list": [
            {"model_name": "auto", "litellm_params": {"model": "openai/sim", "api_base": sim_base, "api_key": "sim"}}
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        **os.environ,
        # No network beyond package registries here: use the bundled model cost map, send no telemetry.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    command = [str(litellm_binary()), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--num_workers", "1"]
    process = start(command, log, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health/liveliness", process, log, timeout=240)
    except (RuntimeError, TimeoutError) as exc:
        process.terminate()
        raise LiteLLMUnavailable(f"the LiteLLM proxy did not start: {exc}") from None
    return process, f"{base}/v1/chat/completions", master_key


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (a real measurement, never an average of several)."""
    ordered = sorted(rounds, key=lambda run: run["rps"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_rps"] = [run["rps"] for run in rounds]
    return chosen


def _diff(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else round(value - baseline, 3)


def _ratio(value: float, baseline: float | None) -> float | None:
    return round(value / baseline, 2) if baseline else None


def measure(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for stream in (False, True):
        for concurrency in args.concurrency:
            runs: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
            for round_ in range(args.rounds):
                for target in targets:
                    run = load(target, stream, concurrency, args)
                    runs[target.name].append(run)
                    mode = "stream" if stream else "json"
                    print(
                        f"  {mode:<6} c={concurrency:<3} round {round_ + 1}: {target.name:<8} {run['rps']:>8.0f} req/s"
                        f"  p50 {run['p50_ms']} ms  errors {run['errors']}",
                        flush=True,
                    )
            chosen = {name: median_round(results) for name, results in runs.items()}
            direct, litellm, baseline = chosen["direct"], chosen.get("litellm"), chosen.get("baseline")
            for target in targets:
                run = chosen[target.name]
                rows.append(
                    {
                        "target": target.name,
                        "stream": stream,
                        "concurrency": concurrency,
                        **{key: value for key, value in run.items() if key not in ("url", "concurrency")},
                        "added_p50_ms": None if target.name == "direct" else _diff(run["p50_ms"], direct["p50_ms"]),
                        "added_p99_ms": None if target.name == "direct" else _diff(run["p99_ms"], direct["p99_ms"]),
                        "rps_vs_direct": _ratio(run["rps"], direct["rps"]),
                        "rps_vs_litellm": _ratio(run["rps"], litellm["rps"]) if litellm else None,
                        "rps_vs_baseline": _ratio(run["rps"], baseline["rps"]) if baseline else None,
                        "cpu_vs_baseline": (
                            _ratio(run["cpu_us_per_request"], baseline["cpu_us_per_request"])
                            if baseline and run["cpu_us_per_request"]
                            else None
                        ),
                    }
                )
    return rows


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| mode | conc | target | req/s | p50 ms | p99 ms | +p50 ms | +p99 ms | x direct | x LiteLLM "
        "| CPU µs/req | x base req/s | x base CPU | errors |"
    )
    lines = [header, "|" + "|".join(["---"] * 3 + ["---:"] * 11) + "|"]
    for row in rows:
        cells = [
            "stream" if row["stream"] else "json",
            str(row["concurrency"]),
            row["target"],
            f"{row['rps']:.0f}",
            _cell(row["p50_ms"], 3),
            _cell(row["p99_ms"], 3),
            _cell(row["added_p50_ms"], 3),
            _cell(row["added_p99_ms"], 3),
            _cell(row["rps_vs_direct"]),
            _cell(row["rps_vs_litellm"], 1),
            _cell(row["cpu_us_per_request"]),
            _cell(row.get("rps_vs_baseline"), 3),
            _cell(row.get("cpu_vs_baseline"), 3),
            str(row["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]], memory: dict[str, Any]) -> list[str]:
    """Issue 3's targets against this run, hit or miss."""

    def row(target: str, stream: bool, concurrency: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if (r["target"], r["stream"], r["concurrency"]) == (target, stream, concurrency)), None
        )

    out = []
    c1 = row("router", False, 1)
    if c1 is not None and c1["added_p50_ms"] is not None:
        hit = c1["added_p50_ms"] <= TARGET_ADDED_P50_MS
        out.append(f"added p50 at concurrency 1 (json): {c1['added_p50_ms']:.3f} ms (target <= 0.5): {_hit(hit)}")
    c32 = row("router", False, 32)
    if c32 is not None:
        hit = c32["rps"] >= TARGET_RPS_AT_32
        out.append(f"req/s at concurrency 32 (json): {c32['rps']:.0f} (target >= 2500): {_hit(hit)}")
    ratios = [r["rps_vs_litellm"] for r in rows if r["target"] == "router" and r["rps_vs_litellm"] is not None]
    if ratios:
        worst = min(ratios)
        hit = worst >= TARGET_LITELLM_RATIO
        out.append(f"throughput vs LiteLLM: {worst:.1f}x at worst (target >= 15x): {_hit(hit)}")
    else:
        out.append("throughput vs LiteLLM: not measured in this run")
    for r in rows:
        if r["target"] == "router" and r.get("rps_vs_baseline") is not None:
            mode = "stream" if r["stream"] else "json"
            out.append(
                f"router vs baseline ({mode} c={r['concurrency']}): req/s x{r['rps_vs_baseline']:.3f}, "
                f"CPU/req x{r['cpu_vs_baseline']:.3f} (target: req/s >= 0.95): {_hit(r['rps_vs_baseline'] >= 0.95)}"
            )
    peak = memory["router"]["after_load"]["peak_rss_mb"]
    out.append(f"router peak RSS: {peak} MB (target <= 80): {_hit(peak <= TARGET_RSS_MB)}")
    return out


def _hit(hit: bool) -> str:
    return "HIT" if hit else "MISS"


def machine_facts() -> dict[str, Any]:
    try:
        load_average = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load_average = []
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_at_start": load_average,
    }


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hybridroute-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    facts = machine_facts()
    try:
        sim_port = free_port()
        sim_log = workdir / "sim.log"
        sim = start([sys.executable, str(SIMULATOR), "--port", str(sim_port), "--chunks", "8"], sim_log)
        processes.append(sim)
        sim_base = f"http://127.0.0.1:{sim_port}/v1"
        wait_http(f"{sim_base}/models", sim, sim_log)

        config = {
            "modelAliases": ["auto"],
            "endpoints": [{"name": "local-sim", "type": "local", "baseURL": sim_base, "model": "sim"}],
        }
        config_path = workdir / "router.yaml"
        config_path.write_text(yaml.safe_dump(config))
        router_port = free_port()
        router_log = workdir / "router.log"
        metrics_port = free_port()
        baseline_config_path = config_path
        if args.fleet_budget:
            prometheus_url = start_prometheus(workdir, metrics_port, processes)
            budget_config = {**config, "budget": fleet_budget(prometheus_url)}
            config_path = workdir / "router-budget.yaml"
            config_path.write_text(yaml.safe_dump(budget_config))
        router_cmd = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(config_path)]
        router_cmd += ["--port", str(router_port), "--metrics-port", str(metrics_port)]
        router_cmd += ["--log-level", args.router_log_level]
        baseline_cmd = [*router_cmd]
        baseline_cmd[baseline_cmd.index("--config") + 1] = str(baseline_config_path)
        if args.audit:
            router_cmd += ["--audit-file", str(workdir / "audit" / "audit.jsonl")]
        router = start(router_cmd, router_log)
        processes.append(router)
        wait_http(f"http://127.0.0.1:{router_port}/readyz", router, router_log)

        targets = [
            Target("direct", f"{sim_base}/chat/completions", None),
            Target("router", f"http://127.0.0.1:{router_port}/v1/chat/completions", router.pid),
        ]
        if args.baseline_ref:
            baseline, baseline_port = start_baseline(args.baseline_ref, baseline_cmd, workdir)
            processes.append(baseline)
            targets.insert(1, Target("baseline", f"http://127.0.0.1:{baseline_port}/v1/chat/completions", baseline.pid))
        if args.baseline_src:
            baseline_port, baseline_log = free_port(), workdir / "router-baseline.log"
            baseline = start_router(
                baseline_config_path, baseline_port, free_port(), args, baseline_log, args.baseline_src
            )
            processes.append(baseline)
            wait_http(f"http://127.0.0.1:{baseline_port}/readyz", baseline, baseline_log)
            targets.append(Target("baseline", f"http://127.0.0.1:{baseline_port}/v1/chat/completions", baseline.pid))
        litellm_error = None
        if args.litellm:
            try:
                litellm, litellm_url, master_key = start_litellm(workdir, sim_base, workdir / "litellm.log")
                processes.append(litellm)
                targets.append(Target("litellm", litellm_url, litellm.pid, master_key))
            except LiteLLMUnavailable as exc:
                litellm_error = str(exc)
                print(f"\n!!! LITELLM NOT MEASURED: {litellm_error}\n", file=sys.stderr, flush=True)

        memory = {target.name: {"idle": tree_memory_mb(target.pid)} for target in targets if target.pid}
        rows = measure(targets, args)
        for target in targets:
            if target.pid:
                memory[target.name]["after_load"] = tree_memory_mb(target.pid)

        print()
        print(table(rows))
        print()
        for name, sizes in memory.items():
            idle, loaded = sizes["idle"], sizes["after_load"]
            after = f"after load {loaded['rss_mb']} MB (peak {loaded['peak_rss_mb']} MB)"
            print(f"{name} RSS: idle {idle['rss_mb']} MB, {after}")
        if litellm_error:
            print(f"LiteLLM: NOT MEASURED ({litellm_error})")
        print()
        for line in verdicts(rows, memory):
            print(line)
        result = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": facts,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "memory": memory,
            "litellm_error": litellm_error,
            "runs": rows,
            "verdicts": verdicts(rows, memory),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"router_overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"\nresults: {out.relative_to(ROOT)}   (process logs: {workdir})")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each target's median is kept")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--router-log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--litellm", action="store_true", help="also measure the LiteLLM proxy (own venv)")
    parser.add_argument("--audit", action="store_true", help="run the router with its audit trail on")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-ref", help="also measure the router at this git ref (e.g. main), as `baseline`")
    baseline.add_argument(
        "--baseline-src", type=Path, help="also measure a router from this source tree, as `baseline`"
    )
    parser.add_argument("--fleet-budget", action="store_true", help="give the router a fleet budget (Prometheus)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
