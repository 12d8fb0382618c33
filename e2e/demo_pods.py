"""`make demo` on the real node: the operator installed by Helm, model servers and the app as pods.

The steps after the cluster (which here runs its real node):

1. the images (e2e/images.py, cached by content hash) imported into the node's containerd;
2. `helm install charts/hybridroute` into hybridroute-system: CRDs, two operator replicas, the webhook;
3. the cloud SIMULATOR as a pod behind a Service with its key in a Secret, a managed llama.cpp
   InferenceEndpoint (the operator's Deployment serves Gemma 3 270M) and the RoutingPolicy;
4. the app pod labelled `hybridroute.io/policy`: the webhook injects the router as a native sidecar;
5. Prometheus on the host, on the node link's host address so that the sidecar's p95 breaker can ask
   it, scraping the sidecar's operations listener at the pod's IP;
6. the traffic (e2e/demo.py's last step) from the host, inside the app pod's network namespace
   (e2e/podnetns.py), to the sidecar on the pod's loopback.

Every step is safe to repeat; the cluster's `stop` removes the pods with the node.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from typing import Any, Final

from e2e import demo_manifests as manifests
from e2e import helm, images, modelserver, podnetns, prometheus, toolchain
from e2e.demo_core import Demo, DemoError, TrafficTarget, log, wait_for
from e2e.localcluster import KubectlError
from hybridroute_operator.injection import InjectionSettings

CHART_NAMESPACE: Final = "hybridroute-system"
# Gemma 3 270M on two threads: the machine has two cores for everything (the tests' setting too).
LLAMACPP_THREADS: Final = 2
_SIDECAR = InjectionSettings(image="")  # the chart's defaults: the ports the injected router listens on


def image_names(demo: Demo) -> list[str]:
    local = ["llamacpp"] if demo.settings.model_server == "llamacpp" else []
    return ["operator", "router", "simulator", *local, "app"]


def built_images(demo: Demo) -> dict[str, images.Image]:
    """The demo's images, built or found in the cache (a second or so when nothing changed)."""
    try:
        return {image.name: image for image in images.build(image_names(demo))}
    except images.ImageError as exc:
        raise DemoError(str(exc)) from None


def _get(demo: Demo, *what: str) -> dict[str, Any] | None:
    try:
        return dict(demo.get_json(*what))
    except KubectlError:
        return None


