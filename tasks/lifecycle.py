"""Start, check and stop one host's tunnel and TensorBoard.

Everything here runs OpenSSH through the task's context (``c.local`` under
Fabric, ``c.run`` under plain invoke), so the remote steps ride the master
that ``start`` opens: one login per start. Errors are :class:`TbError` with
a message for the user; the task layer turns them into ``Exit``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import getpass
import hashlib
import http.client
import os
import re
import secrets
import shlex
import signal
import socket as socketlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

from . import remote, sshargv, state
from .settings import Settings, TbError
from .sshargv import Target
from .progress import Reporter
from .state import Paths

Say = Callable[[str], None]

#: Default seconds for an ssh call that rides a live master or only talks
#: to it (the ``command_timeout`` setting).
QUICK_TIMEOUT = 10.0
#: Seconds between "is our TensorBoard still alive" checks while waiting.
LIVENESS_EVERY = 0.5
#: Seconds without any answer through the forward after which a master
#: that says it is up is taken for hung (see _answer).
HUNG_AFTER = 3.0
RECONNECTING = "the tunnel does not answer (a laptop that slept, or a dropped link?); reconnecting"
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

    def __init__(self, context: Any = None, *, verbose: bool = False, quick: float = QUICK_TIMEOUT) -> None:
        self.context = context
        self.verbose = verbose
        #: Timeout of steps that should be quick (a stale socket can hang ssh).
        self.quick = quick

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


def locate(shell: Shell, target: Target, control_dir: str, suffix: str = "") -> Paths:
    """Our control socket for ``target``, as ``ssh -G`` expands ``tb-%C``."""
    directory = state.control_dir(control_dir)
    value = _ssh_g(shell, target, "controlpath", sshargv.resolve_argv(target, str(directory), suffix))
    if not value:
        raise TbError(f"ssh -G printed no controlpath for {target.label}")
    paths = Paths(Path(value))
    state.check_socket_path(paths.socket)
    return paths


def _ssh_g(shell: Shell, target: Target, key: str, argv: Optional[list[str]] = None) -> Optional[str]:
    """One value that ``ssh -G`` prints for ``target`` (OpenSSH resolves
    ssh_config; we never parse it)."""
    outcome = shell.run(
        argv or sshargv.config_argv(dataclasses.replace(target, jump=None)), timeout=shell.quick, what="ssh -G"
    )
    if outcome.code != 0:
        raise TbError(f"ssh cannot resolve {target.label}: {_last_line(outcome.stderr)}")
    for line in outcome.stdout.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value:
            return value
    return None


def master_state(shell: Shell, target: Target, paths: Paths) -> tuple[str, Optional[int]]:
    """``("up", pid)``, ``("stale", None)`` (a socket whose master is dead or
    hung) or ``("none", None)``."""
    if not paths.socket.exists():
        return "none", None
    try:
        outcome = shell.run(
            sshargv.control_argv(target, str(paths.socket), "check"),
            timeout=shell.quick,
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
    timeout: Optional[float] = None,
) -> tuple[str, str, dict[str, str]]:
    """Run a remote script (through the master when ``paths`` is given):
    its reply word and detail, and its ``tbr-info`` lines."""
    outcome = shell.run(
        sshargv.remote_argv(target, str(paths.socket) if paths else None),
        timeout=timeout or shell.quick,
        stdin=script,
        what=f"ssh to {target.label}",
    )
    reply = remote.parse_reply(outcome.stdout)
    if reply is None:
        reason = _last_line(outcome.stderr) or f"exit status {outcome.code}"
        raise TbError(f"remote step on {target.label} failed: {reason}")
    return reply[0], reply[1], remote.parse_info(outcome.stdout)


def remote_log(shell: Shell, target: Target, paths: Paths, rundir: str) -> str:
    try:
        outcome = shell.run(
            sshargv.remote_argv(target, str(paths.socket)),
            timeout=shell.quick,
            stdin=remote.log_script(rundir),
        )
    except TbError:
        return ""
    return outcome.stdout.rstrip()


def stream_remote(shell: Shell, target: Target, paths: Optional[Paths], script: str, *, follow: bool) -> int:
    """Run a remote script with its output going straight to ours.

    Without ``follow`` it has the quick timeout; with it, it runs until the
    user presses Ctrl-C (the ssh client then ends the remote tail).
    """
    argv = sshargv.remote_argv(target, str(paths.socket) if paths else None)
    if shell.verbose:
        print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
    try:
        completed = subprocess.run(
            argv, input=script, text=True, timeout=None if follow else shell.quick + 10
        )
    except subprocess.TimeoutExpired:
        raise TbError(f"ssh to {target.label} did not finish within {shell.quick + 10:g}s") from None
    except KeyboardInterrupt:
        return 130
    return completed.returncode


def probe(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Does TensorBoard answer ``GET <url>data/logdir``?"""
    try:
        with urllib.request.urlopen(url + "data/logdir", timeout=timeout) as response:
            body = response.read(4096)
            if response.status == 200 and b"logdir" in body:
                return True, "ok"
            return False, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except (OSError, ValueError, http.client.HTTPException) as error:
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


