"""The chart and the injection webhook against the real local control plane.

`helm install` into kube-apiserver: CRDs established, RBAC present, and `kubectl auth can-i` as the
operator's ServiceAccount says yes to what the operator needs and no to anything broad. The chart's
default images (ghcr.io) cannot be pulled here, so its operator pods never start in these tests;
tests/test_realnode_chart.py installs the chart with the images built here and runs them.

The webhook: the operator's handler runs in a kopf operator in this process (KopfRunner thread) on
127.0.0.1 with a certificate from a throwaway CA, registered by the chart's own
MutatingWebhookConfiguration with clientConfig switched from the in-cluster Service to that URL.
kube-apiserver then calls it for real on every Pod creation.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e import pki
from e2e.helm import CHART, RELEASE, Helm, adopt_existing, helm_cluster_args
from e2e.localcluster import KubectlError, LocalCluster
from e2e.processes import free_port
from hybridroute_operator.api import GROUP, POLICY_KIND, POLICY_PLURAL, VERSION
from hybridroute_operator.apply import Cluster
from hybridroute_operator.injection import (
    BASE_URL_ENV,
    INJECTED_ANNOTATION,
    ROUTER_CONTAINER,
    SKIP_CONTAINERS_ANNOTATION,
    InjectionSettings,
)
from hybridroute_operator.webhook import WEBHOOK_ID, WebhookSettings, configure
from hybridroute_router.config import (
    CONFIGMAP_KEY,
    ApiKeyRef,
    EndpointConfig,
    RouterConfig,
    SecretKeyRef,
    secret_env_name,
)

pytestmark = pytest.mark.cluster

OPENAI_KEY = SecretKeyRef(name="openai", key="api-key")


# --------------------------------------------------------------------------------------------------
# helm install + RBAC
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def installed(helm: Helm, local_cluster: LocalCluster, k8s_namespace: str) -> Iterator[str]:
    """The chart installed as release `hr` in a fresh namespace; uninstalled afterwards."""
    adopt_existing(local_cluster, k8s_namespace, "inferenceendpoints.hybridroute.io", "routingpolicies.hybridroute.io")
    helm.run("install", RELEASE, str(CHART), *helm_cluster_args(local_cluster, k8s_namespace), timeout=180)
    yield k8s_namespace
    # Uninstall so the webhook configuration (failurePolicy Fail, no running operator) cannot
    # refuse labelled Pods of later tests. The CRDs stay (crds.keep), as they would in production.
    helm.run("uninstall", RELEASE, *helm_cluster_args(local_cluster, k8s_namespace), "--wait", timeout=180)


def can_i(cluster: LocalCluster, service_account: str, *args: str) -> bool:
    try:
        answer = cluster.kubectl("auth", "can-i", "--as", service_account, *args)
    except KubectlError as exc:  # kubectl exits 1 for "no"
        answer = exc.stdout
    return answer.strip() == "yes"


def test_helm_install_yields_crds_rbac_and_a_least_privilege_operator(
    helm: Helm, local_cluster: LocalCluster, installed: str
) -> None:
    namespace = installed
    local_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferenceendpoints.hybridroute.io",
        "crd/routingpolicies.hybridroute.io",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    fullname = f"{RELEASE}-hybridroute"
    local_cluster.kubectl("get", "clusterrole", fullname)
    local_cluster.kubectl("get", "clusterrolebinding", fullname)
    local_cluster.kubectl("-n", namespace, "get", "serviceaccount", fullname)
    local_cluster.kubectl("get", "clusterkopfpeering", "hybridroute")
    local_cluster.kubectl("-n", namespace, "get", "deployment", fullname)

    operator = f"system:serviceaccount:{namespace}:{fullname}"
    needed = [
        ("watch", "inferenceendpoints.hybridroute.io", "--all-namespaces"),
        ("list", "routingpolicies.hybridroute.io", "--all-namespaces"),
        ("patch", "routingpolicies.hybridroute.io", "-n", "team-a"),
        ("patch", "inferenceendpoints.hybridroute.io", "--subresource=status", "-n", "team-a"),
        ("create", "deployments.apps", "-n", "team-a"),
        ("watch", "deployments.apps", "--all-namespaces"),
        ("patch", "services", "-n", "team-a"),
        ("patch", "configmaps", "-n", "team-a"),
        ("get", "configmaps", "-n", "team-a"),
        ("create", "events", "-n", "team-a"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("patch", "clusterkopfpeerings.kopf.dev/hybridroute"),
    ]
    broad = [
        ("delete", "nodes"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("get", "secrets", "-n", "team-a"),
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "-n", "kube-system"),
        ("watch", "secrets", "--all-namespaces"),
        ("delete", "deployments.apps", "-n", "team-a"),
        ("delete", "services", "-n", "team-a"),
        ("delete", "configmaps", "-n", "team-a"),
        ("create", "pods", "-n", "team-a"),
        ("create", "serviceaccounts/token", "-n", namespace),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
        ("patch", "clusterkopfpeerings.kopf.dev/someone-else"),
        ("impersonate", "users"),
        ("*", "*"),
    ]
    assert [check for check in needed if not can_i(local_cluster, operator, *check)] == []
    assert [check for check in broad if can_i(local_cluster, operator, *check)] == []


def test_helm_upgrade_keeps_the_webhook_certificate(helm: Helm, local_cluster: LocalCluster, installed: str) -> None:
    namespace = installed
    core = client.CoreV1Api(local_cluster.api_client())
    secret_name = f"{RELEASE}-hybridroute-webhook-tls"
    before = core.read_namespaced_secret(secret_name, namespace).data

    helm.run(
        "upgrade", RELEASE, str(CHART), "--reuse-values", "--set", "replicaCount=1",
        *helm_cluster_args(local_cluster, namespace), timeout=180,
    )  # fmt: skip

    assert core.read_namespaced_secret(secret_name, namespace).data == before
    admission = client.AdmissionregistrationV1Api(local_cluster.api_client())
    configuration = admission.read_mutating_webhook_configuration(f"{RELEASE}-hybridroute")
    assert configuration.webhooks[0].client_config.ca_bundle == before["ca.crt"]
    # replicaCount=1: standalone, so the peering object is gone with the upgrade.
    with pytest.raises(KubectlError):
        local_cluster.kubectl("get", "clusterkopfpeering", "hybridroute")


# --------------------------------------------------------------------------------------------------
# the webhook, called by kube-apiserver
# --------------------------------------------------------------------------------------------------


def router_config(namespace: str) -> str:
    return RouterConfig(
        endpoints=[
            EndpointConfig(name="local", type="local", base_url="http://vllm.models.svc:8000/v1", model="gemma"),
            EndpointConfig(
                name="openai",
                type="cloud",
                base_url="https://api.openai.com/v1",
                model="gpt-4o-mini",
                api_key=ApiKeyRef(secret_ref=OPENAI_KEY),
            ),
        ],
    ).to_json()


def pod_manifest(name: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, **extra},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.example/app:1"},
                {"name": "exporter", "image": "registry.example/exporter:1"},
            ]
        },
    }


def webhook_configuration(helm: Helm, name: str, namespace: str, url: str, ca_pem: bytes) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, pointed at `url` and scoped to one namespace."""
    rendered = helm.run(
        *helm.template_args(release=RELEASE, namespace=namespace), "--show-only", "templates/webhook/webhook.yaml"
    ).stdout
    configuration: dict[str, Any] = next(
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "MutatingWebhookConfiguration"
    )
    configuration["metadata"] = {"name": name}
    (hook,) = configuration["webhooks"]
    hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
    # Other tests share this API server: only Pods of this test's namespace reach this webhook.
    hook["namespaceSelector"]["matchExpressions"].append(
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}
    )
    return configuration


