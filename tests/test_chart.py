"""The Helm chart, rendered by a real helm: lint, every ci/ scenario, schema rejections, invariants.

Invariants checked on every scenario: no wildcard RBAC, every Pod non-root with a read-only root
filesystem and no capabilities, the operator's liveness probe on kopf's endpoint. Cross-checks tie
the chart to the code it deploys: the webhook path is the kopf handler id, the operator's env parses
into the webhook settings, and every metric the alerts and dashboard query is one the router exports.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from hybridroute_operator.injection import METRICS_PORT_NAME, router_container
from hybridroute_operator.probes import AllowList
from hybridroute_operator.render import ENDPOINT_LABEL, PORT_NAME, pool_labels
from hybridroute_operator.webhook import WEBHOOK_ID, WebhookSettings
from hybridroute_router.audit import AuditTrail
from hybridroute_router.metrics import RouterMetrics
from tests.fixtures.helm import CHART, Helm, kube_version

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "hybridroute-system"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] == "Deployment"]
    return specs + [doc["spec"] for doc in docs if doc["kind"] == "Pod"]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_chart_is_scenario_complete() -> None:
    assert {path.name for path in SCENARIOS} >= {
        "default-values.yaml",
        "monitoring-enabled-values.yaml",
        "single-replica-values.yaml",
        "cert-manager-values.yaml",
        "secret-check-values.yaml",
    }


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_lint_passes_strict(helm: Helm, values: Path) -> None:
    result = helm.run("lint", str(CHART), "--strict", "--values", str(values), "--kube-version", kube_version())

    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_rendered_rbac_has_no_wildcards(helm: Helm, values: Path) -> None:
    docs = helm.template([values])

    rules = [rule for doc in docs if doc["kind"] in {"ClusterRole", "Role"} for rule in doc["rules"]]
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"wildcard {field} in {rule}"
    # Secrets: only in the secret-check ClusterRole, which only RoleBindings (one namespace each) use.
    secret_roles = {
        doc["metadata"]["name"]
        for doc in docs
        if doc["kind"] in {"ClusterRole", "Role"} and any("secrets" in rule["resources"] for rule in doc["rules"])
    }
    assert secret_roles == {"hr-hybridroute-secret-check"}
    cluster_bound = {doc["roleRef"]["name"] for doc in by_kind(docs, "ClusterRoleBinding")}
    assert not cluster_bound & secret_roles, "Secrets must never be granted cluster-wide"
    namespaced = [doc for doc in by_kind(docs, "RoleBinding") if doc["roleRef"]["name"] in secret_roles]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == set(
        (yaml_values(values).get("secretCheck") or {}).get("namespaces") or []
    )


def yaml_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def test_probe_allow_list_reaches_the_operator(helm: Helm) -> None:
    env = {
        variable["name"]: variable.get("value")
        for variable in operator_container(helm.template([CHART / "ci" / "secret-check-values.yaml"]))["env"]
    }
    allow = AllowList.parse(env["HYBRIDROUTE_PROBE_ALLOWED_HOSTS"].split(","))
    assert allow.allows_url("http://10.20.3.4:11434/v1")
    assert allow.allows_url("http://ollama.lab.example:11434/v1")
    assert allow.allows_url("http://169.254.169.254/latest") is False
    default_env = {variable["name"]: variable.get("value") for variable in operator_container(helm.template())["env"]}
    assert default_env["HYBRIDROUTE_PROBE_ALLOWED_HOSTS"] == ""  # secure default: nothing is probed


@pytest.mark.parametrize("values", SCENARIOS, ids=lambda path: path.stem)
def test_every_pod_runs_restricted(helm: Helm, values: Path) -> None:
    docs = helm.template([values])

    specs = pod_specs(docs)
    assert len(specs) == 2  # the operator and the helm test Pod
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]


def test_operator_probes_kopf_liveness(helm: Helm) -> None:
    container = operator_container(helm.template())

    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {"name": "liveness", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def test_several_replicas_use_peering(helm: Helm) -> None:
    docs = helm.template()

    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert "--peering=hybridroute" in operator_container(docs)["args"]
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "hybridroute"
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_single_replica_runs_standalone(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "single-replica-values.yaml"])

    assert "--standalone" in operator_container(docs)["args"]
    assert not any(arg.startswith("--peering") for arg in operator_container(docs)["args"])
    assert by_kind(docs, "ClusterKopfPeering") == []
    assert by_kind(docs, "PodDisruptionBudget") == []


def test_peering_crd_ships_in_crds_folder(helm: Helm) -> None:
    with_crds = helm.template(extra=["--include-crds"])

    names = {doc["metadata"]["name"] for doc in by_kind(with_crds, "CustomResourceDefinition")}
    assert names == {
        "clusterkopfpeerings.kopf.dev",
        "inferenceendpoints.hybridroute.io",
        "routingpolicies.hybridroute.io",
    }


def test_crds_toggle_and_keep_policy(helm: Helm) -> None:
    kept = by_kind(helm.template(), "CustomResourceDefinition")
    dropped = by_kind(helm.template(set_values={"crds.keep": "false"}), "CustomResourceDefinition")

    assert {crd["metadata"]["annotations"]["helm.sh/resource-policy"] for crd in kept} == {"keep"}
    assert all("helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {}) for crd in dropped)
    assert by_kind(helm.template(set_values={"crds.enabled": "false"}), "CustomResourceDefinition") == []


def test_self_signed_webhook_certificate_matches_service_and_ca_bundle(helm: Helm) -> None:
    docs = helm.template()
    secret = one(docs, "Secret")
    hook = one(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    service = hook["clientConfig"]["service"]

    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{service['name']}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    assert certificate.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    # The Service forwards to the operator's webhook port, which the operator's env names.
    webhook_service = next(doc for doc in by_kind(docs, "Service") if doc["metadata"]["name"] == service["name"])
    assert webhook_service["spec"]["ports"][0]["targetPort"] == "webhook"


def test_webhook_registration_targets_labelled_pods_only(helm: Helm) -> None:
    hook = one(helm.template(), "MutatingWebhookConfiguration")["webhooks"][0]

    assert hook["clientConfig"]["service"]["path"] == f"/{WEBHOOK_ID}"
    assert hook["objectSelector"] == {"matchExpressions": [{"key": "hybridroute.io/policy", "operator": "Exists"}]}
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["reinvocationPolicy"] == "IfNeeded"


def test_cert_manager_mode_uses_a_certificate_and_ca_injection(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "cert-manager-values.yaml"])
    configuration = one(docs, "MutatingWebhookConfiguration")
    certificate = one(docs, "Certificate")

    assert by_kind(docs, "Secret") == []
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    injected_from = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected_from == f"{NAMESPACE}/{certificate['metadata']['name']}"
    assert certificate["spec"]["issuerRef"]["name"] == one(docs, "Issuer")["metadata"]["name"]
    assert certificate["spec"]["secretName"] == operator_tls_secret(docs)


def test_cert_manager_with_an_existing_issuer_creates_none(helm: Helm) -> None:
    docs = helm.template(
        set_values={"webhook.tls.mode": "certManager", "webhook.tls.certManager.issuerRef.name": "corp-ca"}
    )

    assert by_kind(docs, "Issuer") == []
    assert one(docs, "Certificate")["spec"]["issuerRef"]["name"] == "corp-ca"


def operator_tls_secret(docs: list[dict[str, Any]]) -> str:
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    name: str = next(volume for volume in volumes if volume["name"] == "webhook-tls")["secret"]["secretName"]
    return name


def test_operator_env_parses_into_webhook_settings(helm: Helm) -> None:
    docs = helm.template(set_values={"injection.image.tag": "1.2.3", "injection.port": "8123"})
    env = {item["name"]: item["value"] for item in operator_container(docs)["env"] if "value" in item}

    settings = WebhookSettings.from_environment(env)

    assert settings is not None
    assert settings.injection.image == "ghcr.io/hybridroute/hybridroute-router:1.2.3"
    assert settings.injection.port == 8123
    assert settings.injection.metrics_port == 8041
    assert settings.injection.metrics_address == "0.0.0.0"
    assert settings.injection.resources["limits"] == {"memory": "256Mi"}
    mounts = {mount["name"]: mount["mountPath"] for mount in operator_container(docs)["volumeMounts"]}
    assert str(settings.cert_dir) == mounts["webhook-tls"]
    assert settings.port == 9443


def test_audit_is_on_and_traces_off_by_default_and_both_reach_the_sidecar_when_set(helm: Helm) -> None:
    def injection(**values: str) -> Any:
        container = operator_container(helm.template(set_values=values))
        settings = WebhookSettings.from_environment({e["name"]: e["value"] for e in container["env"] if "value" in e})
        assert settings is not None
        return settings.injection

    default = injection()
    assert (default.audit_enabled, default.audit_max_bytes, default.audit_backups) == (True, 64 * 1024 * 1024, 3)
    assert default.otel_traces is False
    assert "--audit-file=/var/lib/hybridroute/audit/audit.jsonl" in router_container([], default)["args"]

    chosen = injection(
        **{
            "injection.audit.enabled": "false",
            "injection.otel.traces.enabled": "true",
            "injection.otel.traces.endpoint": "http://collector.monitoring:4318",
            "injection.otel.traces.sampleRatio": "0.1",
        }
    )
    assert (chosen.audit_enabled, chosen.otel_traces) == (False, True)
    assert (chosen.otlp_endpoint, chosen.traces_sample_ratio) == ("http://collector.monitoring:4318", 0.1)


def test_webhook_off_renders_no_webhook_and_the_operator_knows(helm: Helm) -> None:
    docs = helm.template(set_values={"webhook.enabled": "false"})
    env = {item["name"]: item["value"] for item in operator_container(docs)["env"] if "value" in item}

    assert by_kind(docs, "MutatingWebhookConfiguration") == []
    assert WebhookSettings.from_environment(env) is None


def test_image_digest_wins_over_tag(helm: Helm) -> None:
    digest = "sha256:" + "ab" * 32
    docs = helm.template(set_values={"image.digest": digest, "image.tag": "ignored"})

    assert operator_container(docs)["image"] == f"ghcr.io/hybridroute/hybridroute-operator@{digest}"


@pytest.mark.parametrize(
    ("flag", "setting", "expected"),
    [
        ("--set", "replicaCount=two", "/replicaCount"),
        ("--set", "replicaCount=0", "/replicaCount"),
        ("--set", "webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"),
        ("--set", "webhook.tls.mode=vault", "/webhook/tls/mode"),
        ("--set", "webhook.timeoutSeconds=60", "/webhook/timeoutSeconds"),
        ("--set", "injection.port=80", "/injection/port"),
        ("--set", "operator.logLevel=chatty", "/operator/logLevel"),
        ("--set-string", "crds.enabled=yes", "/crds/enabled"),
        ("--set", "replicas=3", "'replicas' not allowed"),
        ("--set", "webhook.certManager=true", "'certManager' not allowed"),
        ("--set", "image.digest=latest", "/image/digest"),
        ("--set", "injection.audit.backups=-1", "/injection/audit/backups"),
        ("--set", "injection.otel.traces.sampleRatio=2", "/injection/otel/traces/sampleRatio"),
        ("--set", "injection.otel.traces.endpoint=collector:4318", "/injection/otel/traces/endpoint"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(helm: Helm, flag: str, setting: str, expected: str) -> None:
    result = helm.run(*helm.template_args(), flag, setting, check=False)

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert expected in result.stderr


def test_pod_monitor_refuses_a_loopback_metrics_listener(helm: Helm) -> None:
    values = {"metrics.podMonitor.enabled": "true", "injection.metricsAddress": "127.0.0.1"}
    result = helm.run(*helm.template_args(set_values=values), check=False)

    assert result.returncode != 0
    assert "injection.metricsAddress=0.0.0.0" in result.stderr


def test_the_model_server_pod_monitor_scrapes_managed_pools_labelled_by_endpoint(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "monitoring-enabled-values.yaml"])
    [pools] = [doc for doc in by_kind(docs, "PodMonitor") if doc["metadata"]["name"].endswith("-model-servers")]
    labels = pool_labels("gemma", "llamacpp")
    assert pools["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [scraped] = pools["spec"]["podMetricsEndpoints"]
    assert scraped["port"] == PORT_NAME
    [relabel] = scraped["relabelings"]
    assert relabel["targetLabel"] == "endpoint"
    assert relabel["sourceLabels"] == [
        "__meta_kubernetes_pod_label_" + ENDPOINT_LABEL.replace(".", "_").replace("/", "_")
    ]


def test_the_chart_cannot_put_the_router_api_on_the_pod_network(helm: Helm) -> None:
    result = helm.run(*helm.template_args(set_values={"injection.listenAddress": "0.0.0.0"}), check=False)

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_pod_monitor_scrapes_the_metrics_listener_and_the_injected_sidecar_serves_it_there(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "monitoring-enabled-values.yaml"])
    [routers] = [doc for doc in by_kind(docs, "PodMonitor") if doc["metadata"]["name"].endswith("-routers")]
    endpoints = routers["spec"]["podMetricsEndpoints"]
    assert [(endpoint["port"], endpoint["path"]) for endpoint in endpoints] == [(METRICS_PORT_NAME, "/metrics")]

    env = {item["name"]: item["value"] for item in operator_container(docs)["env"] if "value" in item}
    settings = WebhookSettings.from_environment(env)
    assert settings is not None
    sidecar = router_container([], settings.injection)
    assert [port["name"] for port in sidecar["ports"]] == [METRICS_PORT_NAME]
    assert "--host=127.0.0.1" in sidecar["args"]
    assert f"--metrics-port={sidecar['ports'][0]['containerPort']}" in sidecar["args"]
    assert "--metrics-host=0.0.0.0" in sidecar["args"]


def exported_metric_names() -> set[str]:
    """Every sample name the router's registry can produce (counters gain _total, histograms _bucket...)."""
    names: set[str] = set()
    registry = RouterMetrics().registry
    with tempfile.TemporaryDirectory() as folder:
        trail = AuditTrail(Path(folder) / "audit.jsonl")  # the CLI registers the trail's own series
        registry.register(trail)
        trail.close()
    for metric in registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[metric.type]
        names |= {metric.name + suffix for suffix in suffixes}
    return names


