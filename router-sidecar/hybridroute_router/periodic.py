"""The loop every Prometheus reader runs: one pass per interval, forever, surviving its own bugs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

FALLBACK_INTERVAL_S: Final = 15.0
"""The pause after a pass whose interval could not be read (a bug reading the config)."""


async def run_every(step: Callable[[], Awaitable[object]], interval: Callable[[], float], what: str) -> None:
    """Await `step` once per `interval()` seconds (read each time: configs change) until cancelled.

    An exception from `step`, or from `interval`, is logged as "`what` failed" and the loop goes on
    (after `FALLBACK_INTERVAL_S` when the interval itself failed): a bug in one reading must not stop
    the loop that keeps breakers, budgets or saturation data current.
    """
    log = logging.getLogger("hybridroute.router.periodic")
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        try:
            pause = float(interval())
        except Exception:
            log.exception("%s failed (its interval)", what)
            pause = FALLBACK_INTERVAL_S
        if not pause > 0:  # NaN or not positive: never spin
            pause = FALLBACK_INTERVAL_S
        await asyncio.sleep(max(0.0, pause - (loop.time() - started)))
