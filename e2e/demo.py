"""`make demo`: hybridroute routing real traffic on this machine, brought up one step at a time.

    python e2e/demo.py up   --dir DIR [--model-server llamacpp|simulator] [--host-processes] [--short] [phase flags]
    python e2e/demo.py down --dir DIR    # stops everything `up` started

By default everything runs as a user would run it, as pods on the local cluster's real node
(e2e/demo_pods.py): the chart installed by Helm (two operator replicas, the webhook), a managed
llama.cpp InferenceEndpoint serving Gemma 3 270M and a cloud stand-in (our upstream SIMULATOR) as pods,
a RoutingPolicy, and an app pod whose injected router sidecar takes the traffic; Prometheus runs on the
host and scrapes the sidecar. `--host-processes` keeps the older shape: the operator, the model
servers and a router as host processes on an API-only control plane (what CI's test runs).

Either way it then drives a traffic mix through the router with the `openai` SDK, raising concurrency
until the local model saturates and its p95 breaker moves overflow to the cloud, then lowering it
again, while a live summary shows the routing. It ends by writing DIR/report.md and DIR/demo.png, and
leaves everything running to look around.

`up` runs each step's `start` in order and `down` each step's `stop` in reverse. A step's `start`
returns only once what it started is usable, and both halves are safe to repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:
    # Run as `python e2e/demo.py`: make the repository root importable so `e2e.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from e2e import demo_manifests as manifests
from e2e import demo_pods, modelserver, podnetns, processes, prometheus, toolchain
from e2e.demo_core import Demo, DemoError, Settings, Step, TrafficTarget
from e2e.demo_core import log as _log
from e2e.demo_core import wait_for as _wait_for
from e2e.localcluster import LocalCluster, LocalClusterError
from e2e.traffic import Traffic, demo_phases

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"


def _spawn_and_wait(demo: Demo, process: str, argv: list[str], base_url: str, timeout: float) -> None:
    """Start `process` unless it runs; wait until {base_url}/models answers (its log on failure)."""
    if processes.running_pid(demo.dir, process) is None:
        processes.spawn(demo.dir, process, argv, cwd=REPO_ROOT)
    _log(f"{process} log: {demo.dir / 'logs' / f'{process}.log'}")
    try:
        models = modelserver.wait_until_serving(
            base_url, lambda: processes.running_pid(demo.dir, process) is not None, process, timeout
        )
    except modelserver.ModelServerError as exc:
        raise DemoError(f"{exc}; end of its log:\n{processes.log_tail(demo.dir, process)}") from None
    _log(f"{process} serves {models} at {base_url}")


class ControlPlane:
    name = "local control plane (etcd, kube-apiserver, kube-controller-manager)"

    def start(self, demo: Demo) -> None:
        demo.cluster.start()

    def stop(self, demo: Demo) -> None:
        demo.cluster.stop()


class CustomResourceDefinitions:
    name = "CRDs from crds/"

    def start(self, demo: Demo) -> None:
        crds = sorted(CRD_DIR.glob("*.yaml"))
        if not crds:
            raise DemoError(f"no CRDs in {CRD_DIR}: run `make crds`")
        applied = demo.cluster.kubectl("apply", "--server-side", *(f"--filename={m}" for m in crds), "-o", "name")
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
        # The demo's Prometheus (started later; the operator waits for it) gives status its P95/Circuit.
        prometheus_url = demo.url(demo.port.prometheus)
        command = [str(executable), "--standalone", "--all-namespaces", "--liveness", liveness]
        command += ["--prometheus-url", prometheus_url]
        # The demo's model server and simulators listen on loopback; nothing else may be probed.
        command += ["--probe-allowed-hosts", "127.0.0.0/8"]
        environment = {**os.environ, "KUBECONFIG": str(demo.cluster.kubeconfig)}
        processes.spawn(demo.dir, self.process, command, env=environment)
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


class LocalModel:
    name = "local model server"
    process = "local-model"

    def start(self, demo: Demo) -> None:
        port = demo.port.local_model
        if demo.settings.model_server == "simulator":
            _log("!" * 100)
            _log("!! --model-server simulator: the LOCAL endpoint is the upstream SIMULATOR, not a real model.")
            _log("!! Routing, privacy, metrics and the report are real; the local answers and latencies are not.")
            _log("!" * 100)
            simulated = manifests.LOCAL_SIMULATOR
            argv = modelserver.simulator_argv(simulated, port)
            timeout = 30.0
        else:
            try:
                gguf = modelserver.gemma_gguf(Path.home() / ".cache" / "hybridroute" / "models")
                argv = modelserver.llamacpp_argv(gguf, port, threads=os.cpu_count() or 2)
            except modelserver.ModelServerError as exc:
                raise DemoError(str(exc)) from None
            _log(f"starting llama.cpp (llama-cpp-python) with {gguf.name} on 127.0.0.1:{port}")
            timeout = 180.0
        _spawn_and_wait(demo, self.process, argv, demo.url(port, "/v1"), timeout)
        if demo.settings.model_server == "llamacpp":
            _log("warming the model up (two tiny completions)")
            modelserver.warm_up(demo.url(port, "/v1"), modelserver.GEMMA_MODEL)

    def stop(self, demo: Demo) -> None:
        processes.stop(demo.dir, self.process)


class CloudSimulator:
    name = "cloud stand-in: the upstream SIMULATOR as `cloud-simulator` (no real provider is called)"
    process = "cloud-simulator"

    def start(self, demo: Demo) -> None:
        simulated = manifests.CLOUD_SIMULATOR
        port = demo.port.cloud_simulator
        _spawn_and_wait(demo, self.process, modelserver.simulator_argv(simulated, port), demo.url(port, "/v1"), 30)

    def stop(self, demo: Demo) -> None:
        processes.stop(demo.dir, self.process)


class Prometheus:
    name = "Prometheus (1 s scrape of the router)"

    def start(self, demo: Demo) -> None:
        try:
            url = prometheus.start(
                demo.dir, demo.port.prometheus, [f"127.0.0.1:{demo.port.router_metrics}"], job="hybridroute-router"
            )
        except prometheus.PrometheusError as exc:
            raise DemoError(str(exc)) from None
        _log(f"Prometheus at {url}")

    def stop(self, demo: Demo) -> None:
        prometheus.stop(demo.dir)


class DemoObjects:
    name = "Secret, InferenceEndpoints (local + cloud simulator) and the RoutingPolicy"

    def start(self, demo: Demo) -> None:
        settings = demo.settings
        local = manifests.LocalServer(
            endpoint=settings.local_endpoint,
            base_url=demo.url(demo.port.local_model, "/v1"),
            model=modelserver.GEMMA_MODEL if settings.model_server == "llamacpp" else "local-simulated-model",
            max_context_tokens=modelserver.GEMMA_CONTEXT_TOKENS,
            max_concurrency=settings.local_max_concurrency,
        )
        tuning = manifests.PolicyTuning(
            p95_latency_ms=settings.slo_p95_ms, prometheus_url=demo.url(demo.port.prometheus)
        )
        demo.kubectl_apply(manifests.namespace())
        demo.kubectl_apply(
            manifests.cloud_key_secret(),
            manifests.local_endpoint(local),
            manifests.cloud_endpoint(demo.url(demo.port.cloud_simulator, "/v1")),
            manifests.routing_policy(local.endpoint, tuning),
        )
        _wait_for(lambda: self._ready(demo), "both endpoints and the policy to be Ready", timeout=90)
        print(demo.cluster.kubectl("get", "ie,rp", "--namespace", manifests.NAMESPACE), file=sys.stderr)

    @staticmethod
    def _ready(demo: Demo) -> bool:
        items = demo.get_json("ie,rp")["items"]
        return len(items) == 3 and all(_condition(item, "Ready") == "True" for item in items)

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the objects go with the control plane."""


