"""The session's watcher as the tasks see it: start one, ask it, stop it.

A watched session (the ``reconnect`` setting) has one small process here,
``watcher.py``, that owns the local port for the life of the session. This
module is the tasks' side of it: binding the port and handing it over,
recognising the process later (its pid with its start time, so a reused pid
is never taken for it), and talking to it over its control socket (one line
in, one JSON line out: ``status``, ``probe`` or ``stop``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .errors import TbError
from .record import WatcherRef
from .state import Paths

#: Seconds a task waits for the watcher's answer to ``status``.
ASK_TIMEOUT = 1.0
#: Seconds ``stop`` waits for a watcher to cancel what it is doing and go.
STOP_TIMEOUT = 10.0


def identity(pid: int) -> Optional[str]:
    """What tells this process from a later one with the same pid: its start
    time since boot and the boot's id (Linux), or ``ps``'s start time
    (macOS). None: no such process."""
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        if not fields or fields[0] == "Z":
            return None  # a zombie is not alive
        return f"{fields[19]}@{boot}"
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.strip() or None


def is_self(ref: Optional[WatcherRef]) -> bool:
    """Is this process the recorded watcher (repairing its own session)?"""
    return ref is not None and ref.pid == os.getpid()


def alive(ref: Optional[WatcherRef]) -> bool:
    """Is the recorded watcher still the process we started?"""
    if ref is None:
        return False
    if is_self(ref):
        return True
    return identity(ref.pid) == ref.since


def bind(port: int) -> socket.socket:
    """Listen on 127.0.0.1:``port`` (with ``SO_REUSEADDR``, as ssh's ``-L``
    does: a port with only TIME_WAIT sockets is free), for a watcher to own."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            raise TbError(
                f"cannot listen on local port {port} ({error.strerror}): it is probably in use; "
                f"choose another with --local-port"
            ) from None
        raise
    return listener


def spawn(paths: Paths, listener: socket.socket, spec: dict[str, Any], module: str = "watcher") -> WatcherRef:
    """Start the session's watcher, detached (its own session, no terminal),
    with ``listener`` and its instructions (``spec``, on its stdin: never in
    its command line). Our copy of the listener is closed. ``module``:
    ``watcher`` (a session's) or ``syncer`` (a merged view's)."""
    package = __name__.rpartition(".")[0]
    parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TBR_WATCH_FD"] = str(listener.fileno())
    fd = os.open(paths.watch_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            # The control socket's path in the command line lets a person
            # (and the test suite) tell which session a watcher belongs to.
            [sys.executable, "-m", f"{package}.{module}", str(paths.socket)],
            stdin=subprocess.PIPE, stdout=fd, stderr=fd, pass_fds=(listener.fileno(),),
            start_new_session=True, cwd="/", env=env,
        )
    finally:
        os.close(fd)
        listener.close()
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
    since = identity(proc.pid)
    if since is None:
        raise TbError(f"the {module} exited at once: see {paths.watch_log}")
    return WatcherRef(proc.pid, since)


def ask(paths: Paths, command: str, timeout: float = ASK_TIMEOUT) -> Optional[dict[str, Any]]:
    """The watcher's answer to ``command``; None if it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(paths.control))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def stop(paths: Paths, ref: Optional[WatcherRef]) -> bool:
    """Stop the session's watcher (it cancels a reconnect in flight and
    releases the port); whether one was running. A watcher that does not
    answer is signalled, only if it is provably the one we started."""
    answered = ask(paths, "stop", timeout=STOP_TIMEOUT) is not None
    running = alive(ref) and not is_self(ref)
    if running and not answered and ref is not None:
        for number in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(ref.pid, number)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running and alive(ref) and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(FileNotFoundError):
        paths.control.unlink()
    return answered or running
