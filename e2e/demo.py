"""`make demo`: hybridroute running against the local control plane, brought up one step at a time.

    python e2e/demo.py up   --dir DIR    # control plane, CRDs, operator, samples; prints how to look
    python e2e/demo.py down --dir DIR    # stops everything `up` started

`up` runs each step's `start` in order and `down` each step's `stop` in reverse, so the demo grows by
appending steps (the router, Prometheus and a model server come later). A step's `start` returns only
once what it started is usable, and both halves are safe to repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

if not __package__:
    # Run as `python e2e/demo.py`: make the repository root importable so `e2e.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e import processes, toolchain
from e2e.localcluster import LocalCluster, LocalClusterError
from hybridroute_operator.render import MANAGED_BY

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
SAMPLES_DIR = CRD_DIR / "samples"
# The samples carry no namespace, so they land here.
DEMO_NAMESPACE = "default"
# What the samples' managed pool asks of a node (crds/samples/local-vllm-pool.yaml).
GPU_NODE_LABELS = {"node-pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
GPU_NODE_CAPACITY = {"nvidia.com/gpu": "8"}
STATUS_SETTLE_SECONDS = 3.0


class DemoError(RuntimeError):
    """A step could not start; the message says what to look at."""


def _log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@dataclass
class Demo:
    """What every step shares: the state directory and the cluster living in it."""

    dir: Path
    cluster: LocalCluster


class Step(Protocol):
    name: str

    def start(self, demo: Demo) -> None: ...

    def stop(self, demo: Demo) -> None: ...


class ControlPlane:
    name = "local control plane (etcd, kube-apiserver, kube-controller-manager)"

    def start(self, demo: Demo) -> None:
        demo.cluster.start()

    def stop(self, demo: Demo) -> None:
        demo.cluster.stop()


class CustomResourceDefinitions:
    name = "CRDs from crds/"

    def start(self, demo: Demo) -> None:
        manifests = sorted(CRD_DIR.glob("*.yaml"))
        if not manifests:
            raise DemoError(f"no CRDs in {CRD_DIR}: run `make crds`")
        applied = demo.cluster.kubectl("apply", "--server-side", *(f"--filename={m}" for m in manifests), "-o", "name")
        demo.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *applied.split())

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the CRDs live in the control plane's etcd, which goes with it."""


class Operator:
    name = "hybridroute operator (all namespaces)"
    process = "operator"

    def start(self, demo: Demo) -> None:
        if processes.running_pid(demo.dir, self.process) is not None:
            return
        executable = Path(sys.executable).parent / "hybridroute-operator"
        if not executable.is_file():
            raise DemoError(f"{executable} is missing: run `make install`")
        liveness = f"http://127.0.0.1:{processes.free_port()}/healthz"
        command = [str(executable), "--standalone", "--all-namespaces", "--liveness", liveness]
        processes.spawn(demo.dir, self.process, command, env={**os.environ, "KUBECONFIG": str(demo.cluster.kubeconfig)})
        _log(f"operator log: {demo.dir / 'logs' / 'operator.log'}")
        _wait_for(lambda: self._alive(demo, liveness), "the operator's liveness endpoint", timeout=60)

    def _alive(self, demo: Demo, liveness: str) -> bool:
        if processes.running_pid(demo.dir, self.process) is None:
            raise DemoError(f"the operator exited; end of its log:\n{processes.log_tail(demo.dir, self.process)}")
        try:
            with urllib.request.urlopen(liveness, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, demo: Demo) -> None:
        processes.stop(demo.dir, self.process)


class Samples:
    name = "samples from crds/samples/"

    def start(self, demo: Demo) -> None:
        demo.cluster.kubectl("apply", "--namespace", DEMO_NAMESPACE, f"--filename={SAMPLES_DIR}")
        _wait_for(lambda: self._all_have_status(demo), "the operator to report status on every sample", 60)

    @staticmethod
    def _all_have_status(demo: Demo) -> bool:
        listing = json.loads(demo.cluster.kubectl("get", "ie,rp", "--namespace", DEMO_NAMESPACE, "-o", "json"))
        return all(item.get("status", {}).get("conditions") for item in listing["items"])

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the samples go with the control plane."""


class StandinKubelet:
    """Makes the managed pool's pods Ready once (e2e/standin_kubelet.py says why it exists)."""

    name = "stand-in kubelet for the managed pool's pods"

    selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"

    def start(self, demo: Demo) -> None:
        demo.cluster.register_fake_node("demo-gpu-node", labels=GPU_NODE_LABELS, capacity=GPU_NODE_CAPACITY)
        _wait_for(lambda: self._pools_ready(demo), "the managed pools' Deployments to be ready", 60)

    def _pools_ready(self, demo: Demo) -> bool:
        """Mark whatever pods exist so far Ready; true once every pool Deployment counts all replicas."""
        demo.cluster.mark_pods_ready(DEMO_NAMESPACE, self.selector)
        listing = demo.cluster.kubectl("get", "deployments", "-n", DEMO_NAMESPACE, "-l", self.selector, "-o", "json")
        pools = json.loads(listing)["items"]
        return bool(pools) and all(pool["status"].get("readyReplicas", 0) == pool["spec"]["replicas"] for pool in pools)

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the node object goes with the control plane."""


STEPS: tuple[Step, ...] = (ControlPlane(), CustomResourceDefinitions(), Operator(), Samples(), StandinKubelet())


def up(demo: Demo, steps: Sequence[Step] = STEPS) -> None:
    for number, step in enumerate(steps, 1):
        began = time.monotonic()
        _log(f"step {number}/{len(steps)}: {step.name}")
        step.start(demo)
        _log(f"step {number}/{len(steps)} done in {time.monotonic() - began:.1f} s")
    # A moment for the operator to fold the pools' readiness back into status before showing it.
    time.sleep(STATUS_SETTLE_SECONDS)
    print(demo.cluster.kubectl("get", "ie,rp", "--all-namespaces"))
    print(
        "The demo is up. To look around:\n"
        f"  export KUBECONFIG={demo.cluster.kubeconfig}\n"
        f"  export PATH={demo.cluster.kubectl_path.parent}:$PATH\n"
        "  kubectl get ie,rp -A\n"
        "  kubectl explain inferenceendpoint.spec.cloud\n"
        f"Logs are in {demo.dir / 'logs'}. Stop everything with: python e2e/demo.py down --dir {demo.dir}"
    )


def down(demo: Demo, steps: Sequence[Step] = STEPS) -> None:
    for step in reversed(steps):
        _log(f"stopping: {step.name}")
        step.stop(demo)
    _log(f"stopped; nothing left running from {demo.dir}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, required=True, help="state directory (kubeconfig, logs, pids)")
    args = parser.parse_args(argv)
    demo = Demo(dir=args.dir.resolve(), cluster=LocalCluster(args.dir))
    try:
        if args.command == "up":
            up(demo)
        else:
            down(demo)
    except (DemoError, LocalClusterError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"(stop what did start with: python e2e/demo.py down --dir {args.dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
