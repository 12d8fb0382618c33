"""Pure tests of the sidecar injection patch: applied with a real RFC 6902 implementation."""

from __future__ import annotations

import copy
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest

from hybridroute_operator.injection import (
    AUDIT_VOLUME,
    BASE_URL_ENV,
    CONFIG_VOLUME,
    INJECTED_ANNOTATION,
    METRICS_PORT_NAME,
    ROUTER_CONTAINER,
    SKIP_CONTAINERS_ANNOTATION,
    InjectionSettings,
    build_patch,
    router_container,
    secret_refs,
)
from hybridroute_router.config import ApiKeyRef, EndpointConfig, RouterConfig, SecretKeyRef, secret_env_name

SETTINGS = InjectionSettings(image="ghcr.io/example/hybridroute-router:0.1.0", port=8123)
OPENAI_KEY = SecretKeyRef(name="openai", key="api-key")


def pod(*containers: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "app", "labels": {"hybridroute.io/policy": "chat"}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": list(containers), **spec}}


def inject(manifest: dict[str, Any], refs: list[SecretKeyRef] | None = None) -> dict[str, Any]:
    patch = build_patch(manifest, "chat", refs if refs is not None else [OPENAI_KEY], SETTINGS)
    patched: dict[str, Any] = jsonpatch.apply_patch(manifest, patch)
    return patched


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container["env"]}


def test_router_runs_as_native_sidecar_with_config_and_secrets() -> None:
    injected = inject(pod({"name": "app", "image": "app:1"}))

    router = injected["spec"]["initContainers"][0]
    assert router["name"] == ROUTER_CONTAINER
    assert router["restartPolicy"] == "Always"
    assert router["image"] == SETTINGS.image
    assert router["args"] == [
        "--config=/etc/hybridroute/config.json",
        "--host=127.0.0.1",
        "--port=8123",
        "--metrics-host=0.0.0.0",
        "--metrics-port=8041",
        "--audit-file=/var/lib/hybridroute/audit/audit.jsonl",
        f"--audit-max-bytes={64 * 1024 * 1024}",
        "--audit-backups=3",
    ]
    assert router["ports"] == [{"name": METRICS_PORT_NAME, "containerPort": 8041, "protocol": "TCP"}]
    assert router["startupProbe"]["httpGet"] == {"path": "/readyz", "port": METRICS_PORT_NAME}
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": METRICS_PORT_NAME}
    assert router["volumeMounts"] == [
        {"name": CONFIG_VOLUME, "mountPath": "/etc/hybridroute", "readOnly": True},
        {"name": AUDIT_VOLUME, "mountPath": "/var/lib/hybridroute/audit"},
    ]
    assert router["securityContext"]["runAsNonRoot"] is True
    assert router["securityContext"]["readOnlyRootFilesystem"] is True
    assert env_of(router) == {
        secret_env_name(OPENAI_KEY): {"secretKeyRef": {"name": "openai", "key": "api-key", "optional": True}}
    }
    assert injected["spec"]["volumes"] == [
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": "chat", "items": [{"key": "config.json", "path": "config.json"}]},
        },
        # The trail's bound (4 files of 64 MiB) plus one file of slack: the kubelet never evicts for it.
        {"name": AUDIT_VOLUME, "emptyDir": {"sizeLimit": str(5 * 64 * 1024 * 1024)}},
    ]
    assert injected["metadata"]["annotations"] == {INJECTED_ANNOTATION: "chat"}


