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

Hot path: three or four observations per request. prometheus_client's Histogram takes a lock and
bumps two values per observation; these histograms only ever change on the event loop's thread
(the scrape runs on the same loop), so `_LoopHistogram` keeps plain per-bucket counts and turns
them into cumulative buckets at scrape time, through a collector on the same registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .outcome import RequestOutcome

# Bucket boundaries the semantic conventions advise for each instrument.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
FIRST_CHUNK_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

PROVIDER_NAMES = {"azure-openai": "azure.ai.openai", "llamacpp": "llama.cpp"}
"""Config provider -> `gen_ai.provider.name` where the conventions spell it differently; others as is."""

_COMMON = ["namespace", "policy", "gen_ai_operation_name", "gen_ai_provider_name"]
_MODELS = ["gen_ai_request_model", "gen_ai_response_model"]


class _LoopHistogram:
    """A labelled histogram for one thread: per-label bucket counts and a sum, no locks."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float], unit: str
    ) -> None:
        self.name, self.documentation, self.unit = name, documentation, unit
        self.labels = list(labels)
        self.bounds = tuple(float(bound) for bound in buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}
        """labels -> [count per bound..., count above the last bound, sum]."""

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels, unit=self.unit)
        for labels, series in self.series.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), series[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, series[-1])
        return family


class GenAIMetrics(Collector):
    """The three GenAI client histograms, observed once per finished request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = _LoopHistogram(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (gen_ai.client.operation.duration).",
            [*_COMMON, *_MODELS, "error_type"],
            DURATION_BUCKETS,
            unit="seconds",
        )
        self.token_usage = _LoopHistogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (gen_ai.client.token.usage, unit {token}).",
            [*_COMMON, *_MODELS, "gen_ai_token_type"],
            TOKEN_BUCKETS,
            unit="",
        )
        self.first_chunk = _LoopHistogram(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time to receive the first chunk of a streamed response (gen_ai.client.operation.time_to_first_chunk).",
            [*_COMMON, *_MODELS],
            FIRST_CHUNK_BUCKETS,
            unit="seconds",
        )
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for histogram in (self.duration, self.token_usage, self.first_chunk):
            yield histogram.family()

    def __call__(self, outcome: RequestOutcome) -> None:
        if not outcome["attempts"]:
            return
        provider = outcome["provider"]
        labels = (
            outcome["namespace"],
            outcome["policy"],
            outcome["operation"],
            PROVIDER_NAMES.get(provider, provider),
            outcome["request_model"],
            outcome["response_model"],
        )
        error_type = outcome["error_type"]
        self.duration.observe((*labels, error_type), outcome["duration_s"])
        first_chunk_s = outcome["first_chunk_s"]
        if first_chunk_s is not None:
            self.first_chunk.observe(labels, first_chunk_s)
        if not error_type:
            self.token_usage.observe((*labels, "input"), outcome["input_tokens"])
            if outcome["operation"] != "embeddings":
                self.token_usage.observe((*labels, "output"), outcome["output_tokens"])
