"""Optional OTLP traces: one CLIENT span per finished request, off unless `--otel-traces` is given.

Built on the OpenTelemetry SDK, so the standard settings apply as users expect:
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (default http://localhost:4318),
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default hybridroute-router),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`. The protocol is
OTLP over HTTP/protobuf. Spans are batched and sent from the SDK's own thread: the request path
only builds a span and queues it (a full queue drops spans, never waits).

The span is made when the request has finished, with its start set back to the arrival: the router
makes one decision per request, so there is nothing to nest under it, and the hot path touches the
SDK once. A client that sends a well-formed W3C `traceparent` gets the span in its own trace, as a
child of its calling span. Name and attributes follow the GenAI client conventions
(`{gen_ai.operation.name} {gen_ai.request.model}`, `gen_ai.*`, `error.type`), plus the router's own
under `hybridroute.*`: policy, route reason, endpoint, attempts, fallback, privacy class and reasons,
breaker state, outcome. All of them come from the config or small fixed sets (bounded cardinality):
no request ids, prompts, users or matched text.

The SDK is imported only when traces are on, so a router without them pays nothing for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .genai import PROVIDER_NAMES
from .outcome import RequestOutcome

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

DEFAULT_SERVICE_NAME = "hybridroute-router"


def span_attributes(outcome: RequestOutcome) -> dict[str, Any]:
    """The span's attributes (pure): GenAI conventions first, then the router's own."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": outcome["operation"],
        "k8s.namespace.name": outcome["namespace"],
        "hybridroute.policy": outcome["policy"],
        "hybridroute.route.reason": outcome["reason"],
        "hybridroute.attempts": len(outcome["attempts"]),
        "hybridroute.fallback": outcome["fallback"],
        "hybridroute.privacy.class": "private" if outcome["private"] else "public",
        "hybridroute.outcome": outcome["outcome"],
        "http.response.status_code": outcome["status"],
    }
    if outcome["privacy"]:
        attributes["hybridroute.privacy.reasons"] = list(outcome["privacy"])
    if outcome["provider"]:
        attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(outcome["provider"], outcome["provider"])
    if outcome["request_model"]:
        attributes["gen_ai.request.model"] = outcome["request_model"]
    if outcome["endpoint"] is not None:
        attributes["gen_ai.response.model"] = outcome["response_model"]
        attributes["hybridroute.endpoint"] = outcome["endpoint"]
        attributes["hybridroute.endpoint.location"] = outcome["location"] or ""
        attributes["hybridroute.breaker.state"] = outcome["breaker_state"]
    if outcome["error_type"]:
        attributes["error.type"] = outcome["error_type"]
    else:
        attributes["gen_ai.usage.input_tokens"] = outcome["input_tokens"]
        attributes["gen_ai.usage.output_tokens"] = outcome["output_tokens"]
    return attributes


def span_name(outcome: RequestOutcome) -> str:
    operation, model = outcome["operation"], outcome["request_model"]
    return f"{operation} {model}" if model else operation


class SpanRecorder:
    """Turns finished requests into spans on `provider`."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._tracer = provider.get_tracer("hybridroute_router")
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._propagator = TraceContextTextMapPropagator()

    def __call__(self, outcome: RequestOutcome) -> None:
        end_ns = int(outcome["ts"] * 1e9)
        start_ns = end_ns - int(outcome["duration_s"] * 1e9)
        parent = outcome.get("traceparent")
        context = self._propagator.extract({"traceparent": parent}) if parent else None
        span = self._tracer.start_span(
            span_name(outcome),
            context=context,
            kind=self._client,
            start_time=start_ns,
            attributes=span_attributes(outcome),
        )
        if outcome["error_type"]:
            span.set_status(self._error)
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Flush queued spans and stop the exporter thread."""
        self.provider.shutdown()


def start_tracing(environ: Mapping[str, str] | None = None) -> SpanRecorder:
    """A recorder exporting over OTLP/HTTP, configured from the standard OTEL_* environment."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ
    attributes: dict[str, Any] = {"service.name": env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME}
    pod = env.get("HOSTNAME")
    if pod:
        attributes["k8s.pod.name"] = pod
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return SpanRecorder(provider)
