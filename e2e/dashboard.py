"""Live terminal summary while the demo's traffic runs, and the timeline the report plots.

Every second the monitor asks Prometheus for each endpoint's p95 (the same histogram the routers'
p95 breaker reads) and the router's /metrics for its breaker states, adds the client-side totals
(share routed local/cloud, private requests kept local, spend versus cloud-only), appends a `Sample`
to the timeline and redraws. On a terminal that is a rich table redrawn in place; elsewhere (CI, a
pipe) one plain line every few seconds.

`p95_query`, `parse_breaker_states` and the two renderers are pure; `Monitor` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from e2e.traffic import Totals, Traffic, totals


@dataclass(frozen=True)
class Sample:
    """The system as seen at one moment of the traffic run."""

    at: float
    phase: str
    concurrency: int
    p95_seconds: dict[str, float]
    """Per endpoint, from Prometheus; an endpoint without recent traffic is absent."""
    breakers: dict[str, str]
    """Per endpoint: closed, half-open or open (from the router's /metrics)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def p95_query(policy: str, window: str) -> str:
    """PromQL: p95 of upstream durations per endpoint over `window` (the p95 breaker's own histogram)."""
    selector = f'hybridroute_upstream_duration_seconds_bucket{{policy="{policy}"}}'
    return f"histogram_quantile(0.95, sum by (le, endpoint) (rate({selector}[{window}])))"


def parse_p95(answer: Mapping[str, Any]) -> dict[str, float]:
    """Prometheus' instant-query answer → {endpoint: seconds}, dropping NaN (no traffic in the window)."""
    result: dict[str, float] = {}
    for series in answer.get("data", {}).get("result", []):
        value = float(series["value"][1])
        if not math.isnan(value) and "endpoint" in series["metric"]:
            result[series["metric"]["endpoint"]] = value
    return result


def parse_breaker_states(metrics_text: str) -> dict[str, str]:
    """The router's `hybridroute_breaker_state` gauge → {endpoint: state} (the state whose value is 1)."""
    states: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "hybridroute_breaker_state":
            continue
        for sample in family.samples:
            if sample.value == 1:
                states[sample.labels["endpoint"]] = sample.labels["state"]
    return states


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def render_table(sample: Sample, done: Totals, endpoints: list[str], slo_seconds: float) -> Table:
    """The live view: one row per endpoint, totals in the caption."""
    table = Table(
        title=f"hybridroute demo  t={sample.at:5.0f} s  phase={sample.phase}  clients={sample.concurrency}",
        caption=(
            f"requests {done.requests}  failed {done.failed}  spilled {done.spilled}  private {done.private} "
            f"(not local: {done.private_not_local})  cloud spend ${done.spend_usd:.4f} "
            f"vs cloud-only ${done.cloud_only_usd:.4f}"
        ),
    )
    for column in ("endpoint", "share", "served", f"p95 (SLO {_ms(slo_seconds)})", "breaker"):
        table.add_column(column)
    for endpoint in endpoints:
        p95 = sample.p95_seconds.get(endpoint)
        p95_text = _ms(p95) if p95 is None or p95 <= slo_seconds else f"[red]{_ms(p95)}[/red]"
        state = sample.breakers.get(endpoint, "?")
        colour = {"closed": "green", "half-open": "yellow", "open": "red"}.get(state, "white")
        table.add_row(
            endpoint,
            f"{done.share(endpoint):.0%}",
            str(done.served.get(endpoint, 0)),
            p95_text,
            f"[{colour}]{state}[/{colour}]",
        )
    return table


def render_line(sample: Sample, done: Totals, endpoints: list[str]) -> str:
    """The same content as one plain line, for logs and CI."""
    parts = [
        f"{endpoint}: {done.share(endpoint):.0%} p95={_ms(sample.p95_seconds.get(endpoint))} "
        f"breaker={sample.breakers.get(endpoint, '?')}"
        for endpoint in endpoints
    ]
    return (
        f"[demo] t={sample.at:4.0f}s {sample.phase:<9} clients={sample.concurrency:<2} "
        f"reqs={done.requests} failed={done.failed} spilled={done.spilled} | {' | '.join(parts)} | "
        f"private not local={done.private_not_local} | spend ${done.spend_usd:.4f} vs cloud-only "
        f"${done.cloud_only_usd:.4f}"
    )


@dataclass
class Monitor:
    """Samples Prometheus and the router once per `interval` while `traffic` runs, and shows it."""

    traffic: Traffic
    prometheus_url: str
    router_metrics_url: str
    """The router's operations listener (its /metrics), not its API."""
    policy: str
    local_endpoint: str
    endpoints: list[str]
    slo_seconds: float
    window: str = "15s"
    interval: float = 1.0
    line_every: float = 5.0
    console: Console | None = None
    on_sample: Callable[[Sample], object] | None = None

    async def run_until(self, finished: asyncio.Event) -> list[Sample]:
        """Sample until `finished` is set; return the timeline."""
        console = self.console or Console(stderr=True)
        timeline: list[Sample] = []
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.interval * 0.9))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None
            last_line = -math.inf
            if live is not None:
                live.start()
            try:
                while not finished.is_set():
                    sample = await self.sample(session)
                    timeline.append(sample)
                    if self.on_sample is not None:
                        self.on_sample(sample)
                    done = totals(self.traffic.records, self.local_endpoint)
                    if live is not None:
                        live.update(render_table(sample, done, self.endpoints, self.slo_seconds))
                    elif sample.at - last_line >= self.line_every:
                        console.print(
                            render_line(sample, done, self.endpoints), markup=False, highlight=False, soft_wrap=True
                        )
                        last_line = sample.at
                    with contextlib.suppress(TimeoutError):  # the interval passed: sample again
                        await asyncio.wait_for(finished.wait(), timeout=self.interval)
            finally:
                if live is not None:
                    live.stop()
        return timeline

    async def sample(self, session: aiohttp.ClientSession) -> Sample:
        p95, breakers = await asyncio.gather(self._p95(session), self._breakers(session))
        phase = self.traffic.phase
        return Sample(
            at=self.traffic.elapsed(),
            phase=phase.name if phase else "-",
            concurrency=phase.concurrency if phase else 0,
            p95_seconds=p95,
            breakers=breakers,
        )

    async def _p95(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """Unknown (Prometheus slow or down) is an empty answer, shown as '-', never as zero."""
        params = {"query": p95_query(self.policy, self.window)}
        try:
            async with session.get(f"{self.prometheus_url}/api/v1/query", params=params) as response:
                return parse_p95(orjson.loads(await response.read()))
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return {}

    async def _breakers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        try:
            async with session.get(f"{self.router_metrics_url}/metrics") as response:
                return parse_breaker_states(await response.text())
        except (aiohttp.ClientError, TimeoutError):
            return {}
