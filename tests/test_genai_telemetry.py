"""GenAI semantic-convention metrics on /metrics, and OTLP spans decoded from the real protobuf.

Metrics: a router on real sockets, driven by the real `openai` SDK, scraped on its operations
listener and parsed with prometheus_client's own parser. Traces: the real router process with
`--otel-traces` exports with the OpenTelemetry SDK's OTLP/HTTP exporter to a receiver on loopback
that decodes each body as `ExportTraceServiceRequest` (opentelemetry-proto's generated types, the
protocol's own definition); no OpenTelemetry Collector is built here (see docs/observability.md).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.upstream_sim import Fault
from hybridroute_router.genai import GenAIMetrics
from hybridroute_router.outcome import trace_parent
from tests.fixtures.upstreams import endpoint, router_config
from tests.test_audit import outcome

SECRET_WORD = "zebra-quartz"
CLOUD_FIRST = [{"name": "to-cloud", "match": {"models": ["cloudy"]}, "action": {"prefer": "cloud"}}]
ALIASES = {"modelAliases": ["auto", "cloudy"]}


def scrape(running: Any) -> dict[str, list[Any]]:
    with urllib.request.urlopen(f"{running.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_genai_metrics_carry_the_conventions_names_units_and_attributes(
    upstream_sim: Any, router: Any, sdk_client: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = router_config(
        endpoint("local-a", local, provider="vllm"),
        endpoint("cloud-a", cloud, "cloud", provider="azure-openai"),
        rules=CLOUD_FIRST,
        **ALIASES,
    )
    running = router(config)
    client = sdk_client(running)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": SECRET_WORD}])
    stream = client.chat.completions.create(model="cloudy", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert list(stream)
    client.embeddings.create(model="auto", input="hi")

    families = scrape(running)
    durations = [s for s in families["gen_ai_client_operation_duration_seconds"] if s.name.endswith("_count")]
    by_operation = {(s.labels["gen_ai_operation_name"], s.labels["gen_ai_provider_name"]): s for s in durations}
    assert set(by_operation) == {("chat", "vllm"), ("chat", "azure.ai.openai"), ("embeddings", "vllm")}
    chat_local = by_operation[("chat", "vllm")]
    assert chat_local.value == 1
    assert chat_local.labels["gen_ai_request_model"] == "local-a-model"
    assert chat_local.labels["gen_ai_response_model"] == "local-a-model"
    assert chat_local.labels["error_type"] == ""
    assert chat_local.labels["namespace"] == "default"

    tokens: dict[tuple[str, str], float] = {}
    for sample in families["gen_ai_client_token_usage"]:
        if sample.name.endswith("_sum"):
            key = (sample.labels["gen_ai_operation_name"], sample.labels["gen_ai_token_type"])
            tokens[key] = tokens.get(key, 0) + sample.value
    # The simulator reports 11 prompt and 7 completion tokens; embeddings have no output tokens.
    assert tokens == {("chat", "input"): 22, ("chat", "output"): 14, ("embeddings", "input"): 11}

    first_chunk = [
        s for s in families["gen_ai_client_operation_time_to_first_chunk_seconds"] if s.name.endswith("_count")
    ]
    assert [(s.labels["gen_ai_provider_name"], s.value) for s in first_chunk] == [("azure.ai.openai", 1)]
    assert "hybridroute_requests_total" in {s.name for s in families["hybridroute_requests"]}
    every_label_value = {v for samples in families.values() for s in samples for v in s.labels.values()}
    assert SECRET_WORD not in every_label_value


def test_a_failed_operation_is_recorded_with_its_error_type(upstream_sim: Any, router: Any, sdk_client: Any) -> None:
    import openai

    local = upstream_sim("local")
    running = router(router_config(endpoint("local-a", local), fallback={"enabled": False}))
    local.fail_next(Fault(status=503))
    with pytest.raises(openai.APIStatusError):
        sdk_client(running).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    durations = [s for s in scrape(running)["gen_ai_client_operation_duration_seconds"] if s.name.endswith("_count")]
    assert [(s.labels["error_type"], s.value) for s in durations] == [("upstream_unavailable", 1)]
    usage = scrape(running)["gen_ai_client_token_usage"]
    assert [s for s in usage if s.name.endswith("_count")] == []  # no usage without an answer


def test_buckets_are_cumulative_and_a_value_on_a_bound_counts_in_that_bucket() -> None:
    registry = CollectorRegistry()
    genai = GenAIMetrics(registry)
    for seconds in (0.01, 0.015, 100.0):  # on the first bound, between the first two, above the last
        genai(outcome(duration_s=seconds))
    genai(outcome(attempts=[]))  # refused before any attempt: not a GenAI operation
    family = next(
        f
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        if f.name.endswith("duration_seconds")
    )
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert (buckets["0.01"], buckets["0.02"], buckets["81.92"], buckets["+Inf"]) == (1, 2, 2, 3)
    totals = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    assert totals == {
        "gen_ai_client_operation_duration_seconds_count": 3,
        "gen_ai_client_operation_duration_seconds_sum": 100.025,
    }


# -------------------------------------------------------------------------------------------------
# OTLP traces


def test_only_a_well_formed_traceparent_is_carried() -> None:
    valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert trace_parent([("accept", "*/*"), ("TraceParent", f" {valid} ")]) == valid
    assert trace_parent([("traceparent", "00-jane.doe@example.com-b7ad6b7169203331-01")]) is None
    assert trace_parent([("traceparent", valid.upper())]) is None  # W3C ids are lower-case hex
    assert trace_parent([]) is None


class OTLPReceiver:
    """An OTLP/HTTP traces receiver on loopback: decodes every POST /v1/traces body from protobuf."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                ok = self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
                if ok:
                    decoded = ExportTraceServiceRequest()
                    decoded.ParseFromString(body)
                    with receiver._lock:
                        receiver.requests.append(decoded)
                        receiver.raw.append(body)
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received so far."""
        with self._lock:
            requests = list(self.requests)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[dict[str, Any], Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.spans())} of {count} spans after {timeout}s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(span: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


def test_spans_over_otlp_carry_route_fallback_privacy_and_breaker_attributes(
    upstream_sim: Any,
    router_process: Any,
    sdk_client: Any,
    otlp_receiver: OTLPReceiver,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config_path = tmp_path / "router.yaml"
    config = {
        "endpoints": [
            endpoint("local-a", local, provider="vllm"),
            endpoint("cloud-a", cloud, "cloud", provider="openai"),
        ],
        "privacy": {"builtinDetectors": ["email"]},
        "fallback": {"maxAttempts": 2},
    }
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "router-under-test")

    untraced = router_process(config_path)  # traces are off unless asked for, OTEL_* set or not
    sdk_client(untraced).chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])

    traced = router_process(config_path, "--otel-traces")
    client = sdk_client(traced)
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": f"jane.doe@example.com {SECRET_WORD}"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},  # the app's own span
    )
    local.fail_next(Fault(status=500))
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "public"}])

    spans = otlp_receiver.wait_for(2)
    time.sleep(0.5)  # anything the untraced router would have sent has had time to arrive
    spans = otlp_receiver.spans()
    assert len(spans) == 2
    assert {resource["service.name"] for resource, _ in spans} == {"router-under-test"}
    private, fell_back = (attributes(span) for _, span in spans)
    assert spans[0][1].name == "chat local-a-model"
    assert spans[0][1].kind == spans[0][1].SPAN_KIND_CLIENT
    assert spans[0][1].end_time_unix_nano > spans[0][1].start_time_unix_nano
    assert (spans[0][1].trace_id.hex(), spans[0][1].parent_span_id.hex()) == (trace_id, parent_id)
    assert spans[1][1].parent_span_id == b""  # no traceparent: a trace of its own
    assert private["hybridroute.privacy.class"] == "private"
    assert private["hybridroute.privacy.reasons"] == ["detector:email"]
    assert private["hybridroute.route.reason"] == "private"
    assert private["hybridroute.fallback"] is False
    assert private["hybridroute.breaker.state"] == "closed"
    assert private["gen_ai.operation.name"] == "chat"
    assert private["gen_ai.provider.name"] == "vllm"
    assert private["gen_ai.request.model"] == "local-a-model"
    assert private["gen_ai.response.model"] == "local-a-model"
    assert (private["gen_ai.usage.input_tokens"], private["gen_ai.usage.output_tokens"]) == (11, 7)

    assert fell_back["hybridroute.privacy.class"] == "public"
    assert fell_back["hybridroute.fallback"] is True
    assert fell_back["hybridroute.attempts"] == 2
    assert fell_back["hybridroute.endpoint"] == "cloud-a"
    assert fell_back["hybridroute.endpoint.location"] == "cloud"
    assert fell_back["gen_ai.provider.name"] == "openai"
    assert fell_back["gen_ai.response.model"] == "cloud-a-model"

    wire = b"".join(otlp_receiver.raw)
    assert b"jane.doe" not in wire
    assert SECRET_WORD.encode() not in wire
