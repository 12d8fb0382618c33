"""The demo's Kubernetes objects as plain dicts: pure, no I/O (e2e/demo.py and e2e/demo_pods.py apply them).

One local endpoint (on the real node a managed llama.cpp pool serving Gemma 3 270M; with host processes
an existing server by `url`: llama.cpp, or a simulator standing in for it), one cloud endpoint (our
OpenAI-compatible SIMULATOR, never a real provider) with a Secret holding a dummy key, and one
RoutingPolicy that exercises every routing feature the demo shows: privacy (header + detectors), a
complexity rule, the context-window filter, the p95 breaker fed by Prometheus, fallback and a full
rollout. On the real node the simulators and the app are pods: their specs are here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from e2e.modelserver import GEMMA_CONTEXT_TOKENS, SimulatedServer, simulator_args
from hybridroute_operator.api import API_VERSION
from hybridroute_operator.injection import POLICY_LABEL
from hybridroute_router.config import SecretKeyRef, secret_env_name

NAMESPACE: Final = "hybridroute-demo"
POLICY_NAME: Final = "demo"
CLOUD_ENDPOINT: Final = "cloud-simulator"
CLOUD_MODEL: Final = "simulated-frontier-model"
CLOUD_KEY_REF: Final = SecretKeyRef(name="cloud-simulator-key", key="api-key")
# A dummy: the simulator accepts any key. It only proves the key travels Secret -> env -> upstream header.
DUMMY_API_KEY: Final = "sk-demo-not-a-real-key"
PRIVACY_HEADER: Final = "x-data-classification"
PRIVACY_HEADER_VALUE: Final = "confidential"
# Cloud prices of a large hosted model, USD per million tokens: what "cloud-only" would have cost.
CLOUD_INPUT_PER_MTOK: Final = 2.5
CLOUD_OUTPUT_PER_MTOK: Final = 10.0
# A hosted frontier model: slower than a tiny local model on an idle machine, but it never queues.
CLOUD_SIMULATOR: Final = SimulatedServer(
    name=CLOUD_ENDPOINT,
    model=CLOUD_MODEL,
    latency_ms=700,
    completion_tokens=50,
    content="(cloud SIMULATOR) a canned answer standing in for a hosted model.",
)
LOCAL_SIMULATOR: Final = SimulatedServer(
    name="local-simulator",
    model="local-simulated-model",
    latency_ms=150,
    completion_tokens=30,
    content="(local SIMULATOR) a canned answer standing in for a local model.",
)
SIMULATOR_PORT: Final = 9101
LLAMACPP_PORT: Final = 8080
"""The port the operator's llama.cpp Deployment and Service use (its `server: llamacpp` default)."""
APP_POD: Final = "app"
APP_OWN_KEY: Final = "demo-app-key"
"""The app's own key: the router must never forward it to a cloud endpoint."""


@dataclass(frozen=True)
class LocalServer:
    """The local endpoint as the policy sees it."""

    endpoint: str
    """InferenceEndpoint name (says "simulator" when it is one)."""
    base_url: str
    model: str
    max_context_tokens: int
    max_concurrency: int


@dataclass(frozen=True)
class PolicyTuning:
    """The knobs the demo's story depends on (see e2e/demo.py for the values and why)."""

    p95_latency_ms: int
    prometheus_url: str
    evaluation_seconds: float = 2
    window: str = "15s"
    open_seconds: float = 5
    max_open_seconds: float = 20


def cloud_api_key_env() -> dict[str, str]:
    """The environment variable the router reads the cloud key from (as the sidecar injector sets it)."""
    return {secret_env_name(CLOUD_KEY_REF): DUMMY_API_KEY}


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def cloud_key_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CLOUD_KEY_REF.name, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {CLOUD_KEY_REF.key: DUMMY_API_KEY},
    }


def local_endpoint(local: LocalServer) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceEndpoint",
        "metadata": {"name": local.endpoint, "namespace": NAMESPACE, "labels": {"hybridroute.io/tier": "local"}},
        "spec": {
            "type": "local",
            "priority": 10,
            # The router's per-endpoint in-flight cap; beyond it requests queue inside the server.
            "maxConcurrency": local.max_concurrency,
            "local": {"url": local.base_url, "model": local.model, "maxContextTokens": local.max_context_tokens},
        },
    }


