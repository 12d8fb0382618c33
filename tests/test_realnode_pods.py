"""The whole product as pods on the real node: a managed llama.cpp pool, an app behind its injected router, faults.

One Helm release (two operator replicas, the images built here) serves every test in this module, in
one namespace, in order:

- a managed `server: llamacpp` InferenceEndpoint: the operator's Deployment runs the llama.cpp image
  (Gemma 3 270M, two threads), the pod's own readiness probe makes the endpoint Ready, and its
  Service answers /v1/models to another pod;
- a cloud endpoint served by a simulator pod, its API key in a Secret, and a RoutingPolicy;
- an app pod labelled `hybridroute.io/policy`: the webhook injects the router as a native sidecar and
  the app's `openai` SDK (OPENAI_BASE_URL as injected) gets routine answers from the llama.cpp pod,
  complex ones from the simulator pod with the Secret's key, private ones from the llama.cpp pod only;
- faults as pod events (the model pod deleted, the pool scaled to 0, a hung server failing its
  readiness probe): routine traffic fails over with no client error, private requests get a 503 that
  says why, and local traffic returns after recovery;
- the active operator replica killed: the other reconciles a new policy and keeps admitting pods.

No cluster DNS runs here, so the app pod maps the pool's Service name (the URL the operator compiles)
to its ClusterIP with `hostAliases`; a real cluster's DNS does that for every pod.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e import images
from e2e.helm import Helm, install_chart, uninstall_chart
from e2e.localcluster import LocalCluster, close_api_client
from hybridroute_operator.injection import BASE_URL_ENV, ROUTER_CONTAINER
from hybridroute_router.config import CONFIGMAP_KEY
from tests.fixtures.cluster import fresh_namespace
from tests.test_localcluster import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.images]

POOL = "gemma"
POOL_MODEL = "gemma-3-270m"
POOL_PORT = 8080
CLOUD = "cloud"
CLOUD_KEY = "sk-cloud-key-from-the-secret-7f3a"
APP_OWN_KEY = "sk-the-app-own-key-never-forwarded"
PRIVATE_MARKER = "4711"  # in every private prompt (openai_app.py): the simulator must never see it
APP_SCRIPT = "/opt/app/openai_app.py"
IMAGES = ["operator", "router", "simulator", "llamacpp", "app"]


# --------------------------------------------------------------------------------------------------
# the shared release and objects
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(local_cluster: LocalCluster) -> Iterator[client.ApiClient]:
    api_client = local_cluster.api_client()
    yield api_client
    close_api_client(api_client)


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def built(local_cluster: LocalCluster) -> dict[str, images.Image]:
    """The images built here (cached by content hash), imported into the node."""
    found = {image.name: image for image in images.build(IMAGES)}
    node = local_cluster.node
    assert node is not None, "the session cluster runs a real node"
    for image in found.values():
        node.import_image(image.archive)
    return found


@pytest.fixture(scope="module")
def namespace(
    helm: Helm, local_cluster: LocalCluster, core: client.CoreV1Api, built: dict[str, images.Image]
) -> Iterator[str]:
    """A namespace with the chart installed in it (two operator replicas), shared by the module."""
    with fresh_namespace(core, "pods-") as name:
        install_chart(helm, local_cluster, name, built)
        yield name
        uninstall_chart(helm, local_cluster, name)


def _apply(cluster: LocalCluster, namespace: str, *documents: dict[str, Any]) -> None:
    for document in documents:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def _ready(pod: client.V1Pod) -> bool:
    return {c.type: c.status for c in pod.status.conditions or []}.get("Ready") == "True"


def _condition(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in resource.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def _endpoint(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "-n", namespace, "inferenceendpoint", name, "-o", "json")))


def _pool_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = f"hybridroute.io/endpoint={POOL}"
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def _ready_pool_pod(core: client.CoreV1Api, namespace: str) -> client.V1Pod | None:
    return next((pod for pod in _pool_pods(core, namespace) if _ready(pod)), None)


def _seconds_to_ready(pod: client.V1Pod) -> float:
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    return float((ready.last_transition_time - pod.metadata.creation_timestamp).total_seconds())


def _pool_endpoint(threads: int = 2, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "hybridroute.io/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": POOL},
        "spec": {
            "type": "local",
            "local": {
                "server": "llamacpp",
                "model": POOL_MODEL,
                "image": "",  # filled in by the fixture: the image built here
                "replicas": replicas,
                "maxContextTokens": 1024,
                # Two CPU threads: the machine running these tests has two cores for everything.
                "extraArgs": ["--threads", str(threads)],
            },
        },
    }


@pytest.fixture(scope="module")
def pool(
    local_cluster: LocalCluster, core: client.CoreV1Api, namespace: str, built: dict[str, images.Image]
) -> dict[str, Any]:
    """The managed llama.cpp pool, Ready; returns its endpoint, Service ClusterIP and pod start seconds."""
    endpoint = _pool_endpoint()
    endpoint["spec"]["local"]["image"] = built["llamacpp"].ref
    _apply(local_cluster, namespace, endpoint)
    pod = eventually(lambda: _ready_pool_pod(core, namespace), "the llama.cpp pod Ready", 300)

    def endpoint_ready() -> dict[str, Any] | None:
        endpoint = _endpoint(local_cluster, namespace, POOL)
        return endpoint if _condition(endpoint, "Ready").get("status") == "True" else None

    ready = eventually(endpoint_ready, "the InferenceEndpoint Ready", 120)
    service = core.read_namespaced_service(POOL, namespace)
    start_seconds = _seconds_to_ready(pod)
    print(f"llama.cpp pod: created -> Ready in {start_seconds:.1f} s")
    return {"endpoint": ready, "cluster_ip": service.spec.cluster_ip, "pod": pod, "start_seconds": start_seconds}


@pytest.fixture(scope="module")
def cloud(local_cluster: LocalCluster, core: client.CoreV1Api, namespace: str, built: dict[str, images.Image]) -> str:
    """A cloud endpoint served by a simulator pod, its key in a Secret; returns the simulator's base URL."""
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="cloud-key"), string_data={"api-key": CLOUD_KEY}),
    )
    simulator = client.V1Container(
        name="sim",
        image=built["simulator"].ref,
        args=["--port", "9101", "--name", CLOUD, "--model", "cloud-model"],
        readiness_probe=client.V1Probe(tcp_socket=client.V1TCPSocketAction(port=9101), period_seconds=1),
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=CLOUD, labels={"app": CLOUD}),
            spec=client.V1PodSpec(containers=[simulator]),
        ),
    )
    service = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=CLOUD),
            spec=client.V1ServiceSpec(
                selector={"app": CLOUD}, ports=[client.V1ServicePort(port=9101, target_port=9101)]
            ),
        ),
    )
    base_url = f"http://{service.spec.cluster_ip}:9101"
    _apply(
        local_cluster,
        namespace,
        {
            "apiVersion": "hybridroute.io/v1alpha1",
            "kind": "InferenceEndpoint",
            "metadata": {"name": CLOUD},
            "spec": {
                "type": "cloud",
                "cloud": {
                    "provider": "openai-compatible",
                    "baseURL": f"{base_url}/v1",
                    "model": "cloud-model",
                    "apiKeySecretRef": {"name": "cloud-key", "key": "api-key"},
                    "pricing": {"inputPerMTok": 1.0, "outputPerMTok": 2.0},
                },
            },
        },
    )
    eventually(lambda: _ready(core.read_namespaced_pod(CLOUD, namespace)) or None, "the simulator pod Ready", 120)
    return base_url


