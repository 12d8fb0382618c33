"""`helm install charts/hybridroute` on the real node: the operator runs as pods from the images built here.

The operator and router images come from the project's Dockerfile (e2e/images.py), imported into the
node's containerd. The chart's Deployment then runs two operator replicas as real pods: they must
become Running and Ready through their own probes, as the chart's ServiceAccount (not an admin),
non-root, on a read-only root filesystem, and reach the API server through the `kubernetes` Service
as any in-cluster client does. The admission webhook is then served by those pods through the
chart's Service: a labelled pod is admitted with the router injected as a native sidecar, and its
app container's requests to `OPENAI_BASE_URL` reach a model-server pod (the simulator image) through
that router. No cluster DNS runs here, so endpoints name Services by their ClusterIP. The module's
tests share one release in one namespace (a Helm install and the pods' start cost most of the time).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from e2e import images
from e2e.helm import RELEASE, Helm, install_chart, uninstall_chart
from e2e.localcluster import KubectlError, LocalCluster, close_api_client
from hybridroute_operator.injection import BASE_URL_ENV, ROUTER_CONTAINER
from hybridroute_router.config import CONFIGMAP_KEY
from tests.fixtures.cluster import fresh_namespace
from tests.test_localcluster import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.images]
FULLNAME = f"{RELEASE}-hybridroute"


@pytest.fixture(scope="module")
def project_images(local_cluster: LocalCluster) -> dict[str, images.Image]:
    """The operator and router images, built from the Dockerfile (cached) and imported into the node."""
    built = {image.name: image for image in images.build(["operator", "router", "simulator"])}
    node = local_cluster.node
    assert node is not None
    for image in built.values():
        node.import_image(image.archive)
    return built


@pytest.fixture(scope="module")
def released(helm: Helm, local_cluster: LocalCluster, project_images: dict[str, images.Image]) -> Iterator[str]:
    """The chart installed with the images built here, in a namespace the module's tests share."""
    api = local_cluster.api_client()
    try:
        with fresh_namespace(client.CoreV1Api(api), "chart-") as namespace:
            install_chart(helm, local_cluster, namespace, project_images)
            yield namespace
            uninstall_chart(helm, local_cluster, namespace)
    finally:
        close_api_client(api)


def _operator_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/name=hybridroute"
    return [pod for pod in core.list_namespaced_pod(namespace, label_selector=selector).items if pod.spec.containers]


def test_two_operator_replicas_run_ready_as_the_chart_service_account_non_root_read_only(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released

    pods = _operator_pods(core, namespace)

    assert len(pods) == 2, [pod.metadata.name for pod in pods]
    for pod in pods:
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        assert pod.spec.service_account_name == FULLNAME
        uid = local_cluster.kubectl("exec", "-n", namespace, pod.metadata.name, "--", "id", "-u").strip()
        assert uid != "0"
        with pytest.raises(KubectlError, match="Read-only file system"):
            local_cluster.kubectl("exec", "-n", namespace, pod.metadata.name, "--", "touch", "/probe")
    # Both replicas talk to the API server as the chart's ServiceAccount: kopf peering lists them.
    peering = json.loads(local_cluster.kubectl("get", "clusterkopfpeering", "hybridroute", "-o", "json"))
    assert len(peering.get("status", {})) == 2, peering.get("status")
    # The webhook answers through the chart's Service, which lists both pods.
    slices = client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={FULLNAME}"
    )
    ready = {ep.target_ref.name for s in slices.items for ep in s.endpoints or [] if ep.conditions.ready}
    assert ready == {pod.metadata.name for pod in pods}


def test_one_replica_killed_the_other_keeps_serving(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released
    victim, survivor = (pod.metadata.name for pod in _operator_pods(core, namespace))

    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)

    def replaced() -> list[str] | None:
        pods = _operator_pods(core, namespace)
        names = [
            p.metadata.name
            for p in pods
            if {c.type: c.status for c in p.status.conditions or []}.get("Ready") == "True"
        ]
        return names if len(names) == 2 and victim not in names else None

    assert survivor in eventually(replaced, "the Deployment to replace the killed replica", 180)