# Ports this process has handed out: hosts started concurrently must not
# pick the same one before either has bound it.
_claimed: set[int] = set()
_claim_lock = threading.Lock()


def pick_local_port(settings: Settings, label: str, say: Say, ours: frozenset[int] = frozenset()) -> int:
    """The configured port if free, else the next free one upwards.

    A port given explicitly (flag, env, config) that another program holds
    is an error; one that our own tunnel to another host holds (``ours``, or
    claimed by a concurrent start) is not: with ``fab -H a,b`` each host
    takes the first free port from the configured one upwards.
    """
    wanted = settings.local_port
    with _claim_lock:
        if wanted not in _claimed and local_port_free(wanted):
            _claimed.add(wanted)
            return wanted
        if settings.local_port_explicit and wanted not in _claimed and wanted not in ours:
            raise TbError(
                f"local port {wanted} is already in use on this machine by another program: "
                f"choose another with --local-port"
            )
        for candidate in range(wanted + 1, min(wanted + 100, 65536)):
            if candidate not in _claimed and local_port_free(candidate):
                _claimed.add(candidate)
                holder = "another tunnel of ours" if (wanted in ours or wanted in _claimed) else "in use here"
                say(f"{label}: local port {wanted} is {holder}; using {candidate}")
                return candidate
    raise TbError(f"no free local port in {wanted}..{wanted + 99}: choose one with --local-port")


def _our_ports(paths: Paths) -> frozenset[int]:
    """Local ports of our other sessions in the same control directory."""
    ports = set()
    for other, data in state.all_states(paths.socket.parent):
        if other != paths and data.get("local_port"):
            ports.add(int(data["local_port"]))
    return frozenset(ports)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def url_for(data: dict) -> str:
    """The local URL of a session: 127.0.0.1, its port, and its token."""
    token = data.get("token")
    return f"http://127.0.0.1:{data['local_port']}/" + (f"{token}/" if token else "")


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
    """Open the ControlMaster (no forward yet); returns its pid."""
    paths.log.write_text("")
    paths.log.chmod(0o600)
    argv = sshargv.master_argv(target, str(paths.socket), settings.keepalive, str(paths.log))
    # Interactive users may type a password or a second factor here.
    timeout = target.connect_timeout + (20 if target.batch else 300)
    # The master keeps its stdout/stderr: send them to a file, never to a
    # pipe we wait on (a ProxyJump child would hold the pipe open).
    outcome = shell.run(argv, timeout=timeout, log=paths.log, what=f"ssh to {target.label}")
    log = paths.log.read_text(errors="replace")
    if outcome.code != 0:
        _clear_stale(paths)
        raise TbError(f"cannot connect to {target.label}: {_ssh_failure(log)}")
    status, pid = master_state(shell, target, paths)
    if status != "up":
        raise TbError(f"ssh master for {target.label} exited at once: {_ssh_failure(log)}")
    return pid


def close_master(shell: Shell, target: Target, paths: Paths) -> None:
    shell.run(
        sshargv.control_argv(target, str(paths.socket), "exit"),
        timeout=shell.quick,
        what="ssh -O exit",
    )
    # The master removes its socket as it exits; wait briefly so a
    # following start does not find it.
    deadline = time.monotonic() + 2.0
    while paths.socket.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def add_forward(shell: Shell, target: Target, paths: Paths, spec: str, local_port: int) -> None:
    outcome = shell.run(
        sshargv.forward_argv(target, str(paths.socket), spec, "forward"),
        timeout=shell.quick,
        what="ssh -O forward",
    )
    if outcome.code != 0:
        reason = _last_line(outcome.stderr) or f"exit status {outcome.code}"
        if "in use" in reason or "forwarding failed" in reason.lower():
            raise TbError(
                f"cannot forward local port {local_port} ({reason}): it is probably in use; "
                f"choose another with --local-port"
            )
        raise TbError(f"cannot add the forward on the ssh master: {reason}")


def cancel_forward(shell: Shell, target: Target, paths: Paths, spec: str) -> None:
    try:
        shell.run(
            sshargv.forward_argv(target, str(paths.socket), spec, "cancel"),
            timeout=shell.quick,
            what="ssh -O cancel",
        )
    except TbError:
        pass


