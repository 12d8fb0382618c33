"""OpenTelemetry GenAI client metrics, exposed on the router's Prometheus registry.

The router is its app's GenAI client: one client operation is one client request, however many
upstream attempts it took (the `hybridroute_` metrics, which the breakers read, stay per attempt).
Names, units, attributes and bucket boundaries follow the OpenTelemetry GenAI semantic conventions;
Prometheus exposition maps them the way OpenTelemetry's Prometheus exporter does (dots become
underscores, the unit `s` becomes a `_seconds` suffix, `{token}` is an annotation and adds none):

    gen_ai.client.operation.duration (s)            gen_ai_client_operation_duration_seconds
    gen_ai.client.token.usage ({token})             gen_ai_client_token_usage
    gen_ai.client.operation.time_to_first_chunk (s) gen_ai_client_operation_time_to_first_chunk_seconds

Labels: gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_response_model
(and error_type on the duration, gen_ai_token_type input|output on the usage), plus namespace and
policy as on every hybridroute series. Cardinality is bounded by the config: models are the
endpoints' configured models, never the client's `model` field or the upstream's answer; no request
ids, prompts or users. Requests refused before any attempt are not GenAI operations and are not
recorded here (they are in `hybridroute_requests_total`).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from .outcome import RequestOutcome

# Bucket boundaries the semantic conventions advise for each instrument.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

PROVIDER_NAMES = {"azure-openai": "azure.ai.openai", "llamacpp": "llama.cpp"}
"""Config provider -> `gen_ai.provider.name` where the conventions spell it differently; others as is."""

_COMMON = ["namespace", "policy", "gen_ai_operation_name", "gen_ai_provider_name"]
_MODELS = ["gen_ai_request_model", "gen_ai_response_model"]


class GenAIMetrics:
    """The three GenAI client histograms, observed once per finished request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (gen_ai.client.operation.duration).",
            [*_COMMON, *_MODELS, "error_type"],
            unit="seconds",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (gen_ai.client.token.usage, unit {token}).",
            [*_COMMON, *_MODELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time to receive the first chunk of a streamed response (gen_ai.client.operation.time_to_first_chunk).",
            [*_COMMON, *_MODELS],
            unit="seconds",
            buckets=FIRST_CHUNK_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Histogram, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def __call__(self, outcome: RequestOutcome) -> None:
        if not outcome.attempted:
            return
        provider = PROVIDER_NAMES.get(outcome.provider, outcome.provider)
        labels = (
            outcome.namespace,
            outcome.policy,
            outcome.operation,
            provider,
            outcome.request_model,
            outcome.response_model,
        )
        self._child(self.duration, *labels, outcome.error_type).observe(outcome.duration_s)
        if outcome.first_chunk_s is not None:
            self._child(self.first_chunk, *labels).observe(outcome.first_chunk_s)
        if not outcome.error_type:
            self._child(self.token_usage, *labels, "input").observe(outcome.input_tokens)
            if outcome.operation != "embeddings":
                self._child(self.token_usage, *labels, "output").observe(outcome.output_tokens)
