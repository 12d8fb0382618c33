"""p95 circuit breaking end to end: a real Prometheus scrapes an in-process router in front of simulators.

Scenarios of issue 4, each timed in evaluation intervals of the router's own p95 evaluator rather
than in seconds, so a loaded machine stretches the clock without breaking the test:

- slow local: the breaker opens (`p95_slo_breach`) within `consecutiveBreaches` evaluations after
  Prometheus' own p95 (the same query, asked by the test) crosses the SLO; public traffic moves to
  cloud while private traffic stays local and slow; latency removed -> half-open probes -> closed,
  traffic back local, and no transition for a minute after;
- Prometheus killed: unknown data changes nothing, even with local turning slow; passive breaking
  still opens on a dead local (private requests get a 503 that says why, never cloud); Prometheus
  back -> p95 control resumes and opens the breaker again;
- idle policy: empty and NaN answers never open anything.

Passive rate judging is switched off (`minimumCalls` far above the traffic here) so that every
slow-local opening is the p95 signal's doing; consecutive failures stay on for the dead upstream.
Saturation admission is off for the same reason: it would spill before p95 moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.loadclient import PRIVATE_HEADERS, Load, send
from e2e.upstream_sim import UpstreamSim
from hybridroute_router.app import RouterApp
from hybridroute_router.breaker import P95_BREACH
from hybridroute_router.config import RouterConfig
from hybridroute_router.p95 import render_query
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.upstreams import BackgroundLoop, RunningRouter, endpoint, router_config

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

POLICY = "e2e"
SLO_MS = 400
SLOW_MS = 800  # twice the SLO: p95 lands in the (0.5, 1] s bucket, far from the threshold
EVALUATION_S = 1.0
CONSECUTIVE_BREACHES = 2
NO_FLAP_EVALUATIONS = 60  # "no flapping over the next minute", counted in evaluations
UNGATED_QUERY = (
    "histogram_quantile(0.95, sum by (le, endpoint) "
    '(rate(hybridroute_upstream_duration_seconds_bucket{namespace="$namespace", policy="$policy"}[$window])))'
)
"""The default query without its traffic gate, so an idle endpoint yields NaN rather than nothing."""


def breaker_config(
    local: UpstreamSim, cloud: UpstreamSim, prometheus_url: str, query: str | None = None
) -> RouterConfig:
    prometheus: dict[str, Any] = {
        "url": prometheus_url,
        "window": "5s",
        "evaluationSeconds": EVALUATION_S,
        "consecutiveBreaches": CONSECUTIVE_BREACHES,
        "staleAfterSeconds": 30,
    }
    if query is not None:
        prometheus["query"] = query
    return router_config(
        endpoint("local-a", local),
        endpoint("cloud-a", cloud, "cloud"),
        policy={"name": POLICY},
        slo={"p95LatencyMs": SLO_MS},
        saturation={"enabled": False},  # predictive spill would move traffic first (test_saturation_e2e.py)
        circuitBreaker={
            "consecutiveFailures": 3,
            "minimumCalls": 10_000,
            "openSeconds": 2,
            "maxOpenSeconds": 4,  # a dead local's re-open backoff stays short enough for one test
            "halfOpenProbes": 2,
            "prometheus": prometheus,
        },
    )


def slow_down(sim: UpstreamSim, latency_ms: float) -> None:
    sim.behavior = dataclasses.replace(sim.behavior, latency_ms=latency_ms)


# --------------------------------------------------------------------------------------------------
# What the router did: transitions and evaluations, timestamped on the wall clock the evaluator uses


@dataclass(frozen=True)
class Transition:
    at: float
    endpoint: str
    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class Evaluation:
    at: float
    up: bool
    local_p95_ms: float | None


class BreakerTrace:
    """Every breaker transition and every p95 evaluation of one router, in order."""

    def __init__(self, app: RouterApp) -> None:
        assert app.p95 is not None, "the router's p95 evaluator starts with the app"
        self.status = app.p95.status
        self.transitions: list[Transition] = []
        self.evaluations: list[Evaluation] = []
        app.executor.breakers.on_transition(self._on_transition)

    def _on_transition(self, endpoint: str, old: str, new: str, reason: str) -> None:
        self.transitions.append(Transition(time.time(), endpoint, old, new, reason))

    async def follow(self) -> None:
        """Record each evaluation once; the status object is updated in place by the evaluator."""
        seen = self.status.last_evaluation
        while True:
            current = self.status.last_evaluation
            if current is not None and current != seen:
                seen = current
                self.evaluations.append(Evaluation(current, bool(self.status.up), self.status.values.get("local-a")))
            await asyncio.sleep(0.02)

    def local(self, after: float = 0.0) -> list[Transition]:
        return [t for t in self.transitions if t.endpoint == "local-a" and t.at > after]

    def first(self, new: str, after: float, reason: str | None = None) -> Transition | None:
        return next((t for t in self.local(after) if t.new == new and reason in (None, t.reason)), None)

    def evaluations_between(self, start: float, end: float) -> int:
        return sum(1 for evaluation in self.evaluations if start < evaluation.at <= end)

    def state_at(self, moment: float) -> str:
        """The local breaker's state at a wall-clock moment, from the transitions seen so far."""
        state = "closed"
        for transition in self.local():
            if transition.at > moment:
                break
            state = transition.new
        return state

    def near_transition(self, moment: float, margin: float = 0.25) -> bool:
        return any(abs(transition.at - moment) <= margin for transition in self.local())

    async def until(self, condition: Callable[[], object], evaluations: int, what: str) -> None:
        """Wait for `condition`, allowing `evaluations` evaluation intervals (and a generous hard cap)."""
        start = len(self.evaluations)
        deadline = time.monotonic() + evaluations * EVALUATION_S * 4 + 20
        while not condition():
            elapsed = len(self.evaluations) - start
            if elapsed > evaluations or time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {evaluations} evaluations ({elapsed} seen); {self}")
            await asyncio.sleep(0.05)

    async def wait_evaluations(self, count: int) -> list[Evaluation]:
        start = len(self.evaluations)
        await self.until(lambda: len(self.evaluations) >= start + count, count + 1, f"{count} evaluations")
        return self.evaluations[start:]

    def __repr__(self) -> str:
        moves = [f"{t.old}->{t.new} ({t.reason})" for t in self.local()]
        return f"BreakerTrace(local transitions={moves}, evaluations={len(self.evaluations)})"


