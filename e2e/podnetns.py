"""Run a coroutine from the host with its sockets inside a pod's network namespace.

`make demo` drives its traffic through the app pod's injected router, which listens on the pod's
loopback only. Rather than ship the load generator into the app image and stream its records back,
the demo runs it here, on an event loop of its own in a thread that has joined the pod's network
namespace (setns(2) moves only the calling thread): every socket that loop opens is the app pod's,
so `http://127.0.0.1:8040/v1` is the sidecar exactly as the app container sees it, while the rest of
the process (the live view, Prometheus on the host) stays in the host's namespace and reads the same
in-memory records.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def netns_of(pid: int) -> Path:
    """The network namespace of process `pid` (any process of a pod has the pod's)."""
    return Path(f"/proc/{pid}/ns/net")


def _join(netns: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(netns, os.O_RDONLY)
    try:
        if libc.setns(descriptor, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({netns}): {os.strerror(error)}")
    finally:
        os.close(descriptor)


async def run_in(netns: Path, coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Await `coroutine()` run on its own event loop in a thread that joined `netns` first."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if outcome.done():
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]  # None only with an error

    def inside() -> None:
        try:
            _join(netns)
            result = asyncio.run(coroutine())
        except BaseException as exc:  # handed to the awaiting loop, which re-raises it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=inside, name=f"netns:{netns}", daemon=True).start()
    return await outcome
