"""Detached background processes tracked by pid files, so a later command can stop what an earlier one started.

The local control plane and the demo both start long-running daemons from one command (`start`, `up`)
and stop them from another (`stop`, `down`), possibly from another Python process. Each daemon gets
its own session (a Ctrl-C in the starting shell does not reach it), its output in DIR/logs/NAME.log
and its pid in DIR/NAME.pid. Before signalling a pid, its command line is checked against the one
recorded at start, so a recycled pid that now belongs to somebody else is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Zombies (exited, not yet reaped) count as gone: they hold no port, file or CPU.
_GONE_STATES = frozenset("ZX")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pidfile(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def _cmdline(pid: int) -> list[str] | None:
    """The argv of `pid`, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    if stat.rsplit(")", 1)[1].split()[0] in _GONE_STATES:
        return None
    return [part.decode() for part in raw.split(b"\0") if part]


# Daemons this interpreter started. Holding the Popen objects lets `stop` reap them (no zombies) and
# keeps Popen.__del__ from warning that a child is "still running", which is the point of a daemon.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def spawn(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    wrapper: Sequence[str] = (),
) -> int:
    """Start `argv` detached with output in state_dir/logs/NAME.log; record and return its pid.

    `wrapper` goes in front of `argv` and must exec it (`nsenter ... --`): the pid is then argv's,
    and argv alone is recorded, since that is the command line the process ends up with.
    """
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            [*wrapper, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    _pidfile(state_dir, name).write_text(json.dumps({"pid": proc.pid, "argv": list(argv)}))
    return proc.pid


def running_pid(state_dir: Path, name: str) -> int | None:
    """The pid of NAME if it is still the process we started, else None."""
    pidfile = _pidfile(state_dir, name)
    if not pidfile.is_file():
        return None
    record = json.loads(pidfile.read_text())
    pid = int(record["pid"])
    child = _children.get(pid)
    if child is not None:  # started by this interpreter: its Popen knows for sure
        return pid if child.poll() is None else None
    argv: list[str] = record["argv"]
    cmdline = _cmdline(pid)
    # A suffix match: for a `#!` script the kernel puts the interpreter in front of the recorded argv.
    return pid if cmdline is not None and cmdline[-len(argv) :] == argv else None


def is_alive(pid: int) -> bool:
    """Whether `pid` is running (not exited, not a zombie)."""
    _reap(pid)
    return _cmdline(pid) is not None


def stop(state_dir: Path, name: str, grace_seconds: float = 10.0) -> None:
    """SIGTERM NAME, SIGKILL it after `grace_seconds`, and return only once it is gone."""
    pid = running_pid(state_dir, name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while is_alive(pid):
                time.sleep(0.05)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()  # it has exited (seen above); this collects the status the poll may have missed
    _pidfile(state_dir, name).unlink(missing_ok=True)


def log_tail(state_dir: Path, name: str, chars: int = 3000) -> str:
    """The end of NAME's log, for error messages that say why a daemon did not come up."""
    log = state_dir / "logs" / f"{name}.log"
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"
