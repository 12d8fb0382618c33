"""A detached Prometheus (Debian's `prometheus` binary) scraping fixed loopback targets every second.

The demo starts it from `e2e/demo.py up` and stops it from `down`, possibly another process, so it runs
through `e2e.processes` (own session, pid file, log in DIR/logs/) rather than as a child object the way
the test fixture (tests/fixtures/prometheus.py) holds its server. `scrape_config` is pure; `start`
writes it, spawns the binary and returns once `/-/ready` answers.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from e2e import processes

PROCESS_NAME = "prometheus"
MISSING_BINARY = (
    "Debian's `prometheus` binary is not on PATH: install it with `make deps` "
    "(runs e2e/install-system-deps.sh: apt-get install prometheus)"
)


class PrometheusError(RuntimeError):
    """Prometheus is missing or did not become ready; the message says where to look."""


def scrape_config(targets: Sequence[str], job: str, interval_seconds: int = 1) -> dict[str, Any]:
    """A prometheus.yml scraping `targets` (host:port) under `job` every `interval_seconds`."""
    interval = f"{interval_seconds}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


def start(
    state_dir: Path, port: int, targets: Sequence[str], job: str, timeout: float = 60.0, address: str = "127.0.0.1"
) -> str:
    """Start Prometheus on `address`:`port` (unless already running); return its base URL once ready.

    `address` other than loopback: pods ask it too (the router's p95 breaker), e.g. the node link's host end.
    """
    url = f"http://{address}:{port}"
    if processes.running_pid(state_dir, PROCESS_NAME) is None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError(MISSING_BINARY)
        workdir = state_dir / "prometheus"
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(scrape_config(targets, job)))
        argv = [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={address}:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        processes.spawn(state_dir, PROCESS_NAME, argv)
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if processes.running_pid(state_dir, PROCESS_NAME) is None:
            raise PrometheusError(f"prometheus exited; end of its log:\n{processes.log_tail(state_dir, PROCESS_NAME)}")
        if time.monotonic() > deadline:
            raise PrometheusError(f"prometheus did not become ready within {timeout:.0f} s at {url}")
        time.sleep(0.2)
    return url


def stop(state_dir: Path) -> None:
    processes.stop(state_dir, PROCESS_NAME)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
