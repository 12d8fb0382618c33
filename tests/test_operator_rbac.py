"""The operator runs as the chart's ServiceAccount with exactly the chart's RBAC (issue 11, item 3).

The chart's RBAC objects (`helm template`) are applied to the real API server for a fresh
ServiceAccount, and the operator runs with a token of that ServiceAccount. It must do its whole job
(a managed pool, a compiled policy) without any right on Secrets, reporting cloud endpoints as
SecretNotChecked; once a namespace owner binds the chart's secret-check role in the namespace, the
same operator reports a missing Secret and turns the endpoint Ready when the Secret appears.

`test_a_created_secret_turns_the_endpoint_ready_through_the_watch` runs with a resync period of an
hour: only the Secret watch can make the endpoint Ready, and the time from creating the Secret to
Ready=True is printed (run with -s to see it).

`kubectl auth can-i --list` as that ServiceAccount must show exactly the grants docs/install.md
lists, with Secrets only in a namespace that bound the secret-check role, never in kube-system.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from kubernetes import client

from e2e.localcluster import LocalCluster
from hybridroute_operator.api import ENDPOINT_PLURAL, POLICY_PLURAL
from tests.fixtures.helm import Helm
from tests.fixtures.operator import Kube, OperatorProcesses, eventually

pytestmark = pytest.mark.cluster

CLOUD = {
    "type": "cloud",
    "cloud": {"provider": "openai", "model": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
}
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
ADMISSION_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", *ADMISSION_KINDS}


@pytest.fixture
def chart_identity(helm: Helm, local_cluster: LocalCluster, kube: Kube, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount holding exactly the chart's RBAC (rendered for this namespace)."""
    release = f"rbac-{kube.namespace}"
    documents = helm.template(release=release, namespace=kube.namespace)
    rbac = [document for document in documents if document["kind"] in RBAC_KINDS | ADMISSION_KINDS]
    (account,) = [document for document in documents if document["kind"] == "ServiceAccount"]
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all([account, *rbac]))
    local_cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    token = kube.core.create_namespaced_service_account_token(
        account["metadata"]["name"],
        kube.namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
    ).status.token
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": local_cluster.server,
                            "certificate-authority": str(local_cluster.dir / "pki" / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    yield kubeconfig
    for document in rbac:
        if document["kind"] in CLUSTER_SCOPED:
            local_cluster.kubectl("delete", document["kind"].lower(), document["metadata"]["name"], "--wait=false")


def bind_secret_check(local_cluster: LocalCluster, kube: Kube, release: str) -> None:
    """What a namespace owner does to opt in: bind the chart's secret-check role in their namespace."""
    local_cluster.kubectl(
        "-n",
        kube.namespace,
        "create",
        "rolebinding",
        "hybridroute-secret-check",
        f"--clusterrole={release}-hybridroute-secret-check",
        f"--serviceaccount={kube.namespace}:{release}-hybridroute",
    )


def test_the_operator_works_with_only_the_charts_rbac_and_checks_secrets_where_granted(
    local_cluster: LocalCluster, kube: Kube, chart_identity: Path, operator_factory: OperatorProcesses
) -> None:
    operator_factory(kubeconfig=chart_identity)
    kube.create(ENDPOINT_PLURAL, "openai", CLOUD)
    kube.create(ENDPOINT_PLURAL, "llama", {"type": "local", "local": {"server": "vllm", "model": "m"}})
    kube.create(POLICY_PLURAL, "default", {"endpoints": [{"name": "openai"}, {"name": "llama"}]})

    # No right on Secrets: not checked, and said so; everything else works.
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "True", "SecretNotChecked"), "SecretNotChecked"
    )
    eventually(lambda: kube.deployment("llama"), "the pool's Deployment, created by server-side apply")
    eventually(lambda: kube.config_map("default"), "the policy's ConfigMap")
    eventually(lambda: kube.condition_is(POLICY_PLURAL, "default", "Ready", "True", "Compiled"), "compiled")

    # The namespace opts in: the missing Secret is reported, and its creation is noticed.
    bind_secret_check(local_cluster, kube, f"rbac-{kube.namespace}")
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "False", "SecretMissing"), "SecretMissing")
    kube.create_secret("openai")
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "True", "SecretFound"), "SecretFound")
    message = (kube.condition(ENDPOINT_PLURAL, "openai", "Ready") or {})["message"]
    assert "holds key api-key" in message


