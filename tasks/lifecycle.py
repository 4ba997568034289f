"""Start, check and stop one host's tunnel and TensorBoard.

Everything here runs OpenSSH through the task's context (``c.local`` under
Fabric, ``c.run`` under plain invoke), so the remote steps ride the master
that ``start`` opens: one login per start. Errors are :class:`TbError` with
a message for the user; the task layer turns them into ``Exit``.
"""

from __future__ import annotations

import errno
import re
import secrets
import shlex
import socket as socketlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from . import remote, sshargv, state
from .settings import Settings, TbError
from .sshargv import Target
from .state import Paths

Say = Callable[[str], None]

#: Seconds for an ssh call that rides a live master or only talks to it.
QUICK_TIMEOUT = 10.0
#: Seconds between "is our TensorBoard still alive" checks while waiting.
LIVENESS_EVERY = 0.5
#: Seconds between HTTP probes while waiting for the page.
PROBE_EVERY = 0.05


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


class Shell:
    """Runs ssh argv (no local shell involved), always with a timeout.

    The task's context is kept for ``--verbose`` and config; commands run
    through :mod:`subprocess` rather than ``c.local``/``c.run`` because
    invoke's runner feeds stdin in small chunks with 10 ms sleeps (measured:
    19 s to send a 3 KB remote script) and adds about 0.1 s to every call.
    """

    def __init__(self, context: Any = None, *, verbose: bool = False) -> None:
        self.context = context
        self.verbose = verbose

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        stdin: Optional[str] = None,
        log: Optional[Path] = None,
        what: str = "ssh",
    ) -> Outcome:
        """Run ``argv``; with ``log``, stdout goes nowhere and stderr to that
        file (a forking ssh master must never hold a pipe we wait on)."""
        if self.verbose:
            shown = shlex.join(argv) + (f" 2>>{shlex.quote(str(log))}" if log else "")
            print(f"+ {shown}", file=sys.stderr, flush=True)
        try:
            if log is not None:
                with open(log, "ab") as err:
                    completed = subprocess.run(
                        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=err, timeout=timeout,
                    )
                return Outcome(completed.returncode, "", "")
            completed = subprocess.run(
                argv,
                input=stdin if stdin is not None else "",
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise TbError(f"{what} did not finish within {timeout:g}s") from None
        except FileNotFoundError:
            raise TbError(f"{argv[0]!r} not found: install the OpenSSH client") from None
        return Outcome(completed.returncode, completed.stdout, completed.stderr)


# ---------------------------------------------------------------- helpers


def locate(shell: Shell, target: Target, control_dir: str) -> Paths:
    """Our control socket for ``target``, as ``ssh -G`` expands ``tb-%C``."""
    directory = state.control_dir(control_dir)
    outcome = shell.run(
        sshargv.resolve_argv(target, str(directory)), timeout=QUICK_TIMEOUT, what="ssh -G"
    )
    if outcome.code != 0:
        raise TbError(f"ssh cannot resolve {target.label}: {_last_line(outcome.stderr)}")
    for line in outcome.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "controlpath" and value:
            paths = Paths(Path(value))
            state.check_socket_path(paths.socket)
            return paths
    raise TbError(f"ssh -G printed no controlpath for {target.label}")


def master_state(shell: Shell, target: Target, paths: Paths) -> tuple[str, Optional[int]]:
    """``("up", pid)``, ``("stale", None)`` (socket left by a dead master) or ``("none", None)``."""
    if not paths.socket.exists():
        return "none", None
    try:
        outcome = shell.run(
            sshargv.control_argv(target, str(paths.socket), "check"),
            timeout=QUICK_TIMEOUT,
            what="ssh -O check",
        )
    except TbError:
        return "stale", None
    if outcome.code == 0:
        match = re.search(r"pid=(\d+)", outcome.stderr + outcome.stdout)
        return "up", int(match.group(1)) if match else None
    return "stale", None


def _clear_stale(paths: Paths) -> None:
    try:
        paths.socket.unlink()
    except FileNotFoundError:
        pass


def run_remote(
    shell: Shell,
    target: Target,
    paths: Optional[Paths],
    script: str,
    *,
    timeout: float = QUICK_TIMEOUT,
) -> tuple[str, str]:
    """Run a remote script (through the master when ``paths`` is given)."""
    outcome = shell.run(
        sshargv.remote_argv(target, str(paths.socket) if paths else None),
        timeout=timeout,
        stdin=script,
        what=f"ssh to {target.label}",
    )
    reply = remote.parse_reply(outcome.stdout)
    if reply is None:
        reason = _last_line(outcome.stderr) or f"exit status {outcome.code}"
        raise TbError(f"remote step on {target.label} failed: {reason}")
    return reply


def remote_log(shell: Shell, target: Target, paths: Paths, rundir: str) -> str:
    try:
        outcome = shell.run(
            sshargv.remote_argv(target, str(paths.socket)),
            timeout=QUICK_TIMEOUT,
            stdin=remote.log_script(rundir),
        )
    except TbError:
        return ""
    return outcome.stdout.rstrip()


def probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Does TensorBoard answer ``GET /data/logdir`` at ``url``?"""
    try:
        with urllib.request.urlopen(url + "data/logdir", timeout=timeout) as response:
            body = response.read(4096)
            if response.status == 200 and b"logdir" in body:
                return True, "ok"
            return False, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return False, str(reason) or type(error).__name__


def local_port_free(port: int) -> bool:
    probe_socket = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM)
    try:
        probe_socket.bind(("127.0.0.1", port))
    except OSError as error:
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        probe_socket.close()
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _url(local_port: int) -> str:
    return f"http://127.0.0.1:{local_port}/"


def _ssh_failure(text: str) -> str:
    """The line of an ssh error log that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keys = (
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
    for key in keys:
        for line in lines:
            if key in line:
                return line
    return lines[-1] if lines else "ssh exited without a message"


# ---------------------------------------------------------------- master


def open_master(shell: Shell, target: Target, paths: Paths, settings: Settings) -> Optional[int]:
    """Open the ControlMaster with the forward; returns its pid."""
    if not local_port_free(settings.local_port):
        raise TbError(
            f"local port {settings.local_port} is already in use on this machine "
            f"by another program: choose another with --local-port"
        )
    paths.log.write_text("")
    paths.log.chmod(0o600)
    argv = sshargv.master_argv(
        target, str(paths.socket), settings.local_port, settings.remote_port, settings.keepalive
    )
    # Interactive users may type a password or a second factor here.
    timeout = target.connect_timeout + (20 if target.batch else 300)
    # The master keeps its stdout/stderr: send them to a file, never to a
    # pipe we wait on (a ProxyJump child would hold the pipe open).
    outcome = shell.run(
        argv,
        timeout=timeout,
        log=paths.log,
        what=f"ssh to {target.label}",
    )
    log = paths.log.read_text(errors="replace")
    if outcome.code != 0:
        _clear_stale(paths)
        reason = _ssh_failure(log)
        if "Address already in use" in reason or "cannot listen" in reason:
            raise TbError(
                f"local port {settings.local_port} is already in use: choose another with --local-port"
            )
        raise TbError(f"cannot connect to {target.label}: {reason}")
    status, pid = master_state(shell, target, paths)
    if status != "up":
        raise TbError(f"ssh master for {target.label} exited at once: {_ssh_failure(log)}")
    return pid


def close_master(shell: Shell, target: Target, paths: Paths) -> None:
    shell.run(
        sshargv.control_argv(target, str(paths.socket), "exit"),
        timeout=QUICK_TIMEOUT,
        what="ssh -O exit",
    )
    # The master removes its socket as it exits; wait briefly so a
    # following start does not find it.
    deadline = time.monotonic() + 2.0
    while paths.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


# ---------------------------------------------------------------- start


def start(shell: Shell, target: Target, settings: Settings, say: Say) -> dict:
    """Open (or reuse) the master, start (or reuse) TensorBoard, wait for the page."""
    paths = locate(shell, target, settings.control_dir)
    label = target.label
    with state.locked(paths):
        data = state.load(paths)
        if data:
            _refuse_other_settings(data, settings, label)
        status, master_pid = master_state(shell, target, paths)
        if status == "up" and not data:
            # A master of ours whose state was lost: we cannot tell what it
            # forwards, so replace it.
            close_master(shell, target, paths)
            status = "none"
        if status == "stale":
            say(f"{label}: removing a stale control socket left by a master that died")
            _clear_stale(paths)
        opened = status != "up"
        if opened:
            master_pid = open_master(shell, target, paths, settings)

        sid = data["sid"] if data else secrets.token_hex(8)
        data = {
            "target": target.to_dict(),
            "sid": sid,
            "logdir": settings.logdir,
            "remote_port": settings.remote_port,
            "local_port": settings.local_port,
            "remote_dir": settings.remote_dir,
            "socket": str(paths.socket),
            "master_pid": master_pid,
            "remote_pid": (data or {}).get("remote_pid"),
            "started_at": (data or {}).get("started_at") or time.time(),
        }
        state.save(paths, data)

        rundir = remote.run_dir(settings.remote_dir, sid)
        script = remote.start_script(
            rundir,
            settings.logdir,
            settings.remote_port,
            settings.tensorboard_cmd,
            settings.activate,
        )
        word, detail = run_remote(shell, target, paths, script, timeout=QUICK_TIMEOUT + 10)
        if word == "error":
            _discard(shell, target, paths, rundir)
            raise TbError(_start_error(detail, label, settings))
        remote_pid = int(detail)
        data["remote_pid"] = remote_pid
        data["master_pid"] = master_pid
        state.save(paths, data)

        reused = word == "running"
        if reused and not opened:
            say(f"{label}: reusing the tunnel (ssh master pid {master_pid}) and TensorBoard (pid {remote_pid})")
        elif reused:
            say(f"{label}: reopened the tunnel (ssh master pid {master_pid}); TensorBoard pid {remote_pid} was still running")
        elif not opened:
            say(f"{label}: reusing the tunnel (ssh master pid {master_pid}); started TensorBoard (pid {remote_pid})")
        else:
            say(f"{label}: opened the tunnel (ssh master pid {master_pid}); started TensorBoard (pid {remote_pid})")

        url = _url(settings.local_port)
        _wait_ready(shell, target, paths, rundir, url, settings, remote_pid)
        say(f"{label}: TensorBoard ready at {url}")
        return data


def _refuse_other_settings(data: dict, settings: Settings, label: str) -> None:
    mine = {
        "logdir": settings.logdir,
        "remote_port": settings.remote_port,
        "local_port": settings.local_port,
        "remote_dir": settings.remote_dir,
    }
    differ = [key for key, value in mine.items() if data.get(key) != value]
    if differ:
        was = ", ".join(f"{key}={data.get(key)!r}" for key in differ)
        raise TbError(
            f"{label} already has a tb session with {was}: "
            f"run tb.exit for it first, or start with the same settings"
        )


def _discard(shell: Shell, target: Target, paths: Paths, rundir: str) -> None:
    """After a failed start: leave nothing of ours running or recorded."""
    try:
        run_remote(shell, target, paths, remote.stop_script(rundir))
    except TbError:
        pass
    if master_state(shell, target, paths)[0] == "up":
        close_master(shell, target, paths)
    state.remove(paths, socket=True)


def _start_error(detail: str, label: str, settings: Settings) -> str:
    what, _, rest = detail.partition(" ")
    if what == "port-in-use":
        return (
            f"remote port {settings.remote_port} on {label} is already in use by another program "
            f"(not ours; left alone): choose another with --remote-port"
        )
    if what == "rundir":
        return f"cannot create the run directory {rest} on {label}: check tb.remote_dir"
    if what == "no-setsid":
        return f"{label} has no 'setsid' command (util-linux); cannot start TensorBoard detached"
    return f"starting TensorBoard on {label} failed ({detail})"


def _died_message(log: str, label: str, settings: Settings) -> str:
    if f"{remote.LOG_MARK} the activation snippet failed" in log:
        head = (
            f"the activation snippet failed on {label}: fix tb.activate "
            f"(currently {settings.activate!r})"
        )
    elif "command not found on PATH" in log:
        head = (
            f"{settings.tensorboard_cmd.split()[0]!r} not found on {label} in a non-interactive "
            f"shell: set tb.activate (e.g. 'source ~/venvs/tb/bin/activate') or "
            f"tb.tensorboard_cmd to its full path"
        )
    elif "could not bind to port" in log or "already in use" in log:
        head = (
            f"TensorBoard could not bind remote port {settings.remote_port} on {label}: "
            f"choose another with --remote-port"
        )
    else:
        head = f"TensorBoard exited on {label} before it answered"
    tail = "\n".join("  | " + line for line in log.splitlines()[-15:])
    return head + ("\nremote log:\n" + tail if tail else "")


def _wait_ready(
    shell: Shell,
    target: Target,
    paths: Paths,
    rundir: str,
    url: str,
    settings: Settings,
    remote_pid: int,
) -> None:
    """Poll the page through the tunnel; check liveness now and then."""
    start = time.monotonic()
    deadline = start + settings.start_timeout
    next_liveness = start + LIVENESS_EVERY
    while True:
        ok, why = probe(url)
        if ok:
            return
        now = time.monotonic()
        if now >= next_liveness or now >= deadline:
            word, _ = run_remote(shell, target, paths, remote.status_script(rundir))
            if word != "running":
                log = remote_log(shell, target, paths, rundir)
                message = _died_message(log, target.label, settings)
                _discard(shell, target, paths, rundir)
                raise TbError(message)
            next_liveness = time.monotonic() + LIVENESS_EVERY
        if now >= deadline:
            log = remote_log(shell, target, paths, rundir)
            tail = "\n".join("  | " + line for line in log.splitlines()[-15:])
            raise TbError(
                f"TensorBoard (pid {remote_pid}) on {target.label} did not answer at {url} "
                f"within {settings.start_timeout:g}s ({why}); it is left running: "
                f"tb.check later, or tb.exit" + ("\nremote log:\n" + tail if tail else "")
            )
        time.sleep(PROBE_EVERY)


# ---------------------------------------------------------------- check


@dataclass
class Health:
    ok: bool
    line: str


def check(shell: Shell, target: Target, paths: Paths) -> Health:
    label = target.label
    data = state.load(paths)
    status, master_pid = master_state(shell, target, paths)
    if not data:
        if status == "up":
            return Health(False, f"{label}: an ssh master of ours is up (pid {master_pid}) but no TensorBoard is recorded: run tb.start or tb.exit")
        if status == "stale":
            return Health(False, f"{label}: stale control socket {paths.socket} (the ssh master died); tb.start repairs it")
        return Health(False, f"{label}: no tunnel (start one with tb.start)")
    url = _url(data["local_port"])
    remote_pid = data.get("remote_pid")
    if status == "stale":
        return Health(False, f"{label}: stale control socket (the ssh master died); TensorBoard pid {remote_pid} not checked; tb.start reopens the tunnel")
    if status == "none":
        return Health(False, f"{label}: no tunnel (the ssh master is gone); TensorBoard pid {remote_pid} not checked; tb.start reopens the tunnel")
    rundir = remote.run_dir(data["remote_dir"], data["sid"])
    try:
        word, detail = run_remote(shell, target, paths, remote.status_script(rundir))
    except TbError as error:
        return Health(False, f"{label}: tunnel up but the remote did not answer: {error}")
    if word != "running":
        return Health(False, f"{label}: TensorBoard is not running on {label} (pid {remote_pid} is gone); tb.start restarts it")
    ok, why = probe(url)
    if not ok:
        return Health(False, f"{label}: TensorBoard pid {detail} is running but {url} is not answering ({why})")
    return Health(
        True,
        f"{label}: ok {url} ssh-master={master_pid} tensorboard={detail} logdir={data['logdir']}",
    )


# ---------------------------------------------------------------- exit


def stop(shell: Shell, target: Target, paths: Paths, say: Say) -> None:
    """Close the tunnel and stop only the TensorBoard we started."""
    label = target.label
    with state.locked(paths):
        data = state.load(paths)
        status, master_pid = master_state(shell, target, paths)
        if not data:
            if status == "up":
                close_master(shell, target, paths)
                say(f"{label}: closed the tunnel (ssh master pid {master_pid}); no TensorBoard was recorded")
            else:
                if status == "stale":
                    _clear_stale(paths)
                say(f"{label}: nothing to stop")
            state.remove(paths)
            return
        rundir = remote.run_dir(data["remote_dir"], data["sid"])
        via = paths if status == "up" else None
        if via is None:
            say(f"{label}: the tunnel is gone; connecting to stop TensorBoard")
        try:
            word, detail = run_remote(shell, target, via, remote.stop_script(rundir), timeout=QUICK_TIMEOUT + 10)
        except TbError as error:
            raise TbError(
                f"could not stop TensorBoard pid {data.get('remote_pid')} on {label}: {error}; "
                f"its record is kept, run tb.exit again when {label} is reachable"
            ) from None
        if word == "error":
            raise TbError(f"could not stop TensorBoard on {label}: {detail}")
        if status == "up":
            close_master(shell, target, paths)
        elif status == "stale":
            _clear_stale(paths)
        state.remove(paths)
        parts = []
        if word == "stopped":
            parts.append(f"stopped TensorBoard (pid {detail})")
        elif word == "gone":
            parts.append(f"TensorBoard pid {detail} had already exited")
        parts.append(f"closed the tunnel (ssh master pid {master_pid})" if status == "up" else "no tunnel was open")
        say(f"{label}: " + "; ".join(parts))
