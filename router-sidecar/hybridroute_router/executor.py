"""The attempt loop: walks a decision's candidates until one answers, before the first byte only.

For each candidate, in the decision's order:

1. Admission: the endpoint's in-flight cap (`maxConcurrency`; a full endpoint is skipped at once,
   nothing waits), its breaker (`try_acquire`; skipped when refused, except for the decision's
   deliberate "all-open" pick), and from the second attempt on the retry budget (no retry storms).
2. The attempt. Connect errors, timeouts, 5xx, 429 and garbage (non-JSON where JSON is due) are
   failures: recorded on the breaker, then failed over when `fallback.onStatus` lists the kind
   (garbage counts as 5xx). A 429 whose Retry-After is within `fallback.maxRetryAfterSeconds` is
   honoured by waiting and retrying the same endpoint once; a longer or missing one moves on.
   A 4xx other than 429 is the client's fault: passed through, no failover, breaker unharmed;
   except for a private request, which only a local 2xx answers (the next local is tried, then 5.).
3. Structured output: a non-streaming JSON-schema answer from a local endpoint is validated when
   `fallback.validateStructuredOutput` is on. Invalid: the same endpoint is asked once more, then the
   next candidate. When no candidate is left (always the case for a private request, whose
   candidates are all local) the last answer is returned with `x-hybridroute-structured-output:
   invalid`, since a non-conforming local answer is more useful to the client than a 502 and the
   header lets it decide. Schema misses are model quality, not endpoint health: the breaker sees a
   success.
4. Streaming commits once the first body chunk arrived: from then on the client has bytes, so a
   later failure becomes an in-band SSE error event and the stream ends without `[DONE]`.

5. Giving up: a private request gets `PrivateRequestRefused` (503 `private_no_local`, naming its
   privacy reasons and each local endpoint's fault), whatever went wrong; only public requests are
   told apart by kind (502 invalid answer or redirect, 503 unavailable, 504 timeout).

Every attempt is bounded by `maxAttempts`; every outcome is counted in the metrics and logged as a
JSON line (endpoint, reason, attempts, status, durations; never prompt text or keys): at INFO when
anything went other than the plain way, routine successes at DEBUG or in a periodic INFO summary
(`decisionlog`). Each finished request is also handed, as one `outcome.RequestOutcome`, to the
executor's observers: the GenAI metrics, and where enabled the audit trail and OTLP spans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from referencing.exceptions import Unresolvable

from . import schemaregex
from .breaker import BreakerRegistry, CircuitBreaker, Permit
from .budget import SpendTracker
from .config import EndpointConfig, RouterConfig, SLOConfig
from .cost import estimate_cost
from .decisionlog import DecisionLog, DecisionSummary
from .errors import (
    NoEligibleEndpoint,
    PrivateRequestRefused,
    UpstreamFailed,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .limiter import ConcurrencyLimiter
from .metrics import RouterMetrics
from .outcome import Location, RequestOutcome, build_outcome, location_of, notify, trace_parent
from .policy import Candidate, Decision
from .profile import RequestProfile
from .proxy import SSERelay, Usage, client_wants_usage, sse_error_event, upstream_body, upstream_headers, usage_of
from .retrybudget import RetryBudget
from .secrets import MissingApiKey, resolve_api_key
from .upstream import Timeouts, Transport, UpstreamConnectError, UpstreamRequest, UpstreamResponse, UpstreamTimeoutError

log = logging.getLogger("hybridroute.router.decision")

UPSTREAM_PATHS: Mapping[str, str] = {
    "chat": "chat/completions",
    "completions": "completions",
    "embeddings": "embeddings",
}
STRUCTURED_OUTPUT_HEADER = "x-hybridroute-structured-output"


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """One client request, parsed, profiled and decided, ready to execute."""

    body: dict[str, Any]
    client_headers: Sequence[tuple[str, str]]
    profile: RequestProfile
    decision: Decision
    config: RouterConfig
    breakers: Mapping[str, CircuitBreaker]
    """The breakers of `config`, taken with it when the request arrived (`BreakerRegistry.snapshot`)."""
    started: float
    """Executor clock reading when the request arrived (for the overhead header)."""


@dataclass(slots=True)
class Served:
    """What goes back to the client: a complete body, or a stream that already has its first chunk."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None


