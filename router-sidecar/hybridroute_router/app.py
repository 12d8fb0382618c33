"""The router's ASGI app: routes HTTP paths to handlers and owns the shared state's lifespan.

A thin raw-ASGI app rather than a framework: the hot path is one dict lookup for the route, one read
of the body, one `orjson.loads`, and the pure profile/decision steps before the executor sends it on.

Endpoints (the API listener, loopback only: it spends the pod's cloud keys):
    POST /v1/chat/completions, /v1/completions, /v1/embeddings   proxied (streaming and not)
    GET  /v1/models                   the policy's model aliases (OpenAI list shape)
    POST /hybridroute/v1/explain      the decision for a request, without sending it
    GET  /healthz                     the process is up
    GET  /readyz                      a valid config is loaded and every background loop runs

/metrics is served by the separate operations listener only (`opsapp.OpsApp`), which may bind the
pod IP for Prometheus and the kubelet.

Lifespan: starts the upstream transport, every config source (file poll, ConfigMap watch), the
Prometheus p95 evaluator, the saturation feed and the fleet budget evaluator as tasks; stops them on
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import aiohttp
import orjson

from .admission import LocalAdmission
from .asgi import Message, Receive, Scope, Send, respond
from .breaker import BreakerRegistry, CircuitBreaker
from .budget import SpendTracker
from .clientchecks import check_fits_a_window, check_output_tokens, check_request_schemas, request_schemas
from .config import RouterConfig
from .errors import (
    BadRequest,
    BudgetExhausted,
    MethodNotAllowed,
    ModelNotFound,
    NoEligibleEndpoint,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PrivateRequestRefused,
    RouterError,
    error_body,
)
from .executor import Executor, RoutedRequest, Served
from .fleetbudget import FleetBudget, Spend, reached_caps
from .genai import GenAIMetrics
from .limiter import ConcurrencyLimiter
from .loader import ConfigHolder
from .metrics import RouterMetrics
from .outcome import build_outcome, notify
from .p95 import EvaluationStatus, P95Evaluator
from .policy import Decision, EndpointState, decide
from .profile import Kind, ProfileError, RequestProfile, build_profile
from .saturationfeed import SaturationFeed
from .upstream import AiohttpTransport, Transport

log = logging.getLogger("hybridroute.router.app")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
PROXIED: Mapping[str, Kind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
GC_GEN0_THRESHOLD = 10_000
"""Allocations between young-generation collections (CPython's default is 700)."""


class Source(Protocol):
    """A config source: runs until cancelled, feeding documents to the holder."""

    async def run(self) -> None: ...


class RouterApp:
    """The ASGI callable. One instance per router process (tests may run several)."""

    def __init__(
        self,
        holder: ConfigHolder,
        *,
        transport: Transport | None = None,
        sources: Sequence[Source] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Callable[[], float] = time.monotonic,
        roll: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.holder = holder
        self.max_body_bytes = max_body_bytes
        self.metrics = RouterMetrics()
        self.transport = transport if transport is not None else AiohttpTransport()
        self.executor = Executor(
            self.transport,
            self.metrics,
            BreakerRegistry(clock),
            ConcurrencyLimiter(),
            SpendTracker(time.time),  # budgets are per UTC day/month: wall clock
            clock=clock,
            environ=environ,
        )
        self.executor.observers.append(GenAIMetrics(self.metrics.registry))
        self._sources = sources
        self._roll = roll
        self._tasks: list[asyncio.Task[None]] = []
        self._p95_session: aiohttp.ClientSession | None = None
        self.p95: P95Evaluator | None = None
        self.saturation: SaturationFeed | None = None
        self.admission = LocalAdmission(clock, self.executor.limiter.in_flight)
        self.fleet_budget: FleetBudget | None = None
        holder.on_refused(lambda source, _reason: self.metrics.config_refused(source))
        self.executor.breakers.on_transition(self._log_transition)
        holder.on_swap(self._on_config)
        self.metrics.follow_breakers(self._breaker_states)
        self.metrics.follow_p95(self._p95_status)
        self.metrics.follow_in_flight(self._in_flight)
        self.metrics.follow_budget(self._budget_status, self._budget_spend)

    def _on_config(self, config: RouterConfig) -> None:
        self.executor.configure(config)
        self.metrics.set_config(config.policy.name, config.config_hash, config.policy.namespace)
        self.metrics.start_cost_series(config)

    def _breaker_states(self) -> tuple[str, dict[str, str]]:
        config = self.holder.current
        if config is None:
            return "", {}
        return config.policy.name, dict(self.executor.breakers.states())

    def _in_flight(self) -> tuple[str, dict[str, int]]:
        config = self.holder.current
        if config is None:
            return "", {}
        limiter = self.executor.limiter
        return config.policy.name, {endpoint.name: limiter.in_flight(endpoint.name) for endpoint in config.endpoints}

    def _p95_status(self) -> tuple[str, EvaluationStatus | None]:
        config = self.holder.current
        if config is None or self.p95 is None:
            return "", None
        return config.policy.name, self.p95.status

    def _budget_status(self) -> tuple[RouterConfig | None, str | None]:
        """The served config and its budget state (None while unknown) for the budget gauges."""
        config = self.holder.current
        if config is None or not config.budget.fleet or self.fleet_budget is None:
            return None, None
        return config, self.fleet_budget.state(config.budget)

    def _budget_spend(self) -> tuple[bool | None, Spend | None]:
        if self.fleet_budget is None:
            return None, None
        return self.fleet_budget.status.up, self.fleet_budget.status.spend

    def budget_spend(self, config: RouterConfig) -> Spend:
        """The spend `budget_exhausted` judges: the fleet's last reading, else this router's own."""
        if config.budget.fleet and self.fleet_budget is not None and self.fleet_budget.status.spend is not None:
            return self.fleet_budget.status.spend
        tracker = self.executor.spend
        return Spend(tracker.spent_today(), tracker.spent_month(), time.time())

    def budget_exhausted(self, config: RouterConfig) -> bool:
        """The budget decision for `config`: the fleet's (from Prometheus) or this router's own spend.

        A fleet budget not yet known (Prometheus unreadable since this router started) falls back to
        this router's own spend: a floor that holds at least the router's share, never a guess.
        """
        if config.budget.fleet and self.fleet_budget is not None:
            state = self.fleet_budget.state(config.budget)
            if state is not None:
                return state == "exhausted"
        return self.executor.spend.exhausted(config.budget)

    @staticmethod
    def _log_transition(endpoint: str, old: str, new: str, reason: str) -> None:
        log.warning("circuit breaker transition", extra={"endpoint": endpoint, "from": old, "to": new, "why": reason})

    # ---------------------------------------------------------------------------------------------
    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        start = getattr(self.transport, "start", None)
        if start is not None:
            await start()
        # Its own small session: Prometheus queries never compete with requests for pooled connections.
        self._p95_session = aiohttp.ClientSession()
        self.p95 = P95Evaluator(self._p95_session, lambda: self.holder.current, self.executor.breakers.observe_p95)
        self.saturation = SaturationFeed(
            self._p95_session, lambda: self.holder.current, self.executor.clock, self.admission.update
        )
        self.fleet_budget = FleetBudget(self._p95_session, lambda: self.holder.current)
        loops = [(type(source).__name__, source.run) for source in self._sources] + [
            ("P95Evaluator", self.p95.run),
            ("SaturationFeed", self.saturation.run),
            ("FleetBudget", self.fleet_budget.run),
        ]
        self._tasks = [asyncio.create_task(run(), name=name) for name, run in loops]
        for task in self._tasks:
            task.add_done_callback(_report_stopped)
        _settle_garbage_collector()

    async def shutdown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._p95_session is not None:
            await self._p95_session.close()
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()

    def _snapshot(self) -> tuple[RouterConfig | None, Mapping[str, CircuitBreaker]]:
        """The config being served and its breakers, read together without yielding to the loop.

        A request keeps both for its whole life (body upload included), so a reload in between
        changes nothing it sees: the breakers of endpoints the reload removed live on in its view.
        """
        return self.holder.current, self.executor.breakers.snapshot()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await guarded(self._route, scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        config = self.holder.current
        try:
            kind = PROXIED.get(path)
            if kind is not None:
                _require(method, "POST")
                await self._proxy(kind, scope, receive, send)
            elif path == "/hybridroute/v1/explain":
                _require(method, "POST")
                await respond(send, 200, await self._explain(scope, receive))
            elif path == "/v1/models":
                _require(method, "GET")
                await respond(send, 200, orjson.dumps(_models(_ready(config))))
            elif path == "/healthz":
                await respond(send, 200, b'{"status":"ok"}')
            elif path == "/readyz":
                await respond(send, 200, self.readiness(config))
            else:
                raise NotFound(f"no route for {method} {path}")
        except RouterError as exc:
            await respond(send, exc.status, exc.body(), exc.headers())

    def readiness(self, config: RouterConfig | None) -> bytes:
        """/readyz's answer; NotReady without a config, or when a background loop stopped.

        A stopped config source means the router silently serves a config that no longer follows its
        source; a stopped p95 evaluator means breakers no longer see the fleet. Either is not ready.
        """
        hash_ = _ready(config).config_hash
        stopped = [task.get_name() for task in self._tasks if task.done()]
        if stopped:
            raise NotReady(f"background loop stopped: {', '.join(stopped)}")
        return orjson.dumps({"status": "ready", "configHash": hash_})

    # ---------------------------------------------------------------------------------------------
    # proxying

    async def _proxy(self, kind: Kind, scope: Scope, receive: Receive, send: Send) -> None:
        started = self.executor.clock()
        config, breakers = self._snapshot()  # read once: a swap mid-request never changes what it sees
        policy = config.policy.name if config else ""
        profile: RequestProfile | None = None
        decision: Decision | None = None
        try:
            config = _ready(config)
            client_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
            body, profile = await self._parse(kind, scope, receive, client_headers, config)
            decision = self._decide(profile, config, breakers)
            if decision.private and any(rejection.filter == "privacy" for rejection in decision.rejected):
                self.metrics.observe_privacy_block(policy, "kept-local" if decision.candidates else "rejected")
            for rejection in decision.rejected:
                if rejection.filter == "capacity":
                    self.metrics.observe_capacity_skip(policy, rejection.endpoint)
                elif rejection.filter == "saturation":
                    self.metrics.observe_spill(policy, rejection.endpoint, rejection.detail.split(":", 1)[0])
            if not decision.candidates:
                if decision.reason == "budget":
                    raise BudgetExhausted(_budget_message(config, decision.error, self.budget_spend(config)))
                refusal = PrivateRequestRefused if decision.private else NoEligibleEndpoint
                raise refusal(decision.error or "no eligible endpoint")
            if decision.private:
                too_long = self.admission.private_refusal(profile, config)
                if too_long is not None:
                    raise PrivateRequestRefused.for_request(profile.sensitive_reasons, too_long)
        except RouterError as exc:
            self.metrics.observe_request(policy, "", _rejection_outcome(exc), 0)
            log.info("request rejected", extra={"policy": policy, "status": exc.status, "code": exc.code})
            if config is not None:
                self._observe_rejection(kind, config, profile, decision, exc, started)
            raise
        routed = RoutedRequest(body, client_headers, profile, decision, config, breakers, started)
        served = await self.executor.execute(routed)
        await _send_served(served, receive, send)

    def _observe_rejection(
        self,
        kind: Kind,
        config: RouterConfig,
        profile: RequestProfile | None,
        decision: Decision | None,
        error: RouterError,
        started: float,
    ) -> None:
        """Hand a request refused before any attempt to the executor's observers (the audit trail)."""
        finished = build_outcome(
            config=config,
            kind=kind,
            profile=profile,
            decision=decision,
            attempted=(),
            served=None,
            outcome="rejected",
            status=error.status,
            error_type=error.code or "rejected",
            input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
            duration_s=self.executor.clock() - started,
            finished_at=time.time(),
        )
        notify(self.executor.observers, finished)

    async def _parse(
        self,
        kind: Kind,
        scope: Scope,
        receive: Receive,
        client_headers: Sequence[tuple[str, str]],
        config: RouterConfig,
    ) -> tuple[dict[str, Any], RequestProfile]:
        raw = await _read_body(scope, receive, self.max_body_bytes)
        body = _json_body(raw)
        profile = await _checked_profile(kind, body, client_headers, config, body_bytes=len(raw))
        if profile.model not in config.model_aliases:
            available = ", ".join(config.model_aliases)
            raise ModelNotFound(
                f"model '{profile.model}' is not served by policy {config.policy.name} (available: {available})",
                param="model",
            )
        return body, profile

    def _decide(
        self, profile: RequestProfile, config: RouterConfig, breakers: Mapping[str, CircuitBreaker]
    ) -> Decision:
        executor = self.executor
        spills = self.admission.spills(profile, config, {name: b.state for name, b in breakers.items()}, self._roll())
        states = {}
        for endpoint in config.endpoints:
            breaker = breakers[endpoint.name]
            spill = spills.get(endpoint.name)
            states[endpoint.name] = EndpointState(
                breaker=breaker.state,
                at_capacity=executor.limiter.at_capacity(endpoint.name, endpoint.max_concurrency),
                observed_p95_ms=breaker.observed_p95_ms,
                last_failure_at=breaker.last_failure_at,
                spill=None if spill is None else f"{spill.kind}: {spill.detail}",
            )
        return decide(profile, config, states, budget_exhausted=self.budget_exhausted(config), roll=self._roll())

    async def _explain(self, scope: Scope, receive: Receive) -> bytes:
        """The decision for a request body, without sending it: no prompt text in the answer."""
        config, breakers = self._snapshot()
        config = _ready(config)
        raw = await _read_body(scope, receive, self.max_body_bytes)
        body = _json_body(raw)
        kind: Kind = "chat"
        if isinstance(body, dict) and "messages" not in body:
            kind = "completions" if "prompt" in body else "embeddings" if "input" in body else "chat"
        client_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        profile = await _checked_profile(kind, body, client_headers, config, body_bytes=len(raw))
        decision = self._decide(profile, config, breakers)
        return orjson.dumps(explanation(profile, decision, config, self.budget_exhausted(config)))


async def guarded(
    handler: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send
) -> None:
    """Run an HTTP handler; a bug in it is an OpenAI-shaped 500 (if nothing was sent yet), never uvicorn's plain text.

    A bug must not leak request content: no message, no traceback text (either may quote the client's
    body or schema), only the exception's type and where it was raised are logged.
    """
    response_started = False

    async def tracked_send(message: Message) -> None:
        nonlocal response_started
        response_started = response_started or message["type"] == "http.response.start"
        await send(message)

    try:
        await handler(scope, receive, tracked_send)
    except Exception as exc:
        log.error("internal error", extra={"error": type(exc).__name__, "at": _raised_at(exc)})
        if not response_started:
            await respond(send, 500, error_body("internal router error", "server_error", "internal_error"))


def _json_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


PROFILE_IN_THREAD_BYTES: Final = 256 * 1024
"""From this body size on, the profile (the detectors read every string) is built in a worker thread:
megabytes of text take the detectors seconds, and the event loop serves every other request meanwhile.
Smaller bodies are profiled inline, where a thread hop would cost more than the scan."""


async def _checked_profile(
    kind: Kind, body: Any, client_headers: Sequence[tuple[str, str]], config: RouterConfig, *, body_bytes: int
) -> RequestProfile:
    """The request's profile, after the checks that make a client's mistake a 400 before routing.

    The client's schemas are checked in a worker thread: a large one takes jsonschema a while, and the
    event loop serves every other request meanwhile; so is the profile of a large body.
    """
    try:
        if body_bytes >= PROFILE_IN_THREAD_BYTES:
            profile = await asyncio.to_thread(build_profile, kind, body, client_headers, config)
        else:
            profile = build_profile(kind, body, client_headers, config)
    except ProfileError as exc:
        raise BadRequest(exc.message, param=exc.param) from None
    schemas = request_schemas(body, profile.json_schema)
    if schemas:
        await asyncio.to_thread(check_request_schemas, schemas)
    check_output_tokens(profile, body, config)
    check_fits_a_window(profile, config)
    return profile


def _raised_at(exc: BaseException) -> str:
    """`file:line` of the innermost frame of `exc`'s traceback (for logs that must not quote data)."""
    traceback = exc.__traceback__
    if traceback is None:
        return "?"
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return f"{traceback.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{traceback.tb_lineno}"


def _report_stopped(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    log.error(
        "background loop stopped; the router reports not ready",
        extra={"loop": task.get_name(), "error": type(error).__name__ if error else None},
    )


def _settle_garbage_collector() -> None:
    """Keep the cyclic GC off the request path's back (measured: it took ~7% of a busy router's CPU).

    Everything alive once the app has started (modules, config, clients) lives as long as the
    process: `gc.freeze` moves it out of the collector's sight, so a full collection no longer rescans
    it. Requests allocate many short-lived containers; a larger first-generation threshold collects
    them in fewer, larger passes. Memory is unaffected: reference counting frees nearly all of it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def explanation(profile: RequestProfile, decision: Decision, config: RouterConfig, budget_exhausted: bool) -> Any:
    """The explain endpoint's answer: profile summary and decision (names, numbers and reasons only)."""
    return {
        "policy": {"namespace": config.policy.namespace, "name": config.policy.name},
        "configHash": config.config_hash,
        "modelKnown": profile.model in config.model_aliases,
        "profile": {
            "kind": profile.kind,
            "model": profile.model,
            "stream": profile.stream,
            "inputTokens": profile.input_tokens,
            "maxOutputTokens": profile.max_output_tokens,
            "toolCount": profile.tool_count,
            "structuredOutput": profile.structured_output,
            "wantsVision": profile.wants_vision,
            "sensitive": profile.sensitive,
            "sensitiveReasons": list(profile.sensitive_reasons),
            "complexity": round(profile.complexity, 4),
            "latencyBudgetMs": profile.latency_budget_ms,
        },
        "decision": {
            "reason": decision.reason,
            "rule": decision.rule,
            "private": decision.private,
            "budgetExhausted": budget_exhausted,
            "error": decision.error,
            "candidates": [
                {
                    "endpoint": candidate.endpoint.name,
                    "type": candidate.endpoint.type,
                    "model": candidate.endpoint.model,
                    "reason": candidate.reason,
                    "estimatedCostUsd": candidate.estimated_cost_usd,
                }
                for candidate in decision.candidates
            ],
            "rejected": [
                {"endpoint": rejection.endpoint, "filter": rejection.filter, "detail": rejection.detail}
                for rejection in decision.rejected
            ],
        },
    }


def _budget_message(config: RouterConfig, error: str | None, spend: Spend) -> str:
    """The 429's reason: whose spend reached which cap (the policy's or team's own spend only)."""
    scope = {
        "router": "this router",
        "policy": f"policy {config.policy.name}",
        "namespace": f"namespace {config.policy.namespace}",
    }
    reached = "; ".join(reached_caps(config.budget, spend)) or "a cap"
    return (
        f"{error or 'cloud spend budget exhausted'}: the spend of {scope[config.budget.scope]} reached {reached} "
        "(UTC calendar windows); local endpoints still serve what they can take"
    )


def _models(config: RouterConfig) -> dict[str, Any]:
    data = [{"id": alias, "object": "model", "created": 0, "owned_by": "hybridroute"} for alias in config.model_aliases]
    return {"object": "list", "data": data}


def _ready(config: RouterConfig | None) -> RouterConfig:
    if config is None:
        raise NotReady("no valid router config loaded yet")
    return config


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"use {allowed}")


def _rejection_outcome(error: RouterError) -> str:
    if isinstance(error, NoEligibleEndpoint):
        return "no_route"
    if isinstance(error, NotReady):
        return "not_ready"
    if isinstance(error, BudgetExhausted):
        return "budget_exhausted"
    return "invalid_request"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (413) anything over `limit` by header or by counting."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BadRequest("invalid Content-Length") from None
            if declared > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _send_served(served: Served, receive: Receive, send: Send) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in served.headers]
    if served.stream is None:
        await respond(send, served.status, served.body, headers)
        return
    await send({"type": "http.response.start", "status": served.status, "headers": headers})
    # Stop pulling from the upstream when the client goes away (the GPU should stop generating too).
    gone = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        async for chunk in served.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.done():
                break
    finally:
        gone.cancel()
        await served.stream.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})  # ignored if the client left


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
