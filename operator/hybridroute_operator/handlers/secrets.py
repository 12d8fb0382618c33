"""Wakes a cloud endpoint when its API-key Secret appears, changes or goes, instead of at the next resync.

One metadata-only watch of Secrets per namespace that has a cloud endpoint (`Cluster.secret_names`),
started by the endpoint reconciler the first time it checks a Secret there. An event for a Secret
some endpoint references rings that endpoint's doorbell, and its reconciler checks the Secret again,
so a Secret created after its endpoint turns it Ready within a second, not after the resync period.

The watches run in threads of their own: the `kubernetes` client is synchronous and a watch blocks
for minutes, which would starve the small pool `asyncio.to_thread` shares with every API call.
Where the operator may not list Secrets (403: the chart grants Secrets namespace by namespace), the
watch retries after `retry_seconds`, doubling up to ten minutes, so a grant added later (a
RoleBinding in that namespace) is picked up without a restart; meanwhile the endpoint reconciler's
own check (every resync) already sees the grant, and the endpoint reports SecretNotChecked until then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import kopf
import kubernetes

from hybridroute_operator.apply import Cluster
from hybridroute_operator.settings import state_of

log = logging.getLogger("hybridroute.operator.secrets")
MAX_RETRY_SECONDS = 600.0


class SecretWatches:
    """Per-namespace Secret watches; `wake(namespace, secret)` runs on the event loop for each event."""

    def __init__(
        self,
        cluster: Cluster,
        loop: asyncio.AbstractEventLoop,
        wake: Callable[[str, str], None],
        *,
        watch_seconds: int = 300,
        retry_seconds: float = 60.0,
    ) -> None:
        self._cluster = cluster
        self._loop = loop
        self._wake = wake
        self._watch_seconds = watch_seconds
        self._retry_seconds = retry_seconds
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()

    def ensure(self, namespace: str) -> None:
        """Watch `namespace` from now on (idempotent)."""
        if namespace in self._threads or self._stopping.is_set():
            return
        thread = threading.Thread(target=self._run, args=(namespace,), name=f"secret-watch-{namespace}", daemon=True)
        self._threads[namespace] = thread
        thread.start()

    def stop(self) -> None:
        """Stop every watch at its next event or expiry (threads are daemons: exit never waits)."""
        self._stopping.set()

    def _run(self, namespace: str) -> None:
        forbidden = 0  # consecutive 403s: said once, then retried less and less often
        while not self._stopping.is_set():
            try:
                for name in self._cluster.secret_names(namespace, watch_seconds=self._watch_seconds):
                    forbidden = 0
                    if self._stopping.is_set():
                        return
                    self._loop.call_soon_threadsafe(self._wake, namespace, name)
                continue
            except kubernetes.client.ApiException as exc:
                if exc.status == 403:
                    forbidden += 1
                    if forbidden == 1:
                        log.info("no access to Secrets in %s: endpoints there report SecretNotChecked", namespace)
                else:
                    log.warning("Secret watch in %s failed (HTTP %s); retrying", namespace, exc.status)
            except Exception as exc:  # a dropped connection must not end the watch for good
                log.warning("Secret watch in %s failed (%s); retrying", namespace, type(exc).__name__)
            self._stopping.wait(min(MAX_RETRY_SECONDS, self._retry_seconds * 2 ** max(0, forbidden - 1)))


@kopf.on.startup()
async def start_secret_watches(memo: Any, **_: Any) -> None:
    state = state_of(memo)

    def wake(namespace: str, secret: str) -> None:
        for key in state.secret_users.of(namespace, secret):
            state.endpoint_doorbells.ring(key)

    state.secret_watches = SecretWatches(state.cluster, asyncio.get_running_loop(), wake)


@kopf.on.cleanup()
async def stop_secret_watches(memo: Any, **_: Any) -> None:
    watches = getattr(getattr(memo, "hybridroute", None), "secret_watches", None)
    if watches is not None:
        watches.stop()