def test_a_created_secret_turns_the_endpoint_ready_through_the_watch(
    kube: Kube, operator_factory: OperatorProcesses
) -> None:
    operator_factory({"HYBRIDROUTE_RESYNC_SECONDS": "3600"})  # no level-based re-check within the test
    kube.create(ENDPOINT_PLURAL, "openai", CLOUD)
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "False", "SecretMissing"), "SecretMissing")

    seconds = []
    for _ in range(5):
        created = time.monotonic()
        kube.create_secret("openai")
        # polled every 20 ms for the measurement; the bound is only there so a failure ends the test
        while not kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "True", "SecretFound"):
            assert time.monotonic() - created < 30, "the Secret's creation never reached the endpoint"
            time.sleep(0.02)
        seconds.append(time.monotonic() - created)
        kube.core.delete_namespaced_secret("openai", kube.namespace)
        eventually(
            lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "False", "SecretMissing"), "SecretMissing"
        )
    print(f"\nSecret -> Ready: {', '.join(f'{value:.3f}s' for value in seconds)} (resync period 3600 s)")


# Granted to every authenticated identity by the API server's default roles, not by the chart.
DEFAULT_GRANTS = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
}
CAN_I_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_i_list(local_cluster: LocalCluster, service_account: str, namespace: str) -> set[tuple[str, str, str]]:
    """(resource, resource names, verbs) rows of `kubectl auth can-i --list` in `namespace`, chart's only."""
    output = local_cluster.kubectl("auth", "can-i", "--list", f"--as={service_account}", "-n", namespace)
    rows = set()
    for line in output.splitlines()[1:]:
        match = CAN_I_ROW.match(line)
        assert match is not None, f"unexpected can-i line: {line!r}"
        resource, _, names, verbs = match.groups()
        if resource and resource not in DEFAULT_GRANTS:
            rows.add((resource, names, " ".join(sorted(verbs.split()))))
    return rows


CHART_GRANTS = {
    ("inferenceendpoints.hybridroute.io", "", "get list patch watch"),
    ("routingpolicies.hybridroute.io", "", "get list patch watch"),
    ("inferenceendpoints.hybridroute.io/status", "", "get patch"),
    ("routingpolicies.hybridroute.io/status", "", "get patch"),
    ("deployments.apps", "", "create get list patch watch"),
    ("services", "", "create get patch"),
    ("configmaps", "", "create get list patch watch"),
    ("events", "", "create patch"),
    ("events.events.k8s.io", "", "create patch"),
    ("customresourcedefinitions.apiextensions.k8s.io", "", "get list watch"),
    ("namespaces", "", "get list watch"),
    ("clusterkopfpeerings.kopf.dev", "", "list watch"),
    ("clusterkopfpeerings.kopf.dev", "hybridroute", "get patch"),
}


def test_can_i_list_shows_exactly_the_documented_grants_and_secrets_only_where_bound(
    local_cluster: LocalCluster, kube: Kube, chart_identity: Path
) -> None:
    release = f"rbac-{kube.namespace}"
    service_account = f"system:serviceaccount:{kube.namespace}:{release}-hybridroute"
    # docs/install.md lists the same table; a grant added to the chart must be added there too.
    documented = (Path(__file__).resolve().parents[1] / "docs" / "install.md").read_text()
    for resource in {resource for resource, _, _ in CHART_GRANTS} | {"secrets"}:
        assert f"`{resource}`" in documented, f"{resource} is not in docs/install.md"
    assert can_i_list(local_cluster, service_account, kube.namespace) == CHART_GRANTS
    assert can_i_list(local_cluster, service_account, "kube-system") == CHART_GRANTS

    bind_secret_check(local_cluster, kube, release)
    secrets = ("secrets", "", "get list watch")
    assert can_i_list(local_cluster, service_account, kube.namespace) == CHART_GRANTS | {secrets}
    assert can_i_list(local_cluster, service_account, "kube-system") == CHART_GRANTS, "never cluster-wide"


def owned_by_an_endpoint(name: str) -> dict[str, object]:
    """A controller reference to an InferenceEndpoint (what a compromised operator would write)."""
    return {
        "apiVersion": "hybridroute.io/v1alpha1",
        "kind": "InferenceEndpoint",
        "name": name,
        "uid": "00000000-0000-0000-0000-000000000001",
        "controller": True,
    }


def pool_deployment(name: str, pod_spec: dict[str, object]) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "ownerReferences": [owned_by_an_endpoint(name)]},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


SERVER = {"name": "server", "image": "registry.example/server:1"}


