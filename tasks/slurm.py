"""Everything Slurm: finding a job's node, and the two placements of a
TensorBoard in a job.

``tb.start --job JOB -H LOGIN`` looks the job up with ``squeue`` on the
login node (through the login node's master), then either

- ``srun`` (:class:`SrunStep`): the login node runs TensorBoard as a step of
  the job (``srun --overlap``), and the session's master, to the login node,
  forwards to the node's address; or
- ``ssh`` (:class:`NodeViaLogin`): a second master, to the node itself,
  whose ProxyCommand rides the login node's master; the session is then an
  ordinary one on the node.

The session (``session.py``) knows neither: it calls the placement's hooks.
The shell text of the look-up and of the step is in ``remote.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import health, record, remote, sshargv, state
from .errors import JobEnded, JobPending, TbError
from .health import Answer
from .host import Host, Master, MasterState, resolve
from .jobclock import Clock
from .messages import RECONNECTING, isolation
from .placement import HERE, Launch, Placement
from .progress import Reporter
from .record import JobRef, Record
from .remote import Reply, Step, Word
from .session import Session, Started
from .settings import Settings
from .shell import Shell
from .sshargv import Target
from .state import Paths

_JOB_ID, _NODE = remote.JOB_ID, remote.NODE
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_ENDED = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
_WAITING = ("PENDING", "CONFIGURING", "REQUEUED", "RESV_DEL_HOLD", "REQUEUE_HOLD")


# ---------------------------------------------------------------- jobs


def check_job(spec: str) -> str:
    """A job id (``123``, ``123_4``) or a plain job name; refuse the rest."""
    spec = str(spec).strip()
    if _JOB_ID.fullmatch(spec) or _JOB_NAME.fullmatch(spec):
        return spec
    raise TbError(
        f"refusing job {spec!r}: give a Slurm job id (e.g. 123456) or a job name of "
        f"letters, digits and . _ + -"
    )


def followable(spec: str, settings: Settings) -> None:
    """``--follow`` follows a job by its name, through the session's watcher."""
    spec = check_job(spec)
    if _JOB_ID.fullmatch(spec):
        raise TbError(f"--follow follows a job by name (the next job of the name is another id): give --job NAME, not the id {spec}")
    if not settings.reconnect:
        raise TbError("--follow needs reconnect=yes: the session's watcher is what follows the job")


def job_script(spec: str) -> str:
    """The ``squeue`` look-up of ``spec`` (see :func:`remote.job_script`)."""
    spec = check_job(spec)
    return remote.job_script(spec, by_id=bool(_JOB_ID.fullmatch(spec)))


@dataclass(frozen=True)
class Job:
    """A job as ``squeue`` lists it; ``node``/``addr`` are ``-`` unless running."""

    id: str
    state: str
    owner: str
    node: str
    addr: str
    left: str = "-"  # squeue's time left (%L): "3:59:12", "UNLIMITED"


def parse_jobs(stdout: str) -> list[Job]:
    jobs = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) in (6, 7) and parts[0] == "tbr-job":
            jobs.append(Job(*parts[1:]))
    return jobs


