"""One host as we reach it: our OpenSSH master to it and what rides on it.

A :class:`Host` is the shell that runs ssh, the :class:`Target` (how OpenSSH
is to reach the host) and the :class:`Paths` of our control socket and
files. Everything that talks to the host goes through it: the master's
state, opening, closing and dropping it, forwards, remote scripts, the
remote log and the link probe. Which argv each step runs is
``sshargv.py``'s; what the scripts say is ``remote.py``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import time
from pathlib import Path
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from . import remote, sshargv, state
from .errors import Cancelled, CommandTimeout, HostKeyRefused, LoginNeeded, RemoteFailed, TbError
from .shell import Shell, last_line
from .sshargv import Target
from .state import Paths

#: Seconds without any answer after which a link is taken for hung.
HUNG_AFTER = 3.0
#: Lines of the remote log read after a failed start: enough for a whole
#: import traceback and the launcher's "python" line above it (fewer are shown).
LOG_LINES = 60

# The lines of an ssh error log that say what went wrong, in order of use.
_SSH_FAILURES = (
    "Address already in use",
    "cannot listen",
    "Could not request local forwarding",
    "Host key verification failed",
    "IDENTIFICATION HAS CHANGED",
    "Permission denied",
    "Could not resolve hostname",
    "Connection refused",
    "Connection timed out",
    "timed out",
    "No route to host",
    "Connection closed",
)


def ssh_failure(text: str) -> str:
    """The line of an ssh error log that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for key in _SSH_FAILURES:
        for line in lines:
            if key in line:
                return line
    return lines[-1] if lines else "ssh exited without a message"


def login_error(line: str) -> type[TbError]:
    """Which error an ssh failure line is: a host key never accepted unseen,
    a login that wants a person (a BatchMode ssh cannot ask), or another."""
    if "Host key verification failed" in line or "IDENTIFICATION HAS CHANGED" in line:
        return HostKeyRefused
    if "Permission denied" in line or "Too many authentication failures" in line:
        return LoginNeeded
    return TbError


class MasterState(Enum):
    UP = "up"  # answers -O check
    STALE = "stale"  # a socket whose master is dead or hung
    NONE = "none"  # no socket


@dataclass(frozen=True)
class Master:
    state: MasterState
    pid: Optional[int] = None
    borrowed: bool = False  # the user's own master (ssh_config's ControlPath), not ours


def resolve(shell: Shell, target: Target, key: str, argv: Optional[list[str]] = None) -> Optional[str]:
    """One value that ``ssh -G`` prints for ``target`` (OpenSSH resolves
    ssh_config; we never parse it)."""
    return resolve_all(shell, target, argv).get(key)


def resolve_all(shell: Shell, target: Target, argv: Optional[list[str]] = None) -> dict[str, str]:
    """What ``ssh -G`` prints for ``target``: each key's first value."""
    outcome = shell.run(
        argv or sshargv.config_argv(dataclasses.replace(target, jump=None)), timeout=shell.quick, what="ssh -G"
    )
    if not outcome.ok:
        raise TbError(f"ssh cannot resolve {target.label}: {last_line(outcome.stderr)}")
    values: dict[str, str] = {}
    for line in outcome.stdout.splitlines():
        name, _, value = line.partition(" ")
        if value:
            values.setdefault(name, value)
    return values