def test_the_chart_holds_the_operators_writes_to_its_own_children(
    local_cluster: LocalCluster, kube: Kube, chart_identity: Path
) -> None:
    """RBAC lets the operator create and patch Deployments, Services and ConfigMaps anywhere; the
    chart's ValidatingAdmissionPolicy limits that to its own children with a harmless shape, so the
    grant is no door to other teams' objects or to Secrets (a Pod that mounts one)."""
    team = kube.core.create_namespaced_config_map(
        kube.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="team-settings"), data={"a": "1"})
    )
    as_operator = kubernetes.config.new_client_from_config(str(chart_identity))
    core, apps = client.CoreV1Api(as_operator), client.AppsV1Api(as_operator)
    namespace = kube.namespace

    def refused(call: Callable[[], object]) -> str | None:
        try:
            call()
        except client.ApiException as exc:
            return str(exc.body) if exc.status in (403, 422) else None
        return None

    # Wait for the API server to enforce the policy, probing with a dry run that changes nothing.
    stray = {"metadata": {"name": f"not-ours-{namespace}"}, "data": {}}
    message = eventually(
        lambda: refused(lambda: core.create_namespaced_config_map("kube-system", stray, dry_run="All")),
        "the admission policy in force",
    )
    assert "ValidatingAdmissionPolicy" in message
    # A team's ConfigMap: RBAC allows the patch, the policy refuses it, also when the write claims
    # the object for a RoutingPolicy (a takeover).
    assert refused(lambda: core.patch_namespaced_config_map("team-settings", namespace, {"data": {"a": "2"}}))
    claim = {**owned_by_an_endpoint("team-settings"), "kind": "RoutingPolicy"}
    takeover = {"metadata": {"ownerReferences": [claim]}}
    assert refused(lambda: core.patch_namespaced_config_map("team-settings", namespace, takeover))
    after = kube.config_map("team-settings")
    assert after is not None
    assert after.metadata.resource_version == team.metadata.resource_version, "never written"

    # Pool Deployments that could read Secrets or reach the node.
    secret_volume = {"name": "k", "secret": {"secretName": "openai"}}
    secret_env = {**SERVER, "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "k"}}}]}
    for pod_spec in (
        {"containers": [SERVER], "volumes": [secret_volume]},
        {"containers": [secret_env]},
        {"containers": [{**SERVER, "envFrom": [{"secretRef": {"name": "openai"}}]}]},
        {"containers": [SERVER], "serviceAccountName": "admin"},
        {"containers": [SERVER], "initContainers": [SERVER]},
        {"containers": [SERVER], "hostNetwork": True},
        {"containers": [SERVER], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
        {"containers": [{**SERVER, "securityContext": {"privileged": True}}]},
    ):
        deployment = pool_deployment("pool", pod_spec)
        assert refused(lambda d=deployment: apps.create_namespaced_deployment(namespace, d)), pod_spec
    # Services other than a plain ClusterIP one.
    external = {"type": "ExternalName", "externalName": "kubernetes.default.svc"}
    ips = {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}
    for spec in (external, ips):
        service = {"metadata": {"name": "pool", "ownerReferences": [owned_by_an_endpoint("pool")]}, "spec": spec}
        assert refused(lambda s=service: core.create_namespaced_service(namespace, s)), spec

    # What the operator renders passes (emptyDir volumes, plain env, its controller reference).
    allowed = {"containers": [{**SERVER, "env": [{"name": "OLLAMA_HOST", "value": "0.0.0.0:8000"}]}]}
    allowed["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    apps.create_namespaced_deployment(namespace, pool_deployment("pool", allowed))

    # Our own kinds: status and finalizers only, never spec (what GitOps tools compare).
    kube.create(ENDPOINT_PLURAL, "openai", CLOUD)
    custom = client.CustomObjectsApi(as_operator)
    args = ("hybridroute.io", "v1alpha1", namespace, ENDPOINT_PLURAL, "openai")
    spec_change = {"spec": {"cloud": {"model": "gpt-4o"}}}
    message = eventually(
        lambda: refused(lambda: custom.patch_namespaced_custom_object(*args, spec_change, dry_run="All")),
        "the status-only policy in force",
    )
    assert "status and finalizers" in message
    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": ["hybridroute.io/finalizer"]}})
    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": None}})
    assert (kube.get(ENDPOINT_PLURAL, "openai") or {})["spec"]["cloud"]["model"] == "gpt-4o-mini"
    as_operator.close()


def test_a_secret_without_the_referenced_key_is_reported_from_its_metadata(
    kube: Kube, operator_factory: OperatorProcesses
) -> None:
    """Secret metadata lists no keys, but its managedFields name the keys each writer set (never a
    value): enough to say that the referenced key is missing, without reading the Secret's data."""
    operator_factory()
    kube.core.create_namespaced_secret(
        kube.namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="openai"), string_data={"apikey": "x"})
    )
    kube.create(ENDPOINT_PLURAL, "openai", CLOUD)  # references key api-key
    eventually(
        lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "False", "SecretKeyMissing"), "SecretKeyMissing"
    )
    message = (kube.condition(ENDPOINT_PLURAL, "openai", "Ready") or {})["message"]
    assert "Secret openai has no key api-key" in message

    # The key added (kubectl edit, another writer): Ready, and the message says the key was seen.
    kube.core.patch_namespaced_secret(
        "openai", kube.namespace, {"data": {"api-key": base64.b64encode(b"sk").decode()}}, field_manager="kubectl-edit"
    )
    eventually(lambda: kube.condition_is(ENDPOINT_PLURAL, "openai", "Ready", "True", "SecretFound"), "SecretFound")
    assert "holds key api-key" in (kube.condition(ENDPOINT_PLURAL, "openai", "Ready") or {})["message"]