# ---------------------------------------------------------------- start


def _requested(settings: Settings) -> dict:
    """The settings that define a session: a start with others must not reuse it."""
    wanted = {
        "logdir": settings.logdir,
        "remote_dir": settings.remote_dir,
        "local_port": settings.local_port,
        "serve": settings.serve,
        "url_token": settings.url_token,
    }
    if settings.serve == "tcp":
        wanted["remote_port"] = settings.remote_port
    return wanted


def start(
    shell: Shell,
    target: Target,
    settings: Settings,
    report: Reporter,
    *,
    paths: Optional[Paths] = None,
    job: Optional[str] = None,
    job_found: Optional[remote.Job] = None,
) -> dict:
    """Open (or reuse) the master, start (or reuse) TensorBoard, wait for the page.

    With ``job`` (srun mode), ``target`` is the login node and TensorBoard
    runs as a step of that job; ``job_found`` (ssh mode) records the job a
    compute-node ``target`` was found from.
    """
    say = report.say
    paths = paths or locate(shell, target, settings.control_dir)
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
        answer = _answer(data) if status == "up" and data else ""
        if answer == "hung" and not _link_answers(shell, target, paths):
            say(f"{label}: {RECONNECTING}")
            _drop_master(shell, target, paths, master_pid)
            status = "none"
        opened = status != "up"
        if not opened and answer == "proven":
            # All up and answering as only ours can (see check()): reuse
            # both without a remote command.
            url = url_for(data)
            report.say(f"{label}: reusing the tunnel (ssh master pid {master_pid}) and TensorBoard (pid {data.get('remote_pid')})")
            report.result(url, f"{label}: TensorBoard ready at {url}")
            data["url"] = url
            return data
        # Choose the local port before anything starts, so a busy port costs
        # nothing; a live forward keeps its port.
        keep_forward = not opened and data is not None and data.get("forward")
        local_port = data["local_port"] if keep_forward else pick_local_port(settings, label, say, _our_ports(paths))
        if opened:
            report.phase(f"{label}: connecting")
            master_pid = open_master(shell, target, paths, settings)
            again = "re" if data and data.get("remote_pid") else ""
            say(f"{label}: {again}opened the tunnel (ssh master pid {master_pid})")
        if job is not None:
            try:
                job_found = find_job(shell, target, paths, job, report)
            except TbError:
                if opened:
                    close_master(shell, target, paths)
                    if not data:
                        state.remove(paths, socket=True)
                raise

        if data is None:
            data = {
                "sid": secrets.token_hex(8),
                "token": secrets.token_urlsafe(18) if settings.url_token else None,
                # A job step serves TCP on its node (see _launch).
                "serve": "tcp" if job is not None else settings.serve,
                "requested": _requested(settings),
                "started_at": time.time(),
            }
        if job_found is not None:
            data["job"] = {
                "spec": job or job_found.id,
                "id": job_found.id,
                "node": job_found.node,
                "addr": job_found.addr,  # pick_job falls back to the node name
                "via": "srun" if job is not None else "ssh",
            }
        if opened:
            data["forward"] = None  # forwards die with their master
        data.update(
            target=target.to_dict(),
            local_port=local_port,
            logdir=settings.logdir,
            remote_dir=settings.remote_dir,
            socket=str(paths.socket),
            master_pid=master_pid,
        )
        state.save(paths, data)
        url = _launch(shell, target, paths, data, settings, report, opened)
        report.result(url, f"{label}: TensorBoard ready at {url}")
        data["url"] = url
        return data


# ---------------------------------------------------------------- Slurm


def job_key(spec: str, via: str) -> str:
    """The control-path suffix of a job's session, one per job spec and way
    of reaching its node: a job name may hold characters ssh would expand in
    a ControlPath, so use a hash."""
    return "-j" + hashlib.sha256(f"{via}\0{spec}".encode()).hexdigest()[:8]


def lookup_job(shell: Shell, target: Target, socket: Optional[str], spec: str) -> tuple[list[remote.Job], str]:
    """``squeue`` on the login node (through ``socket`` when given): the
    matching jobs and the user name there."""
    outcome = shell.run(
        sshargv.remote_argv(target, socket),
        timeout=shell.quick,
        stdin=remote.job_script(spec),
        what=f"squeue on {target.label}",
    )
    reply = remote.parse_reply(outcome.stdout)
    where = dataclasses.replace(target, tag=None).label
    if reply is None:
        reason = _last_line(outcome.stderr) or f"exit status {outcome.code}"
        raise TbError(f"looking up job {spec} on {where} failed: {reason}")
    word, detail = reply
    if word == "error":
        if detail == "no-squeue":
            raise TbError(f"{where} has no 'squeue' on PATH in a non-interactive shell: is it a Slurm login node?")
        raise TbError(f"squeue failed on {where}: {detail.partition(' ')[2] or detail}")
    return remote.parse_jobs(outcome.stdout), remote.parse_info(outcome.stdout).get("user", "?")