def cloud_endpoint(base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceEndpoint",
        "metadata": {"name": CLOUD_ENDPOINT, "namespace": NAMESPACE, "labels": {"hybridroute.io/tier": "cloud"}},
        "spec": {
            "type": "cloud",
            "priority": 100,
            "cloud": {
                "provider": "openai-compatible",
                "baseURL": base_url,
                "model": CLOUD_MODEL,
                "apiKeySecretRef": {"name": CLOUD_KEY_REF.name, "key": CLOUD_KEY_REF.key},
                "pricing": {"inputPerMTok": CLOUD_INPUT_PER_MTOK, "outputPerMTok": CLOUD_OUTPUT_PER_MTOK},
                "maxContextTokens": 128_000,
            },
        },
    }


def routing_policy(local_endpoint_name: str, tuning: PolicyTuning) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RoutingPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": NAMESPACE},
        "spec": {
            "endpoints": [{"name": local_endpoint_name}, {"name": CLOUD_ENDPOINT}],
            "modelAliases": ["auto"],
            "privacy": {
                "header": {"name": PRIVACY_HEADER, "values": [PRIVACY_HEADER_VALUE, "restricted"]},
                "builtinDetectors": ["email", "card", "nationalId"],
                "detectors": [{"name": "employee-id", "pattern": r"\bEMP-[0-9]{6}\b"}],
                "action": "localOnly",
            },
            # Long prompts need no rule: the local endpoint's maxContextTokens filters them to the cloud.
            "rules": [{"name": "complex-to-cloud", "match": {"minComplexity": 0.6}, "action": {"prefer": "cloud"}}],
            # ttft/request timeouts stay generous: a queued local request is slow, not failed; the p95
            # breaker, not a timeout, is what moves traffic away from a saturated local model.
            "slo": {"p95LatencyMs": tuning.p95_latency_ms, "ttftMs": 30_000, "requestTimeoutMs": 60_000},
            "complexity": {"threshold": 0.6},
            "fallback": {"enabled": True, "maxAttempts": 2, "retryBudgetPercent": 20},
            "circuitBreaker": {
                "consecutiveFailures": 5,
                "failureRatePercent": 50,
                "windowSeconds": 20,
                "openSeconds": tuning.open_seconds,
                "maxOpenSeconds": tuning.max_open_seconds,
                "halfOpenProbes": 3,
                "prometheus": {
                    "url": tuning.prometheus_url,
                    "window": tuning.window,
                    "evaluationSeconds": tuning.evaluation_seconds,
                    "consecutiveBreaches": 2,
                    "staleAfterSeconds": 30,
                },
            },
            "budget": {"dailyUsd": 5, "action": "localOnly"},
            "rollout": {"localPercent": 100},
        },
    }


def managed_llamacpp_endpoint(name: str, image: str, model: str, max_concurrency: int, threads: int) -> dict[str, Any]:
    """A managed llama.cpp pool: the operator runs `image` as a Deployment with a Service named `name`."""
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceEndpoint",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"hybridroute.io/tier": "local"}},
        "spec": {
            "type": "local",
            "priority": 10,
            "maxConcurrency": max_concurrency,
            "local": {
                "server": "llamacpp",
                "model": model,
                "image": image,
                "replicas": 1,
                "maxContextTokens": GEMMA_CONTEXT_TOKENS,
                "extraArgs": ["--threads", str(threads)],
            },
        },
    }


def simulator_pod(server: SimulatedServer, image: str) -> dict[str, Any]:
    """The upstream simulator image serving as `server`, Ready once it accepts connections."""
    container = {
        "name": "simulator",
        "image": image,
        "imagePullPolicy": "Never",
        "args": simulator_args(server, SIMULATOR_PORT),
        "ports": [{"name": "http", "containerPort": SIMULATOR_PORT}],
        "readinessProbe": {"tcpSocket": {"port": SIMULATOR_PORT}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": server.name, "namespace": NAMESPACE, "labels": {"app": server.name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 2},
    }


def service(name: str, port: int) -> dict[str, Any]:
    """A ClusterIP Service for the pod labelled app=`name`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": port}]},
    }


def app_pod(image: str, host_aliases: dict[str, str]) -> dict[str, Any]:
    """The application pod: labelled with the policy, so the webhook injects the router as its sidecar.

    `host_aliases` maps Service names (as the operator compiles them) to ClusterIPs: this cluster runs
    no DNS, a real one resolves them for every pod.
    """
    container = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
        "env": [{"name": "OPENAI_API_KEY", "value": APP_OWN_KEY}],
        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True},
    }
    aliases = [{"ip": ip, "hostnames": [hostname]} for hostname, ip in sorted(host_aliases.items())]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": APP_POD, "namespace": NAMESPACE, "labels": {POLICY_LABEL: POLICY_NAME}},
        "spec": {"containers": [container], "hostAliases": aliases, "terminationGracePeriodSeconds": 2},
    }
