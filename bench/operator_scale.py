"""Operator at scale: 1,000 InferenceEndpoints and 100 RoutingPolicies against the local control plane.

    .venv/bin/python bench/operator_scale.py [--endpoints 1000] [--policies 100] [--changes 50]

Measures, against a real kube-apiserver (e2e/localcluster.py) and the operator as deployed
(`hybridroute-operator --standalone --all-namespaces`, a subprocess):

1. converge: from the first `kubectl apply` of all objects until every policy's ConfigMap is current
   (policy Ready at its generation, ConfigMap hash == status.configHash, every referenced endpoint
   available in the compiled config). Target: within 60 s.
2. the operator's peak RSS (VmHWM from /proc) after converging and after the changes. Target: <= 300 MB.
3. apply -> serving: one router on `--configmap` of one policy; for each of N changes, the time from
   starting `kubectl apply` of the changed policy until the router's /readyz reports the new config
   hash (p50/p95). Target: p95 <= 2 s.

Endpoints: 80 % cloud (openai-compatible, a Secret reference), 20 % existing local servers by `url`
(all one upstream simulator, so the operator's probes succeed); each policy names 10 of them.
Results: a table on stdout and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if not __package__:
    # Run as `python bench/operator_scale.py`: make the repository root importable so `e2e.*` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client

from e2e import modelserver, processes
from e2e.demo import ControlPlane, CustomResourceDefinitions, Demo, Operator
from e2e.localcluster import LocalCluster, close_api_client
from e2e.report import percentile
from hybridroute_operator.api import API_VERSION, GROUP, POLICY_PLURAL, VERSION
from hybridroute_operator.compile import CONFIG_HASH_ANNOTATION, POLICY_LABEL
from hybridroute_router.config import CONFIGMAP_KEY

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACE = "scale"
SECRET = {"name": "scale-cloud-key", "key": "api-key"}
ENDPOINTS_PER_POLICY = 10
TARGETS = {"converge_s": 60.0, "peak_rss_mb": 300.0, "apply_to_serving_p95_s": 2.0}


def endpoint_name(index: int) -> str:
    return f"ep-{index:04d}"


def policy_name(index: int) -> str:
    return f"pol-{index:03d}"


def endpoint(index: int, upstream: str) -> dict[str, Any]:
    """Every fifth endpoint an existing local server by URL, the rest cloud endpoints."""
    metadata = {"name": endpoint_name(index), "namespace": NAMESPACE}
    if index % 5 == 0:
        spec: dict[str, Any] = {"type": "local", "local": {"url": upstream, "model": "local-model"}}
    else:
        spec = {
            "type": "cloud",
            "cloud": {
                "provider": "openai-compatible",
                "baseURL": upstream,
                "model": f"cloud-model-{index % 7}",
                "apiKeySecretRef": SECRET,
                "pricing": {"inputPerMTok": 0.5, "outputPerMTok": 1.5},
            },
        }
    return {"apiVersion": API_VERSION, "kind": "InferenceEndpoint", "metadata": metadata, "spec": spec}


def policy(index: int, endpoints: int, p95_ms: int = 4000) -> dict[str, Any]:
    """Policy `index` names ENDPOINTS_PER_POLICY consecutive endpoints (wrapping around)."""
    names = [endpoint_name((index * ENDPOINTS_PER_POLICY + offset) % endpoints) for offset in range(10)]
    return {
        "apiVersion": API_VERSION,
        "kind": "RoutingPolicy",
        "metadata": {"name": policy_name(index), "namespace": NAMESPACE},
        "spec": {
            "endpoints": [{"name": name} for name in names],
            "rules": [{"name": "complex-to-cloud", "match": {"minComplexity": 0.6}, "action": {"prefer": "cloud"}}],
            "slo": {"p95LatencyMs": p95_ms},
        },
    }


def as_list(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def stale_policies(api: client.ApiClient) -> list[str]:
    """Policies whose ConfigMap is not yet current (see the module docstring for 'current')."""
    # Any: the generated client's models make every field optional; these objects are the server's own.
    listing: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, POLICY_PLURAL)
    configmaps: Any = client.CoreV1Api(api).list_namespaced_config_map(NAMESPACE, label_selector=POLICY_LABEL)
    by_name = {cm.metadata.name: cm for cm in configmaps.items}
    stale = []
    for item in listing["items"]:
        name, status = item["metadata"]["name"], item.get("status") or {}
        configmap = by_name.get(name)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        current = (
            ready
            and status.get("observedGeneration") == item["metadata"]["generation"]
            and configmap is not None
            and (configmap.metadata.annotations or {}).get(CONFIG_HASH_ANNOTATION) == status.get("configHash")
            and all(e["available"] for e in json.loads(configmap.data[CONFIGMAP_KEY])["endpoints"])
        )
        if not current:
            stale.append(name)
    return stale


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of `pid` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[name].split()[0]) / 1024 for key, name in (("rss_mb", "VmRSS"), ("peak_rss_mb", "VmHWM"))}


def router_hash(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return str(json.load(response)["configHash"])
    except OSError:
        return None


def wait_until(condition: Any, what: str, timeout: float, interval: float = 0.5) -> float:
    """Poll `condition` until true; return the seconds it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - began