def find_job(shell: Shell, target: Target, paths: Paths, spec: str, report: Reporter) -> remote.Job:
    """Ask the login node's Slurm (through our master) where ``spec`` runs."""
    report.phase(f"{target.label}: looking up job {spec}")
    jobs, me = lookup_job(shell, target, str(paths.socket), spec)
    where = dataclasses.replace(target, tag=None).label
    job = remote.pick_job(jobs, spec, me, where)
    _refuse_same_job(paths, job, where)
    report.say(f"{target.label}: job {job.id} runs on {job.node}" + (f" ({job.addr})" if job.addr != job.node else ""))
    return job


def _refuse_same_job(paths: Paths, job: remote.Job, where: str) -> None:
    """One session per job: ``--job train`` and ``--job 123`` may be one job."""
    for other, data in state.all_states(paths.socket.parent):
        recorded = data.get("job") or {}
        if other in (paths, node_paths_of(paths)) or recorded.get("id") != job.id:
            continue
        login = data["target"].get("jump") or data["target"]
        if Target.from_dict({**login, "tag": None}).label == where:
            raise TbError(
                f"job {job.id} on {where} already has a tb session (started as --job {recorded.get('spec')} "
                f"through {recorded.get('via')}): use that, or tb.exit --job {recorded.get('spec')} first"
            )


def job_session(shell: Shell, login: Target, control_dir: str, spec: str) -> tuple[Target, Paths]:
    """The target and paths of the session for ``spec`` on ``login``: the
    compute node's (ssh mode), else the login node's own (srun mode)."""
    spec = remote.check_job(spec)
    node_paths = node_paths_of(locate(shell, login, control_dir, job_key(spec, "ssh")))
    data = state.load(node_paths)
    if data and "target" in data:
        return Target.from_dict(data["target"], batch=login.batch), node_paths
    return dataclasses.replace(login, tag=f"job {spec}"), locate(shell, login, control_dir, job_key(spec, "srun"))


def node_paths_of(jump_paths: Paths) -> Paths:
    return Paths(jump_paths.socket.with_name(jump_paths.socket.name + "n"))


def start_job(shell: Shell, login: Target, settings: Settings, report: Reporter, spec: str) -> dict:
    """``tb.start --job SPEC`` on the login host ``login``."""
    spec = remote.check_job(spec)
    if not settings.url_token:
        raise TbError(
            "--job needs url_token=yes: on a compute node TensorBoard is reachable from the "
            "cluster network, and the secret URL token is what keeps others out"
        )
    if settings.slurm_via == "srun" and settings.data_server == "netns":
        raise TbError(
            "data_server=netns cannot work with --job through srun (TensorBoard listens on TCP on the "
            "node for the login node to reach): use auto (off), off or shared, or --slurm-via ssh"
        )
    via, other = settings.slurm_via, {"srun": "ssh", "ssh": "srun"}[settings.slurm_via]
    paths = locate(shell, login, settings.control_dir, job_key(spec, via))
    elsewhere = locate(shell, login, settings.control_dir, job_key(spec, other))
    if state.load(elsewhere) or state.load(node_paths_of(elsewhere)):
        raise TbError(
            f"job {spec} on {login.label} already has a tb session through {other}: "
            f"run tb.exit --job {spec} first, or start it with --slurm-via {other}"
        )
    if via == "srun":
        tagged = dataclasses.replace(login, tag=f"job {spec}")
        return start(shell, tagged, settings, report, paths=paths, job=spec)
    return _start_job_ssh(shell, login, settings, report, spec, paths)


