"""What the router costs: the same upstream simulator reached directly and through the router.

    .venv/bin/python bench/router_overhead.py [--duration 5] [--litellm]

In one run, for non-streaming and streaming chat completions at concurrency 1 and 32, it measures
requests per second and latency percentiles against the upstream simulator directly (baseline) and
through `hybridroute-router` (subprocess, one uvicorn worker, as deployed); the difference of the
percentiles is the router's added latency. With `--litellm` the LiteLLM proxy (installed into the
venv on demand, never a project dependency) is measured against the same simulator too.

Processes: simulator, router (and LiteLLM) run as separate processes; the load generator is an
aiohttp client with one connection per concurrent worker in this process, so it shares no event
loop with what it measures. On a small machine all of them compete for the same cores: read the
numbers as "router vs direct on this machine", and compare ratios rather than absolutes.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def rss_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process (Linux /proc), in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": round(values.get("VmRSS", 0), 1), "peak_rss_mb": round(values.get("VmHWM", 0), 1)}


@dataclass
class Run:
    target: str
    stream: bool
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    router_overhead_p50_ms: float | None = None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def load(url: str, stream: bool, concurrency: int, duration: float, warmup: float) -> tuple[Run, list[float]]:
    body = json.dumps({**BODY, "stream": stream}).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    latencies: list[float] = []
    overheads: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        measure_from = started + warmup
        stop_at = measure_from + duration

        async def worker() -> None:
            nonlocal errors
            while True:
                begin = time.perf_counter()
                if begin >= stop_at:
                    return
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                        overhead = response.headers.get("x-hybridroute-overhead-ms")
                except aiohttp.ClientError:
                    ok, overhead = False, None
                end = time.perf_counter()
                if begin >= measure_from:
                    if ok:
                        latencies.append((end - begin) * 1000)
                        if overhead is not None:
                            overheads.append(float(overhead))
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    run = Run(
        target=url,
        stream=stream,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        rps=round(len(latencies) / duration, 1),
        p50_ms=round(percentile(latencies, 0.5), 3),
        p90_ms=round(percentile(latencies, 0.9), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        router_overhead_p50_ms=round(statistics.median(overheads), 3) if overheads else None,
    )
    return run, latencies


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def start_litellm(workdir: Path, sim_url: str) -> tuple[subprocess.Popen[bytes], str]:
    try:
        import litellm  # noqa: F401
    except ImportError:
        print("installing litellm[proxy] into the venv (benchmark peer, not a project dependency)...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "litellm[proxy]"], check=True)
    config = {
        "model_list": [
            {"model_name": "auto", "litellm_params": {"model": "openai/sim", "api_base": sim_url, "api_key": "x"}}
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    binary = shutil.which("litellm", path=str(Path(sys.executable).parent)) or "litellm"
    process = start([binary, "--config", str(path), "--port", str(port), "--num_workers", "1"], workdir / "litellm.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", timeout=180)
    return process, f"{url}/v1/chat/completions"


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'mode':<10}{'conc':>5}  {'target':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'rps/direct':>11}{'ovh hdr':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        added50 = "" if row["added_p50_ms"] is None else f"{row['added_p50_ms']:.3f}"
        added99 = "" if row["added_p99_ms"] is None else f"{row['added_p99_ms']:.3f}"
        overhead = "" if row["router_overhead_p50_ms"] is None else f"{row['router_overhead_p50_ms']:.3f}"
        lines.append(
            f"{'stream' if row['stream'] else 'json':<10}{row['concurrency']:>5}  {row['name']:<9}{row['rps']:>9.0f}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{added50:>9}{added99:>9}{row['rps_ratio']:>11.2f}{overhead:>9}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hybridroute-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sim_port = free_port()
        sim = [sys.executable, str(ROOT / "e2e" / "upstream_sim.py"), "--port", str(sim_port), "--chunks", "8"]
        processes.append(start(sim, workdir / "sim.log"))
        sim_base = f"http://127.0.0.1:{sim_port}/v1"
        wait_http(f"{sim_base}/models")

        config = {
            "modelAliases": ["auto"],
            "endpoints": [{"name": "local-sim", "type": "local", "baseURL": sim_base, "model": "sim"}],
        }
        config_path = workdir / "router.yaml"
        config_path.write_text(yaml.safe_dump(config))
        router_port = free_port()
        router_cmd = [sys.executable, "-m", "hybridroute_router.cli", "--config", str(config_path)]
        router_cmd += ["--port", str(router_port), "--log-level", args.router_log_level]
        router = start(router_cmd, workdir / "router.log")
        processes.append(router)
        wait_http(f"http://127.0.0.1:{router_port}/readyz")
        idle_rss = rss_mb(router.pid)

        targets = {
            "direct": f"{sim_base}/chat/completions",
            "router": f"http://127.0.0.1:{router_port}/v1/chat/completions",
        }
        if args.litellm:
            litellm, litellm_url = start_litellm(workdir, sim_base)
            processes.append(litellm)
            targets["litellm"] = litellm_url

        rows: list[dict[str, Any]] = []
        for stream in (False, True):
            for concurrency in args.concurrency:
                baseline: Run | None = None
                for name, url in targets.items():
                    run, _ = await load(url, stream, concurrency, args.duration, args.warmup)
                    if name == "direct":
                        baseline = run
                    assert baseline is not None
                    row = {"name": name, **asdict(run)}
                    row["added_p50_ms"] = None if name == "direct" else round(run.p50_ms - baseline.p50_ms, 3)
                    row["added_p99_ms"] = None if name == "direct" else round(run.p99_ms - baseline.p99_ms, 3)
                    row["rps_ratio"] = round(run.rps / baseline.rps, 3) if baseline.rps else 0.0
                    rows.append(row)
                    print(f"  {name:<8} stream={stream!s:<5} c={concurrency:<3} {run.rps:>8.0f} req/s", flush=True)
        loaded_rss = rss_mb(router.pid)
        print()
        print(table(rows))
        print(
            f"\nrouter RSS: idle {idle_rss['rss_mb']} MB, after load {loaded_rss['rss_mb']} MB "
            f"(peak {loaded_rss['peak_rss_mb']} MB)"
        )
        result = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "settings": {k: v for k, v in vars(args).items()},
            "router_rss": {"idle": idle_rss, "after_load": loaded_rss},
            "runs": rows,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"router_overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"results: {out.relative_to(ROOT)}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--router-log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--litellm", action="store_true", help="also measure the LiteLLM proxy (installed on demand)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
