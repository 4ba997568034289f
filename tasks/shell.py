"""The one runner of local commands (ssh), always with a timeout.

Commands run as argv lists through :mod:`subprocess`, with no local shell,
rather than through invoke's ``c.run``/``c.local``: invoke's runner feeds
stdin in small chunks with 10 ms sleeps (measured: 19 s to send a 3 KB remote
script) and adds about 0.1 s to every call.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import Cancelled, CommandTimeout, TbError

#: Default seconds for an ssh call that rides a live master or only talks
#: to it (the ``command_timeout`` setting).
QUICK_TIMEOUT = 10.0


def require_multiplexing(platform: Optional[str] = None) -> None:
    """Refuse native Windows (``sys.platform`` unless ``platform`` is given):
    every step rides one OpenSSH ControlMaster, and Windows' own OpenSSH has
    none. WSL is Linux, and its OpenSSH has one."""
    if (platform or sys.platform) == "win32":
        raise TbError(
            "native Windows is not supported: its OpenSSH cannot share one connection "
            "(no ControlMaster; Win32-OpenSSH issue #1328): run tensorboard-remote in WSL "
            "(wsl --install, then pip install tensorboard-remote there)"
        )


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, stripped ("" if none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class Outcome:
    """What a finished command left: its exit status and output."""

    code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def reason(self) -> str:
        """One line that says why it failed: the last line of its stderr,
        else its exit status."""
        return last_line(self.stderr) or f"exit status {self.code}"


class Shell:
    """Runs argv with a timeout; ``verbose`` prints each command, ready to
    paste, on stderr."""

    def __init__(self, *, verbose: bool = False, quick: float = QUICK_TIMEOUT) -> None:
        self.verbose = verbose
        #: Timeout of steps that should be quick (a stale socket can hang ssh).
        self.quick = quick
        # The commands running now, for cancel() (a watcher being stopped).
        self._running: set[subprocess.Popen] = set()
        # Those started as a process group of their own (rsync and the ssh
        # it starts): killed as a group, or its ssh child would hold our
        # pipes open after rsync died.
        self._groups: set[int] = set()
        self._guard = threading.Lock()
        self._cancelled = False

    def cancel(self) -> None:
        """Kill every command running now, and refuse new ones (the session
        is being stopped while a reconnect is in flight)."""
        with self._guard:
            self._cancelled = True
            running = list(self._running)
        for proc in running:
            self._kill(proc)

    def _kill(self, proc: subprocess.Popen) -> None:
        if proc.pid in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def _spawn(self, argv: list[str], group: bool = False, **kwargs) -> subprocess.Popen:
        with self._guard:
            if self._cancelled:
                raise Cancelled("cancelled: the session is being stopped")
            proc = subprocess.Popen(argv, start_new_session=group, **kwargs)
            self._running.add(proc)
            if group:
                self._groups.add(proc.pid)
        return proc

    def _finish(self, proc: subprocess.Popen, stdin: Optional[str], timeout: float, what: str) -> tuple[str, str]:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            # wait, never read on: a mux client (-S) passed its pipes to the
            # master, which keeps them open after the client is killed.
            self._kill(proc)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            raise CommandTimeout(f"{what} did not finish within {timeout:g}s") from None
        except BaseException:
            # Ctrl-C: a process group of its own did not get the SIGINT.
            self._kill(proc)
            raise
        finally:
            with self._guard:
                self._running.discard(proc)
                self._groups.discard(proc.pid)
        if self._cancelled:
            raise Cancelled("cancelled: the session is being stopped")
        return out or "", err or ""

    def _show(self, argv: list[str], log: Optional[Path] = None) -> None:
        if self.verbose:
            shown = shlex.join(argv) + (f" 2>>{shlex.quote(str(log))}" if log else "")
            print(f"+ {shown}", file=sys.stderr, flush=True)

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        stdin: Optional[str] = None,
        log: Optional[Path] = None,
        what: str = "ssh",
        group: bool = False,
    ) -> Outcome:
        """Run ``argv``; with ``log``, stdout goes nowhere and stderr to that
        file (a forking ssh master must never hold a pipe we wait on). With
        ``group``, in a process group of its own, killed whole on a timeout
        or cancel (rsync and its ssh); only for commands that never prompt."""
        self._show(argv, log)
        try:
            if log is not None:
                with open(log, "ab") as err:
                    proc = self._spawn(argv, group, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
                self._finish(proc, None, timeout, what)
                return Outcome(proc.returncode)
            proc = self._spawn(
                argv, group, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            out, err_text = self._finish(proc, stdin if stdin is not None else "", timeout, what)
        except FileNotFoundError:
            raise TbError(f"{argv[0]!r} not found: install the OpenSSH client") from None
        return Outcome(proc.returncode, out, err_text)

    @contextlib.contextmanager
    def process(self, argv: list[str], *, what: str = "ssh") -> Iterator[tuple[subprocess.Popen, Callable[[], str]]]:
        """Run ``argv`` with binary pipes for the caller to drive (a sync
        stream), and a function that gives its stderr's last line. It is
        killed on the way out if still running, and by :meth:`cancel`."""
        self._show(argv)
        errors = tempfile.TemporaryFile()
        try:
            proc = self._spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        except FileNotFoundError:
            errors.close()
            raise TbError(f"{argv[0]!r} not found: install the OpenSSH client") from None

        def said() -> str:
            errors.seek(0)
            return last_line(errors.read().decode(errors="replace"))

        try:
            yield proc, said
        except TbError:
            # The caller's reading failed because cancel() killed the command
            # (a stream cut short): that is a cancel, not a failure of the host.
            if self._cancelled:
                raise Cancelled("cancelled: the session is being stopped") from None
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            errors.close()
            with self._guard:
                self._running.discard(proc)
        if self._cancelled:
            raise Cancelled("cancelled: the session is being stopped")

    def stream(self, argv: list[str], *, stdin: str, timeout: Optional[float], what: str = "ssh") -> int:
        """Run ``argv`` with its output going straight to ours; its exit
        status (130 after Ctrl-C). ``timeout`` None: until it ends."""
        self._show(argv)
        try:
            completed = subprocess.run(argv, input=stdin, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(f"{what} did not finish within {timeout:g}s") from None
        except KeyboardInterrupt:
            return 130
        return completed.returncode