def _start_job_ssh(shell: Shell, login: Target, settings: Settings, report: Reporter, spec: str, jump_paths: Paths) -> dict:
    """ssh mode: a master on the login node (the jump), one on the node
    through it (ProxyCommand rides the jump: no second login there), and the
    usual start on the node: a Unix socket, the data server in a namespace."""
    node_paths = node_paths_of(jump_paths)
    state.check_socket_path(node_paths.socket)
    label = f"{login.label} (job {spec})"
    with state.locked(jump_paths):
        status, jump_pid = master_state(shell, login, jump_paths)
        recorded = state.load(node_paths)
        node = Target.from_dict(recorded["target"], batch=login.batch) if recorded else None
        if status == "up" and node and _answer(recorded) == "hung" and not _link_answers(shell, node, node_paths):
            report.say(f"{label}: {RECONNECTING}")
            _drop_master(shell, node, node_paths, recorded.get("master_pid"))
            _drop_master(shell, login, jump_paths, jump_pid)
            status = "none"
        if status == "stale":
            _clear_stale(jump_paths)
        opened = status != "up"
        if opened:
            report.phase(f"{label}: connecting to the login node")
            jump_pid = open_master(shell, login, jump_paths, settings)
            report.say(f"{label}: opened the connection to the login node (ssh master pid {jump_pid})")
        try:
            job = find_job(shell, login, jump_paths, spec, report)
            node = Target(
                host=job.node,
                user=login.user or _node_user(shell, login, job.node),
                ssh_config=login.ssh_config,
                identities=login.identities,
                connect_timeout=login.connect_timeout,
                batch=login.batch,
                jump=dataclasses.replace(login, tag=None),
                jump_socket=str(jump_paths.socket),
                tag=f"job {job.id} via {login.label}",
            )
            old = state.load(node_paths)
            if old and old.get("target", {}).get("host") != job.node:
                raise TbError(
                    f"{label}: a session for this job on node {old['target']['host']} is recorded, "
                    f"but the job now runs on {job.node}: run tb.exit --job {spec} first"
                )
            return start(shell, node, settings, report, paths=node_paths, job_found=job)
        except BaseException:
            if state.load(node_paths) is None and master_state(shell, login, jump_paths)[0] == "up":
                close_master(shell, login, jump_paths)
                state.remove(jump_paths, socket=True)
            raise


def _node_user(shell: Shell, login: Target, node: str) -> Optional[str]:
    """The user on a compute node: the node's ``User`` from ssh_config if it
    has one, else the login host's (the job's owner), never just ours here."""
    here = getpass.getuser()
    try:
        node_user = _ssh_g(shell, dataclasses.replace(login, host=node), "user")
        if node_user and node_user != here:
            return None  # ssh_config names one for the node: let OpenSSH use it
        login_user = _ssh_g(shell, login, "user")
    except TbError:
        return None  # ssh itself will say what is wrong with the config
    return login_user if login_user and login_user != here else None


def _job_has_ended(shell: Shell, target: Target, data: dict) -> bool:
    """ssh mode: is the job of this node session no longer running? Asked on
    the login node (through its master when that is up)."""
    job = data.get("job") or {}
    if target.jump is None or not job.get("id"):
        return False
    socket = target.jump_socket if master_state(shell, target.jump, Paths(Path(target.jump_socket or "")))[0] == "up" else None
    try:
        jobs, _ = lookup_job(shell, target.jump, socket, str(job["id"]))
    except TbError:
        return False
    return not any(j.id == job["id"] and j.state == "RUNNING" for j in jobs)


def _refuse_other_settings(data: dict, settings: Settings, label: str) -> None:
    was = data.get("requested") or {}
    wanted = _requested(settings)
    differ = [key for key, value in wanted.items() if was.get(key) != value]
    if differ:
        shown = ", ".join(f"{key}={was.get(key)!r}" for key in differ)
        raise TbError(
            f"{label} already has a tb session with {shown}: "
            f"run tb.exit for it first, or start with the same settings"
        )


_ISOLATION = {
    "netns": "data server in a private network namespace",
    "off": "data server off (--load_fast=false)",
    "shared": "data server shared with local users",
}


