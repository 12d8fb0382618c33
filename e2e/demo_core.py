"""What every `make demo` step shares: the settings, the state directory with its cluster and ports, and
where the traffic goes; e2e/demo.py (host processes) and e2e/demo_pods.py (pods on the real node)
hold the steps themselves.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from e2e import demo_manifests as manifests
from e2e import processes
from e2e.localcluster import LocalCluster
from e2e.traffic import Phase, demo_phases

ModelServerKind = Literal["llamacpp", "simulator"]


class DemoError(RuntimeError):
    """A step could not start; the message says what to look at."""


def log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@dataclass(frozen=True)
class Settings:
    """What `up` was asked for (flags); `down` needs none of it."""

    model_server: ModelServerKind = "llamacpp"
    host_processes: bool = False
    """The older shape: operator, model servers and router as host processes, no node (CI's test_demo)."""
    phases: tuple[Phase, ...] = demo_phases(steady_s=40, ramp_s=30, peak_s=60, recovery_s=50, peak=10)
    # Gemma 3 270M answers a short prompt in about a second on two idle cores: 5 s holds with a client
    # or two (and with a neighbour's build stealing a core now and then) and breaks once several requests
    # queue behind each other. 5 s is also a boundary of the router's latency buckets (..., 2.5, 5, 10):
    # between boundaries histogram_quantile interpolates, so a 3 s SLO would breach as soon as 5 % of
    # requests took over 2.5 s.
    slo_p95_ms: int = 5000
    # The router's in-flight cap for the local model: above the peak client count, so overload shows
    # up as queueing (p95) rather than as the cap's instant overflow.
    local_max_concurrency: int = 16

    @property
    def local_endpoint(self) -> str:
        return "local-gemma" if self.model_server == "llamacpp" else "local-simulator"


@dataclass
class Ports:
    """Loopback ports of the demo's daemons, chosen once per state directory."""

    local_model: int
    cloud_simulator: int
    prometheus: int
    router: int
    router_metrics: int
    """The router's operations listener: /metrics for Prometheus, /readyz."""

    @classmethod
    def of(cls, state_dir: Path) -> Ports:
        saved = state_dir / "ports.json"
        names = [port.name for port in fields(cls)]
        if saved.is_file():
            known = json.loads(saved.read_text())
            if sorted(known) == sorted(names):  # a state dir from an older layout gets new ports
                return cls(**known)
        state_dir.mkdir(parents=True, exist_ok=True)
        ports = cls(*(processes.free_port() for _ in names))
        saved.write_text(json.dumps(asdict(ports)))
        return ports


@dataclass
class Demo:
    """What every step shares: the state directory, the cluster living in it, settings and ports."""

    dir: Path
    cluster: LocalCluster
    settings: Settings = field(default_factory=Settings)
    ports: Ports | None = None

    @property
    def port(self) -> Ports:
        if self.ports is None:
            self.ports = Ports.of(self.dir)
        return self.ports

    def url(self, port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{port}{path}"

    def kubectl_apply(self, *objects: dict[str, Any]) -> None:
        document = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.cluster.kubectl(
            "apply", "--server-side", "--field-manager=hybridroute-demo", "-f", "-", input=json.dumps(document)
        )

    def get_json(self, *what: str) -> Any:
        return json.loads(self.cluster.kubectl("get", *what, "--namespace", manifests.NAMESPACE, "-o", "json"))


class Step(Protocol):
    name: str

    def start(self, demo: Demo) -> None: ...

    def stop(self, demo: Demo) -> None: ...


@dataclass(frozen=True)
class TrafficTarget:
    """Where the demo's traffic goes and where its live view looks."""

    base_url: str
    """The router's OpenAI API, as the client opens it."""
    router_metrics_url: str
    """The router's operations listener (/metrics), reached from the host."""
    prometheus_url: str
    netns: Path | None = None
    """The network namespace the client's sockets open in (the app pod's); None: the host's."""