# The app container's client: the request an app makes with OPENAI_BASE_URL unchanged, from Python's
# standard library (the router image has no openai SDK); prints the answer and the routing headers.
_APP_REQUEST = """
import json, os, urllib.error, urllib.request
body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]}).encode()
request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
        print(json.dumps({"content": answer["choices"][0]["message"]["content"],
                          "endpoint": response.headers.get("x-hybridroute-endpoint")}))
except urllib.error.HTTPError as error:
    raise SystemExit(f"{error.code}: {error.read().decode()}")
"""


def _policy(slo_p95_ms: int) -> dict[str, object]:
    """The test's RoutingPolicy; a different SLO is a different compiled config (a new hash)."""
    return {
        "apiVersion": "hybridroute.io/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "chat"},
        "spec": {"endpoints": [{"name": "local-sim"}], "modelAliases": ["chat"], "slo": {"p95LatencyMs": slo_p95_ms}},
    }


# Run in the app container: poll the sidecar's /readyz until it serves a config hash other than
# argv[1]; print that hash and the moment (the container shares the host's clock).
_WAIT_FOR_NEW_HASH = """
import json, sys, time, urllib.request
old, deadline = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8040/readyz", timeout=2) as response:
            serving = json.load(response)["configHash"]
        if serving != old:
            print(json.dumps({"hash": serving, "at": time.time()}))
            break
    except OSError:
        pass
    time.sleep(0.05)
"""


def _apply_to_serving_seconds(cluster: LocalCluster, namespace: str, slo_p95_ms: int) -> float:
    """`kubectl apply` a policy change, then seconds until the running sidecar serves the new hash."""
    exec_in_app = [str(cluster.kubectl_path), f"--kubeconfig={cluster.kubeconfig}", "exec", "-n", namespace, "app"]
    current = json.loads(
        cluster.kubectl("exec", "-n", namespace, "app", "-c", "app", "--", "python", "-c", _SERVING_HASH)
    )["configHash"]
    with subprocess.Popen(
        [*exec_in_app, "-c", "app", "--", "python", "-c", _WAIT_FOR_NEW_HASH, current, "300"],
        stdout=subprocess.PIPE,
        text=True,
    ) as waiter:
        time.sleep(1)  # the waiter is polling before the change goes in
        applied_at = time.time()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_policy(slo_p95_ms)))
        out, _ = waiter.communicate(timeout=330)
    served = json.loads(out)
    assert served["hash"] != current
    return float(served["at"]) - applied_at


_SERVING_HASH = """
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:8040/readyz", timeout=5).read().decode())
"""