def _launch(
    shell: Shell,
    target: Target,
    paths: Paths,
    data: dict,
    settings: Settings,
    report: Reporter,
    opened: bool,
) -> str:
    """Start or reuse TensorBoard, forward to it, wait for the page; the URL."""
    say = report.say
    label = target.label
    rundir = remote.run_dir(data["remote_dir"], data["sid"])
    serve = data["serve"]
    data_server = settings.data_server
    if serve == "tcp" and data_server == "auto":
        data_server = "off"  # TCP must be reachable from sshd: no namespace
    port = 0 if data.get("fallback") else settings.remote_port
    job = data.get("job") or {}
    step = None
    forward_host = "127.0.0.1"
    if job.get("via") == "srun":
        # TensorBoard listens on the node's address, on any free port, for
        # the login node to forward to; the URL token guards it there.
        step = remote.Step(job["id"], job["node"], job["addr"])
        forward_host, port = job["addr"], 0
    script = remote.start_script(
        rundir,
        data["logdir"],
        settings.tensorboard_cmd,
        settings.activate,
        serve=serve,
        port=port if serve == "tcp" else 0,
        data_server=data_server,
        token=data.get("token"),
        wait=settings.start_timeout,
        step=step,
    )
    report.phase(f"{label}: starting TensorBoard" + (f" as a step of job {step.job} on {step.node}" if step else ""))
    deadline = time.monotonic() + settings.start_timeout
    # One round trip: the script starts TensorBoard and waits, on the
    # remote, until it listens (each remote command pays the login shell's
    # start-up, e.g. a conda or pyenv init in ~/.bashrc).
    word, detail, info = run_remote(
        shell, target, paths, script, timeout=settings.start_timeout + shell.quick + 10
    )
    if word == "error":
        _discard(shell, target, paths, rundir)
        raise TbError(_start_error(detail, label, settings))
    remote_pid = int(detail)
    if word == "died":
        _died(shell, target, paths, rundir, settings)
    data["remote_pid"] = remote_pid
    state.save(paths, data)

    if info.get("endpoint"):
        endpoint, isolation = info["endpoint"], info.get("isolation", "shared")
    else:
        endpoint, isolation = _wait_endpoint(shell, target, paths, rundir, settings, deadline, remote_pid)
    how = f"{'Unix socket' if endpoint.startswith('unix') else 'TCP 127.0.0.1'}, {_ISOLATION.get(isolation, isolation)}"
    reused = word == "running"
    master_pid = data["master_pid"]
    # The tunnel's own line was said when it opened (see start()).
    if reused and not opened:
        say(f"{label}: reusing the tunnel (ssh master pid {master_pid}) and TensorBoard (pid {remote_pid})")
    elif reused:
        say(f"{label}: TensorBoard pid {remote_pid} was still running")
    elif step is not None:
        how = f"TCP {step.bind}, URL token, {_ISOLATION.get(isolation, isolation)}"
        say(f"{label}: started TensorBoard in job {step.job} on {step.node} (srun pid {remote_pid} on the login node; {how})")
    elif not opened:
        say(f"{label}: reusing the tunnel (ssh master pid {master_pid}); started TensorBoard (pid {remote_pid}; {how})")
    else:
        say(f"{label}: started TensorBoard (pid {remote_pid}; {how})")

    old = data.get("forward")
    local_port = data["local_port"]
    spec = sshargv.forward_spec(local_port, endpoint, forward_host)
    if spec != old:
        report.phase(f"{label}: opening the tunnel")
        if old:
            cancel_forward(shell, target, paths, old)
        try:
            add_forward(shell, target, paths, spec, local_port)
        except TbError:
            if not reused:
                _discard(shell, target, paths, rundir)
            raise
        there = f"{forward_host}:{endpoint.split()[-1]} (node {job['node']})" if step else _where(endpoint) + " there"
        say(f"{label}: forwarding 127.0.0.1:{local_port} here to {there}")
    data.update(forward=spec, local_port=local_port, endpoint=endpoint, isolation=isolation)
    state.save(paths, data)

    url = url_for(data)
    report.phase(f"{label}: waiting for the page")
    try:
        _wait_page(shell, target, paths, rundir, url, settings, deadline, remote_pid, endpoint)
    except _StreamLocalRefused:
        if data["serve"] != "unix":
            raise TbError(f"{label} refused the forward to TensorBoard") from None
        say(
            f"{label}: the server refuses Unix-socket forwarding (AllowStreamLocalForwarding no); "
            f"falling back to TCP on its 127.0.0.1 with a free port"
            + (" and the URL token" if data.get("token") else "")
        )
        run_remote(shell, target, paths, remote.stop_script(rundir), timeout=shell.quick + 10)
        cancel_forward(shell, target, paths, spec)
        data.update(serve="tcp", fallback=True, forward=None, endpoint=None)
        state.save(paths, data)
        return _launch(shell, target, paths, data, settings, report, opened)
    return url


def _where(endpoint: str) -> str:
    kind, _, where = endpoint.partition(" ")
    return f"socket {where}" if kind == "unix" else f"127.0.0.1:{where}"


class _StreamLocalRefused(Exception):
    pass


def _wait_endpoint(
    shell: Shell,
    target: Target,
    paths: Paths,
    rundir: str,
    settings: Settings,
    deadline: float,
    remote_pid: int,
) -> tuple[str, str]:
    """Poll the remote until TensorBoard says where it listens."""
    while True:
        word, _, info = run_remote(shell, target, paths, remote.status_script(rundir))
        if word != "running":
            _died(shell, target, paths, rundir, settings)
        if info.get("endpoint"):
            return info["endpoint"], info.get("isolation", "shared")
        if time.monotonic() >= deadline:
            raise TbError(_timeout_message(shell, target, paths, rundir, settings, remote_pid, "not listening yet"))
        time.sleep(PROBE_EVERY)


