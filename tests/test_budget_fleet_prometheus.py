"""Fleet budgets end to end: several routers, one cap, a real Prometheus scraping them every second.

Three in-process routers serve the same policy (scope `policy`, a daily cap, action localOnly) in front
of a priced cloud simulator and a free local one; each gets open-loop traffic at a fixed rate, all of
it preferring cloud. The test measures, from what the clients saw:

- the moment the fleet's real spend crossed the cap (the cloud answer that took it over),
- when each router's own budget evaluation turned `exhausted` (decision delay),
- the overshoot: cloud spend beyond the cap, in USD and as a share of the cap,

and asserts the documented bound (docs/budgets.md): overshoot <= fleet spend rate x (scrape interval
+ evaluation interval + 1 s for the query and scheduling on a loaded machine). Then: no cloud request
after every router decided (traffic keeps flowing, served locally); Prometheus killed -> every router
keeps its decision and says so in `hybridroute_budget_prometheus_up`; a router started afterwards
(a restart) reads the same spend and routes local from its first evaluation on.

A team budget (scope namespace): two policies of one namespace reach one cap together, neither
alone; a same-named policy in another namespace, spending as fast, is not counted and keeps the cloud.

Action reject on a fleet decision: the `openai` SDK gets one 429 (`budget_exhausted`, not retried)
and a private request is still served locally.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.loadclient import PacedLoad, send
from hybridroute_router.config import RouterConfig
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.upstreams import RunningRouter, endpoint, router_config

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

ROUTERS = 3
RATE_PER_ROUTER = 6.0  # requests/s, open loop
TOKENS = 500  # prompt and completion tokens per cloud answer
PRICE_PER_M = 10.0  # USD per million tokens, both directions: 1,000 tokens cost $0.01
COST = 2 * TOKENS * PRICE_PER_M / 1_000_000
CAP_USD = 1.5
SCRAPE_S = 1.0
SLACK_S = 1.0


def budget_config(local: Any, cloud: Any, prometheus_url: str, evaluation_s: float) -> RouterConfig:
    return router_config(
        endpoint("local-a", local),
        endpoint("cloud-a", cloud, "cloud", pricing={"inputPerMTok": PRICE_PER_M, "outputPerMTok": PRICE_PER_M}),
        policy={"name": "fleet-budget", "namespace": "team-a"},
        rules=[{"name": "cloud-first", "action": {"prefer": "cloud"}}],
        budget={
            "dailyUsd": CAP_USD,
            "action": "localOnly",
            "scope": "policy",
            "prometheus": {"url": prometheus_url, "evaluationSeconds": evaluation_s, "timeoutSeconds": 2},
        },
    )


async def exhausted_at(routers: list[RunningRouter], config: RouterConfig, deadline_s: float) -> list[float]:
    """Wall-clock moment each router's fleet budget first reads exhausted (polled every 20 ms)."""
    moments: list[float | None] = [None] * len(routers)
    deadline = time.monotonic() + deadline_s
    while any(moment is None for moment in moments):
        for index, running in enumerate(routers):
            if moments[index] is None and running.app.budget_exhausted(config):
                moments[index] = time.time()
        if time.monotonic() > deadline:
            raise AssertionError(f"routers exhausted at {moments} after {deadline_s} s")
        await asyncio.sleep(0.02)
    return [moment for moment in moments if moment is not None]


