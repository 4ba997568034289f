"""The tests' one reader of ``/proc``: pids, stat fields, command lines,
environments, owners, sockets and process trees.

Every reader returns an empty value (or ``None``) for a process that is
gone or unreadable, so a scan over :func:`pids` never trips on a process
that exits under it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Optional

PROC = Path("/proc")


def pids() -> list[int]:
    """Every process id there is now."""
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` from field 3 (state) on: ``stat(pid)[0]`` is the
    state, ``[1]`` the parent's pid, ``[19]`` the start time (field 22).
    The command name (field 2) is skipped: it may hold spaces and ")"."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()


def state(pid: int) -> Optional[str]:
    """One letter (R, S, Z, ...), or None for a process that is gone."""
    fields = stat(pid)
    return fields[0] if fields else None


def starttime(pid: int) -> str:
    """Field 22: when the process started, in clock ticks after boot."""
    return stat(pid)[19]


def alive(pid: int) -> bool:
    """Alive and not a zombie."""
    return state(pid) not in (None, "Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def cmdline(pid: int) -> str:
    """The command line, its words joined by spaces ("" if gone)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def environ(pid: int) -> dict[str, str]:
    """The environment the process started with ({} if gone or not ours to read)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def uid(pid: int) -> int:
    """The owner of the process."""
    return (PROC / str(pid)).stat().st_uid


def ours(marker: str) -> list[tuple[int, str]]:
    """Live processes (not this one) whose command line mentions ``marker``
    (a test directory), with their command lines."""
    found = []
    for pid in pids():
        if pid == os.getpid():
            continue
        line = cmdline(pid)
        if marker in line and alive(pid):
            found.append((pid, line))
    return found


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for child in pids():
        fields = stat(child)
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets the process holds open."""
    inodes = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def listening_tcp_inodes() -> set[str]:
    """Inodes of TCP sockets listening in this (the host's) network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


@contextlib.contextmanager
def frozen(pids: list[int]):
    """SIGSTOP ``pids`` (a link or a TensorBoard that stopped answering), SIGCONT on the way out."""
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
