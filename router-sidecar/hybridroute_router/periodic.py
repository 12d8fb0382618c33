"""The loop every Prometheus reader runs: one pass per interval, forever, surviving its own bugs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def run_every(step: Callable[[], Awaitable[object]], interval: Callable[[], float], what: str) -> None:
    """Await `step` once per `interval()` seconds (read each time: configs change) until cancelled.

    An exception from `step` is logged as "`what` failed" and the loop goes on: a bug in one reading
    must not stop the loop that keeps breakers, budgets or saturation data current.
    """
    log = logging.getLogger("hybridroute.router.periodic")
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(max(0.0, interval() - (loop.time() - started)))