async def scraped(running: RunningRouter, name: str) -> list[tuple[dict[str, str], float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{running.metrics_url}/metrics") as response:
        text = await response.text()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


@pytest.mark.parametrize("evaluation_s", [1.0, 4.0])
async def test_several_routers_hold_one_cap_within_the_documented_overshoot(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any, evaluation_s: float
) -> None:
    local = upstream_sim("local", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    cloud = upstream_sim("cloud", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    config = budget_config(local, cloud, prometheus.url, evaluation_s)
    routers: list[RunningRouter] = [router(config) for _ in range(ROUTERS)]
    prometheus.set_targets([f"127.0.0.1:{running.metrics_port}" for running in routers])
    # every router's zero-valued cost series is scraped before any spend (nothing is lost to increase())
    deadline = time.monotonic() + 30
    while len(await asyncio.to_thread(prometheus.query, 'hybridroute_cost_usd_total{namespace="team-a"}')) < ROUTERS:
        assert time.monotonic() < deadline, "Prometheus never scraped every router's cost series"
        await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        started = time.time()
        loads = [PacedLoad(session, running.url, RATE_PER_ROUTER) for running in routers]
        try:
            decided = await exhausted_at(routers, config, deadline_s=120)
            await asyncio.sleep(3)  # traffic goes on after the decision: it must all stay local
            after_all_decided = max(decided)
        finally:
            for load in loads:
                await load.stop()
        outcomes = sorted((o for load in loads for o in load.outcomes), key=lambda o: o.done)

        assert all(outcome.status == 200 for outcome in outcomes), {o.status for o in outcomes}
        cloud_answers = [o for o in outcomes if o.endpoint == "cloud-a"]
        spent = len(cloud_answers) * COST
        assert len(cloud.requests) == len(cloud_answers)
        over_cap = cloud_answers[math.ceil(CAP_USD / COST - 1e-9) - 1]
        crossed = over_cap.done
        fleet_rate = len(cloud_answers[: math.ceil(CAP_USD / COST)]) * COST / (crossed - started)
        overshoot = spent - CAP_USD
        bound = fleet_rate * (SCRAPE_S + evaluation_s + SLACK_S)
        delays = [round(moment - crossed, 2) for moment in decided]
        print(
            f"\nfleet budget: {ROUTERS} routers x {RATE_PER_ROUTER}/s, cap ${CAP_USD}, ${COST}/request, "
            f"scrape {SCRAPE_S}s, evaluation {evaluation_s}s: fleet spend rate ${fleet_rate:.3f}/s, "
            f"spent ${spent:.2f}, overshoot ${overshoot:.3f} ({100 * overshoot / CAP_USD:.1f}% of cap), "
            f"bound ${bound:.3f}, decision delays after the crossing {delays} s"
        )
        assert spent >= CAP_USD
        assert overshoot <= bound, f"overshoot ${overshoot:.3f} above the documented bound ${bound:.3f}"
        late_cloud = [o for o in cloud_answers if o.sent > after_all_decided]
        assert late_cloud == [], f"{len(late_cloud)} cloud answers after every router decided"
        served_after = [o for o in outcomes if o.sent > after_all_decided]
        assert served_after
        assert all(o.endpoint == "local-a" for o in served_after)

        # Prometheus goes away: every router keeps its decision and says so.
        prometheus.kill()
        await asyncio.sleep(3 * evaluation_s + 2 * 2)  # a few failed evaluations (2 s query timeout each)
        for running in routers:
            assert running.app.budget_exhausted(config)
            up = await scraped(running, "hybridroute_budget_prometheus_up")
            assert [value for _, value in up] == [0.0]
            state = {labels["state"]: value for labels, value in await scraped(running, "hybridroute_budget_state")}
            assert state == {"ok": 0.0, "soft": 0.0, "exhausted": 1.0}
        answer = await send(session, routers[0].url)
        assert (answer.status, answer.endpoint) == (200, "local-a")

        # A router that starts now (a restart) forgets nothing: the spend lives in Prometheus.
        prometheus.start()
        newcomer: RunningRouter = router(config)
        await exhausted_at([newcomer], config, deadline_s=30)
        assert newcomer.app.fleet_budget is not None
        assert newcomer.app.fleet_budget.status.spend is not None
        assert newcomer.app.fleet_budget.status.spend.today_usd == pytest.approx(spent, rel=0.25)
        answer = await send(session, newcomer.url)
        assert (answer.status, answer.endpoint) == (200, "local-a")
    assert len(cloud.requests) == len(cloud_answers)


async def test_a_namespace_budget_is_shared_by_the_teams_policies_and_no_one_elses(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any
) -> None:
    local = upstream_sim("local", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    cloud = upstream_sim("cloud", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    team_budget = {
        "dailyUsd": 0.5,
        "scope": "namespace",
        "prometheus": {"url": prometheus.url, "evaluationSeconds": 1, "timeoutSeconds": 2},
    }

    def serving(namespace: str, policy: str) -> RouterConfig:
        return router_config(
            endpoint("local-a", local),
            endpoint("cloud-a", cloud, "cloud", pricing={"inputPerMTok": PRICE_PER_M, "outputPerMTok": PRICE_PER_M}),
            policy={"name": policy, "namespace": namespace},
            rules=[{"name": "cloud-first", "action": {"prefer": "cloud"}}],
            budget=team_budget,
        )

    chat, search = serving("team-a", "chat"), serving("team-a", "search")
    other = serving("team-b", "chat")  # same policy name, another team: its spend is not team-a's
    routers: list[RunningRouter] = [router(chat), router(search), router(other)]
    prometheus.set_targets([f"127.0.0.1:{running.metrics_port}" for running in routers])
    deadline = time.monotonic() + 30
    while len(await asyncio.to_thread(prometheus.query, "hybridroute_cost_usd_total")) < len(routers):
        assert time.monotonic() < deadline, "Prometheus never scraped every router's cost series"
        await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        loads = [PacedLoad(session, running.url, RATE_PER_ROUTER) for running in routers]
        try:
            await exhausted_at(routers[:1], chat, deadline_s=60)
            await exhausted_at(routers[1:2], search, deadline_s=10)
        finally:
            for load in loads:
                await load.stop()
        spent = [sum(COST for o in load.outcomes if o.endpoint == "cloud-a") for load in loads[:2]]
        team_b_spent = sum(COST for o in loads[2].outcomes if o.endpoint == "cloud-a")
        # each policy alone spent less than the cap: only together did they reach it
        assert all(share < team_budget["dailyUsd"] for share in spent), spent
        assert sum(spent) >= team_budget["dailyUsd"]
        print(
            f"\nnamespace budget: team-a's two policies spent ${spent[0]:.2f} + ${spent[1]:.2f} against one $0.50 cap"
        )

        # team-b spent as fast, but under its own cap: with team-a's spend counted it would be over
        assert team_b_spent < team_budget["dailyUsd"] < team_b_spent + sum(spent)
        await asyncio.sleep(3)  # team-b's router has read the final spend
        assert not routers[2].app.budget_exhausted(other)
        answer = await send(session, routers[2].url)
        assert (answer.status, answer.endpoint) == (200, "cloud-a")
        for running in routers[:2]:
            answer = await send(session, running.url)
            assert (answer.status, answer.endpoint) == (200, "local-a")


async def test_reject_on_a_fleet_decision_answers_429_and_keeps_private_traffic_local(
    prometheus: PrometheusServer, upstream_sim: Any, router: Any
) -> None:
    local = upstream_sim("local", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    cloud = upstream_sim("cloud", prompt_tokens=TOKENS, completion_tokens=TOKENS)
    config = budget_config(local, cloud, prometheus.url, 1.0)
    config = config.model_copy(
        update={"budget": config.budget.model_copy(update={"daily_usd": 0.05, "action": "reject"})}
    )
    running: RunningRouter = router(config)
    prometheus.set_targets([f"127.0.0.1:{running.metrics_port}"])
    client = openai.AsyncOpenAI(base_url=running.base_url, api_key="client-key", max_retries=3)
    try:
        deadline = time.monotonic() + 60
        while not running.app.budget_exhausted(config):
            assert time.monotonic() < deadline, "the fleet budget never read exhausted"
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            await asyncio.sleep(0.2)
        assert running.app.fleet_budget is not None
        assert running.app.fleet_budget.status.up is True  # decided from Prometheus, not the fallback
        sent = len(cloud.requests)

        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert refused.value.code == "budget_exhausted"
        assert "policy fleet-budget reached its daily cap $0.05 ($" in refused.value.message
        private = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-hybridroute-privacy": "restricted"},
        )
        assert private.headers["x-hybridroute-endpoint"] == "local-a"
        assert len(cloud.requests) == sent  # one 429, not retried; the private request stayed local
    finally:
        await client.close()