def _condition(item: dict[str, Any], kind: str) -> str | None:
    for condition in item.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


class Router:
    name = "router on the policy's ConfigMap (cloud key from the Secret as an env var)"
    process = "router"

    def start(self, demo: Demo) -> None:
        if processes.running_pid(demo.dir, self.process) is None:
            argv = [
                str(Path(sys.executable).parent / "hybridroute-router"),
                "--configmap",
                f"{manifests.NAMESPACE}/{manifests.POLICY_NAME}",
                "--kubeconfig",
                str(demo.cluster.kubeconfig),
                "--port",
                str(demo.port.router),
                "--metrics-port",
                str(demo.port.router_metrics),
                "--log-level",
                "warning",
            ]
            processes.spawn(demo.dir, self.process, argv, env={**os.environ, **manifests.cloud_api_key_env()})
        _log(f"router log: {demo.dir / 'logs' / 'router.log'}")
        _wait_for(lambda: self._serving_current(demo), "the router to serve the policy's current config", 60)
        _log(f"router at {demo.url(demo.port.router, '/v1')} (model alias `auto`)")

    def _serving_current(self, demo: Demo) -> bool:
        if processes.running_pid(demo.dir, self.process) is None:
            raise DemoError(f"the router exited; end of its log:\n{processes.log_tail(demo.dir, self.process)}")
        configmap = demo.get_json("configmap", manifests.POLICY_NAME)
        wanted = configmap["metadata"].get("annotations", {}).get("hybridroute.io/config-hash")
        try:
            with urllib.request.urlopen(demo.url(demo.port.router, "/readyz"), timeout=2) as response:
                return bool(orjson.loads(response.read()).get("configHash") == wanted)
        except (OSError, orjson.JSONDecodeError):
            return False

    def stop(self, demo: Demo) -> None:
        processes.stop(demo.dir, self.process)