class Host:
    """A target, our control socket for it, and the shell that runs ssh."""

    def __init__(self, shell: Shell, target: Target, paths: Paths, user_socket: Optional[Path] = None) -> None:
        self.shell = shell
        self.target = target
        self.paths = paths
        #: The ControlPath of the user's own ssh_config for this host (None:
        #: none, or ``user_master`` off); :meth:`ride` decides if we use it.
        self.user_socket = user_socket
        #: Riding the user's master now: ``socket`` is theirs, and we never
        #: ``-O exit`` it (``release`` cancels only our forward).
        self.borrowing = False

    @classmethod
    def locate(cls, shell: Shell, target: Target, control_dir: str, suffix: str = "", *, user_master: bool = False) -> "Host":
        """``target`` with our control socket, named from ``tb-%C`` as ``ssh -G``
        expands it (``state.session_paths``), and, with ``user_master``, the
        ControlPath the user's own ssh_config gives it: one ``ssh -G`` for both."""
        directory = state.control_dir(control_dir)
        values = resolve_all(shell, target, sshargv.resolve_argv(target, str(directory), suffix))
        ours = values.get("identityagent")
        if not ours or "/tb-" not in ours:
            raise TbError(f"ssh -G printed no control path of ours for {target.label}")
        paths = state.session_paths(Path(ours), suffix)
        state.check_socket_path(paths.socket)
        theirs = values.get("controlpath")
        user_socket = Path(theirs) if user_master and theirs and theirs != "none" and theirs.startswith("/") else None
        return cls(shell, target, paths, user_socket)

    def __repr__(self) -> str:
        return f"Host({self.target.label!r}, {str(self.paths.socket)!r})"

    @property
    def label(self) -> str:
        return self.target.label

    @property
    def socket(self) -> str:
        """The control socket every step rides: the user's while borrowing, else ours."""
        if self.borrowing and self.user_socket is not None:
            return str(self.user_socket)
        return str(self.paths.socket)

    @property
    def may_prompt(self) -> bool:
        """Can a login to it ask the user something (no BatchMode: a terminal)?"""
        return not self.target.batch

    def with_target(self, target: Target) -> "Host":
        return Host(self.shell, target, self.paths)

    # ------------------------------------------------------------ master

    def master(self) -> Master:
        """The state of the master this host rides now (:meth:`ride`)."""
        return self._master_at(Path(self.socket))

    def follow(self, borrowed: Optional[str]) -> Master:
        """The state of the master a session's record says it rides (no
        choosing: ``tb.check`` and ``tb.exit`` report on that one)."""
        self.borrowing = bool(borrowed)
        if borrowed:
            self.user_socket = Path(borrowed)
        return dataclasses.replace(self.master(), borrowed=self.borrowing)

    def _master_at(self, path: Path) -> Master:
        if not path.exists():
            return Master(MasterState.NONE)
        try:
            outcome = self.shell.run(
                sshargv.control_argv(self.target, str(path), "check"), timeout=self.shell.quick, what="ssh -O check"
            )
        except Cancelled:
            # A check cut short by a stop says nothing about the master: never
            # STALE, or the caller clears a live master's socket (measured: a
            # syncer stopped mid-stream unlinked bare's socket, and tb.exit
            # then left that master running).
            raise
        except TbError:
            return Master(MasterState.STALE)
        if outcome.ok:
            match = re.search(r"pid=(\d+)", outcome.stderr + outcome.stdout)
            return Master(MasterState.UP, int(match.group(1)) if match else None)
        return Master(MasterState.STALE)

    def ride(self, borrowed: Optional[str], *, new: bool) -> Master:
        """Choose the master a session rides, and say its state.

        The user's own master (``user_socket``, or ``borrowed``, the one the
        session rode so far) when it answers ``-O check``: no second login.
        Ours when the session already rides ours and it is up, when an
        unrecorded master of ours is up (``new``: ``tb.start`` replaces it),
        or when the user's is not up (a later loss of theirs falls back to
        ours).
        """
        self.borrowing = False
        ours = self.master()
        theirs_path = Path(borrowed) if borrowed else self.user_socket
        if theirs_path is None or theirs_path == self.paths.socket:
            return ours
        if ours.state is MasterState.UP and (new or not borrowed):
            return ours
        theirs = self._master_at(theirs_path)
        if theirs.state is not MasterState.UP:
            return ours
        if ours.state is MasterState.STALE:
            self.clear_stale()
        self.user_socket = theirs_path
        self.borrowing = True
        return dataclasses.replace(theirs, borrowed=True)

    def open(self, keepalive: int) -> Optional[int]:
        """Open the ControlMaster (no forward yet); its pid."""
        log = self.paths.log
        log.write_text("")
        log.chmod(0o600)
        argv = sshargv.master_argv(self.target, self.socket, keepalive, str(log))
        # Interactive users may type a password or a second factor here.
        timeout = self.target.connect_timeout + (20 if self.target.batch else 300)
        # The master keeps its stdout/stderr: send them to a file, never to a
        # pipe we wait on (a ProxyJump child would hold the pipe open).
        outcome = self.shell.run(argv, timeout=timeout, log=log, what=f"ssh to {self.label}")
        text = log.read_text(errors="replace")
        if not outcome.ok:
            self.clear_stale()
            log.unlink(missing_ok=True)  # its words are in the error
            why = ssh_failure(text)
            raise login_error(why)(f"cannot connect to {self.label}: {why}")
        master = self.master()
        if master.state is not MasterState.UP:
            raise TbError(f"ssh master for {self.label} exited at once: {ssh_failure(text)}")
        return master.pid

    def close(self) -> None:
        """``-O exit`` our master (never the user's: see :meth:`release`)."""
        if self.borrowing:
            return
        self.shell.run(sshargv.control_argv(self.target, self.socket, "exit"), timeout=self.shell.quick, what="ssh -O exit")
        # The master removes its socket as it exits; wait briefly so a
        # following start does not find it.
        deadline = time.monotonic() + 2.0
        while self.paths.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close_if_up(self) -> Master:
        """Close the master if it is up, clear a stale socket; what it was."""
        master = self.master()
        if master.state is MasterState.UP:
            self.close()
        elif master.state is MasterState.STALE:
            self.clear_stale()
        return master

    def release(self, forward: Optional[str]) -> None:
        """Leave the master: close ours; on the user's, cancel only our
        forward (their master, and their own forwards, stay up)."""
        if self.borrowing:
            if forward:
                self.cancel(forward)
        else:
            self.close()

    def drop(self, pid: Optional[int], forward: Optional[str] = None) -> None:
        """Close a master whose connection hangs (it still obeys ``-O exit``).
        The user's master is left alone but for our ``forward`` (its control
        socket answers while its link hangs): from here on we ride our own."""
        if self.borrowing:
            self.release(forward)
            self.borrowing = False
            return
        try:
            self.close()
        except TbError:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.clear_stale()

    def clear_stale(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()

    def link_answers(self) -> bool:
        """Does the remote's sshd still answer through our master? A channel
        request to a closed port is answered at once (refused) on a live
        link, never on a dead one; no login shell runs."""
        try:
            self.shell.run(sshargv.link_probe_argv(self.target, self.socket), timeout=HUNG_AFTER, what="ssh -W")
        except CommandTimeout:
            return False
        return True

    def forwarding_forbidden(self) -> bool:
        """Does the server refuse TCP forwarding (``AllowTcpForwarding no``,
        ``DisableForwarding yes``)? A forward is accepted either way (the
        refusal comes per connection), so ask for a channel to a closed port
        and read the master's log: a server that allows forwarding tries and
        says "connect failed"; one that forbids it says "administratively
        prohibited" before trying."""
        mark = self.log_size()
        self.link_answers()
        deadline = time.monotonic() + 0.5
        while True:
            said = self.log_since(mark)
            if "open failed" in said or time.monotonic() >= deadline:
                return "administratively prohibited" in said
            time.sleep(0.02)

    # ---------------------------------------------------------- forwards

    def forward(self, spec: str, local_port: int) -> None:
        outcome = self.shell.run(
            sshargv.forward_argv(self.target, self.socket, spec, "forward"), timeout=self.shell.quick, what="ssh -O forward"
        )
        if not outcome.ok:
            reason = outcome.reason
            if "in use" in reason or "forwarding failed" in reason.lower():
                raise TbError(
                    f"cannot forward local port {local_port} ({reason}): it is probably in use; "
                    f"choose another with --local-port"
                )
            raise TbError(f"cannot add the forward on the ssh master: {reason}")

    def cancel(self, spec: str) -> None:
        with contextlib.suppress(TbError):
            self.shell.run(
                sshargv.forward_argv(self.target, self.socket, spec, "cancel"), timeout=self.shell.quick, what="ssh -O cancel"
            )

    def log_size(self) -> int:
        """Where the master's log ends now (see :meth:`log_since`)."""
        try:
            return self.paths.log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.paths.log, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # ---------------------------------------------------------- remote

    def remote_argv(self, through_master: bool = True) -> list[str]:
        return sshargv.remote_argv(self.target, self.socket if through_master else None)

    def run(self, script: str, *, timeout: Optional[float] = None, through_master: bool = True) -> remote.Reply:
        """Run a remote script (through the master, or with a login of its
        own when the master is gone); its reply."""
        outcome = self.shell.run(
            self.remote_argv(through_master), timeout=timeout or self.shell.quick, stdin=script, what=f"ssh to {self.label}"
        )
        reply = remote.Reply.parse(outcome.stdout)
        if reply is None:
            if through_master and not Path(self.socket).exists():
                raise RemoteFailed(f"remote step on {self.label} failed: the ssh master is gone (its socket {self.socket} vanished)")
            raise RemoteFailed(f"remote step on {self.label} failed: {outcome.reason}")
        return reply

    def output(self, script: str, *, timeout: Optional[float] = None) -> str:
        """Run a remote script through the master; its stdout (a step that
        prints no ``tbr`` reply, e.g. a check of the sync tools)."""
        outcome = self.shell.run(self.remote_argv(True), timeout=timeout or self.shell.quick, stdin=script, what=f"ssh to {self.label}")
        if not outcome.ok:
            if not Path(self.socket).exists():
                raise RemoteFailed(f"remote step on {self.label} failed: the ssh master is gone (its socket {self.socket} vanished)")
            raise RemoteFailed(f"remote step on {self.label} failed: {outcome.reason}")
        return outcome.stdout

    def log_tail(self, rundir: str) -> str:
        """The tail of TensorBoard's remote log ("" if it cannot be read)."""
        try:
            outcome = self.shell.run(self.remote_argv(True), timeout=self.shell.quick, stdin=remote.log_script(rundir, LOG_LINES))
        except TbError:
            return ""
        return outcome.stdout.rstrip()

    def stream(self, script: str, *, follow: bool, through_master: bool) -> int:
        """Run a remote script with its output going straight to ours.

        Without ``follow`` it has the quick timeout; with it, it runs until
        the user presses Ctrl-C (the ssh client then ends the remote tail).
        """
        return self.shell.stream(
            self.remote_argv(through_master), stdin=script,
            timeout=None if follow else self.shell.quick + 10, what=f"ssh to {self.label}",
        )