@pytest.fixture
def webhook_url(tmp_path: Path, local_cluster: LocalCluster, k8s_namespace: str, helm: Helm) -> Iterator[str]:
    """The injection webhook served by kopf on loopback and registered with kube-apiserver."""
    authority = pki.CertificateAuthority("hybridroute-webhook-test-ca")
    serving = authority.serving_pair(("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    port = free_port()
    webhook_settings = WebhookSettings(
        cert_dir=tmp_path,
        injection=InjectionSettings(image="registry.example/hybridroute-router:test", port=8040),
        port=port,
        listen_address="127.0.0.1",
    )
    registry = kopf.OperatorRegistry()
    pki_dir = local_cluster.dir / "pki"

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=local_cluster.server,
            ca_path=str(pki_dir / "ca.crt"),
            certificate_path=str(pki_dir / "admin.crt"),
            private_key_path=str(pki_dir / "admin.key"),
        )

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, memo, webhook_settings, Cluster(local_cluster.api_client()), registry=registry)

    admission = client.AdmissionregistrationV1Api(local_cluster.api_client())
    url = f"https://127.0.0.1:{port}/{WEBHOOK_ID}"
    configuration = webhook_configuration(
        helm, f"hybridroute-test-{k8s_namespace}", k8s_namespace, url, authority.pair.cert_pem
    )
    runner = KopfRunner(["run", "--standalone", "--namespace", k8s_namespace], registry=registry, timeout=60)
    with runner, contextlib.ExitStack() as cleanup:
        admission.create_mutating_webhook_configuration(configuration)
        cleanup.callback(admission.delete_mutating_webhook_configuration, configuration["metadata"]["name"])
        yield url
    assert runner.exception is None, runner.output


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def compiled_config_map(api: client.ApiClient, namespace: str, policy: str, *, owned: bool = True) -> None:
    """A RoutingPolicy and a ConfigMap of its name holding a router config, controlled by it if `owned`."""
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": POLICY_KIND, "metadata": {"name": policy}}
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, {**body, "spec": {"endpoints": [{"name": "local"}]}}
    )
    metadata: dict[str, Any] = {"name": policy}
    if owned:
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": POLICY_KIND, "name": policy, "controller": True}
        metadata["ownerReferences"] = [{**owner, "uid": created["metadata"]["uid"]}]
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        namespace, {"metadata": metadata, "data": {CONFIGMAP_KEY: router_config(namespace)}}
    )