class TrafficAndReport:
    name = "traffic through the router (openai SDK), live summary, then report + plot"

    def __init__(self, target: Callable[[Demo], TrafficTarget]) -> None:
        self.target = target

    def start(self, demo: Demo) -> None:
        phases = demo.settings.phases
        total = sum(phase.seconds for phase in phases)
        plan = ", ".join(f"{phase.name} {phase.concurrency} clients {phase.seconds:.0f} s" for phase in phases)
        target = self.target(demo)
        where = f" from inside the app pod's network namespace ({target.netns})" if target.netns else ""
        _log(f"traffic to {target.base_url}{where} for {total:.0f} s: {plan}")
        report, png = asyncio.run(_run_traffic(demo, target))
        _log(f"report: {report}")
        _log(f"plot:   {png}")

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the traffic ended with `up`."""


def host_router_target(demo: Demo) -> TrafficTarget:
    """The host-process router on loopback."""
    return TrafficTarget(
        base_url=demo.url(demo.port.router, "/v1"),
        router_metrics_url=demo.url(demo.port.router_metrics),
        prometheus_url=demo.url(demo.port.prometheus),
    )


async def _send_all(traffic: Traffic) -> None:
    """Run the traffic and close its client, both on the loop whose thread opens the sockets."""
    async with traffic.client:
        await traffic.run()


async def _run_traffic(demo: Demo, target: TrafficTarget) -> tuple[Path, Path]:
    # Imported here: the live view and the plot need the demo extra (rich, matplotlib), `down` does not.
    import openai

    from e2e import report
    from e2e.dashboard import Monitor

    settings = demo.settings
    endpoints = [settings.local_endpoint, manifests.CLOUD_ENDPOINT]
    requests_log = (demo.dir / "requests.jsonl").open("wb")
    timeline_log = (demo.dir / "timeline.jsonl").open("wb")
    # The SDK client opens no connection until its first request, which runs where `target` says.
    client = openai.AsyncOpenAI(
        base_url=target.base_url,
        api_key="demo-app-key",  # the router never forwards a client's key to a cloud endpoint
        max_retries=0,  # the router does failover; SDK retries would hide what it did
        timeout=120,
    )
    traffic = Traffic(
        client, settings.phases, on_record=lambda r: requests_log.write(orjson.dumps(r.to_json()) + b"\n")
    )
    monitor = Monitor(
        traffic=traffic,
        prometheus_url=target.prometheus_url,
        router_metrics_url=target.router_metrics_url,
        policy=manifests.POLICY_NAME,
        local_endpoint=settings.local_endpoint,
        endpoints=endpoints,
        slo_seconds=settings.slo_p95_ms / 1000,
        on_sample=lambda s: timeline_log.write(orjson.dumps(s.to_json()) + b"\n"),
    )
    finished = asyncio.Event()
    sampling = asyncio.create_task(monitor.run_until(finished))
    try:
        if target.netns is None:
            await _send_all(traffic)
        else:
            await podnetns.run_in(target.netns, lambda: _send_all(traffic))
    finally:
        finished.set()
        timeline = await sampling
        requests_log.close()
        timeline_log.close()
    model_server = "llama.cpp serving Gemma 3 270M" if settings.model_server == "llamacpp" else "the SIMULATOR"
    return report.write_report(
        demo.dir,
        traffic.records,
        timeline,
        settings.phases,
        settings.local_endpoint,
        manifests.CLOUD_ENDPOINT,
        settings.slo_p95_ms / 1000,
        model_server,
    )


class Samples:
    """The CRD samples (crds/samples/) in their own namespace, so `kubectl get ie,rp -A` shows each kind.

    Their vLLM pool is a managed Deployment for A100 nodes, which cannot exist here, so the stand-in kubelet
    (e2e/standin_kubelet.py) binds its pods to a fake GPU node and reports them Ready, and the real
    Deployment controller and the operator do the rest. The Ollama workstation sample points at a
    machine that is not there and honestly stays unready.
    """

    name = "samples from crds/samples/ (namespace hybridroute-samples; stand-in kubelet for the vLLM pool)"
    namespace = "hybridroute-samples"
    selector = "app.kubernetes.io/managed-by=hybridroute"

    def start(self, demo: Demo) -> None:
        with contextlib.suppress(LocalClusterError):  # already there on a repeated `up`
            demo.cluster.kubectl("create", "namespace", self.namespace)
        demo.cluster.kubectl("apply", "--namespace", self.namespace, f"--filename={CRD_DIR / 'samples'}")
        demo.cluster.register_fake_node(
            "demo-gpu-node", capacity={"nvidia.com/gpu": "8", "cpu": "64", "memory": "512Gi"}
        )
        _wait_for(lambda: self._pools_ready(demo), "the vLLM sample pool's Deployment to be ready", 90)

    def _pools_ready(self, demo: Demo) -> bool:
        demo.cluster.mark_pods_ready(self.namespace, self.selector)
        listing = demo.cluster.kubectl("get", "deployments", "-n", self.namespace, "-l", self.selector, "-o", "json")
        pools = json.loads(listing)["items"]
        return bool(pools) and all(pool["status"].get("readyReplicas", 0) == pool["spec"]["replicas"] for pool in pools)

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the samples go with the control plane."""