def pick_job(jobs: list[Job], spec: str, me: str, where: str) -> Job:
    """The running job of ours that ``spec`` names, or a one-line reason."""
    by_id = bool(_JOB_ID.fullmatch(spec))
    if not jobs:
        if by_id:
            raise JobEnded(f"job {spec} is not in Slurm's queue on {where}: it has ended or never existed")
        raise JobEnded(f"no job named {spec!r} of yours ({me}) is in Slurm's queue on {where}")
    if by_id:
        others = sorted({job.owner for job in jobs if job.owner != me})
        if others:
            raise TbError(
                f"job {spec} belongs to {others[0]}, not to you ({me}) on {where}: "
                f"tensorboard-remote attaches only to your own jobs"
            )
    running = [job for job in jobs if job.state == "RUNNING"]
    if len(running) > 1:
        ids = ", ".join(job.id for job in running)
        what = f"job {spec} has several running tasks" if by_id else f"several running jobs of yours are named {spec!r}"
        raise TbError(f"{what} ({ids}): give one of them with --job")
    if running:
        return _runnable(running[0], where)
    # Ended jobs stay in squeue for a while (MinJobAge): what is still to
    # come decides, so that a followed name waits for its next job.
    live = [j for j in jobs if j.state not in _ENDED and j.state != "COMPLETING"]
    if not live and len(jobs) > 1:
        ids = ", ".join(f"{j.id}: {j.state.lower()}" for j in jobs)
        raise JobEnded(f"every job named {spec!r} of yours has ended ({ids}): there is no node to start TensorBoard on")
    if len(live) > 1 and not by_id:
        ids = ", ".join(j.id for j in live)
        said = f"no job named {spec!r} of yours is running yet ({ids}: {live[0].state.lower()}); try again once one runs"
        if all(j.state in _WAITING for j in live):
            raise JobPending(said, live[0].id, live[0].state.lower())
        raise TbError(said)
    job = live[0] if live else jobs[0]
    if job.state in _WAITING:
        raise JobPending(
            f"job {job.id} is {job.state.lower()}: it has no node yet; "
            f"run tb.start --job {spec} again once squeue shows it RUNNING",
            job.id, job.state.lower(),
        )
    if job.state in _ENDED or job.state == "COMPLETING":
        raise JobEnded(f"job {job.id} has ended ({job.state.lower()}): there is no node to start TensorBoard on")
    raise TbError(f"job {job.id} is {job.state.lower()}, not running: cannot start TensorBoard on its node")


def _runnable(job: Job, where: str) -> Job:
    """A running job we can start a step in, with an address to forward to."""
    if not _JOB_ID.fullmatch(job.id):
        raise TbError(f"job {job.id} is a kind of job tensorboard-remote cannot start a step in (a heterogeneous job?)")
    if job.node == "-" or not _NODE.fullmatch(job.node):
        raise TbError(f"cannot tell the node of job {job.id} on {where} (scontrol show hostnames failed or gave {job.node!r})")
    if not _NODE.fullmatch(job.addr):
        # No NodeAddr, or one we cannot forward to (IPv6): the node name.
        return dataclasses.replace(job, addr=job.node)
    return job


def lookup_job(shell: Shell, target: Target, socket: Optional[str], spec: str) -> tuple[list[Job], str]:
    """``squeue`` on the login node (through ``socket`` when given): the
    matching jobs and the user name there."""
    outcome = shell.run(
        sshargv.remote_argv(target, socket), timeout=shell.quick, stdin=job_script(spec), what=f"squeue on {target.label}"
    )
    reply = Reply.parse(outcome.stdout)
    where = _login_label(target)
    if reply is None:
        raise TbError(f"looking up job {spec} on {where} failed: {outcome.reason}")
    if reply.word is Word.ERROR:
        if reply.detail == "no-squeue":
            raise TbError(f"{where} has no 'squeue' on PATH in a non-interactive shell: is it a Slurm login node?")
        raise TbError(f"squeue failed on {where}: {reply.detail.partition(' ')[2] or reply.detail}")
    return parse_jobs(outcome.stdout), reply.info.get("user", "?")


def _login_label(target: Target) -> str:
    """The login host as the user typed it (no "(job ...)" tag)."""
    return dataclasses.replace(target, tag=None).label


def login_of(target: Target) -> str:
    """The login host a job session's target was reached from, as typed:
    the jump host of a node (ssh mode), else the target itself (srun)."""
    return _login_label(target.jump or target)


def find_job(host: Host, spec: str, report: Reporter) -> Job:
    """Ask the login node's Slurm (through our master) where ``spec`` runs."""
    report.phase(f"{host.label}: looking up job {spec}")
    jobs, me = lookup_job(host.shell, host.target, host.socket, spec)
    where = _login_label(host.target)
    job = pick_job(jobs, spec, me, where)
    _refuse_same_job(host.paths, job, where)
    where_ = f"{job.node}" + (f" ({job.addr})" if job.addr != job.node else "")
    report.say(f"{host.label}: job {job.id} runs on {where_}, {Clock(job.left, time.time()).words()}")
    return job