def test_the_api_server_gets_pods_injected_by_the_webhook(
    local_cluster: LocalCluster, k8s_namespace: str, webhook_url: str, hybridroute_crds: None
) -> None:
    namespace = k8s_namespace
    core = client.CoreV1Api(local_cluster.api_client())
    compiled_config_map(core.api_client, namespace, "chat")
    labelled = pod_manifest(
        "app", {"hybridroute.io/policy": "chat"}, annotations={SKIP_CONTAINERS_ANNOTATION: "exporter"}
    )

    def dry_run_is_injected() -> bool:
        # The webhook server starts once kopf has scanned the cluster, and the API server picks the
        # new configuration up asynchronously: wait until a dry-run comes back injected.
        try:
            probe = core.create_namespaced_pod(
                namespace, {**labelled, "metadata": {**labelled["metadata"], "name": "probe"}}, dry_run="All"
            )
        except ApiException:
            return False
        return bool(probe.spec.init_containers)

    eventually(dry_run_is_injected, "the webhook to inject")

    created = core.create_namespaced_pod(namespace, labelled)
    (router,) = created.spec.init_containers
    assert router.name == ROUTER_CONTAINER
    assert router.restart_policy == "Always"
    assert router.image == "registry.example/hybridroute-router:test"
    assert [(env.name, env.value_from.secret_key_ref.name) for env in router.env] == [
        (secret_env_name(OPENAI_KEY), "openai")
    ]
    app, exporter = created.spec.containers
    assert [(env.name, env.value) for env in app.env] == [(BASE_URL_ENV, "http://127.0.0.1:8040/v1")]
    assert exporter.env is None
    assert [volume.config_map.name for volume in created.spec.volumes if volume.config_map] == ["chat"]
    assert created.metadata.annotations[INJECTED_ANNOTATION] == "chat"

    plain = core.create_namespaced_pod(namespace, pod_manifest("plain", {"app": "plain"}))
    assert plain.spec.init_containers is None
    assert all(container.env is None for container in plain.spec.containers)

    # Re-admission: the injected Pod's own manifest, submitted again, gains nothing.
    again = client.ApiClient().sanitize_for_serialization(created)
    again["metadata"] = {
        "name": "again",
        "labels": again["metadata"]["labels"],
        "annotations": again["metadata"]["annotations"],
    }
    again["spec"].pop("nodeName", None)
    readmitted = core.create_namespaced_pod(namespace, again)
    assert [c.name for c in readmitted.spec.init_containers] == [ROUTER_CONTAINER]
    assert [len(c.env or []) for c in readmitted.spec.containers] == [1, 0]
    assert len(readmitted.spec.volumes) == len(created.spec.volumes)

    # An update is not a creation: the Pod keeps exactly what it had.
    updated = core.patch_namespaced_pod("app", namespace, {"metadata": {"labels": {"touched": "yes"}}})
    assert copy.deepcopy(updated.spec.init_containers) == created.spec.init_containers


def denial(core: client.CoreV1Api, namespace: str, manifest: dict[str, Any]) -> str:
    """The API server's message when the webhook denied the Pod; empty before it is serving."""
    try:
        core.create_namespaced_pod(namespace, manifest, dry_run="All")
    except ApiException as exc:
        message = str(exc.body)
        return message if "denied the request" in message else ""
    raise AssertionError("a Pod naming a policy without a compiled config was admitted")


def test_a_policy_without_compiled_config_is_refused(
    kube_api: client.ApiClient, k8s_namespace: str, webhook_url: str
) -> None:
    core = client.CoreV1Api(kube_api)
    manifest = pod_manifest("orphan", {"hybridroute.io/policy": "missing"})
    eventually(lambda: bool(denial(core, k8s_namespace, manifest)), "the webhook to answer")
    message = denial(core, k8s_namespace, manifest)
    assert f"RoutingPolicy {k8s_namespace}/missing has no compiled router config yet" in message


def test_a_config_map_the_policy_does_not_control_is_refused(
    kube_api: client.ApiClient, k8s_namespace: str, webhook_url: str, hybridroute_crds: None
) -> None:
    # Someone with ConfigMap rights writes a router config under the policy's name: the webhook must
    # not inject a router (and the Pod's API keys) pointed by it.
    compiled_config_map(kube_api, k8s_namespace, "chat", owned=False)
    core = client.CoreV1Api(kube_api)
    manifest = pod_manifest("app", {"hybridroute.io/policy": "chat"})
    eventually(lambda: bool(denial(core, k8s_namespace, manifest)), "the webhook to answer")
    message = denial(core, k8s_namespace, manifest)
    assert f"RoutingPolicy {k8s_namespace}/chat: ConfigMap chat is not the policy's compiled config" in message