@dataclass
class Result:
    endpoints: int
    policies: int
    apply_s: float
    converge_s: float
    converge_after_apply_s: float
    """The operator's own share: from the last object applied until every ConfigMap is current."""
    operator_rss_mb_after_converge: float
    operator_peak_rss_mb: float
    changes: int
    apply_to_serving_p50_s: float
    apply_to_serving_p95_s: float
    apply_to_serving_max_s: float
    kubectl_apply_p50_s: float


def run(args: argparse.Namespace, state_dir: Path) -> Result:
    # The benchmark measures the operator and the API, not pods: no real node.
    demo = Demo(dir=state_dir, cluster=LocalCluster(state_dir, with_node=False))
    for step in (ControlPlane(), CustomResourceDefinitions(), Operator()):
        print(f"[bench] {step.name}", file=sys.stderr)
        step.start(demo)
    operator_pid = processes.running_pid(state_dir, Operator.process)
    assert operator_pid is not None
    sim_port, router_port = processes.free_port(), processes.free_port()
    simulated = modelserver.SimulatedServer("scale-upstream", "sim", latency_ms=0, completion_tokens=5, content="ok")
    processes.spawn(state_dir, "upstream", modelserver.simulator_argv(simulated, sim_port))
    upstream = f"http://127.0.0.1:{sim_port}/v1"
    modelserver.wait_until_serving(upstream, lambda: True, "upstream simulator", 30)

    cluster = demo.cluster
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "create", "secret", "generic", SECRET["name"], "-n", NAMESPACE, f"--from-literal={SECRET['key']}=sk-bench"
    )
    objects = [endpoint(index, upstream) for index in range(args.endpoints)]
    objects += [policy(index, args.endpoints) for index in range(args.policies)]
    print(f"[bench] applying {args.endpoints} endpoints and {args.policies} policies", file=sys.stderr)
    began = time.monotonic()
    for start in range(0, len(objects), 250):
        cluster.kubectl(
            "apply", "--server-side", "--field-manager=bench", "-f", "-", input=as_list(objects[start : start + 250])
        )
    apply_s = time.monotonic() - began
    api = cluster.api_client()
    try:
        remaining: list[str] = []

        def converged() -> bool:
            nonlocal remaining
            remaining = stale_policies(api)
            return not remaining

        try:
            wait_until(converged, "every policy's ConfigMap current", args.timeout, interval=1.0)
        except TimeoutError:
            print(f"[bench] still stale after {args.timeout} s: {len(remaining)} policies", file=sys.stderr)
            raise
        converge_s = time.monotonic() - began
        after_converge = memory_mb(operator_pid)
        print(f"[bench] converged in {converge_s:.1f} s; operator {after_converge}", file=sys.stderr)

        configmap = policy_name(0)
        router = [
            str(Path(sys.executable).parent / "hybridroute-router"),
            "--configmap",
            f"{NAMESPACE}/{configmap}",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--port",
            str(router_port),
            "--metrics-port",
            str(processes.free_port()),
            "--log-level",
            "warning",
        ]
        processes.spawn(state_dir, "router", router)
        router_url = f"http://127.0.0.1:{router_port}"
        wait_until(lambda: router_hash(router_url) is not None, "the router to serve", 60, interval=0.2)
        changed_file = state_dir / "changed-policy.json"
        latencies, kubectl_times = [], []
        for change in range(1, args.changes + 1):
            serving_before = router_hash(router_url)
            changed_file.write_text(json.dumps(policy(0, args.endpoints, p95_ms=4000 + change)))
            began = time.monotonic()
            cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-f", str(changed_file))
            kubectl_times.append(time.monotonic() - began)
            wait_until(
                lambda old=serving_before: router_hash(router_url) not in (old, None),
                f"change {change}",
                30,
                interval=0.01,
            )
            latencies.append(time.monotonic() - began)
        final = memory_mb(operator_pid)
    finally:
        close_api_client(api)

    def p(values: list[float], q: float) -> float:
        return round(percentile(values, q) or 0.0, 3)

    return Result(
        endpoints=args.endpoints,
        policies=args.policies,
        apply_s=round(apply_s, 2),
        converge_s=round(converge_s, 2),
        converge_after_apply_s=round(converge_s - apply_s, 2),
        operator_rss_mb_after_converge=round(after_converge["rss_mb"], 1),
        operator_peak_rss_mb=round(final["peak_rss_mb"], 1),
        changes=args.changes,
        apply_to_serving_p50_s=p(latencies, 0.5),
        apply_to_serving_p95_s=p(latencies, 0.95),
        apply_to_serving_max_s=round(max(latencies), 3),
        kubectl_apply_p50_s=p(kubectl_times, 0.5),
    )


