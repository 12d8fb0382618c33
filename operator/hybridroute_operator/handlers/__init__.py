"""kopf handlers, one module per kind, plus the wake-up plumbing their reconcilers share.

Each InferenceEndpoint and RoutingPolicy gets one level-based reconciler (a kopf daemon): it looks
at the whole current state, converges it, and sleeps until a watch event rings its doorbell or the
resync period passes. Event handlers only ring doorbells, so there is exactly one code path per
kind and nothing depends on seeing every intermediate change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

ObjectKey = tuple[str, str]
"""(namespace, name)"""


class Doorbells:
    """Wake-up events for the reconcilers of one kind, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._bells: dict[ObjectKey, asyncio.Event] = {}

    @contextlib.contextmanager
    def installed(self, key: ObjectKey) -> Iterator[asyncio.Event]:
        bell = self._bells.setdefault(key, asyncio.Event())
        try:
            yield bell
        finally:
            self._bells.pop(key, None)

    def ring(self, key: ObjectKey) -> None:
        bell = self._bells.get(key)
        if bell is not None:
            bell.set()

    def ring_name(self, name: str) -> None:
        """Wake every object with this name, whatever its namespace."""
        for (_, bell_name), bell in self._bells.items():
            if bell_name == name:
                bell.set()

    def ring_namespace(self, namespace: str) -> None:
        for (bell_namespace, _), bell in self._bells.items():
            if bell_namespace == namespace:
                bell.set()


async def reconcile_until_stopped(
    reconcile: Callable[[], Awaitable[None]],
    *,
    bell: asyncio.Event,
    stopped: Any,
    resync_seconds: float,
    error_backoff_seconds: float,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Run `reconcile` now, again whenever `bell` rings, and at least every `resync_seconds`.

    A failure is logged and retried with exponential backoff capped at the resync period; the loop
    itself never dies from a reconcile error.
    """
    failures = 0
    while not stopped:
        bell.clear()  # cleared before reconciling: a ring during the reconcile is not lost
        try:
            await reconcile()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            delay = min(resync_seconds, error_backoff_seconds * 2 ** (failures - 1))
            logger.exception("reconcile failed (attempt %d); retrying in %.1fs", failures, delay)
        else:
            failures = 0
            delay = resync_seconds
        await _sleep_until_rung(bell, stopped, delay)


async def _sleep_until_rung(bell: asyncio.Event, stopped: Any, seconds: float) -> None:
    waiters = {asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