def job_now(host: Host, rec: Record) -> Optional[Job]:
    """The session's job as squeue sees it now, asked through the login
    node's master (None: that master is down, or squeue did not answer)."""
    if rec.job is None:
        return None
    target = host.target.jump or dataclasses.replace(host.target, tag=None)
    socket = host.target.jump_socket if host.target.jump else host.socket
    login = Host(host.shell, target, Paths(Path(socket or "")))
    if not socket or login.master().state is not MasterState.UP:
        return None
    try:
        jobs, _ = lookup_job(host.shell, target, socket, rec.job.id)
    except TbError:
        return None
    return next((j for j in jobs if j.id == rec.job.id), None)


def clock_of(host: Host, rec: Record) -> Optional[Clock]:
    """The job's time left: squeue's answer now, else the record's (as of its lookup)."""
    job = rec.job
    if job is None:
        return None
    now = job_now(host, rec)
    if now is not None and now.left != "-":
        return Clock(now.left, time.time())
    return job.clock()


def _refuse_same_job(paths: Paths, job: Job, where: str) -> None:
    """One session per job: ``--job train`` and ``--job 123`` may be one job."""
    for other, rec in record.all_records(paths.socket.parent):
        if other in (paths, paths.node) or rec.job is None or rec.job.id != job.id:
            continue
        if login_of(rec.target) == where:
            raise TbError(
                f"job {job.id} on {where} already has a tb session (started as --job {rec.job.spec} "
                f"through {rec.job.via}): use that, or tb.exit --job {rec.job.spec} first"
            )


def job_key(spec: str, via: str) -> str:
    """The control-path suffix of a job's session, one per job spec and way
    of reaching its node: a job name may hold characters ssh would expand in
    a ControlPath, so use a hash."""
    return "-j" + hashlib.sha256(f"{via}\0{spec}".encode()).hexdigest()[:8]


# ---------------------------------------------------------- placements


class SrunStep(Placement):
    """srun mode: TensorBoard as a step of the job, started from the login
    node (the session's host); it listens on TCP on the node's address, on
    any free port, behind the URL token, for the login node to forward to."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def serve(self, settings: Settings) -> str:
        return "tcp"

    def entry(self, host: Host) -> tuple[Target, Optional[str]]:
        return dataclasses.replace(host.target, tag=None), self.spec

    def find(self, host: Host, report: Reporter) -> JobRef:
        job = find_job(host, self.spec, report)
        return JobRef(spec=self.spec, id=job.id, node=job.node, addr=job.addr, via="srun", left=job.left, seen=f"{time.time():.0f}")

    def launch(self, rec: Record) -> Launch:
        job = _job_of(rec)
        return Launch(step=Step(job.id, job.node, job.addr), forward_host=job.addr, port=0)

    def starting(self, label: str, rec: Record) -> str:
        job = _job_of(rec)
        return f"{label}: starting TensorBoard as a step of job {job.id} on {job.node}"

    def started(self, label: str, rec: Record, pid: int, isolation_word: str, opened: bool) -> str:
        job = _job_of(rec)
        how = f"TCP {job.addr}, URL token, {isolation(isolation_word)}"
        return f"{label}: started TensorBoard in job {job.id} on {job.node} (srun pid {pid} on the login node; {how})"

    def forwarded(self, rec: Record, launch: Launch) -> str:
        return f"{launch.forward_host}:{str(rec.endpoint).split()[-1]} (node {_job_of(rec).node})"

    def clock(self, host: Host, rec: Record) -> Optional[Clock]:
        return clock_of(host, rec)

    def not_running(self, label: str, rec: Record) -> str:
        job = _job_of(rec)
        return f"TensorBoard's step in job {job.id} on {job.node} has ended (has the job ended? squeue -j {job.id}); tb.exit cleans up"

    def stopped(self, rec: Record, reply: Reply) -> str:
        job = _job_of(rec)
        return f"ended TensorBoard's step in job {job.id} on {job.node} (srun pid {reply.detail}; the job itself is left running)"


class NodeViaLogin(Placement):
    """ssh mode: the session's host is the node itself, reached through the
    login node's master (``Target.jump``); TensorBoard is started there as on
    any host. What differs is the login node's master around it."""

    def __init__(self, job: JobRef) -> None:
        self.job = job

    def entry(self, host: Host) -> tuple[Target, Optional[str]]:
        assert host.target.jump is not None
        return host.target.jump, self.job.spec

    def find(self, host: Host, report: Reporter) -> JobRef:
        return self.job

    def clock(self, host: Host, rec: Record) -> Optional[Clock]:
        return clock_of(host, rec)

    def unreachable(self, host: Host, rec: Record, error: Exception) -> Optional[str]:
        """The node refuses us now that the job is over (pam_slurm_adopt),
        and took the job's processes with it: the record may go."""
        if not _job_has_ended(host, rec):
            return None
        return (
            f"could not reach {host.target.host} to stop TensorBoard pid {rec.remote_pid} "
            f"({error}); job {_job_of(rec).id} has ended, so its record is removed"
        )

    def after_stop(self, host: Host, say: Callable[[str], None]) -> None:
        _close_jump(host, say)


