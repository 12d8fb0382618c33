"""Spillover: three ways of leaving a saturating local pool, measured in one run against a real llama.cpp.

    .venv/bin/python bench/spillover.py [--peak 12] [--steady 20] [--ramp 40] [--hold 30] [--cool 20]
    make bench-spillover

One real local model server (the llama.cpp image's entrypoint outside the image: llama-cpp-python
serving Gemma 3 270M with `--metrics`, one request at a time), the cloud simulator
(`e2e/upstream_sim.py`, 1 s per answer, priced like the demo's cloud) and a real Prometheus (1 s
scrape; the llama.cpp target labelled `endpoint`/`namespace` as the chart's PodMonitor does). Per
mode, a fresh router CLI on a standalone config, and the same closed-loop client schedule: `--steady`
seconds at 2 clients, a `--ramp` to `--peak` clients, `--hold` seconds at the peak, `--cool` seconds back
at 2. Clients ask for 16 tokens and send the next request when the answer comes.

Modes (router config only; everything else is identical):
  p95        the p95 breaker alone (passive rate judging off, saturation off)
  inflight   plus `maxConcurrency: 2` on the local endpoint (this router's in-flight shedding)
  saturation the saturation signals: predictive admission and slow start (p95 breaker on as well)

The SLO is set from this machine's speed, measured again before each mode: 4 x the median time of one
request on the idle pool (shared CPUs vary, by 4x between modes in one run here; a fixed number
would measure the neighbours). Reported per mode:
  local p95/p99   of requests served locally, over the whole schedule
  share steady    local share of requests sent in the first steady phase
  share peak      local share of requests sent while the peak is held
  to spill        seconds from saturation (the first moment the clients outnumbered what the pool
                  serves within the SLO: SLO / request time) to the first request served by the
                  cloud; negative: it spilled before
  flips/min       changes of the majority endpoint between consecutive seconds, plus breaker
                  transitions, per minute of schedule
  cloud USD       the routers' cost estimate summed over cloud-served requests

With `--rounds N` the modes run N times, interleaved (p95, inflight, saturation, p95, ...), one row
per run, so a drift of the machine's speed shows up as spread within a mode rather than as a
difference between modes.

Results: a table on stdout and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: e2e/ and tests/ are importable

from bench.failover import free_port, spawn, wait_http  # noqa: E402
from e2e import modelserver  # noqa: E402
from tests.fixtures.prometheus import PrometheusServer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODES = ("p95", "inflight", "saturation")
MAX_TOKENS = 16
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": MAX_TOKENS}
ENTRYPOINT = ROOT / "e2e" / "containerfiles" / "llamacpp_server.py"


@dataclass(frozen=True)
class Answer:
    sent: float
    seconds: float
    status: int
    endpoint: str
    cost_usd: float


@dataclass(frozen=True)
class Schedule:
    steady: float
    ramp: float
    hold: float
    cool: float
    peak: int
    base: int = 2

    @property
    def total(self) -> float:
        return self.steady + self.ramp + self.hold + self.cool

    def clients(self, t: float) -> int:
        """Clients wanted `t` seconds into the schedule."""
        if t < self.steady or t >= self.steady + self.ramp + self.hold:
            return self.base
        if t < self.steady + self.ramp:
            return self.base + math.floor((self.peak - self.base) * (t - self.steady) / self.ramp)
        return self.peak


@dataclass
class Result:
    mode: str
    slo_ms: int
    requests: int
    local_p95_ms: float | None
    local_p99_ms: float | None
    share_steady: float | None
    share_peak: float | None
    to_spill_s: float | None
    flips_per_min: float
    breaker_transitions: int
    cloud_usd: float
    errors: int


# --------------------------------------------------------------------------------------------------
# pure summaries


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def local_share(answers: Sequence[Answer], start: float, end: float) -> float | None:
    window = [a for a in answers if start <= a.sent < end and a.status == 200]
    return sum(a.endpoint == "local-a" for a in window) / len(window) if window else None


def majority_flips(answers: Sequence[Answer], start: float, end: float) -> int:
    """Changes of the endpoint serving most requests from one second to the next."""
    leaders = []
    for second in range(math.floor(start), math.ceil(end)):
        served = Counter(a.endpoint for a in answers if second <= a.sent < second + 1 and a.status == 200)
        if served:
            leaders.append(served.most_common(1)[0][0])
    return sum(1 for before, after in itertools.pairwise(leaders) if before != after)


def summarize(
    mode: str,
    answers: Sequence[Answer],
    t0: float,
    schedule: Schedule,
    slo_ms: int,
    request_ms: float,
    transitions: int,
) -> Result:
    ok = [a for a in answers if a.status == 200]
    local = [a.seconds * 1000 for a in ok if a.endpoint == "local-a"]
    capacity = slo_ms / request_ms  # clients the pool serves within the SLO
    saturated_at = next(
        (t0 + t / 10 for t in range(int(schedule.total * 10)) if schedule.clients(t / 10) > capacity), None
    )
    first_cloud = min((a.sent for a in ok if a.endpoint != "local-a" and a.sent >= t0 + schedule.steady), default=None)
    to_spill = None if saturated_at is None or first_cloud is None else first_cloud - saturated_at
    peak_start = t0 + schedule.steady + schedule.ramp
    flips = majority_flips(answers, t0, t0 + schedule.total)
    return Result(
        mode=mode,
        slo_ms=slo_ms,
        requests=len(answers),
        local_p95_ms=percentile(local, 0.95),
        local_p99_ms=percentile(local, 0.99),
        share_steady=local_share(answers, t0, t0 + schedule.steady),
        share_peak=local_share(answers, peak_start, peak_start + schedule.hold),
        to_spill_s=to_spill,
        flips_per_min=(flips + transitions) / (schedule.total / 60),
        breaker_transitions=transitions,
        cloud_usd=sum(a.cost_usd for a in ok if a.endpoint != "local-a"),
        errors=len(answers) - len(ok),
    )


def table(results: Sequence[Result]) -> str:
    def number(value: float | None, digits: int = 0) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    lines = [
        "| mode | SLO ms | requests | local p95 ms | local p99 ms | local share steady | local share peak "
        "| s saturation to spill | flips/min | breaker transitions | cloud USD | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.slo_ms} | {r.requests} | {number(r.local_p95_ms)} | {number(r.local_p99_ms)} "
            f"| {number(r.share_steady, 2)} | {number(r.share_peak, 2)} | {number(r.to_spill_s, 1)} "
            f"| {r.flips_per_min:.1f} | {r.breaker_transitions} | {r.cloud_usd:.4f} | {r.errors} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# processes and load


def router_document(mode: str, llama_url: str, cloud_port: int, prometheus_url: str, slo_ms: int) -> dict[str, Any]:
    local: dict[str, Any] = {
        "name": "local-a",
        "type": "local",
        "baseURL": f"{llama_url}/v1",
        "model": "gemma",
        "maxContextTokens": 1024,
        "parallelSlots": 1,
    }
    if mode == "inflight":
        local["maxConcurrency"] = 2
    return {
        "policy": {"name": f"spill-{mode}"},
        "endpoints": [
            local,
            {
                "name": "cloud-a",
                "type": "cloud",
                "baseURL": f"http://127.0.0.1:{cloud_port}/v1",
                "model": "cloud",
                "pricing": {"inputPerMTok": 0.15, "outputPerMTok": 0.6},
            },
        ],
        "slo": {"p95LatencyMs": slo_ms, "requestTimeoutMs": 120_000},
        "saturation": {"enabled": mode == "saturation", "evaluationSeconds": 1, "window": "15s"},
        "circuitBreaker": {
            "minimumCalls": 10_000,
            "prometheus": {"url": prometheus_url, "window": "10s", "evaluationSeconds": 1, "consecutiveBreaches": 2},
        },
    }


def timed_request(base: str) -> float:
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", json.dumps(BODY).encode(), {"content-type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return (time.monotonic() - started) * 1000


def idle(llama_url: str, timeout: float = 120) -> None:
    """Wait until the pool has nothing in flight (the previous mode's last requests drained)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{llama_url}/metrics", timeout=5) as response:
            text = response.read().decode()
        if "llamacpp:requests_processing 0" in text and "llamacpp:requests_deferred 0" in text:
            return
        time.sleep(0.5)


async def ask(session: aiohttp.ClientSession, router_url: str) -> Answer:
    sent = time.time()
    try:
        async with session.post(f"{router_url}/v1/chat/completions", json=BODY) as response:
            await response.read()
            headers = response.headers
            cost = float(headers.get("x-hybridroute-cost-usd", "0") or 0)
            return Answer(sent, time.time() - sent, response.status, headers.get("x-hybridroute-endpoint", ""), cost)
    except (aiohttp.ClientError, TimeoutError):
        return Answer(sent, time.time() - sent, 0, "", 0.0)


async def run_schedule(router_url: str, schedule: Schedule) -> tuple[list[Answer], float]:
    answers: list[Answer] = []
    t0 = time.time()
    stop = asyncio.Event()

    async def client(index: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
            while not stop.is_set():
                if index >= schedule.clients(time.time() - t0):
                    await asyncio.sleep(0.2)
                    continue
                answers.append(await ask(session, router_url))

    tasks = [asyncio.create_task(client(index)) for index in range(schedule.peak)]
    await asyncio.sleep(schedule.total)
    stop.set()
    await asyncio.gather(*tasks)
    return answers, t0


def run_mode(
    mode: str,
    schedule: Schedule,
    workdir: Path,
    llama_url: str,
    cloud_port: int,
    prometheus: PrometheusServer,
    slo_ms: int,
) -> tuple[list[Answer], float, str]:
    """One mode: a fresh router, the schedule, the router's log."""
    port, metrics_port = free_port(), free_port()
    config = workdir / f"router-{mode}.json"
    config.write_text(json.dumps(router_document(mode, llama_url, cloud_port, prometheus.url, slo_ms)))
    command = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(config)]
    command += ["--port", str(port), "--metrics-port", str(metrics_port), "--log-level", "warning"]
    log = workdir / f"router-{mode}.log"
    router = spawn(command, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        llama_target = llama_url.removeprefix("http://")
        prometheus.set_target_groups(
            [([f"127.0.0.1:{metrics_port}"], {}), ([llama_target], {"endpoint": "local-a", "namespace": "default"})]
        )
        answers, t0 = asyncio.run(run_schedule(f"http://127.0.0.1:{port}", schedule))
        return answers, t0, log.read_text(errors="replace")
    finally:
        router.terminate()
        router.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", action="append", choices=MODES, help="default: all three")
    parser.add_argument("--peak", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1, help="run the modes this many times, interleaved")
    parser.add_argument("--steady", type=float, default=20)
    parser.add_argument("--ramp", type=float, default=40)
    parser.add_argument("--hold", type=float, default=30)
    parser.add_argument("--cool", type=float, default=20)
    args = parser.parse_args()
    schedule = Schedule(args.steady, args.ramp, args.hold, args.cool, args.peak)
    workdir = Path(tempfile.mkdtemp(prefix="spillover-"))
    gguf = modelserver.gemma_gguf(Path.home() / ".cache" / "hybridroute" / "models")
    llama_port, cloud_port = free_port(), free_port()
    llama_url = f"http://127.0.0.1:{llama_port}"
    llama = [sys.executable, str(ENTRYPOINT), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(llama_port)]
    llama += ["--alias", "gemma", "--chat-template", "gemma", "-t", "2", "-c", "1024", "--metrics"]
    cloud = [sys.executable, str(ROOT / "e2e" / "upstream_sim.py"), "--port", str(cloud_port), "--name", "cloud"]
    cloud += ["--latency-ms", "1000", "--completion-tokens", str(MAX_TOKENS)]
    processes = [spawn(llama, workdir / "llama.log"), spawn(cloud, workdir / "cloud.log")]
    prometheus = PrometheusServer(workdir / "prometheus")
    results = []
    try:
        wait_http(f"{llama_url}/health", timeout=180)
        wait_http(f"http://127.0.0.1:{cloud_port}/v1/models")
        prometheus.start()
        timed_request(llama_url)  # pages the model in
        print(f"workdir {workdir}", flush=True)
        for mode in [mode for _ in range(args.rounds) for mode in args.mode or MODES]:
            idle(llama_url)
            # Measured again before every mode: on shared CPUs the pool's speed drifts between modes.
            request_ms = statistics.median([timed_request(llama_url) for _ in range(3)])
            slo_ms = max(1_000, round(4 * request_ms))
            print(f"{mode}: one request on the idle pool {request_ms:.0f} ms -> SLO {slo_ms} ms", flush=True)
            answers, t0, log = run_mode(mode, schedule, workdir, llama_url, cloud_port, prometheus, slo_ms)
            transitions = log.count("circuit breaker transition")
            results.append(summarize(mode, answers, t0, schedule, slo_ms, request_ms, transitions))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    finally:
        prometheus.stop()
        for process in processes:
            process.terminate()
            process.wait(30)
    print(table(sorted(results, key=lambda r: MODES.index(r.mode))))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"spillover-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"schedule": asdict(schedule), "results": [asdict(r) for r in results]}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