def _ready_pod(core: client.CoreV1Api, name: str, namespace: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if {c.type: c.status for c in pod.status.conditions or []}.get("Ready") == "True" else None


def _app_behind_the_sidecar(
    local_cluster: LocalCluster, core: client.CoreV1Api, namespace: str, project_images: dict[str, images.Image]
) -> client.V1Pod:
    """A model-server pod behind a Service, its endpoint and a policy, and a labelled app pod: the pod
    as the API server admitted it (through the webhook)."""
    # A model server pod (the simulator image) behind a Service, as an existing local endpoint.
    simulator = client.V1Container(
        name="sim",
        image=project_images["simulator"].ref,
        args=["--port", "9101", "--name", "local-sim"],
        readiness_probe=client.V1Probe(tcp_socket=client.V1TCPSocketAction(port=9101), period_seconds=1),
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="local-sim", labels={"app": "local-sim"}),
            spec=client.V1PodSpec(containers=[simulator]),
        ),
    )
    service = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="local-sim"),
            spec=client.V1ServiceSpec(
                selector={"app": "local-sim"}, ports=[client.V1ServicePort(port=9101, target_port=9101)]
            ),
        ),
    )
    endpoint_url = f"http://{service.spec.cluster_ip}:9101/v1"
    # The operator probes the URL from its pod: give it a server that already answers.
    eventually(lambda: _ready_pod(core, "local-sim", namespace), "the model server pod Ready", 120)
    endpoint = {
        "apiVersion": "hybridroute.io/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": {"name": "local-sim"},
        "spec": {"type": "local", "local": {"url": endpoint_url, "model": "sim-model"}},
    }
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(endpoint))
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_policy(slo_p95_ms=4000)))

    # The operator pods probe the endpoint through its Service and compile the policy with it available.
    def compiled_available() -> bool | None:
        maps = core.list_namespaced_config_map(namespace, field_selector="metadata.name=chat").items
        config = json.loads(maps[0].data[CONFIGMAP_KEY]) if maps else {}
        return True if [e.get("available") for e in config.get("endpoints", [])] == [True] else None

    eventually(compiled_available, "the operator pods to compile the policy with the endpoint available", 120)

    app = client.V1Container(
        name="app",
        image=project_images["router"].ref,
        command=["python", "-c", "import time; time.sleep(100000)"],
        security_context=client.V1SecurityContext(run_as_non_root=True, read_only_root_filesystem=True),
    )
    return core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="app", labels={"hybridroute.io/policy": "chat"}),
            spec=client.V1PodSpec(containers=[app], termination_grace_period_seconds=2),
        ),
    )


@pytest.fixture(scope="module")
def app_behind_the_sidecar(
    local_cluster: LocalCluster, released: str, project_images: dict[str, images.Image]
) -> Iterator[client.V1Pod]:
    """The model-server pod, its endpoint, the policy and the labelled app pod, once for the module."""
    api = local_cluster.api_client()
    try:
        yield _app_behind_the_sidecar(local_cluster, client.CoreV1Api(api), released, project_images)
    finally:
        close_api_client(api)


def test_webhook_served_by_the_pods_injects_a_router_that_serves_the_app(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str, app_behind_the_sidecar: client.V1Pod
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released
    created = app_behind_the_sidecar

    # Admission went through the chart's Service to the operator pods (failurePolicy Fail): injected.
    sidecar = created.spec.init_containers[0]
    assert (sidecar.name, sidecar.restart_policy) == (ROUTER_CONTAINER, "Always")
    assert any(env.name == BASE_URL_ENV for env in created.spec.containers[0].env)
    pod = eventually(lambda: _ready_pod(core, "app", namespace), "the app pod with its router sidecar Ready", 180)
    assert pod.status.init_container_statuses[0].started
    started, answer, failure = time.monotonic(), None, ""
    while answer is None and time.monotonic() - started < 60:
        try:
            answer = json.loads(
                local_cluster.kubectl("exec", "-n", namespace, "app", "-c", "app", "--", "python", "-c", _APP_REQUEST)
            )
        except KubectlError as exc:  # the local endpoint may not be healthy in the router's eyes yet
            failure = exc.stderr[-1500:]
            time.sleep(1)
    assert answer == {"content": "Hello from the upstream simulator.", "endpoint": "local-sim"}, failure


@pytest.mark.timeout(900)
def test_a_policy_change_reaches_the_running_sidecar_through_its_configmap(
    local_cluster: LocalCluster, kube_api: client.ApiClient, released: str, app_behind_the_sidecar: client.V1Pod
) -> None:
    core = client.CoreV1Api(kube_api)
    namespace = released
    eventually(lambda: _ready_pod(core, "app", namespace), "the app pod with its router sidecar Ready", 180)

    # A policy change reaches the running sidecar through the mounted ConfigMap (the kubelet's refresh).
    latencies = sorted(_apply_to_serving_seconds(local_cluster, namespace, 4001 + change) for change in range(3))
    print(
        f"apply -> sidecar serving the new hash, {len(latencies)} changes: p50 {statistics.median(latencies):.1f} s, "
        f"max {latencies[-1]:.1f} s ({', '.join(f'{s:.1f}' for s in latencies)})"
    )