def _policy(name: str, endpoints: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "hybridroute.io/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": {
            "endpoints": [{"name": endpoint} for endpoint in endpoints],
            "modelAliases": ["chat"],
            "privacy": {"action": "localOnly"},
            "complexity": {"threshold": 0.6},
            # The llama.cpp pod answers 8 tokens in about a second; 15 s leaves room for a busy CPU.
            "slo": {"requestTimeoutMs": 15000},
            "fallback": {"enabled": True, "maxAttempts": 2, "retryBudgetPercent": 50},
            "circuitBreaker": {"consecutiveFailures": 2, "openSeconds": 1, "maxOpenSeconds": 5, "halfOpenProbes": 1},
        },
    }


def _sim_requests(base_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base_url}/_sim/requests", timeout=10) as response:
        return list(json.load(response))


@pytest.fixture(scope="module")
def app(
    local_cluster: LocalCluster,
    core: client.CoreV1Api,
    namespace: str,
    built: dict[str, images.Image],
    pool: dict[str, Any],
    cloud: str,
) -> client.V1Pod:
    """The policy over both endpoints and an app pod labelled with it, Ready with its injected router."""
    _apply(local_cluster, namespace, _policy("chat", [POOL, CLOUD]))

    def compiled() -> bool | None:
        maps = core.list_namespaced_config_map(namespace, field_selector="metadata.name=chat").items
        config = json.loads(maps[0].data[CONFIGMAP_KEY]) if maps else {}
        return True if [e.get("available") for e in config.get("endpoints", [])] == [True, True] else None

    eventually(compiled, "the policy compiled with both endpoints available", 120)
    container = client.V1Container(
        name="app",
        image=built["app"].ref,
        env=[client.V1EnvVar(name="OPENAI_API_KEY", value=APP_OWN_KEY)],
        security_context=client.V1SecurityContext(run_as_non_root=True, read_only_root_filesystem=True),
    )
    # No cluster DNS here: map the pool's Service name (the compiled URL) to its ClusterIP.
    aliases = [client.V1HostAlias(ip=pool["cluster_ip"], hostnames=[f"{POOL}.{namespace}.svc"])]
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="app", labels={"hybridroute.io/policy": "chat"}),
            spec=client.V1PodSpec(containers=[container], host_aliases=aliases, termination_grace_period_seconds=2),
        ),
    )
    return eventually(
        lambda: pod if _ready(pod := core.read_namespaced_pod("app", namespace)) else None,
        "the app pod with its router sidecar Ready",
        180,
    )