CONTROL_PLANE = ControlPlane()
HOST_PROCESS_STEPS: tuple[Step, ...] = (
    CONTROL_PLANE,
    CustomResourceDefinitions(),
    Operator(),
    Samples(),
    LocalModel(),
    CloudSimulator(),
    Prometheus(),
    DemoObjects(),
    Router(),
    TrafficAndReport(host_router_target),
)
POD_STEPS: tuple[Step, ...] = (
    CONTROL_PLANE,
    demo_pods.Images(),
    demo_pods.Chart(),
    demo_pods.ModelPods(),
    demo_pods.AppPod(),
    demo_pods.Prometheus(),
    TrafficAndReport(demo_pods.app_pod_target),
)


def steps_for(settings: Settings) -> tuple[Step, ...]:
    return HOST_PROCESS_STEPS if settings.host_processes else POD_STEPS


def up(demo: Demo, steps: Sequence[Step]) -> None:
    for number, step in enumerate(steps, 1):
        began = time.monotonic()
        _log(f"step {number}/{len(steps)}: {step.name}")
        step.start(demo)
        _log(f"step {number}/{len(steps)} done in {time.monotonic() - began:.1f} s")
    print(demo.cluster.kubectl("get", "ie,rp", "--all-namespaces"))
    if demo.settings.host_processes:
        router = (
            f"  curl -s {demo.url(demo.port.router, '/v1/chat/completions')} -H 'content-type: application/json' "
            """-d '{"model":"auto","messages":[{"role":"user","content":"hi"}]}' -i\n"""
            f"  Prometheus: {demo.url(demo.port.prometheus)}   "
            f"router metrics: {demo.url(demo.port.router_metrics, '/metrics')}\n"
        )
    else:
        router = (
            f"  kubectl get pods -A -o wide\n"
            f"  kubectl exec -n {manifests.NAMESPACE} {manifests.APP_POD} -c app -- "
            "python /opt/app/openai_app.py ask routine complex private\n"
            f"  Prometheus: {demo_pods.prometheus_url(demo)}   "
            f"sidecar metrics: {demo_pods.sidecar_metrics_url(demo)}/metrics\n"
        )
    print(
        "The demo is up and stays up. To look around:\n"
        f"  export KUBECONFIG={demo.cluster.kubeconfig}\n"
        f"  export PATH={demo.cluster.kubectl_path.parent}:$PATH\n"
        f"  kubectl get ie,rp -n {manifests.NAMESPACE}\n"
        f"{router}"
        f"Report: {demo.dir / 'report.md'}  plot: {demo.dir / 'demo.png'}  logs: {demo.dir / 'logs'}\n"
        f"Stop everything with: make demo-down   (python e2e/demo.py down --dir {demo.dir})"
    )