@dataclass(slots=True)
class _Failure:
    kind: str
    """5xx, 429, timeout, connect, invalid, unusable (no key: not the endpoint's fault), or 4xx (a
    local's answer to a private request, which it alone may answer)."""
    detail: str
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Answer:
    """A complete upstream answer (2xx or a 4xx to pass through)."""

    status: int
    content_type: str
    body: bytes
    usage: Usage | None
    schema_valid: bool = True


@dataclass(slots=True)
class _Stream:
    """A committed stream: first chunk received."""

    response: UpstreamResponse
    chunks: AsyncIterator[bytes]
    first: bytes
    content_type: str


@dataclass(slots=True)
class _Trail:
    """What happened to one request so far (for logs, errors, headers)."""

    attempts: int = 0
    upstream_wait_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    last_failure: _Failure | None = None
    out_of_retries: bool = False
    attempted: list[tuple[str, Location]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    first_chunk_at: float | None = None


def structured_output_valid(document: Any, schema: Mapping[str, Any]) -> bool:
    """True when every choice's message content is JSON conforming to `schema`.

    A schema that is itself invalid cannot be checked and counts as satisfied (the upstream judged it);
    the app refuses such schemas before routing (`clientchecks`), so this is the last line only. So
    does a schema whose regexes cannot run on RE2 (`schemaregex`: never Python's backtracking `re`).
    """
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(dict(schema))
    except jsonschema.exceptions.SchemaError:
        return True
    validator = schemaregex.validator_for(schema)
    if validator is None:
        return True
    choices = document.get("choices") if isinstance(document, dict) else None
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            return False
        try:
            if not validator.is_valid(orjson.loads(content)):
                return False
        except orjson.JSONDecodeError:
            return False
        except (Unresolvable, RecursionError):
            return True
    return True


def attempt_timeouts(slo: SLOConfig, stream: bool, latency_budget_ms: int | None) -> Timeouts:
    """The deadlines of one attempt, matching how servers answer.

    A streaming answer's headers and first chunk come as soon as generation starts, so `ttftMs`
    bounds them. A non-streaming answer's headers come only when generation has ended (vLLM, Ollama,
    llama.cpp and the cloud APIs all answer that way), so its first byte is its last: only
    `requestTimeoutMs` bounds the whole call. A client's latency budget tightens both.
    """
    total_s = slo.request_timeout_ms / 1000
    first_byte_s = slo.ttft_ms / 1000 if stream else total_s
    timeouts = Timeouts(slo.connect_timeout_ms / 1000, first_byte_s, total_s)
    return timeouts.tightened(latency_budget_ms / 1000 if latency_budget_ms else None)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Delay asked for by a 429: OpenAI's retry-after-ms, else Retry-After in seconds (dates ignored)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue
        if value >= 0:
            return value
    return None


async def _starting_with(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _header_safe(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


class Executor:
    """Runs requests against upstreams; holds the per-router runtime state the attempts share."""

    def __init__(
        self,
        transport: Transport,
        metrics: RouterMetrics,
        breakers: BreakerRegistry,
        limiter: ConcurrencyLimiter,
        spend: SpendTracker,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.transport = transport
        self.metrics = metrics
        self.breakers = breakers
        self.limiter = limiter
        self.spend = spend
        self.clock = clock
        self._sleep = sleep
        self._environ = environ
        self.decisions = DecisionLog(log, DecisionSummary(clock))
        self.observers: list[Callable[[RequestOutcome], None]] = []
        """Called with every finished request (audit trail, GenAI metrics, spans)."""
        self.trace_context = False
        """Carry the client's `traceparent` into the outcome (set when spans are exported)."""
        self._retry_budget: RetryBudget | None = None
        self._retry_budget_key: tuple[int, int] | None = None

    def configure(self, config: RouterConfig) -> None:
        """Follow a config swap: breakers for new endpoints, a retry budget for a new percentage."""
        self.breakers.sync(config)
        key = (config.fallback.retry_budget_percent, config.circuit_breaker.window_seconds)
        if key != self._retry_budget_key:
            self._retry_budget = RetryBudget(key[0], key[1], self.clock)
            self._retry_budget_key = key

    @property
    def retry_budget(self) -> RetryBudget:
        if self._retry_budget is None:
            raise RuntimeError("executor not configured")
        return self._retry_budget

    # ---------------------------------------------------------------------------------------------

    async def execute(self, request: RoutedRequest) -> Served:
        """Serve the request from the first candidate that answers; raise UpstreamFailed if none does."""
        config = request.config
        fallback = config.fallback
        max_attempts = fallback.max_attempts if fallback.enabled else 1
        timeouts = attempt_timeouts(config.slo, request.profile.stream, request.profile.latency_budget_ms)
        validate = fallback.validate_structured_output and request.profile.json_schema is not None
        validate = validate and not request.profile.stream
        self.retry_budget.record_request()

        trail = _Trail()
        candidates = request.decision.candidates
        index = 0
        repeat_allowed: set[str] = set()  # endpoints already granted their one same-endpoint retry
        invalid_answer: tuple[Candidate, _Answer] | None = None
        while index < len(candidates) and trail.attempts < max_attempts and not trail.out_of_retries:
            candidate = candidates[index]
            endpoint = candidate.endpoint
            if request.decision.private and not endpoint.is_local:
                # Defence in depth for the promise: `decide` never offers a cloud endpoint to a private
                # request; should a bug ever make it, the bytes still do not leave.
                log.error("private request offered a cloud endpoint; refused", extra={"endpoint": endpoint.name})
                self.metrics.observe_privacy_block(request.config.policy.name, "cloud_candidate_refused")
                trail.failures.append(f"{endpoint.name}: cloud endpoint refused for a private request")
                index += 1
                continue
            last_resort = request.decision.private and index == len(candidates) - 1
            admitted = self._admit(request, candidate, trail, last_resort)
            if admitted is None:
                index += 1
                continue
            breaker, permit = admitted
            trail.attempts += 1
            trail.attempted.append((endpoint.name, location_of(endpoint)))
            sent_at = self.clock()
            try:
                outcome = await self._attempt(request, endpoint, timeouts, breaker, permit)
            except BaseException:  # a bug or a cancellation: no verdict, but never a leaked slot
                self.limiter.release(endpoint.name)
                breaker.release(permit)
                raise
            trail.upstream_wait_s += self.clock() - sent_at
            if isinstance(outcome, _Stream):
                return self._commit_stream(request, candidate, outcome, trail, sent_at, breaker, permit)
            self.limiter.release(endpoint.name)
            if isinstance(outcome, _Answer) and request.decision.private and outcome.status >= 300:
                # One refusal contract: a private request is answered by a local 2xx or refused with the
                # 503. A local 4xx (a model it does not serve, an auth it wants) is that endpoint's
                # refusal; the next local may take the request. The breaker saw no failure.
                trail.last_failure = _Failure("4xx", f"{outcome.status} from upstream")
                trail.failures.append(f"{endpoint.name}: {outcome.status} from upstream")
                index += 1
                continue
            if isinstance(outcome, _Answer):
                check = validate and endpoint.is_local and 200 <= outcome.status < 300
                # In a worker thread: jsonschema needs a while for a large client schema, and the event
                # loop serves every other request meanwhile.
                schema = request.profile.json_schema or {}
                if check and not await asyncio.to_thread(structured_output_valid, orjson.loads(outcome.body), schema):
                    outcome.schema_valid = False
                    invalid_answer = (candidate, outcome)
                    trail.failures.append(f"{endpoint.name}: structured output failed schema validation")
                    if endpoint.name not in repeat_allowed:
                        repeat_allowed.add(endpoint.name)
                        continue
                    self.metrics.observe_fallback(config.policy.name, endpoint.name, "structured-output")
                    index += 1
                    continue
                return self._complete(request, candidate, outcome, trail)
            trail.last_failure = outcome
            trail.failures.append(f"{endpoint.name}: {outcome.detail}")
            if not self._fails_over(outcome, fallback.on_status):
                break
            wait = outcome.retry_after_s
            honoured = wait is not None and wait <= fallback.max_retry_after_seconds
            if outcome.kind == "429" and honoured and endpoint.name not in repeat_allowed:
                repeat_allowed.add(endpoint.name)
                await self._sleep(wait or 0.0)
                trail.upstream_wait_s += wait or 0.0
                continue
            self.metrics.observe_fallback(config.policy.name, endpoint.name, outcome.kind)
            index += 1

        if invalid_answer is not None:
            return self._complete(request, *invalid_answer, trail)
        raise self._give_up(request, trail)

    def _admit(
        self, request: RoutedRequest, candidate: Candidate, trail: _Trail, last_resort: bool = False
    ) -> tuple[CircuitBreaker, Permit] | None:
        """Take the endpoint's concurrency slot, breaker permit and (on retries) retry budget.

        The decision's "all-open" pick goes out without asking the breaker: policy chose it
        deliberately. `last_resort`: a private request's last candidate; busy half-open probe slots do
        not refuse it: it has nowhere else to go and the endpoint is not failing (the "all-open"
        reasoning). Neither holds a probe slot, so neither outcome counts as a probe result.
        """
        endpoint = candidate.endpoint
        if not self.limiter.try_acquire(endpoint.name, endpoint.max_concurrency):
            trail.failures.append(f"{endpoint.name}: at maxConcurrency")
            return None
        breaker = request.breakers[endpoint.name]
        permit = breaker.admit() if candidate.reason == "all-open" else breaker.try_acquire()
        if permit is None and last_resort and breaker.state == "half-open":
            permit = breaker.admit()
        if permit is None:
            self.limiter.release(endpoint.name)
            trail.failures.append(f"{endpoint.name}: circuit open")
            return None
        if trail.attempts > 0 and not self.retry_budget.try_spend_retry():
            self.limiter.release(endpoint.name)
            breaker.release(permit)
            trail.failures.append("retry budget exhausted")
            trail.out_of_retries = True
            return None
        return breaker, permit

    @staticmethod
    def _fails_over(failure: _Failure, on_status: Sequence[str]) -> bool:
        if failure.kind == "unusable":
            return True
        kind = "5xx" if failure.kind == "invalid" else failure.kind
        return kind in on_status

    async def _attempt(
        self,
        request: RoutedRequest,
        endpoint: EndpointConfig,
        timeouts: Timeouts,
        breaker: CircuitBreaker,
        permit: Permit,
    ) -> _Answer | _Stream | _Failure:
        """One upstream attempt, with its breaker verdict and metrics recorded (except for streams)."""
        policy = request.config.policy.name
        try:
            api_key = resolve_api_key(endpoint.api_key, self._environ)
        except MissingApiKey:
            breaker.release(permit)
            return _Failure("unusable", "API key not available")
        stream = request.profile.stream
        upstream_request = UpstreamRequest(
            url=f"{endpoint.base_url.rstrip('/')}/{UPSTREAM_PATHS[request.profile.kind]}",
            headers=upstream_headers(request.client_headers, api_key),
            body=upstream_body(request.body, endpoint.model, stream and request.profile.kind != "embeddings"),
            timeouts=timeouts,
        )
        started = self.clock()
        outcome = await self._exchange(upstream_request, stream)
        duration = self.clock() - started
        if isinstance(outcome, _Stream):
            self.metrics.observe_ttft(policy, endpoint.name, duration)
            return outcome
        if isinstance(outcome, _Failure):
            breaker.record_failure(outcome.kind, permit)
            result = outcome.kind
        else:
            breaker.record_success(duration, permit)
            result = "ok" if outcome.status < 400 else "client_error"
            self.metrics.observe_ttft(policy, endpoint.name, duration)
        if result != "connect":  # refused connections say nothing about latency
            self.metrics.observe_attempt(policy, endpoint.name, result, duration)
        return outcome

    async def _exchange(self, upstream_request: UpstreamRequest, stream: bool) -> _Answer | _Stream | _Failure:
        """Send and read: map the wire outcome to an answer, a committed stream, or a failure kind."""
        response: UpstreamResponse | None = None
        try:
            response = await self.transport.send(upstream_request)
            status = response.status
            content_type = response.headers.get("content-type", "application/json")
            if stream and status == 200 and content_type.startswith("text/event-stream"):
                chunks = aiter(response.chunks())
                first = await anext(chunks, b"")
                if not first:
                    return _Failure("invalid", "upstream closed the stream without data")
                committed, response = _Stream(response, chunks, first, content_type), None
                return committed
            headers = response.headers
            body = await response.read()
        except UpstreamTimeoutError as exc:
            return _Failure("timeout", f"timeout ({exc.phase})")
        except UpstreamConnectError:
            return _Failure("connect", "connection failed")
        finally:
            if response is not None:
                response.close()
        if status == 429:
            return _Failure("429", "429 rate limited", retry_after_seconds(headers))
        if status >= 500:
            return _Failure("5xx", f"{status} from upstream")
        if 300 <= status < 400:  # the transport never follows one: the body goes nowhere but the endpoint
            return _Failure("invalid", f"redirect ({status}) refused: upstreams must answer, not redirect")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _Failure("invalid", f"{status} with a non-JSON body")
        return _Answer(status, "application/json", body, usage_of(document) if status < 300 else None)

    # ---------------------------------------------------------------------------------------------

    def _headers(
        self, request: RoutedRequest, candidate: Candidate, trail: _Trail, cost: float, content_type: str
    ) -> list[tuple[str, str]]:
        reason = request.decision.reason
        if candidate is not request.decision.candidates[0]:
            reason = f"{reason};{candidate.reason}"
        overhead_ms = max(0.0, (self.clock() - request.started - trail.upstream_wait_s) * 1000)
        return [
            ("content-type", content_type),
            ("x-hybridroute-endpoint", candidate.endpoint.name),
            ("x-hybridroute-reason", _header_safe(reason)),
            ("x-hybridroute-attempts", str(trail.attempts)),
            ("x-hybridroute-cost-usd", f"{cost:.8f}"),
            ("x-hybridroute-overhead-ms", f"{overhead_ms:.3f}"),
        ]

    def _meter(self, request: RoutedRequest, candidate: Candidate, usage: Usage | None, trail: _Trail) -> float:
        """Tokens and cost from the upstream's usage when it reported one, else the decision's estimate."""
        endpoint = candidate.endpoint
        if usage is None:
            cost = candidate.estimated_cost_usd
            usage = Usage(request.profile.input_tokens, 0)
        else:
            cost = estimate_cost(endpoint, usage.input_tokens, usage.output_tokens)
        self.metrics.observe_usage(
            request.config.policy.name, endpoint.name, usage.input_tokens, usage.output_tokens, cost
        )
        if not endpoint.is_local:
            self.spend.record(cost)
        trail.input_tokens, trail.output_tokens, trail.cost_usd = usage.input_tokens, usage.output_tokens, cost
        return cost

    def _complete(self, request: RoutedRequest, candidate: Candidate, answer: _Answer, trail: _Trail) -> Served:
        ok = answer.status < 400
        cost = self._meter(request, candidate, answer.usage, trail) if ok else 0.0
        headers = self._headers(request, candidate, trail, cost, answer.content_type)
        outcome = "success" if ok else "client_error"
        if not answer.schema_valid:
            headers.append((STRUCTURED_OUTPUT_HEADER, "invalid"))
            outcome = "structured_output_invalid"
        self._finish(request, candidate.endpoint.name, outcome, answer.status, trail)
        return Served(answer.status, headers, body=answer.body)

    def _commit_stream(
        self,
        request: RoutedRequest,
        candidate: Candidate,
        committed: _Stream,
        trail: _Trail,
        sent_at: float,
        breaker: CircuitBreaker,
        permit: Permit,
    ) -> Served:
        trail.first_chunk_at = self.clock()
        headers = self._headers(request, candidate, trail, candidate.estimated_cost_usd, committed.content_type)
        relay = SSERelay(keep_usage=client_wants_usage(request.body))
        stream = self._relay(request, candidate, committed, relay, trail, sent_at, breaker, permit)
        return Served(200, headers, stream=stream)

    async def _relay(
        self,
        request: RoutedRequest,
        candidate: Candidate,
        committed: _Stream,
        relay: SSERelay,
        trail: _Trail,
        sent_at: float,
        breaker: CircuitBreaker,
        permit: Permit,
    ) -> AsyncGenerator[bytes, None]:
        """Forward the committed stream; failures from here on go in-band.

        The stream's bookkeeping (breaker verdict, metrics, log line) happens before its last bytes
        (`[DONE]` or the in-band error) are handed on, so whoever sees the end also sees it counted.
        """
        endpoint = candidate.endpoint
        settled = False

        def settle(outcome: str, kind: str | None = None) -> None:
            nonlocal settled
            settled = True
            committed.response.close()
            self.limiter.release(endpoint.name)
            duration = self.clock() - sent_at
            policy = request.config.policy.name
            if outcome == "success":
                breaker.record_success(duration, permit)
                self.metrics.observe_attempt(policy, endpoint.name, "ok", duration)
                self._meter(request, candidate, relay.usage, trail)
            elif kind is not None:
                breaker.record_failure(kind, permit)
                self.metrics.observe_attempt(policy, endpoint.name, kind, duration)
                trail.failures.append(f"{endpoint.name}: {kind} after the stream started")
            else:
                breaker.release(permit)  # the client left: no verdict on the endpoint
            self._finish(request, endpoint.name, outcome, 200, trail)

        held = b""
        try:
            async for chunk in _starting_with(committed.first, committed.chunks):
                out = relay.feed(chunk)
                if held:
                    yield held
                    held = b""
                if out.rstrip().endswith(b"[DONE]"):
                    held = out  # the end marker waits for the upstream's EOF and the bookkeeping
                elif out:
                    yield out
            held += relay.finish()
            settle("success")
        except (UpstreamTimeoutError, UpstreamConnectError) as exc:
            kind = "timeout" if isinstance(exc, UpstreamTimeoutError) else "connect"
            settle("stream_error", kind)
            held += sse_error_event(
                f"upstream {endpoint.name} failed after the response started ({kind})", "upstream_error", kind
            )
        finally:
            if not settled:
                settle("client_disconnected")
        if held:
            yield held

    def _finish(
        self, request: RoutedRequest, endpoint: str, outcome: str, status: int, trail: _Trail, error_type: str = ""
    ) -> None:
        config = request.config
        self.metrics.observe_request(config.policy.name, endpoint, outcome, trail.attempts)
        if self.observers:
            self._observe(request, endpoint, outcome, status, trail, error_type)
        routine = outcome == "success" and trail.attempts == 1 and not trail.failures

        def details() -> dict[str, Any]:
            return {
                "policy": config.policy.name,
                "status": status,
                "attempts": trail.attempts,
                "failures": trail.failures,
                "upstream_ms": round(trail.upstream_wait_s * 1000, 3),
                "total_ms": round((self.clock() - request.started) * 1000, 3),
            }

        self.decisions.routed(endpoint, request.decision.reason, outcome, routine, details)

    def _give_up(self, request: RoutedRequest, trail: _Trail) -> UpstreamFailed | NoEligibleEndpoint:
        attempts = trail.attempts
        summary = "; ".join(trail.failures) or "no candidate"
        error: UpstreamFailed | NoEligibleEndpoint
        last = trail.last_failure
        if request.decision.private:
            # One refusal contract, whatever the local fault: a timeout or garbage is no reason to
            # answer a private request differently (504/502) than a local that is down.
            waited_ms = trail.upstream_wait_s * 1000
            error = PrivateRequestRefused.for_request(request.profile.sensitive_reasons, summary, waited_ms)
            self.metrics.observe_privacy_block(request.config.policy.name, "rejected")
        elif last is None:
            error = NoEligibleEndpoint(f"no candidate could take the request: {summary}")
        elif last.kind == "timeout":
            error = UpstreamTimeout(f"all {attempts} upstream attempts failed: {summary}")
        elif last.kind == "invalid":
            error = UpstreamInvalidResponse(f"all {attempts} upstream attempts failed: {summary}")
        else:
            error = UpstreamUnavailable(f"all {attempts} upstream attempts failed: {summary}")
        self._finish(request, "", "upstream_error", error.status, trail, error.code or "upstream_error")
        return error

    def _observe(
        self, request: RoutedRequest, endpoint: str, outcome: str, status: int, trail: _Trail, error_type: str
    ) -> None:
        """Build the request's one outcome (the audit record) and hand it to the observers."""
        served = None
        for candidate in request.decision.candidates:
            if candidate.endpoint.name == endpoint:
                served = candidate.endpoint
                break
        now = self.clock()
        if not error_type and outcome not in ("success", "structured_output_invalid"):
            error_type = str(status) if outcome == "client_error" else outcome
        finished = build_outcome(
            config=request.config,
            kind=request.profile.kind,
            profile=request.profile,
            decision=request.decision,
            attempted=trail.attempted,
            served=served,
            outcome=outcome,
            status=status,
            error_type=error_type,
            input_tokens=trail.input_tokens,
            output_tokens=trail.output_tokens,
            cost_usd=trail.cost_usd,
            duration_s=now - request.started,
            finished_at=time.time(),
            first_chunk_s=None if trail.first_chunk_at is None else trail.first_chunk_at - request.started,
            breaker_state=request.breakers[endpoint].state if served is not None else "",
        )
        if self.trace_context:
            parent = trace_parent(request.client_headers)
            if parent is not None:
                finished["traceparent"] = parent
        notify(self.observers, finished)
