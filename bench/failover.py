"""Failover time: from a fault in the local upstream to 95 % of traffic on cloud, and what clients saw.

    .venv/bin/python bench/failover.py [--scenario dead slow-p95 ...] [--rate 100] [--after 25]

Every scenario starts fresh processes: two upstream simulators (`e2e/upstream_sim.py`, "local" and
"cloud"), the router CLI on a standalone config (one uvicorn worker, as deployed) and a real
Prometheus (Debian's binary, 1 s scrape, the test fixture's `PrometheusServer`). Open-loop
non-streaming traffic at a fixed rate (`e2e.loadclient.PacedLoad`: arrivals do not slow down when
local does, so shares of traffic mean shares of arrivals); once Prometheus knows local's p95, the
fault is injected:

  dead      the local simulator is killed (SIGKILL): connections refused
  erroring  local answers HTTP 500 to everything
  slow-p95  local answers after 800 ms (SLO 400 ms) with passive rate judging off, so only the
            Prometheus p95 breaker (evaluation 1 s, window 5 s, 2 breaches) can move traffic
  slow      the same fault with the default passive settings on as well (slow-call rate may win)

Reported per scenario:
  t95       seconds from the fault to the first moment (0.25 s steps) from which the requests sent
            in the next 1 s were >= 95 % served by cloud (0: per-request failover moved them at once)
  open      seconds until the router logged the local breaker opening, and why
  prom>SLO  slow scenarios: seconds until Prometheus' own p95 for local exceeded the SLO
  errors    client-visible errors (non-2xx or no answer) among requests sent after the fault
  latency   p50 / p99 / max of answers sent in the first 5 s after the fault (baseline: before)

Results: a table on stdout and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: e2e/ and tests/ are importable

from e2e.loadclient import Outcome, PacedLoad  # noqa: E402
from hybridroute_router.config import parse_config  # noqa: E402
from hybridroute_router.p95 import render_query  # noqa: E402
from tests.fixtures.prometheus import PrometheusServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("dead", "erroring", "slow-p95", "slow")
SLO_MS = 400
SLOW_MS = 800
BIN_S = 0.25
SHARE = 0.95
WINDOW_S = 1.0
SWITCH_S = 5.0
"""The first seconds after the fault, whose latencies are reported as the switch's cost."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def router_document(local_port: int, cloud_port: int, prometheus_url: str, passive_rates: bool) -> dict[str, Any]:
    breaker: dict[str, Any] = {
        "prometheus": {"url": prometheus_url, "window": "5s", "evaluationSeconds": 1, "consecutiveBreaches": 2}
    }
    if not passive_rates:
        breaker["minimumCalls"] = 10_000  # rates never judged: consecutive failures and p95 remain
    return {
        "policy": {"name": "failover"},
        "endpoints": [
            {"name": "local-a", "type": "local", "baseURL": f"http://127.0.0.1:{local_port}/v1", "model": "local"},
            {"name": "cloud-a", "type": "cloud", "baseURL": f"http://127.0.0.1:{cloud_port}/v1", "model": "cloud"},
        ],
        "slo": {"p95LatencyMs": SLO_MS},
        "saturation": {"enabled": False},  # the breaker's failover is measured here; spilling is bench/spillover.py's
        "circuitBreaker": breaker,
    }


# --------------------------------------------------------------------------------------------------
# pure summaries


