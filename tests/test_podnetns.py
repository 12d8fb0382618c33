"""e2e/podnetns.py: a coroutine's sockets open in another network namespace, the caller's stay put."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import podnetns


@pytest.fixture
def fresh_netns() -> Iterator[Path]:
    """A process in a network namespace of its own (only a loopback interface, down); its netns path."""
    with subprocess.Popen(["unshare", "--net", "sleep", "60"]) as holder:
        try:
            path = podnetns.netns_of(holder.pid)
            host = os.readlink("/proc/self/ns/net")  # "net:[inode]": the namespace's identity
            deadline = time.monotonic() + 30
            while os.readlink(path) == host:  # until unshare(2) has run in the child
                assert time.monotonic() < deadline, "unshare --net never left the host's network namespace"
                time.sleep(0.05)
            yield path
        finally:
            holder.kill()


def test_coroutine_sees_the_namespace_interfaces_and_the_caller_keeps_its_own(fresh_netns: Path) -> None:
    async def interfaces() -> list[str]:
        return [name for _, name in socket.if_nameindex()]

    async def both() -> tuple[list[str], list[str]]:
        inside = await podnetns.run_in(fresh_netns, interfaces)
        return inside, await interfaces()

    inside, outside = asyncio.run(both())

    assert inside == ["lo"]
    assert outside != ["lo"]


def test_an_error_inside_reaches_the_caller(fresh_netns: Path) -> None:
    async def refused() -> None:
        # The namespace's loopback is down: nothing, not even 127.0.0.1, can be reached from there.
        await asyncio.open_connection("127.0.0.1", 9)

    with pytest.raises(OSError, match="unreachable"):
        asyncio.run(podnetns.run_in(fresh_netns, refused))
