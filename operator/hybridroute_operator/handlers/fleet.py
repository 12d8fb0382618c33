"""Fleet poller: reads endpoints' p95 and circuit from Prometheus and wakes their reconcilers.

Runs only when a Prometheus URL is configured (`--prometheus-url`). It never writes status itself:
it updates the shared view and rings the doorbell of each endpoint whose view changed meaningfully,
so the endpoint reconciler stays the one code path that writes InferenceEndpoint status. When
Prometheus cannot be read the previous view stays (unknown data changes nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import kopf

from hybridroute_operator import fleet
from hybridroute_operator.settings import OperatorState, state_of

log = logging.getLogger("hybridroute.operator.fleet")


def merge_view(state: OperatorState, view: dict[fleet.EndpointKey, fleet.FleetObservation]) -> list[fleet.EndpointKey]:
    """Fold a fresh view into the shared one; return the keys whose status should change.

    A p95 that vanished (no traffic in the window) keeps its last known value: absence of data is not
    a latency. Circuit summaries always follow the routers.
    """
    changed = []
    for key, new in view.items():
        old = state.fleet.get(key)
        if new.latency_p95_ms is None and old is not None:
            new = fleet.FleetObservation(old.latency_p95_ms, new.circuit)
        if fleet.meaningful_change(old, new):
            state.fleet[key] = new
            changed.append(key)
    return changed


async def poll(state: OperatorState, prometheus_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                view = await fleet.query_fleet(
                    session, prometheus_url, timeout_seconds=state.tuning.probe_timeout_seconds
                )
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("prometheus unreadable, keeping the last fleet view: %s", type(exc).__name__)
            else:
                for key in merge_view(state, view):
                    state.endpoint_doorbells.ring(key)
            await asyncio.sleep(state.tuning.fleet_interval_seconds)


@kopf.on.startup()
async def start_fleet_poller(memo: Any, **_: Any) -> None:
    state = state_of(memo)
    if state.tuning.prometheus_url:
        state.fleet_task = asyncio.create_task(poll(state, state.tuning.prometheus_url), name="fleet-poller")


@kopf.on.cleanup()
async def stop_fleet_poller(memo: Any, **_: Any) -> None:
    task = getattr(memo, "hybridroute", None) and memo.hybridroute.fleet_task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