@asynccontextmanager
async def traced(running: RunningRouter) -> AsyncIterator[BreakerTrace]:
    trace = BreakerTrace(running.app)
    task = asyncio.create_task(trace.follow())
    try:
        yield trace
    finally:
        task.cancel()


@asynccontextmanager
async def loads(running: RunningRouter, public_workers: int = 3) -> AsyncIterator[tuple[Load, Load]]:
    """Public (3 workers) and private (1 worker) traffic for the duration of the block."""
    async with aiohttp.ClientSession() as session:
        public = Load(session, running.url, public_workers)
        private = Load(session, running.url, 1, PRIVATE_HEADERS)
        try:
            yield public, private
        finally:
            await public.stop()
            await private.stop()


# --------------------------------------------------------------------------------------------------
# Asking Prometheus and the router's /metrics directly


async def prometheus_p95_ms(prometheus: PrometheusServer, query: str, endpoint_name: str) -> float | None:
    """The test's own view of what the router's evaluator asks (None: no series for the endpoint)."""
    for series in await asyncio.to_thread(prometheus.query, query):
        if series["metric"].get("endpoint") == endpoint_name:
            return float(series["value"][1]) * 1000
    return None


async def first_breach(prometheus: PrometheusServer, query: str, deadline_s: float = 40) -> float:
    """Poll Prometheus every 0.2 s; the wall-clock moment its local p95 is first above the SLO."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        asked = time.time()
        value = await prometheus_p95_ms(prometheus, query, "local-a")
        if value is not None and value > SLO_MS:
            return asked
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus never saw local p95 above {SLO_MS} ms within {deadline_s} s")


async def router_samples(running: RunningRouter, name: str) -> list[tuple[dict[str, str], float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{running.metrics_url}/metrics") as response:
        text = await response.text()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def query_of(config: RouterConfig) -> str:
    cfg = config.circuit_breaker.prometheus
    return render_query(cfg.query, config.policy.name, cfg.window, namespace=config.policy.namespace)


def start_router(prometheus: PrometheusServer, router: Any, config: RouterConfig) -> RunningRouter:
    running: RunningRouter = router(config)
    prometheus.set_targets([f"127.0.0.1:{running.metrics_port}"])
    return running


# --------------------------------------------------------------------------------------------------


async def test_slow_local_opens_on_p95_moves_public_traffic_and_recovers_without_flapping(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = breaker_config(local, cloud, prometheus.url)
    running = start_router(prometheus, router, config)

    async with traced(running) as trace, loads(running) as (public, private):
        await trace.until(lambda: trace.status.values.get("local-a") is not None, 30, "local p95 known")
        assert trace.status.up is True
        assert trace.local() == []

        slow_down(local, SLOW_MS)
        injected = time.time()
        crossed = await first_breach(prometheus, query_of(config))
        await trace.until(lambda: trace.first("open", injected), 10, "breaker opens on p95")
        opened = trace.first("open", injected)
        assert opened is not None
        assert opened.reason == P95_BREACH
        # The issue's bound: open within consecutiveBreaches evaluations after Prometheus' p95 crossed.
        assert trace.evaluations_between(crossed, opened.at) <= CONSECUTIVE_BREACHES, trace

        await trace.wait_evaluations(4)  # open, half-open probing slow, re-open: the slow regime
        slow_until = time.time()
        sent_while_open = [
            outcome
            for outcome in public.sent_between(opened.at, slow_until)
            if trace.state_at(outcome.sent) == "open" and not trace.near_transition(outcome.sent)
        ]
        assert len(sent_while_open) >= 5, trace
        assert {outcome.endpoint for outcome in sent_while_open} == {"cloud-a"}
        assert all(outcome.status == 200 for outcome in public.sent_between(injected))
        private_while_slow = private.sent_between(opened.at, slow_until)
        assert private_while_slow, "private traffic kept flowing"
        assert {(outcome.status, outcome.endpoint) for outcome in private_while_slow} == {(200, "local-a")}
        assert min(outcome.seconds for outcome in private_while_slow) >= SLOW_MS / 1000 * 0.9

        slow_down(local, 0)
        healed = time.time()
        await trace.until(lambda: trace.first("closed", healed), 40, "breaker closes after recovery")
        closed = trace.first("closed", healed)
        assert closed is not None
        moves = [t.new for t in trace.local(healed) if t.at <= closed.at]
        assert moves[-2:] == ["half-open", "closed"], trace
        assert closed.reason in {"probes_succeeded", "p95_recovered"}

        quiet = await trace.wait_evaluations(NO_FLAP_EVALUATIONS)
        assert trace.local(closed.at) == [], f"flapped after closing: {trace}"
        assert all(evaluation.up for evaluation in quiet)
        known = [e.local_p95_ms for e in quiet if e.local_p95_ms is not None]
        assert len(known) >= NO_FLAP_EVALUATIONS // 2
        assert max(known) < SLO_MS
        back = public.sent_between(closed.at + 0.5, quiet[-1].at)
        assert len(back) >= 50
        assert {(outcome.status, outcome.endpoint) for outcome in back} == {(200, "local-a")}

    assert all(outcome.endpoint == "local-a" for outcome in private.outcomes)
    assert not any("x-hybridroute-privacy" in request.headers for request in cloud.requests)


async def test_prometheus_outage_changes_nothing_passive_breaking_works_and_p95_control_resumes(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any, background_loop: BackgroundLoop
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = breaker_config(local, cloud, prometheus.url)
    running = start_router(prometheus, router, config)

    async with traced(running) as trace, loads(running) as (public, private):
        await trace.until(lambda: trace.status.values.get("local-a") is not None, 30, "local p95 known")

        prometheus.kill()
        await trace.until(lambda: not trace.evaluations[-1].up, 3, "router sees Prometheus down")
        assert await router_samples(running, "hybridroute_prometheus_up") == [
            ({"namespace": "default", "policy": POLICY}, 0.0)
        ]
        assert await router_samples(running, "hybridroute_endpoint_p95_seconds") == []

        # Local turns slow while Prometheus is away: no data, so the p95 breaker must not act.
        slow_down(local, SLOW_MS)
        slowed = time.time()
        blind = await trace.wait_evaluations(6)
        assert not any(evaluation.up for evaluation in blind)
        assert trace.transitions == [], trace
        served_slowly = public.sent_between(slowed + 0.1, blind[-1].at)
        assert served_slowly
        assert {(outcome.status, outcome.endpoint) for outcome in served_slowly} == {(200, "local-a")}

        # Local dies: passive breaking opens at once, Prometheus or not; public clients see no error.
        port = local.port
        background_loop.run(local.stop())
        died = time.time()
        await trace.until(lambda: trace.first("open", died), 5, "passive breaker opens on a dead local")
        opened = trace.first("open", died)
        assert opened is not None
        assert opened.reason == "consecutive_failures"
        assert not trace.evaluations[-1].up
        await trace.until(lambda: any(o.status == 503 for o in private.sent_between(died)), 5, "private 503")
        refused = next(outcome for outcome in private.sent_between(died) if outcome.status == 503)
        message = orjson.loads(refused.body)["error"]["message"]
        assert "local-a" in message
        dead_phase = public.sent_between(died, time.time())
        assert dead_phase
        assert {(outcome.status, outcome.endpoint) for outcome in dead_phase} == {(200, "cloud-a")}

        # Local back (still slow), Prometheus back: p95 control resumes and opens on the breach.
        background_loop.run(local.start(port=port))
        await asyncio.to_thread(prometheus.start)
        restarted = time.time()
        await trace.until(lambda: trace.evaluations[-1].up, 5, "router sees Prometheus up again")
        await trace.until(lambda: trace.first("open", restarted, P95_BREACH), 30, "p95 opens again")

    assert not any("x-hybridroute-privacy" in request.headers for request in cloud.requests)
    assert {outcome.endpoint for outcome in private.outcomes if outcome.status == 200} == {"local-a"}


async def test_idle_policy_never_opens_on_empty_or_nan_answers(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any
) -> None:
    local, cloud = upstream_sim("local"), upstream_sim("cloud")
    config = breaker_config(local, cloud, prometheus.url, query=UNGATED_QUERY)
    running = start_router(prometheus, router, config)

    async with traced(running) as trace:
        async with aiohttp.ClientSession() as session:  # a short burst gives local a histogram, then idle
            for _ in range(5):
                outcome = await send(session, running.url)
                assert (outcome.status, outcome.endpoint) == (200, "local-a")

        # Prometheus itself answers NaN for the idle local and has no series at all for unused cloud.
        async def answers_nan() -> bool:
            value = await prometheus_p95_ms(prometheus, query_of(config), "local-a")
            return value is not None and math.isnan(value)

        deadline = time.monotonic() + 60
        while not await answers_nan():
            assert time.monotonic() < deadline, "Prometheus never answered NaN for the idle endpoint"
            await asyncio.sleep(0.5)
        assert await prometheus_p95_ms(prometheus, query_of(config), "cloud-a") is None

        idle = await trace.wait_evaluations(5)
        assert all(evaluation.up for evaluation in idle)
        assert trace.status.values == {"local-a": None, "cloud-a": None}
        assert trace.transitions == []
        assert running.app.executor.breakers.states() == {"local-a": "closed", "cloud-a": "closed"}
        assert await router_samples(running, "hybridroute_prometheus_up") == [
            ({"namespace": "default", "policy": POLICY}, 1.0)
        ]
        assert await router_samples(running, "hybridroute_endpoint_p95_seconds") == []
        (last_evaluation,) = await router_samples(running, "hybridroute_prometheus_last_evaluation_timestamp_seconds")
        assert last_evaluation[1] >= idle[0].at