def down(demo: Demo, steps: Sequence[Step]) -> None:
    for step in reversed(steps):
        _log(f"stopping: {step.name}")
        step.stop(demo)
    (demo.dir / "ports.json").unlink(missing_ok=True)
    _log(f"stopped; nothing left running from {demo.dir}")


def _settings(args: argparse.Namespace) -> Settings:
    defaults = Settings()
    short = args.short
    phases = demo_phases(
        steady_s=args.steady_seconds or (8 if short else 40),
        ramp_s=args.ramp_seconds or (6 if short else 30),
        peak_s=args.peak_seconds or (10 if short else 60),
        recovery_s=args.recovery_seconds or (8 if short else 50),
        peak=args.peak_clients or (4 if short else 10),
    )
    return Settings(
        model_server=args.model_server,
        host_processes=args.host_processes,
        phases=phases,
        slo_p95_ms=args.slo_p95_ms or defaults.slo_p95_ms,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, required=True, help="state directory (kubeconfig, logs, pids, report)")
    parser.add_argument(
        "--model-server",
        choices=["llamacpp", "simulator"],
        default="llamacpp",
        help="the local endpoint: llama.cpp serving Gemma 3 270M (default), or the SIMULATOR (CI, no compiler)",
    )
    parser.add_argument(
        "--host-processes",
        action="store_true",
        help="the older shape: operator, model servers and router as host processes on an API-only cluster "
        "(no node, no images; CI's tests/test_demo.py); `down` needs no flag",
    )
    parser.add_argument("--short", action="store_true", help="short phases (about 40 s of traffic; tests use it)")
    parser.add_argument("--steady-seconds", type=float, help="low-concurrency phase (default 40, short 8)")
    parser.add_argument("--ramp-seconds", type=float, help="each ramp phase, up and down (default 30, short 6)")
    parser.add_argument("--peak-seconds", type=float, help="peak-concurrency phase (default 60, short 10)")
    parser.add_argument("--recovery-seconds", type=float, help="final low-concurrency phase (default 50, short 8)")
    parser.add_argument("--peak-clients", type=int, help="concurrent clients at the peak (default 10, short 4)")
    parser.add_argument("--slo-p95-ms", type=int, help="the policy's p95 SLO per endpoint (default 5000)")
    args = parser.parse_args(argv)
    state_dir = args.dir.resolve()
    settings = _settings(args)
    # Pods need the real node; the host-process shape needs only the API (its sample pool runs on the
    # stand-in kubelet's fake node). `down` stops whatever the state directory holds.
    cluster = LocalCluster(state_dir, with_node=not settings.host_processes)
    demo = Demo(dir=state_dir, cluster=cluster, settings=settings)
    try:
        if args.command == "up":
            up(demo, steps_for(settings))
        else:
            # Every step's `stop` is safe when it never started: one `down` serves both shapes.
            down(demo, tuple(dict.fromkeys(HOST_PROCESS_STEPS + POD_STEPS, None)))
    except (DemoError, LocalClusterError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"(stop what did start with: python e2e/demo.py down --dir {args.dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