def _job_of(rec: Record) -> JobRef:
    if rec.job is None:
        raise TbError(f"the record of {rec.label} names no Slurm job: run tb.exit for it and start again")
    return rec.job


def placement_of(rec: Record) -> Placement:
    """The placement of a recorded session."""
    if rec.job is None:
        return HERE
    return SrunStep(rec.job.spec) if rec.job.via == "srun" else NodeViaLogin(rec.job)


def _close_jump(host: Host, say: Callable[[str], None]) -> None:
    """ssh mode: the login-node master the node's master rode on."""
    target = host.target
    if target.jump is None or not target.jump_socket:
        return
    jump = Host(host.shell, target.jump, Paths(Path(target.jump_socket)))
    master = jump.close_if_up()
    if master.state is MasterState.UP:
        say(f"{jump.label}: closed the connection to the login node (ssh master pid {master.pid})")
    with contextlib.suppress(FileNotFoundError):
        jump.paths.log.unlink()
    state.drop_lock(jump.paths)


def _job_has_ended(host: Host, rec: Record) -> bool:
    """ssh mode: is the job of this node session no longer running? Asked on
    the login node (through its master when that is up)."""
    target = host.target
    if target.jump is None or rec.job is None:
        return False
    jump = Host(host.shell, target.jump, Paths(Path(target.jump_socket or "")))
    socket = jump.socket if jump.master().state is MasterState.UP else None
    try:
        jobs, _ = lookup_job(host.shell, target.jump, socket, rec.job.id)
    except TbError:
        return False
    return not any(j.id == rec.job.id and j.state == "RUNNING" for j in jobs)


# ------------------------------------------------------------ sessions


def job_session(shell: Shell, login: Target, control_dir: str, spec: str) -> tuple[Host, Placement]:
    """The host and placement of the session for ``spec`` on ``login``: the
    compute node's (ssh mode), else the login node's own (srun mode)."""
    spec = check_job(spec)
    node_paths = Host.locate(shell, login, control_dir, job_key(spec, "ssh")).paths.node
    rec = record.load(node_paths)
    if rec is not None:
        return Host(shell, rec.target.with_batch(login.batch), node_paths), placement_of(rec)
    host = Host.locate(shell, login, control_dir, job_key(spec, "srun"))
    return host.with_target(dataclasses.replace(login, tag=f"job {spec}")), SrunStep(spec)