def _ask(cluster: LocalCluster, namespace: str, *kinds: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("exec", "-n", namespace, "app", "-c", "app", "--", "python", APP_SCRIPT, "ask", *kinds)
    return [json.loads(line) for line in out.splitlines()]


def _ask_until_local(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The router judges the pool by its own requests: ask until a routine request is served by it."""

    def served_locally() -> list[dict[str, Any]] | None:
        answers = _ask(cluster, namespace, "routine")
        return answers if answers[0].get("endpoint") == POOL else None

    return eventually(served_locally, "a routine request served by the llama.cpp pod", 120)


# --------------------------------------------------------------------------------------------------
# 1. the managed llama.cpp pool
# --------------------------------------------------------------------------------------------------


def test_managed_llamacpp_endpoint_is_ready_from_its_pod_and_its_service_answers_another_pod(
    local_cluster: LocalCluster, core: client.CoreV1Api, namespace: str, pool: dict[str, Any], app: client.V1Pod
) -> None:
    endpoint = pool["endpoint"]
    assert endpoint["status"]["url"] == f"http://{POOL}.{namespace}.svc:{POOL_PORT}/v1"
    assert endpoint["status"]["readyReplicas"] == 1
    # Ready came from the pod's readiness probe (GET /health on the server), through the Deployment.
    [server] = pool["pod"].spec.containers
    assert server.readiness_probe.http_get.path == "/health"
    assert server.args[-2:] == ["--threads", "2"]
    assert pool["pod"].status.container_statuses[0].ready

    get = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())"
    url = f"http://{POOL}.{namespace}.svc:{POOL_PORT}/v1/models"
    listing = local_cluster.kubectl("exec", "-n", namespace, "app", "-c", "app", "--", "python", "-c", get, url)

    assert [model["id"] for model in json.loads(listing)["data"]] == [POOL_MODEL]


# --------------------------------------------------------------------------------------------------
# 2. the app behind its injected router
# --------------------------------------------------------------------------------------------------


def test_app_sdk_gets_routine_answers_locally_complex_from_the_cloud_with_the_secret_key_private_local_only(
    local_cluster: LocalCluster, namespace: str, app: client.V1Pod, cloud: str
) -> None:
    sidecar = app.spec.init_containers[0]
    assert (sidecar.name, sidecar.restart_policy) == (ROUTER_CONTAINER, "Always")
    assert any(env.name == BASE_URL_ENV for env in app.spec.containers[0].env)
    _ask_until_local(local_cluster, namespace)
    before = len(_sim_requests(cloud))

    routine, complex_, private = _ask(local_cluster, namespace, "routine", "complex", "private")

    assert (routine["status"], routine["endpoint"], routine["reason"]) == (200, POOL, "routine")
    assert routine["content"]  # generated by Gemma 3 270M in the llama.cpp pod
    assert (complex_["status"], complex_["endpoint"], complex_["reason"]) == (200, CLOUD, "complex")
    assert complex_["content"] == "Hello from the upstream simulator."
    assert (private["status"], private["endpoint"], private["reason"]) == (200, POOL, "private")
    received = _sim_requests(cloud)[before:]
    assert len(received) == 1
    assert received[0]["headers"]["authorization"] == f"Bearer {CLOUD_KEY}"
    everything = json.dumps(_sim_requests(cloud))
    assert APP_OWN_KEY not in everything
    assert PRIVATE_MARKER not in everything


# --------------------------------------------------------------------------------------------------
# 3. faults as pod events
# --------------------------------------------------------------------------------------------------


class Traffic:
    """openai_app.py's loop in the app container (routine and private in turn) until stopped."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        command = [str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "exec", "-i", "-n", namespace]
        self._process = subprocess.Popen(
            [*command, "app", "-c", "app", "--", "python", APP_SCRIPT, "loop"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.answers: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.answers.append(json.loads(line))

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float, after: float = 0
    ) -> None:
        eventually(
            lambda: any(a.get("at", 0) > after and predicate(a) for a in list(self.answers)) or None, what, timeout
        )

    def stop(self) -> list[dict[str, Any]]:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=90)
        self._reader.join(timeout=10)
        assert self._process.stdout is not None
        self._process.stdout.close()
        return self.answers


def _host_pids_of(local_cluster: LocalCluster, needle: str) -> list[int]:
    node = local_cluster.node
    assert node is not None
    found = []
    for pid in node.pod_pids():
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(pid)
        except OSError:
            continue
    return found


def _delete_the_model_pod(cluster: LocalCluster, core: client.CoreV1Api, namespace: str) -> Callable[[], None]:
    [pod] = _pool_pods(core, namespace)
    core.delete_namespaced_pod(pod.metadata.name, namespace)
    return lambda: None  # the Deployment replaces it


def _scale_the_pool_to_zero(cluster: LocalCluster, core: client.CoreV1Api, namespace: str) -> Callable[[], None]:
    patch = json.dumps({"spec": {"local": {"replicas": 0}}})
    cluster.kubectl("patch", "-n", namespace, "inferenceendpoint", POOL, "--type=merge", "-p", patch)
    eventually(lambda: True if not _pool_pods(core, namespace) else None, "the pool's pod gone", 120)
    restore = json.dumps({"spec": {"local": {"replicas": 1}}})
    return lambda: (
        cluster.kubectl("patch", "-n", namespace, "inferenceendpoint", POOL, "--type=merge", "-p", restore) and None
    )


def _hang_the_model_server(cluster: LocalCluster, core: client.CoreV1Api, namespace: str) -> Callable[[], None]:
    """SIGSTOP the server process from the host: it stops answering, so its readiness probe fails."""
    [pid] = _host_pids_of(cluster, "llamacpp_server.py")
    os.kill(pid, signal.SIGSTOP)
    eventually(lambda: True if _ready_pool_pod(core, namespace) is None else None, "the readiness probe failing", 120)
    return lambda: os.kill(pid, signal.SIGCONT)


FAULTS = {
    "model pod deleted": _delete_the_model_pod,
    "pool scaled to 0": _scale_the_pool_to_zero,
    "hung server fails its readiness probe": _hang_the_model_server,
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_routine_traffic_fails_over_without_client_errors_private_gets_503_then_local_returns(
    local_cluster: LocalCluster, core: client.CoreV1Api, namespace: str, app: client.V1Pod, cloud: str, fault: str
) -> None:
    _ask_until_local(local_cluster, namespace)
    traffic = Traffic(local_cluster, namespace)
    try:
        traffic.wait_for(lambda a: a["kind"] == "private" and a["status"] == 200, "private traffic served", 60)
        started = time.time()
        recover = FAULTS[fault](local_cluster, core, namespace)
        traffic.wait_for(lambda a: a["status"] == 503, "a private request refused during the fault", 180, started)
        traffic.wait_for(
            lambda a: a["kind"] == "routine" and a.get("endpoint") == CLOUD, "routine traffic failed over", 180, started
        )
        recovering = time.time()
        recover()
        eventually(lambda: _ready_pool_pod(core, namespace), "the pool Ready again", 300)
        traffic.wait_for(
            lambda a: a["kind"] == "routine" and a.get("endpoint") == POOL,
            "routine traffic back on the pool",
            240,
            recovering,
        )
        traffic.wait_for(
            lambda a: a["kind"] == "private" and a["status"] == 200, "private traffic served again", 120, recovering
        )
    finally:
        answers = traffic.stop()

    routine = [a for a in answers if a["kind"] == "routine"]
    private = [a for a in answers if a["kind"] == "private"]
    during = [a for a in answers if started < a["at"] < recovering]
    print(
        f"{fault}: {len(answers)} requests, routine by endpoint "
        f"{ {e: sum(1 for a in routine if a.get('endpoint') == e) for e in (POOL, CLOUD)} }, "
        f"private refused {sum(1 for a in private if a['status'] == 503)}"
    )
    assert [a for a in routine if a["status"] != 200] == []
    assert any(a.get("endpoint") == CLOUD for a in during if a["kind"] == "routine")
    assert any(a["status"] == 503 for a in during if a["kind"] == "private")
    refused = [a for a in private if a["status"] != 200]
    assert refused
    assert all(a["status"] == 503 for a in refused), refused
    # Why, in either of the router's words: the local attempt that failed, or (once the operator's
    # recompiled ConfigMap reached the sidecar) the local endpoint that is not available.
    messages = {a["error"] for a in refused}
    print(f"{fault}: private refusals said {sorted(messages)[:3]}")
    assert all("private request (header)" in m and "cloud endpoints never receive" in m for m in messages), messages
    assert all(a["endpoint"] == POOL for a in private if a["status"] == 200)
    assert PRIVATE_MARKER not in json.dumps(_sim_requests(cloud))


# --------------------------------------------------------------------------------------------------
# 4. an operator replica killed
# --------------------------------------------------------------------------------------------------


def _wait_until_the_scheduler_honours_the_cordon(core: client.CoreV1Api, namespace: str, image: str, node: str) -> None:
    """The scheduler reads nodes from its informer cache, so a pod created right after `kubectl
    cordon` may still be bound to the node (seen in a CI run: the Deployment's replacement ran). A
    throwaway pod reported Unschedulable proves the cordon has reached the scheduler."""

    def unschedulable() -> bool | None:
        probe = core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(generate_name="cordon-probe-"),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="probe", image=image)],
                    affinity=client.V1Affinity(
                        node_affinity=client.V1NodeAffinity(
                            required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
                                node_selector_terms=[
                                    client.V1NodeSelectorTerm(
                                        match_fields=[
                                            client.V1NodeSelectorRequirement(
                                                key="metadata.name", operator="In", values=[node]
                                            )
                                        ]
                                    )
                                ]
                            )
                        )
                    ),
                ),
            ),
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status = core.read_namespaced_pod(probe.metadata.name, namespace)
                if status.spec.node_name:
                    return None  # bound before the scheduler saw the cordon: try again
                conditions = status.status.conditions or []
                if any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions):
                    return True
                time.sleep(0.2)
            return None
        finally:
            core.delete_namespaced_pod(probe.metadata.name, namespace, grace_period_seconds=0)

    eventually(unschedulable, "the scheduler to refuse the cordoned node", 60)