def _ready(item: dict[str, Any] | None) -> bool:
    conditions = (item or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Images:
    name = "images (e2e/images.py, cached by content hash) imported into the node's containerd"

    def start(self, demo: Demo) -> None:
        node = demo.cluster.node
        if node is None:
            raise DemoError("the cluster runs no node: `down` it and `up` again (or use --host-processes)")
        for image in built_images(demo).values():
            node.import_image(image.archive)
            log(f"imported {image.ref}")

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the node's containerd goes with the cluster; the cache stays for next time."""


class Chart:
    name = f"helm install charts/hybridroute in {CHART_NAMESPACE} (two operator replicas, the webhook)"

    def start(self, demo: Demo) -> None:
        try:
            runner = helm.Helm(helm.helm_binary(), demo.dir / "helm")
        except toolchain.ToolchainError as exc:
            raise DemoError(f"helm could not be built: {exc}") from None
        with contextlib.suppress(KubectlError):  # already there on a repeated `up`
            demo.cluster.kubectl("create", "namespace", CHART_NAMESPACE)
        status = runner.run("status", helm.RELEASE, *helm.helm_cluster_args(demo.cluster, CHART_NAMESPACE), check=False)
        if status.returncode == 0:
            return
        try:
            # The operator reads p95 and circuit state (kubectl get ie) from the demo's Prometheus.
            values = {"operator.prometheusURL": prometheus_url(demo)}
            helm.install_chart(runner, demo.cluster, CHART_NAMESPACE, built_images(demo), values)
        except helm.HelmError as exc:
            raise DemoError(str(exc)) from None
        log(demo.cluster.kubectl("get", "pods", "-n", CHART_NAMESPACE, "-o", "wide"))

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the release lives in the cluster."""


class ModelPods:
    name = "cloud SIMULATOR pod + Secret, managed llama.cpp InferenceEndpoint, RoutingPolicy"

    def start(self, demo: Demo) -> None:
        settings, built = demo.settings, built_images(demo)
        network = demo.cluster.network
        assert network is not None, "Images checked that the cluster runs a node"
        simulator_image = built["simulator"].ref
        demo.kubectl_apply(manifests.namespace())
        demo.kubectl_apply(
            manifests.cloud_key_secret(),
            manifests.simulator_pod(manifests.CLOUD_SIMULATOR, simulator_image),
            manifests.service(manifests.CLOUD_ENDPOINT, manifests.SIMULATOR_PORT),
        )
        if settings.model_server == "llamacpp":
            local = manifests.managed_llamacpp_endpoint(
                settings.local_endpoint,
                built["llamacpp"].ref,
                modelserver.GEMMA_MODEL,
                settings.local_max_concurrency,
                LLAMACPP_THREADS,
            )
        else:
            log("!! --model-server simulator: the LOCAL endpoint is the upstream SIMULATOR, not a real model.")
            demo.kubectl_apply(
                manifests.simulator_pod(manifests.LOCAL_SIMULATOR, simulator_image),
                manifests.service(manifests.LOCAL_SIMULATOR.name, manifests.SIMULATOR_PORT),
            )
            local = manifests.local_endpoint(
                manifests.LocalServer(
                    endpoint=settings.local_endpoint,
                    base_url=f"http://{self._cluster_ip(demo, settings.local_endpoint)}:{manifests.SIMULATOR_PORT}/v1",
                    model=manifests.LOCAL_SIMULATOR.model,
                    max_context_tokens=modelserver.GEMMA_CONTEXT_TOKENS,
                    max_concurrency=settings.local_max_concurrency,
                )
            )
        # No cluster DNS: the cloud endpoint names its Service by ClusterIP.
        cloud_url = f"http://{self._cluster_ip(demo, manifests.CLOUD_ENDPOINT)}:{manifests.SIMULATOR_PORT}/v1"
        tuning = manifests.PolicyTuning(p95_latency_ms=settings.slo_p95_ms, prometheus_url=prometheus_url(demo))
        demo.kubectl_apply(
            local, manifests.cloud_endpoint(cloud_url), manifests.routing_policy(settings.local_endpoint, tuning)
        )
        wait_for(lambda: self._ready(demo), "both endpoints (the model pod Ready) and the policy to be Ready", 420)
        if settings.model_server == "llamacpp":
            # At the pod's IP, routed from the host: its fresh Service may not be programmed by kube-proxy
            # yet (it rejects a ClusterIP it does not know yet as "network unreachable").
            pods = demo.get_json("pods", "-l", f"hybridroute.io/endpoint={settings.local_endpoint}")["items"]
            pod_ip = next((pod["status"]["podIP"] for pod in pods if _ready(pod)), None)
            if pod_ip is None:
                raise DemoError(f"no Ready pod of {settings.local_endpoint}, though its endpoint says Ready")
            pool_url = f"http://{pod_ip}:{manifests.LLAMACPP_PORT}/v1"
            log(f"warming the model pod up (two tiny completions at {pool_url})")
            try:
                modelserver.warm_up(pool_url, modelserver.GEMMA_MODEL)
            except OSError as exc:
                raise DemoError(f"the llama.cpp pod did not answer at {pool_url}: {exc}") from None
        log(demo.cluster.kubectl("get", "ie,rp,pods", "--namespace", manifests.NAMESPACE))

    @staticmethod
    def _cluster_ip(demo: Demo, service: str) -> str:
        return str(demo.get_json("service", service)["spec"]["clusterIP"])

    @staticmethod
    def _ready(demo: Demo) -> bool:
        items = demo.get_json("ie,rp")["items"]
        return len(items) == 3 and all(_ready(item) for item in items)

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the pods and objects go with the cluster."""


def prometheus_url(demo: Demo) -> str:
    """Prometheus on the host end of the node link: the host and every pod reach it there."""
    network = demo.cluster.network
    assert network is not None
    return f"http://{network.host_ip}:{demo.port.prometheus}"


class AppPod:
    name = "app pod labelled hybridroute.io/policy=demo (router injected as its native sidecar)"

    def start(self, demo: Demo) -> None:
        if _get(demo, "pod", manifests.APP_POD) is None:
            aliases = {}
            local = _get(demo, "ie", demo.settings.local_endpoint) or {}
            service = _get(demo, "service", demo.settings.local_endpoint)
            if local.get("spec", {}).get("local", {}).get("server") and service is not None:
                # The operator compiles the pool's URL with its Service name; this cluster runs no DNS.
                aliases[f"{demo.settings.local_endpoint}.{manifests.NAMESPACE}.svc"] = service["spec"]["clusterIP"]
            demo.kubectl_apply(manifests.app_pod(built_images(demo)["app"].ref, aliases))
        wait_for(lambda: _ready(_get(demo, "pod", manifests.APP_POD)), "the app pod and its sidecar Ready", 180)
        wait_for(lambda: self._serving_current(demo), "the sidecar to serve the policy's current config", 120)
        log(f"app pod at {app_pod_ip(demo)}; its sidecar serves {_SIDECAR.port} on the pod's loopback")

    @staticmethod
    def _serving_current(demo: Demo) -> bool:
        configmap = demo.get_json("configmap", manifests.POLICY_NAME)
        wanted = configmap["metadata"].get("annotations", {}).get("hybridroute.io/config-hash")
        try:
            with urllib.request.urlopen(f"{sidecar_metrics_url(demo)}/readyz", timeout=2) as response:
                return bool(json.loads(response.read()).get("configHash") == wanted)
        except (OSError, ValueError):
            return False

    def stop(self, demo: Demo) -> None:
        """Nothing to undo: the pod goes with the cluster."""


def app_pod_ip(demo: Demo) -> str:
    return str(demo.get_json("pod", manifests.APP_POD)["status"]["podIP"])


def sidecar_metrics_url(demo: Demo) -> str:
    """The injected router's operations listener (/metrics, /readyz), which listens on the pod's IP."""
    return f"http://{app_pod_ip(demo)}:{_SIDECAR.metrics_port}"


class Prometheus:
    name = "Prometheus on the host (1 s scrape of the app pod's router sidecar)"

    def start(self, demo: Demo) -> None:
        network = demo.cluster.network
        assert network is not None
        target = f"{app_pod_ip(demo)}:{_SIDECAR.metrics_port}"
        try:
            url = prometheus.start(
                demo.dir, demo.port.prometheus, [target], job="hybridroute-router", address=network.host_ip
            )
        except prometheus.PrometheusError as exc:
            raise DemoError(str(exc)) from None
        log(f"Prometheus at {url}, scraping {target}")

    def stop(self, demo: Demo) -> None:
        prometheus.stop(demo.dir)


def app_pod_target(demo: Demo) -> TrafficTarget:
    """The sidecar on the app pod's loopback, reached from inside the pod's network namespace.

    Why not run the load generator in the app container: the records, the live view, the report and
    the plot would then need the demo's code in the app image (a rebuild whenever it changes) and a
    stream of records back (kubectl logs -f). Joined to the pod's network namespace, the same client
    code, the `openai` SDK included, reaches exactly the socket the app container does, and its
    records stay in this process for the live view.
    """
    pod = demo.get_json("pod", manifests.APP_POD)
    node = demo.cluster.node
    assert node is not None
    pids = node.pod_uid_pids(pod["metadata"]["uid"])
    if not pids:
        raise DemoError(f"no processes found for pod {manifests.APP_POD}: is it running?")
    return TrafficTarget(
        base_url=f"http://127.0.0.1:{_SIDECAR.port}/v1",
        router_metrics_url=sidecar_metrics_url(demo),
        prometheus_url=prometheus_url(demo),
        netns=podnetns.netns_of(pids[0]),
    )