def test_app_containers_get_the_base_url_unless_set_or_opted_out() -> None:
    manifest = pod(
        {"name": "app", "image": "app:1", "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
        {"name": "own-url", "image": "app:1", "env": [{"name": BASE_URL_ENV, "value": "https://proxy.example/v1"}]},
        {"name": "metrics", "image": "exporter:1"},
        {"name": "worker", "image": "app:1"},
        annotations={SKIP_CONTAINERS_ANNOTATION: " metrics , ,"},
    )

    containers = {container["name"]: container for container in inject(manifest)["spec"]["containers"]}

    assert env_of(containers["app"]) == {"LOG_LEVEL": "debug", BASE_URL_ENV: "http://127.0.0.1:8123/v1"}
    assert env_of(containers["own-url"]) == {BASE_URL_ENV: "https://proxy.example/v1"}
    assert "env" not in containers["metrics"]
    assert env_of(containers["worker"]) == {BASE_URL_ENV: "http://127.0.0.1:8123/v1"}


def test_existing_init_containers_volumes_and_annotations_are_kept() -> None:
    manifest = pod(
        {"name": "app", "image": "app:1"},
        annotations={"team": "search"},
        initContainers=[{"name": "migrate", "image": "app:1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
    )

    injected = inject(manifest)

    assert [c["name"] for c in injected["spec"]["initContainers"]] == [ROUTER_CONTAINER, "migrate"]
    assert [v["name"] for v in injected["spec"]["volumes"]] == ["data", CONFIG_VOLUME, AUDIT_VOLUME]
    assert injected["metadata"]["annotations"] == {"team": "search", INJECTED_ANNOTATION: "chat"}


def test_audit_off_mounts_nothing_and_traces_on_bring_the_flag_and_otel_env() -> None:
    settings = InjectionSettings(
        image="router:1",
        audit_enabled=False,
        otel_traces=True,
        otlp_endpoint="http://collector.monitoring:4318",
        traces_sample_ratio=0.25,
    )
    manifest = pod({"name": "app", "image": "app:1"})
    injected: dict[str, Any] = jsonpatch.apply_patch(manifest, build_patch(manifest, "chat", [], settings))
    router = injected["spec"]["initContainers"][0]
    assert [v["name"] for v in injected["spec"]["volumes"]] == [CONFIG_VOLUME]
    assert [m["name"] for m in router["volumeMounts"]] == [CONFIG_VOLUME]
    assert not any(arg.startswith("--audit") for arg in router["args"])
    assert router["args"][-1] == "--otel-traces"
    assert env_of(router) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.monitoring:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }


def test_second_admission_changes_nothing() -> None:
    once = inject(pod({"name": "app", "image": "app:1"}))

    assert build_patch(once, "chat", [OPENAI_KEY], SETTINGS) == []


def test_a_router_declared_by_hand_is_respected() -> None:
    manifest = pod({"name": "app", "image": "app:1"}, {"name": ROUTER_CONTAINER, "image": "custom:1"})

    assert build_patch(manifest, "chat", [OPENAI_KEY], SETTINGS) == []


def test_patch_does_not_modify_the_input() -> None:
    manifest = pod({"name": "app", "image": "app:1"}, annotations={"a": "b"})
    before = copy.deepcopy(manifest)

    inject(manifest)

    assert manifest == before


def test_annotation_keys_with_slashes_are_escaped() -> None:
    patch = build_patch(pod({"name": "app"}, annotations={"x": "y"}), "chat", [], SETTINGS)

    assert {"op": "add", "path": "/metadata/annotations/hybridroute.io~1injected-policy", "value": "chat"} in patch


@pytest.mark.parametrize("refs", [[], [OPENAI_KEY, OPENAI_KEY]])
def test_secret_env_is_unique(refs: list[SecretKeyRef]) -> None:
    router = inject(pod({"name": "app"}), refs)["spec"]["initContainers"][0]

    assert len(router["env"]) == len(set(refs))


def test_secret_refs_come_from_the_compiled_config() -> None:
    def cloud(name: str, ref: SecretKeyRef) -> EndpointConfig:
        return EndpointConfig(
            name=name,
            type="cloud",
            base_url="https://api.example/v1",
            model="m",
            api_key=ApiKeyRef(secret_ref=ref),
        )

    anthropic = SecretKeyRef(name="anthropic", key="key")
    config = RouterConfig(
        endpoints=[
            EndpointConfig(name="local", type="local", base_url="http://vllm:8000/v1", model="m"),
            cloud("openai", OPENAI_KEY),
            cloud("openai-mini", OPENAI_KEY),
            cloud("claude", anthropic),
            EndpointConfig(
                name="env-only", type="cloud", base_url="https://x/v1", model="m", api_key=ApiKeyRef(env="KEY")
            ),
        ]
    )

    assert secret_refs(config) == [anthropic, OPENAI_KEY]


class Health(http.server.BaseHTTPRequestHandler):
    """/readyz answers 503 (no config yet), everything else 200."""

    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/readyz" else 200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_api_port_is_never_a_container_port_whatever_the_settings() -> None:
    for address in ("0.0.0.0", "127.0.0.1"):
        settings = InjectionSettings(image="router", port=8123, metrics_port=9100, metrics_address=address)
        container = router_container([], settings)
        assert "--host=127.0.0.1" in container["args"]
        assert [port["containerPort"] for port in container["ports"]] == [9100]
        probes = [container["startupProbe"], container["livenessProbe"]]
        assert all("8123" not in str(probe) for probe in probes)


@pytest.mark.parametrize(("probe", "passes"), [("livenessProbe", True), ("startupProbe", False)])
def test_probes_of_a_loopback_metrics_listener_run_in_the_container(health_port: int, probe: str, passes: bool) -> None:
    settings = InjectionSettings(image="router", metrics_port=health_port, metrics_address="127.0.0.1")
    container = router_container([], settings)
    command = container[probe]["exec"]["command"]
    assert command[0] == "python"

    result = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30)

    assert (result.returncode == 0) is passes