def table(result: Result) -> str:
    rows = [
        ("all ConfigMaps current after first apply", f"{result.converge_s:.1f} s", "<= 60 s", "converge_s"),
        ("operator peak RSS (VmHWM)", f"{result.operator_peak_rss_mb:.0f} MB", "<= 300 MB", "peak_rss_mb"),
        ("apply -> router serving, p95", f"{result.apply_to_serving_p95_s:.2f} s", "<= 2 s", "apply_to_serving_p95_s"),
    ]
    values = {
        "converge_s": result.converge_s,
        "peak_rss_mb": result.operator_peak_rss_mb,
        "apply_to_serving_p95_s": result.apply_to_serving_p95_s,
    }
    lines = [f"{'measure':<42}{'value':>10}  {'target':<10}  result", "-" * 72]
    for label, value, target, key in rows:
        verdict = "hit" if values[key] <= TARGETS[key] else "MISS"
        lines.append(f"{label:<42}{value:>10}  {target:<10}  {verdict}")
    lines += [
        "-" * 72,
        f"objects: {result.endpoints} InferenceEndpoints, {result.policies} RoutingPolicies "
        f"(kubectl apply took {result.apply_s:.1f} s; current {result.converge_after_apply_s:.1f} s after it ended)",
        f"operator RSS after converging: {result.operator_rss_mb_after_converge:.0f} MB",
        f"apply -> serving over {result.changes} changes: p50 {result.apply_to_serving_p50_s:.2f} s, "
        f"max {result.apply_to_serving_max_s:.2f} s (kubectl apply alone: p50 {result.kubectl_apply_p50_s:.2f} s)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=100)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600, help="give up converging after this many seconds")
    parser.add_argument("--dir", type=Path, help="state directory (default: a temporary one, removed after)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as scratch:
        state_dir = (args.dir or Path(scratch)).resolve()
        demo = Demo(dir=state_dir, cluster=LocalCluster(state_dir, with_node=False))
        try:
            result = run(args, state_dir)
        finally:
            for name in ("router", "upstream"):
                processes.stop(state_dir, name)
            Operator().stop(demo)
            ControlPlane().stop(demo)
    print(table(result))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"operator_scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine_cpus": os.cpu_count(), **asdict(result)}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