def test_alerts_and_dashboard_query_metrics_the_router_exports(helm: Helm) -> None:
    docs = helm.template([CHART / "ci" / "monitoring-enabled-values.yaml"])
    rules = one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    dashboard = json.loads(one(docs, "ConfigMap")["data"]["hybridroute.json"])

    alerts = {rule["alert"] for rule in rules}
    assert alerts == {
        "HybridrouteBreakerOpen",
        "HybridrouteP95LatencyHigh",
        "HybridroutePrivacyBlocksSpike",
        "HybridrouteAuditRecordsLost",
        "HybridrouteBudgetReached",
        "HybridrouteFleetBudgetExhausted",
        "HybridrouteFleetBudgetSoftLimit",
    }
    queries = [rule["expr"] for rule in rules]
    queries += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bhybridroute_[a-z_]+", query)}
    assert used
    assert used <= exported_metric_names(), used - exported_metric_names()


def test_budget_alert_only_with_a_budget(helm: Helm) -> None:
    docs = helm.template(set_values={"metrics.prometheusRule.enabled": "true"})

    alerts = {rule["alert"] for rule in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    assert "HybridrouteBudgetReached" not in alerts


def test_fleet_budget_alerts_can_be_turned_off(helm: Helm) -> None:
    on = helm.template(set_values={"metrics.prometheusRule.enabled": "true"})
    off = helm.template(
        set_values={"metrics.prometheusRule.enabled": "true", "metrics.prometheusRule.fleetBudgetAlerts": "false"}
    )

    def alerts(docs: Any) -> set[str]:
        return {rule["alert"] for rule in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]}

    assert {"HybridrouteFleetBudgetExhausted", "HybridrouteFleetBudgetSoftLimit"} <= alerts(on)
    assert not {"HybridrouteFleetBudgetExhausted", "HybridrouteFleetBudgetSoftLimit"} & alerts(off)


