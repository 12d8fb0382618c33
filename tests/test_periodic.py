"""periodic.run_every: no error in a pass, nor in reading its interval, ends the loop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hybridroute_router import periodic


async def test_a_failing_step_or_interval_never_ends_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(periodic, "FALLBACK_INTERVAL_S", 0.01)
    passes: list[int] = []
    intervals = iter([ValueError("no config yet"), float("nan"), -1.0, 0.01])

    async def step() -> None:
        passes.append(len(passes))
        if len(passes) % 2:
            raise RuntimeError("a bug in one reading")

    def interval() -> float:
        value = next(intervals, 0.01)
        if isinstance(value, Exception):
            raise value
        return value

    task = asyncio.create_task(periodic.run_every(step, interval, "test loop"))
    for _ in range(500):
        if len(passes) >= 6:
            break
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert len(passes) >= 6