def _log_size(paths: Paths) -> int:
    try:
        return paths.log.stat().st_size
    except FileNotFoundError:
        return 0


def _log_since(paths: Paths, offset: int) -> str:
    try:
        with open(paths.log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _wait_page(
    shell: Shell,
    target: Target,
    paths: Paths,
    rundir: str,
    url: str,
    settings: Settings,
    deadline: float,
    remote_pid: int,
    data_endpoint: str = "",
) -> None:
    """Poll the page through the tunnel; check liveness now and then.

    TensorBoard wrote its endpoint only once its socket listened, so a
    connection through a Unix-socket forward that the master reports as
    "open failed" while TensorBoard is alive means the server refused
    stream-local forwarding (``AllowStreamLocalForwarding no``).
    """
    unix = data_endpoint.startswith("unix ")
    mark = _log_size(paths)
    next_liveness = time.monotonic() + LIVENESS_EVERY
    while True:
        ok, why = probe(url)
        if ok:
            return
        if unix and "open failed" in _log_since(paths, mark):
            word, _, _ = run_remote(shell, target, paths, remote.status_script(rundir))
            if word == "running":
                raise _StreamLocalRefused()
        now = time.monotonic()
        if now >= next_liveness or now >= deadline:
            word, _, _ = run_remote(shell, target, paths, remote.status_script(rundir))
            if word != "running":
                _died(shell, target, paths, rundir, settings)
            next_liveness = time.monotonic() + LIVENESS_EVERY
        if now >= deadline:
            raise TbError(_timeout_message(shell, target, paths, rundir, settings, remote_pid, why))
        time.sleep(PROBE_EVERY)


def _timeout_message(shell, target, paths, rundir, settings, remote_pid, why) -> str:
    log = remote_log(shell, target, paths, rundir)
    tail = "\n".join("  | " + line for line in log.splitlines()[-15:])
    return (
        f"TensorBoard (pid {remote_pid}) on {target.label} did not answer within "
        f"{settings.start_timeout:g}s ({why}); it is left running: tb.check later, or tb.exit"
        + ("\nremote log:\n" + tail if tail else "")
    )


def _died(shell: Shell, target: Target, paths: Paths, rundir: str, settings: Settings) -> NoReturn:
    """TensorBoard exited before it answered: say why, leave nothing behind."""
    log = remote_log(shell, target, paths, rundir)
    message = _died_message(log, target.label, settings)
    _discard(shell, target, paths, rundir)
    raise TbError(message)


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
            f"remote port {rest or settings.remote_port} on {label} is already in use by another program "
            f"(not ours; left alone): choose another with --remote-port"
        )
    if what == "rundir":
        return f"cannot create the run directory {rest} on {label}: check tb.remote_dir"
    if what == "no-srun":
        return f"{label} has no 'srun' on PATH in a non-interactive shell: is it a Slurm login node? (or use --slurm-via ssh)"
    if what == "step-exists":
        return (
            f"job {rest.split('.')[0]} already runs a tensorboard-remote step ({rest}) that this machine "
            f"has no record of (started from another login node or computer?): tb.exit it there, or scancel {rest}"
        )
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
    elif "data_server=netns requires it" in log:
        head = (
            f"{label} does not allow private network namespaces (unshare -rn): "
            f"set tb.data_server to auto or off"
        )
    elif "No module named" in log:
        head = (
            f"the Python behind {settings.tensorboard_cmd.split()[0]!r} on {label} cannot import "
            f"TensorBoard: point tb.tensorboard_cmd at the right one (e.g. 'python -m tensorboard.main')"
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
    remote_pid = data.get("remote_pid")
    if status == "stale":
        return Health(False, f"{label}: stale control socket (the ssh master died); TensorBoard pid {remote_pid} not checked; tb.start reopens the tunnel")
    if status == "none":
        return Health(False, f"{label}: no tunnel (the ssh master is gone); TensorBoard pid {remote_pid} not checked; tb.start reopens the tunnel")
    url = url_for(data) if data.get("local_port") else None
    answer = _answer(data)
    if answer == "proven":
        return _healthy(label, url, master_pid, remote_pid, data)
    if answer == "hung" and not _link_answers(shell, target, paths):
        return Health(False, f"{label}: the tunnel does not answer ({url} gave nothing for {HUNG_AFTER:g}s: a laptop that slept, or a dropped link?); tb.start reconnects")
    rundir = remote.run_dir(data["remote_dir"], data["sid"])
    try:
        word, detail, _ = run_remote(shell, target, paths, remote.status_script(rundir))
    except TbError as error:
        return Health(False, f"{label}: tunnel up but the remote did not answer: {error}")
    if word != "running":
        job = data.get("job") or {}
        if job.get("via") == "srun":
            return Health(False, f"{label}: TensorBoard's step in job {job['id']} on {job['node']} has ended (has the job ended? squeue -j {job['id']}); tb.exit cleans up")
        return Health(False, f"{label}: TensorBoard is not running on {label} (pid {remote_pid} is gone); tb.start restarts it")
    if not url:
        return Health(False, f"{label}: TensorBoard pid {detail} is running but no forward was set up; tb.start completes it")
    ok, why = probe(url)
    if not ok:
        return Health(False, f"{label}: TensorBoard pid {detail} is running but {url} is not answering ({why})")
    return _healthy(label, url, master_pid, int(detail), data)


def _link_answers(shell: Shell, target: Target, paths: Paths) -> bool:
    """Does the remote's sshd still answer through our master?"""
    try:
        shell.run(sshargv.link_probe_argv(target, str(paths.socket)), timeout=HUNG_AFTER, what="ssh -W")
    except TbError:
        return False
    return True


def _drop_master(shell: Shell, target: Target, paths: Paths, pid: Optional[int]) -> None:
    """Close a master whose connection hangs (it still obeys ``-O exit``)."""
    try:
        close_master(shell, target, paths)
    except TbError:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    _clear_stale(paths)


def _answer(data: dict) -> str:
    """One probe through our forward: "proven", "hung" or "".

    "proven": the page answers as only our TensorBoard could, on a socket in
    our 0700 run directory or behind our secret URL token, so no remote
    command is needed (each one pays the remote login shell's start-up, e.g.
    a conda or pyenv init). "hung": no answer at all, not even a refusal:
    after a laptop sleeps the master still answers ``-O check`` (that is
    local) while its connection is dead until the keepalives give up, and a
    dead TensorBoard behind a live link fails at once instead (confirm with
    :func:`_link_answers`). "": no forward, or an answer that proves nothing.
    """
    if not data.get("forward") or not data.get("local_port"):
        return ""
    ok, why = probe(url_for(data), timeout=HUNG_AFTER)
    if ok and (data.get("token") or str(data.get("endpoint", "")).startswith("unix ")):
        return "proven"
    return "hung" if not ok and "timed out" in why else ""


def _healthy(label: str, url: str, master_pid: Optional[int], remote_pid: Optional[int], data: dict) -> Health:
    return Health(
        True,
        f"{label}: ok {url} ssh-master={master_pid} tensorboard={remote_pid} logdir={data['logdir']}",
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
            _close_jump(shell, target, say)
            return
        rundir = remote.run_dir(data["remote_dir"], data["sid"])
        via = paths if status == "up" else None
        if via is None:
            say(f"{label}: the tunnel is gone; connecting to stop TensorBoard")
        try:
            word, detail, _ = run_remote(shell, target, via, remote.stop_script(rundir), timeout=shell.quick + 10)
        except TbError as error:
            if via is None and _job_has_ended(shell, target, data):
                # ssh mode: the node refuses us now that the job is over
                # (pam_slurm_adopt), and took the job's processes with it.
                state.remove(paths)
                _close_jump(shell, target, say)
                say(
                    f"{label}: could not reach {target.host} to stop TensorBoard pid {data.get('remote_pid')} "
                    f"({error}); job {data['job']['id']} has ended, so its record is removed"
                )
                return
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
        job = data.get("job") or {}
        if job.get("via") == "srun" and word == "stopped":
            parts.append(f"ended TensorBoard's step in job {job['id']} on {job['node']} (srun pid {detail}; the job itself is left running)")
        elif word == "stopped":
            parts.append(f"stopped TensorBoard (pid {detail})")
        elif word == "gone":
            parts.append(f"TensorBoard pid {detail} had already exited")
        parts.append(f"closed the tunnel (ssh master pid {master_pid})" if status == "up" else "no tunnel was open")
        say(f"{label}: " + "; ".join(parts))
        _close_jump(shell, target, say)


def _close_jump(shell: Shell, target: Target, say: Say) -> None:
    """ssh mode: the login-node master the node's master rode on."""
    if target.jump is None or not target.jump_socket:
        return
    jump_paths = Paths(Path(target.jump_socket))
    status, pid = master_state(shell, target.jump, jump_paths)
    if status == "up":
        close_master(shell, target.jump, jump_paths)
        say(f"{target.jump.label}: closed the connection to the login node (ssh master pid {pid})")
    elif status == "stale":
        _clear_stale(jump_paths)
    with contextlib.suppress(FileNotFoundError):
        jump_paths.log.unlink()