def test_operator_prometheus_url_reaches_the_operator_only_when_set(helm: Helm) -> None:
    url = "http://prometheus-operated.monitoring:9090"
    docs = helm.template(set_values={"operator.prometheusURL": url})
    env = {item["name"]: item.get("value") for item in operator_container(docs)["env"]}
    assert env["HYBRIDROUTE_PROMETHEUS_URL"] == url
    default_env = {item["name"] for item in operator_container(helm.template())["env"]}
    assert "HYBRIDROUTE_PROMETHEUS_URL" not in default_env
    with pytest.raises(AssertionError, match="prometheusURL"):
        helm.template(set_values={"operator.prometheusURL": "prometheus:9090"})


def test_the_chart_refuses_one_port_for_the_router_api_and_its_metrics(helm: Helm) -> None:
    """The sidecar refuses to start with one port for both listeners: say so at install, not in every app pod."""
    values = {"injection.port": "8041", "injection.metricsPort": "8041", "metrics.podMonitor.enabled": "true"}
    result = helm.run(*helm.template_args(set_values=values), check=False)

    assert result.returncode != 0
    assert "injection.port and injection.metricsPort must differ" in result.stderr


def test_the_admission_policies_refuse_a_cluster_too_old_to_enforce_them(helm: Helm) -> None:
    """On 1.29 the chart says what to do instead of installing without the guard; opting out renders."""
    refused = helm.run(*helm.template_args(), "--kube-version", "1.29.4", check=False)

    assert refused.returncode != 0
    assert "rbac.admissionPolicy=false" in refused.stderr
    assert "v1.29.4" in refused.stderr

    opted_out = helm.template(set_values={"rbac.admissionPolicy": "false"}, extra=["--kube-version", "1.29.4"])
    assert not by_kind(opted_out, "ValidatingAdmissionPolicy")
    assert by_kind(opted_out, "Deployment")

    current = helm.template()
    assert {doc["metadata"]["name"] for doc in by_kind(current, "ValidatingAdmissionPolicy")} == {
        binding["spec"]["policyName"] for binding in by_kind(current, "ValidatingAdmissionPolicyBinding")
    }
    assert len(by_kind(current, "ValidatingAdmissionPolicy")) == 2