def start_job(shell: Shell, login: Target, settings: Settings, report: Reporter, spec: str) -> Started:
    """``tb.start --job SPEC`` on the login host ``login``."""
    spec = check_job(spec)
    if not settings.url_token:
        raise TbError(
            "--job needs url_token=yes: on a compute node TensorBoard is reachable from the "
            "cluster network, and the secret URL token is what keeps others out"
        )
    via, other = settings.slurm_via, {"srun": "ssh", "ssh": "srun"}[settings.slurm_via]
    host = Host.locate(shell, login, settings.control_dir, job_key(spec, via))
    elsewhere = Host.locate(shell, login, settings.control_dir, job_key(spec, other)).paths
    if record.load(elsewhere) or record.load(elsewhere.node):
        raise TbError(
            f"job {spec} on {login.label} already has a tb session through {other}: "
            f"run tb.exit --job {spec} first, or start it with --slurm-via {other}"
        )
    if via == "srun":
        tagged = host.with_target(dataclasses.replace(login, tag=f"job {spec}"))
        return Session(tagged, SrunStep(spec)).start(settings, report)
    return _start_via_ssh(host, settings, report, spec)


def _start_via_ssh(jump: Host, settings: Settings, report: Reporter, spec: str) -> Started:
    """ssh mode: a master on the login node (the jump), one on the node
    through it (ProxyCommand rides the jump: no second login there), and the
    usual start on the node: a Unix socket, the data server in a namespace."""
    node_paths = jump.paths.node
    state.check_socket_path(node_paths.socket)
    label = f"{jump.label} (job {spec})"
    with state.locked(jump.paths):
        master = jump.master()
        recorded = record.load(node_paths)
        if master.state is MasterState.UP and recorded is not None:
            node = Host(jump.shell, recorded.target.with_batch(jump.target.batch), node_paths)
            if health.answer(recorded) is Answer.HUNG and not node.link_answers():
                report.say(f"{label}: {RECONNECTING}")
                node.drop(recorded.master_pid)
                jump.drop(master.pid)
                master = Master(MasterState.NONE)
        if master.state is MasterState.STALE:
            jump.clear_stale()
        if master.state is not MasterState.UP:
            with report.login(f"{label}: connecting to the login node", prompts=jump.may_prompt):
                pid = jump.open(settings.keepalive)
            report.say(f"{label}: opened the connection to the login node (ssh master pid {pid})")
        try:
            job = find_job(jump, spec, report)
            old = record.load(node_paths)
            if old is not None and old.target.host != job.node:
                raise TbError(
                    f"{label}: a session for this job on node {old.target.host} is recorded, "
                    f"but the job now runs on {job.node}: run tb.exit --job {spec} first"
                )
            node = Host(jump.shell, _node_target(jump, job), node_paths)
            ref = JobRef(spec=spec, id=job.id, node=job.node, addr=job.addr, via="ssh", left=job.left, seen=f"{time.time():.0f}")
            return Session(node, NodeViaLogin(ref)).start(settings, report)
        except BaseException:
            if record.load(node_paths) is None and jump.master().state is MasterState.UP:
                jump.close()
                state.remove(jump.paths, socket=True)
            raise


def _node_target(jump: Host, job: Job) -> Target:
    """The compute node as OpenSSH is to reach it: through the login node's master."""
    login = jump.target
    return Target(
        host=job.node,
        user=login.user or _node_user(jump.shell, login, job.node),
        ssh_config=login.ssh_config,
        identities=login.identities,
        connect_timeout=login.connect_timeout,
        batch=login.batch,
        jump=dataclasses.replace(login, tag=None),
        jump_socket=jump.socket,
        tag=f"job {job.id} via {login.label}",
    )


def _node_user(shell: Shell, login: Target, node: str) -> Optional[str]:
    """The user on a compute node: the node's ``User`` from ssh_config if it
    has one, else the login host's (the job's owner), never just ours here."""
    here = getpass.getuser()
    try:
        node_user = resolve(shell, dataclasses.replace(login, host=node), "user")
        if node_user and node_user != here:
            return None  # ssh_config names one for the node: let OpenSSH use it
        login_user = resolve(shell, login, "user")
    except TbError:
        return None  # ssh itself will say what is wrong with the config
    return login_user if login_user and login_user != here else None
