"""kopf handlers, one module per kind, plus the wake-up plumbing their reconcilers share.

Each InferenceEndpoint and RoutingPolicy gets one level-based reconciler (a kopf daemon): it looks
at the whole current state, converges it, and sleeps until a watch event rings its doorbell or the
resync period passes. Event handlers only ring doorbells, so there is exactly one code path per
kind and nothing depends on seeing every intermediate change.

No finalizer: kopf puts one on every object that has a daemon, so that it can stop the daemon before
the object goes. The operator has no external cleanup to do (children go with their ownerReferences),
and a finalizer would make deleting an object, or its namespace, hang whenever the operator is not
running (uninstalled with the CRDs kept, scaled down, crash-looping). `release_daemons_from_finalizer`
drops that requirement (kopf then also removes the finalizer an older operator put on an object), and
the DELETED watch event stops the object's reconciler instead (`Doorbells.gone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import kopf

ObjectKey = tuple[str, str]
"""(namespace, name)"""


class Doorbells:
    """Wake-up events for the reconcilers of one kind, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._bells: dict[ObjectKey, asyncio.Event] = {}
        self._gone: dict[ObjectKey, str] = {}
        """uid of the object last deleted under each key (a new object of that name has another uid)"""

    def gone(self, key: ObjectKey, uid: str) -> None:
        """The object `uid` was deleted: its reconciler stops at its next wake-up, which this is."""
        self._gone[key] = uid
        self.ring(key)

    def is_gone(self, key: ObjectKey, uid: str) -> bool:
        return self._gone.get(key) == uid

    @contextlib.contextmanager
    def installed(self, key: ObjectKey) -> Iterator[asyncio.Event]:
        bell = self._bells[key] = asyncio.Event()  # the newest reconciler of a name gets the rings
        try:
            yield bell
        finally:
            if self._bells.get(key) is bell:  # not a successor's (a new object of the same name)
                del self._bells[key]

    def ring(self, key: ObjectKey) -> None:
        bell = self._bells.get(key)
        if bell is not None:
            bell.set()

    def ring_namespace(self, namespace: str) -> None:
        for (bell_namespace, _), bell in self._bells.items():
            if bell_namespace == namespace:
                bell.set()


def release_daemons_from_finalizer(registry: kopf.OperatorRegistry | None = None) -> None:
    """Let kopf run our daemons without putting its finalizer on the objects (see the docstring).

    kopf hard-codes `requires_finalizer=True` for daemons and has no public switch, so the registered
    handlers are replaced by copies without it; tests/test_operator_ownership.py proves kopf honours it.
    """
    spawning = (registry or kopf.get_default_registry())._spawning
    spawning._handlers = [dataclasses.replace(handler, requires_finalizer=False) for handler in spawning._handlers]


class SecretUsers:
    """Which endpoint references which Secret, so an event wakes exactly those endpoints."""

    def __init__(self) -> None:
        self._secret_of: dict[ObjectKey, str] = {}

    def uses(self, endpoint: ObjectKey, secret: str) -> None:
        self._secret_of[endpoint] = secret

    def forget(self, endpoint: ObjectKey) -> None:
        self._secret_of.pop(endpoint, None)

    def of(self, namespace: str, secret: str) -> list[ObjectKey]:
        return [key for key, name in self._secret_of.items() if key[0] == namespace and name == secret]


async def reconcile_until_stopped(
    reconcile: Callable[[], Awaitable[None]],
    *,
    bell: asyncio.Event,
    stopped: Any,
    gone: Callable[[], bool] = lambda: False,
    resync_seconds: float | Callable[[], float],
    error_backoff_seconds: float,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Run `reconcile` now, again whenever `bell` rings, and at least every `resync_seconds` (a number,
    or a function asked before each pass: the object may change what it needs), until
    kopf stops the daemon or the object is `gone` (deleted: no finalizer makes kopf wait for us).

    A failure is logged and retried with exponential backoff capped at the resync period; the loop
    itself never dies from a reconcile error.
    """
    failures = 0
    while not stopped and not gone():
        resync = resync_seconds() if callable(resync_seconds) else resync_seconds
        bell.clear()  # cleared before reconciling: a ring during the reconcile is not lost
        try:
            await reconcile()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            delay = min(resync, error_backoff_seconds * 2 ** (failures - 1))
            logger.exception("reconcile failed (attempt %d); retrying in %.1fs", failures, delay)
        else:
            failures = 0
            delay = resync
        await _sleep_until_rung(bell, stopped, delay)


async def _sleep_until_rung(bell: asyncio.Event, stopped: Any, seconds: float) -> None:
    waiters = {asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