def time_to_share(outcomes: Sequence[Outcome], fault_at: float, cloud: str = "cloud-a") -> float | None:
    """Seconds from the fault to the first bin start from which a window of requests is >= SHARE cloud.

    Requests are placed by send time; an error counts as "not on cloud". Half-open probes (a few
    requests sent local on purpose) do not undo the switch inside a window of WINDOW_S.
    """
    bins: defaultdict[int, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.sent >= fault_at:
            bins[int((outcome.sent - fault_at) / BIN_S)].append(outcome.ok and outcome.endpoint == cloud)
    span = round(WINDOW_S / BIN_S)
    last = max(bins, default=-1)
    for start in range(0, last - span + 2):
        window = [on_cloud for index in range(start, start + span) for on_cloud in bins.get(index, [])]
        if window and sum(window) >= SHARE * len(window):
            return round(start * BIN_S, 3)
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_ms(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    seconds = [outcome.seconds for outcome in outcomes if outcome.ok]
    result: dict[str, float | None] = {}
    for name, value in (
        ("p50", statistics.median(seconds) if seconds else None),
        ("p99", percentile(seconds, 0.99)),
        ("max", max(seconds) if seconds else None),
    ):
        result[name] = None if value is None else round(value * 1000, 1)
    return result


def breaker_opens(router_log: str, endpoint: str = "local-a") -> list[tuple[float, str]]:
    """(wall-clock ts, reason) of each logged transition of `endpoint` to open."""
    opens = []
    for line in router_log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        transition = record.get("msg") == "circuit breaker transition" and record.get("endpoint") == endpoint
        if transition and record.get("to") == "open":
            opens.append((float(record["ts"]), str(record.get("why"))))
    return opens


@dataclass
class Result:
    scenario: str
    t95_s: float | None
    open_s: float | None
    open_reason: str | None
    prometheus_over_slo_s: float | None
    errors: int
    requests_after_fault: int
    cloud_share_after_fault: float
    baseline_ms: dict[str, float | None]
    switch_ms: dict[str, float | None]
    dropped_arrivals: int
    """Arrivals not sent because max_in_flight requests were outstanding (0 unless the router stalled)."""


def summarize(
    scenario: str,
    outcomes: Sequence[Outcome],
    fault_at: float,
    router_log: str,
    crossed_at: float | None,
    dropped: int = 0,
) -> Result:
    after = [outcome for outcome in outcomes if outcome.sent >= fault_at]
    served = [outcome for outcome in after if outcome.ok]
    opens = [(ts, why) for ts, why in breaker_opens(router_log) if ts >= fault_at]
    first_open = opens[0] if opens else None
    return Result(
        scenario=scenario,
        t95_s=time_to_share(outcomes, fault_at),
        open_s=round(first_open[0] - fault_at, 3) if first_open else None,
        open_reason=first_open[1] if first_open else None,
        prometheus_over_slo_s=round(crossed_at - fault_at, 3) if crossed_at is not None else None,
        errors=len(after) - len(served),
        requests_after_fault=len(after),
        cloud_share_after_fault=round(sum(o.endpoint == "cloud-a" for o in served) / max(1, len(served)), 3),
        baseline_ms=latency_ms([o for o in outcomes if fault_at - SWITCH_S <= o.sent < fault_at]),
        switch_ms=latency_ms([o for o in after if o.sent < fault_at + SWITCH_S]),
        dropped_arrivals=dropped,
    )


# --------------------------------------------------------------------------------------------------
# one scenario


async def local_p95_ms(prometheus: PrometheusServer, query: str) -> float | None:
    for series in await asyncio.to_thread(prometheus.query, query):
        if series["metric"].get("endpoint") == "local-a":
            return float(series["value"][1]) * 1000
    return None


async def first_crossing(prometheus: PrometheusServer, query: str) -> float:
    """Wall-clock moment Prometheus' local p95 first exceeds the SLO (polled every 0.2 s)."""
    while True:
        asked = time.time()
        value = await local_p95_ms(prometheus, query)
        if value is not None and value > SLO_MS:
            return asked
        await asyncio.sleep(0.2)


async def inject(scenario: str, local: subprocess.Popen[bytes], local_url: str) -> None:
    if scenario == "dead":
        local.kill()
        return
    change = {"failure_rate": 1.0, "failure_status": 500} if scenario == "erroring" else {"latency_ms": SLOW_MS}
    async with aiohttp.ClientSession() as session, session.post(f"{local_url}/_sim/behavior", json=change) as response:
        response.raise_for_status()


@dataclass
class Stack:
    """The processes of one scenario and where they listen."""

    workdir: Path
    local: subprocess.Popen[bytes]
    processes: list[subprocess.Popen[bytes]]
    prometheus: PrometheusServer
    local_url: str
    router_url: str
    query: str
    """The router's p95 query, rendered: what the benchmark asks Prometheus itself."""

    def router_log(self) -> str:
        return (self.workdir / "router.log").read_text(errors="replace")

    def stop(self) -> None:
        self.prometheus.stop()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_stack(scenario: str, workdir: Path) -> Stack:
    """Simulators, Prometheus and the router for one scenario; everything ready, traffic not started."""
    workdir.mkdir(parents=True)
    local_port, cloud_port, router_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    sim = [sys.executable, str(ROOT / "e2e" / "upstream_sim.py")]
    local = spawn([*sim, "--port", str(local_port), "--name", "local"], workdir / "local.log")
    processes = [local, spawn([*sim, "--port", str(cloud_port), "--name", "cloud"], workdir / "cloud.log")]
    prometheus = PrometheusServer(workdir / "prometheus")
    stack = Stack(workdir, local, processes, prometheus, f"http://127.0.0.1:{local_port}", "", "")
    try:
        for port in (local_port, cloud_port):
            wait_http(f"http://127.0.0.1:{port}/v1/models")
        prometheus.start()
        document = router_document(local_port, cloud_port, prometheus.url, passive_rates=scenario != "slow-p95")
        config_path = workdir / "router.json"
        config_path.write_text(json.dumps(document))
        cfg = parse_config(document).circuit_breaker.prometheus
        stack.query = render_query(cfg.query, "failover", cfg.window)
        router_cmd = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(config_path)]
        router_cmd += ["--port", str(router_port), "--metrics-port", str(metrics_port), "--log-level", "warning"]
        processes.append(spawn(router_cmd, workdir / "router.log"))
        stack.router_url = f"http://127.0.0.1:{router_port}"
        wait_http(f"{stack.router_url}/readyz")
        prometheus.set_targets([f"127.0.0.1:{metrics_port}"])
    except BaseException:
        stack.stop()
        raise
    return stack


async def drive(scenario: str, stack: Stack, args: argparse.Namespace) -> Result:
    """Warm up until Prometheus knows local's p95, inject the fault, keep the load going, summarize."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        load = PacedLoad(session, stack.router_url, args.rate)
        started = time.monotonic()
        while time.monotonic() - started < args.warmup or await local_p95_ms(stack.prometheus, stack.query) is None:
            if time.monotonic() - started > 60:
                raise TimeoutError("Prometheus never reported local's p95 during warm-up")
            await asyncio.sleep(0.25)
        fault_at = time.time()
        await inject(scenario, stack.local, stack.local_url)
        crossing = asyncio.create_task(first_crossing(stack.prometheus, stack.query)) if "slow" in scenario else None
        await asyncio.sleep(args.after)
        await load.stop()
    crossed_at = None
    if crossing is not None:
        crossed_at = crossing.result() if crossing.done() else None
        crossing.cancel()
    router_log = await asyncio.to_thread(stack.router_log)
    return summarize(scenario, load.outcomes, fault_at, router_log, crossed_at, load.dropped)


def table(results: Sequence[Result]) -> str:
    def num(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "| scenario | t95 s | open s (why) | prom>SLO s | errors | sent after | cloud share | "
        "base p50 ms | switch p50 / p99 / max ms |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        opened = "-" if r.open_s is None else f"{r.open_s:.2f} ({r.open_reason})"
        switch = " / ".join(num(r.switch_ms[key], 1) for key in ("p50", "p99", "max"))
        lines.append(
            f"| {r.scenario} | {num(r.t95_s)} | {opened} | {num(r.prometheus_over_slo_s)} | {r.errors} | "
            f"{r.requests_after_fault} | {r.cloud_share_after_fault:.1%} | {num(r.baseline_ms['p50'], 1)} | {switch} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    if shutil.which("prometheus") is None:
        raise SystemExit("Debian's `prometheus` binary is needed: `make deps` installs it")
    results = []
    with tempfile.TemporaryDirectory(prefix="hybridroute-failover-") as tmp:
        for scenario in args.scenario:
            print(f"[failover] {scenario} ...", flush=True)
            stack = start_stack(scenario, Path(tmp) / scenario)
            try:
                results.append(await drive(scenario, stack, args))
            finally:
                stack.stop()
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"failover-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "settings": {
            **vars(args),
            **{"slo_ms": SLO_MS, "slow_ms": SLOW_MS, "bin_s": BIN_S, "window_s": WINDOW_S, "share": SHARE},
        },
        "load_average": os.getloadavg(),
        "results": [asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2))
    print(f"[failover] wrote {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--rate", type=float, default=100, help="requests per second (open loop)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before the fault (at least)")
    parser.add_argument("--after", type=float, default=25.0, help="seconds of traffic after the fault")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