def _active_replica(local_cluster: LocalCluster, pods: list[str]) -> str:
    """The replica kopf's peering made active: the highest priority among the live peers."""
    peering = json.loads(local_cluster.kubectl("get", "clusterkopfpeering", "hybridroute", "-o", "json"))
    peers = sorted(peering.get("status", {}).items(), key=lambda item: item[1]["priority"], reverse=True)
    return next(pod for peer, _ in peers for pod in pods if pod in peer)


def test_active_operator_replica_killed_the_other_reconciles_and_admits(
    local_cluster: LocalCluster,
    core: client.CoreV1Api,
    namespace: str,
    app: client.V1Pod,
    built: dict[str, images.Image],
) -> None:
    selector = "app.kubernetes.io/name=hybridroute"
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace, label_selector=selector).items}
    victim = _active_replica(local_cluster, list(pods))
    print(f"peering before the kill: {local_cluster.kubectl('get', 'clusterkopfpeering', 'hybridroute', '-o', 'json')}")
    [survivor] = set(pods) - {victim}

    restarts = {
        name: [
            (c.restart_count, c.last_state.terminated and c.last_state.terminated.reason)
            for c in pod.status.container_statuses
        ]
        for name, pod in pods.items()
    }
    print(f"operator replicas before the kill (restarts): {restarts}; active: {victim}")

    # A crash, not a shutdown: SIGKILL leaves kopf no time to withdraw from the peering, so the
    # survivor must wait for the victim's peering entry to expire. The pod object goes too, so the
    # kubelet does not restart the victim in place, and the node is cordoned so the Deployment's
    # replacement stays Pending: the survivor is the only replica that can take over.
    # The replicas' own node: the session's cluster may also hold the stand-in GPU node.
    node = pods[victim].spec.node_name
    local_cluster.kubectl("cordon", node)
    try:
        _wait_until_the_scheduler_honours_the_cordon(core, namespace, built["app"].ref, node)
        assert local_cluster.node is not None
        pids = local_cluster.node.pod_uid_pids(pods[victim].metadata.uid)
        assert pids, f"no processes found for {victim}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
        killed = time.monotonic()

        _apply(local_cluster, namespace, _policy("after-kill", [CLOUD]))
        eventually(
            lambda: core.list_namespaced_config_map(namespace, field_selector="metadata.name=after-kill").items or None,
            "the surviving replica to compile a new policy",
            240,
        )
        print(f"active operator replica SIGKILLed -> new policy compiled in {time.monotonic() - killed:.1f} s")
        running = [
            p.metadata.name
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.status.phase == "Running"
        ]
        assert running == [survivor]
        logs = local_cluster.kubectl("logs", "-n", namespace, survivor)
        assert f"[{namespace}/after-kill] Handler 'policy_changed' succeeded" in logs
        print(f"survivor paused for the victim and resumed: {'Resuming operations after the pause' in logs}")

        # The webhook keeps admitting: a pod labelled with the new policy gets its router injected.
        def admitted() -> client.V1Pod | None:
            labelled = client.V1Pod(
                metadata=client.V1ObjectMeta(
                    generate_name="after-kill-", labels={"hybridroute.io/policy": "after-kill"}
                ),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=built["app"].ref)]),
            )
            try:
                return core.create_namespaced_pod(namespace, labelled)
            except client.ApiException as exc:  # the victim's endpoint may linger a moment in the Service
                print(f"admission refused: {exc.status} {exc.reason}")
                return None

        created = eventually(admitted, "a labelled pod admitted", 60)
        assert [c.name for c in created.spec.init_containers] == [ROUTER_CONTAINER]
    finally:
        local_cluster.kubectl("uncordon", node)
