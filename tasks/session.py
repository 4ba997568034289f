"""A session: one TensorBoard of ours, behind one ssh master, on one host.

``tb.start`` first looks (the master's state, the session's record, one
probe through its forward, and the link only when that probe hangs), then
:func:`plan` decides what to do from what it saw, and :class:`Session`
carries the plan out. ``tb.check`` and ``tb.exit`` are :meth:`Session.check`
and :meth:`Session.stop`. Where TensorBoard runs (the host itself, or a Slurm
job behind it) is the session's :class:`~placement.Placement`.

The start decision (also in the README):

=========  ======  ========  =====  ==========  ==============  ==========
master     record  probe     link   tunnel      TensorBoard     local port
=========  ======  ========  =====  ==========  ==============  ==========
up         none    -         -      replace     start           pick
none       any     -         -      open        ensure          pick
stale      any     -         -      clear+open  ensure          pick
up         yes     proven    -      keep        reuse (no ssh)  keep
up         yes     hung      dead   reconnect   ensure          pick
up         yes     hung      alive  keep        ensure          keep
up         yes     unproven  -      keep        ensure          keep if forwarded
yours      none    -         -      borrow      ensure          pick
yours      ours    -         -      borrow      ensure          pick
=========  ======  ========  =====  ==========  ==============  ==========

"yours" is the user's own live master (``ssh -G`` names its ControlPath and
it answers ``-O check``; setting ``user_master``): we ride it, never close
it, and fall back to a master of ours when it is gone (``Host.ride``). A
session already on the user's master goes through the other rows as for
ours, except that "reconnect" leaves their master alone and opens ours.

"ensure" runs the start script: it reuses a TensorBoard that is provably
ours (pid, start time, uid and boot id) and starts one otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, NoReturn, Optional

import os
import socket

from . import health, messages, ports, record, remote, resident, sshargv, state
from .errors import ForwardingForbidden, StreamLocalRefused, TbError
from .health import Answer, Health, Status
from .host import HUNG_AFTER, Host, Master, MasterState
from .placement import HERE, Launch, Placement
from .progress import Reporter
from .record import JobRef, Record
from .remote import Word
from .settings import Settings

Say = Callable[[str], None]


class _NotThroughTheirs(Exception):
    """The user's master closes every connection through our forward while
    TensorBoard listens: it refuses the channel, and its log (which would
    say why) is not ours to read. Our own master says why, or works."""

#: Seconds between "is our TensorBoard still alive" checks while waiting.
LIVENESS_EVERY = 0.5
#: Seconds between HTTP probes while waiting for the page.
PROBE_EVERY = 0.05
#: Seconds a start waits for a new watcher to answer, and to see the page.
WATCHER_READY = 10.0
#: tb.check warns when a Slurm job has less than this left (setting job_warn).
JOB_WARN = 600.0


class Tunnel(Enum):
    KEEP = "keep"  # the master is up, and the session's
    OPEN = "open"  # no master: open one
    CLEAR = "clear"  # a stale socket (the master died): remove it, then open
    REPLACE = "replace"  # a master of ours with no record: we cannot tell what it forwards; close it, then open
    RECONNECT = "reconnect"  # the master is up but its link is dead (a laptop slept): drop it, then open
    BORROW = "borrow"  # the user's own master is up: ride it (no login), with forwards of our own


class Board(Enum):
    REUSE = "reuse"  # proven ours and answering: no remote command at all
    ENSURE = "ensure"  # the start script: reuse ours if it runs, else start one


@dataclass(frozen=True)
class Plan:
    tunnel: Tunnel
    board: Board
    keep_port: bool  # the live forward keeps its local port

    @property
    def opens(self) -> bool:
        """A new master of ours (a login)."""
        return self.tunnel not in (Tunnel.KEEP, Tunnel.BORROW)

    @property
    def fresh(self) -> bool:
        """Another master than the recorded one: no forward of ours on it."""
        return self.tunnel is not Tunnel.KEEP


def plan(master: MasterState, rec: Optional[Record], answer: Answer, link: Optional[bool] = None, *, switched: bool = False) -> Plan:
    """What ``tb.start`` does, from what it saw (the table in the module
    docstring). ``link``: whether sshd answered through the master, asked
    only when the probe hung (None: not asked). ``switched``: the master is
    the user's, and the session did not ride it so far (or is new)."""
    if switched and master is MasterState.UP:
        return Plan(Tunnel.BORROW, Board.ENSURE, keep_port=False)
    if master is MasterState.STALE:
        return Plan(Tunnel.CLEAR, Board.ENSURE, keep_port=False)
    if master is MasterState.NONE:
        return Plan(Tunnel.OPEN, Board.ENSURE, keep_port=False)
    if rec is None:
        return Plan(Tunnel.REPLACE, Board.ENSURE, keep_port=False)
    if answer is Answer.HUNG and not link:
        return Plan(Tunnel.RECONNECT, Board.ENSURE, keep_port=False)
    if answer is Answer.PROVEN:
        return Plan(Tunnel.KEEP, Board.REUSE, keep_port=True)
    return Plan(Tunnel.KEEP, Board.ENSURE, keep_port=bool(rec.forward))


@dataclass(frozen=True)
class Started:
    """What ``tb.start`` leaves: the record as saved, and its URL."""

    record: Record
    url: str
    reused: bool  # nothing was started or opened


def requested(settings: Settings) -> dict[str, Any]:
    """The settings that define a session: everything that shapes the remote
    TensorBoard, and the local port. A start asking for others must not
    reuse it (nor silently restart it: the user may be watching it)."""
    wanted: dict[str, Any] = {
        "logdir": settings.logdir,
        "remote_dir": settings.remote_dir,
        "local_port": settings.local_port,
        "serve": settings.serve,
        "url_token": settings.url_token,
        "data_server": settings.data_server,
        "tensorboard_cmd": settings.tensorboard_cmd,
        "activate": settings.activate,
        "python": settings.python,
        "reconnect": settings.reconnect,
        "follow": settings.follow,
    }
    if settings.serve == "tcp":
        wanted["remote_port"] = settings.remote_port
    return wanted


def refuse_other_settings(rec: Record, settings: Settings, label: str) -> None:
    """Refuse a start whose settings differ from the session's, naming the
    values in force. A key an older record lacks is not compared."""
    was = rec.requested
    differ = [key for key, value in requested(settings).items() if key in was and was[key] != value]
    if not differ:
        return
    in_force = {"local_port": rec.local_port or was.get("local_port")}
    shown = ", ".join(f"{key}={in_force.get(key, was[key])!r}" for key in differ)
    asked = ", ".join(f"{key}={requested(settings)[key]!r}" for key in differ)
    raise TbError(
        f"{label} already has a tb session with {shown} (this start asks for {asked}): "
        f"run tb.exit for it first, or start with the same settings"
    )


class Session:
    """Start, check and stop the session on ``host``."""

    def __init__(self, host: Host, placement: Placement = HERE, *, probe: Callable[..., health.Probe] = health.probe) -> None:
        self.host = host
        self.placement = placement
        #: The HTTP probe (a stand-in in the unit tests).
        self.probe = probe

    @property
    def label(self) -> str:
        return self.host.label

    def record(self) -> Optional[Record]:
        """The session's record, as saved (None: nothing recorded)."""
        return record.load(self.host.paths)

    # ------------------------------------------------------------ start

    def start(self, settings: Settings, report: Reporter) -> Started:
        """Open (or reuse) the master, start (or reuse) TensorBoard, wait for the page."""
        host = self.host
        with state.locked(host.paths):
            rec = record.load(host.paths)
            if rec is not None:
                refuse_other_settings(rec, settings, self.label)
            master = host.ride(rec.borrowed if rec else None, new=rec is None)
            switched = master.borrowed and (rec is None or rec.borrowed != host.socket)
            seen = health.answer(rec, self.probe) if master.state is MasterState.UP and not switched else Answer.UNPROVEN
            link = host.link_answers() if seen is Answer.HUNG else None
            chosen = plan(master.state, rec, seen, link, switched=switched)
            started = self._carry_out(chosen, rec, master, settings, report)
        # Outside the lock: a watcher that is reconnecting waits for it.
        self._hand_over(started.record, report)
        report.result(started.url, f"{self.label}: TensorBoard ready at {started.url}")
        return started

    def _hand_over(self, rec: Record, report: Reporter) -> None:
        """A watched session: the watcher has seen the session serve, and
        the URL answers through it (a watcher repairing its own session
        skips this)."""
        if not rec.relay or resident.is_self(rec.watcher):
            return
        deadline = time.monotonic() + WATCHER_READY
        status = resident.ask(self.host.paths, "status")
        while status is None and resident.alive(rec.watcher) and time.monotonic() < deadline:
            time.sleep(PROBE_EVERY)
            status = resident.ask(self.host.paths, "status")
        if status is not None and status.get("phase") != "serving":
            status = resident.ask(self.host.paths, "probe", timeout=WATCHER_READY)
        if status is None:
            raise TbError(f"{self.label}: the watcher (pid {rec.watcher.pid if rec.watcher else '?'}) does not answer: see {self.host.paths.watch_log}")
        if status.get("phase") != "serving":
            raise TbError(f"{self.label}: the watcher says {status.get('phase')}: {status.get('error') or 'see ' + str(self.host.paths.watch_log)}")
        assert rec.url is not None
        page = self.probe(rec.url)
        if not page.ok:
            raise TbError(f"{self.label}: {rec.url} does not answer through the watcher ({page.reason}): see {self.host.paths.watch_log}")

    def _carry_out(self, chosen: Plan, rec: Optional[Record], master: Master, settings: Settings, report: Reporter) -> Started:
        host, label, say = self.host, self.label, report.say
        if chosen.tunnel is Tunnel.REPLACE:
            host.close()
        elif chosen.tunnel is Tunnel.CLEAR:
            say(f"{label}: removing a stale control socket left by a master that died")
            host.clear_stale()
        elif chosen.tunnel is Tunnel.RECONNECT:
            say(f"{label}: {messages.RECONNECTING}")
            host.drop(master.pid, rec.forward if rec else None)
        elif chosen.tunnel is Tunnel.BORROW:
            say(f"{label}: riding your ssh master (pid {master.pid}, {host.socket}): no new login")
        watched = settings.reconnect if rec is None else rec.relay is not None
        watching = watched and rec is not None and resident.alive(rec.watcher)
        if chosen.board is Board.REUSE and rec is not None and rec.url:
            if watched and not watching:
                rec = self._restore_watcher(rec, settings, report)
            say(f"{label}: reusing the tunnel (ssh master pid {master.pid}) and TensorBoard (pid {rec.remote_pid})")
            assert rec.url is not None
            return Started(rec, rec.url, reused=True)
        # Choose the local port before anything starts, so a busy port costs
        # nothing; a live forward (or a live watcher) keeps its port.
        listener: Optional[socket.socket] = None
        if rec is not None and rec.local_port and (watching or (chosen.keep_port and not watched)):
            local_port = rec.local_port
        elif watched:
            listener = self._listen(rec, settings, say)
            local_port = listener.getsockname()[1]
        else:
            local_port = ports.CLAIMS.pick(settings, label, say, ports.ours(host.paths))
        try:
            master_pid = master.pid
            if chosen.opens:
                master_pid = self.open_master(settings, report, again=rec is not None and bool(rec.remote_pid))
            job = self._find(rec, chosen, report)
            rec = self._recorded(
                rec, settings, job, opened=chosen.fresh, local_port=local_port, master_pid=master_pid,
                borrowed=host.socket if host.borrowing else None,
            )
            if watched:
                rec = dataclasses.replace(rec, relay=str(host.paths.relay))
            record.save(host.paths, rec)
            if listener is not None:
                try:
                    rec = self._spawn_watcher(rec, listener, settings, report)
                except TbError:
                    self.discard(rec)
                    raise
                finally:
                    listener = None
        finally:
            if listener is not None:
                listener.close()
        rec = _Launch(self, settings, report).run(rec, chosen.fresh)
        assert rec.url is not None
        return Started(rec, rec.url, reused=False)

    def open_master(self, settings: Settings, report: Reporter, *, again: bool = False) -> Optional[int]:
        """Open a master of ours (a login, which may prompt on a terminal) and say so; its pid."""
        with report.login(f"{self.label}: connecting", prompts=self.host.may_prompt):
            pid = self.host.open(settings.keepalive)
        report.say(f"{self.label}: {'re' if again else ''}opened the tunnel (ssh master pid {pid})")
        return pid

    def discard(self, rec: Record) -> None:
        """After a failed start: leave nothing of ours running or recorded
        (a watcher repairing its session keeps the record, says why, and
        tries again)."""
        try:
            self.host.run(remote.stop_script(rec.rundir))
        except TbError:
            pass
        if resident.is_self(rec.watcher):
            return
        if rec.watcher is not None:
            resident.stop(self.host.paths, rec.watcher)
        if self.host.master().state is MasterState.UP:
            self.host.release(rec.forward)
        state.remove(self.host.paths, socket=True)

    def _listen(self, rec: Optional[Record], settings: Settings, say: Say) -> socket.socket:
        """Bind the local port a new watcher is to own: the session's own
        port again if it has one (the same URL), else as the settings say."""
        if rec is not None and rec.local_port:
            try:
                return resident.bind(rec.local_port)
            except TbError:
                if settings.local_port_explicit and settings.local_port == rec.local_port:
                    raise
        port = ports.CLAIMS.pick(settings, self.label, say, ports.ours(self.host.paths))
        if rec is not None and rec.local_port and port != rec.local_port:
            say(f"{self.label}: local port {rec.local_port} was taken meanwhile: the session moves to {port} (a new URL)")
        return resident.bind(port)

    def _spawn_watcher(self, rec: Record, listener: socket.socket, settings: Settings, report: Reporter) -> Record:
        target, job = self.placement.entry(self.host)
        spec = {
            "label": self.label,
            "target": target.to_dict(),
            "job": job,
            "settings": dataclasses.asdict(settings),
        }
        port = listener.getsockname()[1]
        ref = resident.spawn(self.host.paths, listener, spec)
        rec = dataclasses.replace(rec, watcher=ref)
        record.save(self.host.paths, rec)
        report.say(f"{self.label}: watcher pid {ref.pid} holds 127.0.0.1:{port} and reconnects by itself")
        return rec

    def _restore_watcher(self, rec: Record, settings: Settings, report: Reporter) -> Record:
        """The watcher of a serving session is gone (killed): start another
        on the same port; the master's forward is still in place."""
        listener = self._listen(rec, settings, report.say)
        rec = dataclasses.replace(rec, local_port=listener.getsockname()[1])
        record.save(self.host.paths, rec)
        report.say(f"{self.label}: the watcher was gone: restoring it")
        return self._spawn_watcher(rec, listener, settings, report)

    def _find(self, rec: Optional[Record], chosen: Plan, report: Reporter) -> Optional[JobRef]:
        """The placement's look-up (a Slurm job's node); on failure, close
        what this start opened and leave no record it made."""
        try:
            return self.placement.find(self.host, report)
        except TbError:
            if chosen.opens:
                self.host.close()
                if rec is None:
                    state.remove(self.host.paths, socket=True)
            raise

    def _recorded(self, rec: Optional[Record], settings: Settings, job: Optional[JobRef], *, opened: bool, **now: Any) -> Record:
        """The record as this start leaves it before TensorBoard starts."""
        if rec is None:
            rec = Record(
                sid=secrets.token_hex(8),
                target=self.host.target,
                serve=self.placement.serve(settings),
                logdir=settings.logdir,
                remote_dir=settings.remote_dir,
                socket=str(self.host.paths.socket),
                started_at=time.time(),
                requested=requested(settings),
                token=secrets.token_urlsafe(18) if settings.url_token else None,
            )
        if job is not None:
            rec = dataclasses.replace(rec, job=job)
        if opened:
            rec = dataclasses.replace(rec, forward=None)  # forwards die with their master
        return dataclasses.replace(
            rec, target=self.host.target, logdir=settings.logdir, remote_dir=settings.remote_dir,
            socket=str(self.host.paths.socket), **now,
        )

    # ------------------------------------------------------------ check

    def check(self, warn_before: float = JOB_WARN) -> Health:
        """Is the tunnel up, TensorBoard running, and the page answering?
        With a watcher: and is it there, and what is it doing? With a Slurm
        job: how long it has left (a warning under ``warn_before`` seconds)."""
        rec = record.load(self.host.paths)
        seen = self._check_tunnel(rec)
        if rec is not None and rec.relay:
            seen = self._with_watcher(rec, seen)
        if rec is not None and rec.job is not None and seen.status not in (Status.JOB_ENDED, Status.NOT_RUNNING, Status.WAITING_FOR_JOB):
            seen = self._with_clock(rec, seen, warn_before)
        return seen

    def _with_clock(self, rec: Record, seen: Health, warn_before: float) -> Health:
        clock = self.placement.clock(self.host, rec)
        if clock is None or rec.job is None:
            return seen
        words = f"; job {rec.job.id}: {clock.words()}"
        warning = clock.warning(warn_before, rec.job.id)
        if warning:
            words += f"; {warning}"
        return dataclasses.replace(seen, detail=seen.detail + words, job={"id": rec.job.id, **clock.as_json(), "warning": warning})

    def _with_watcher(self, rec: Record, seen: Health) -> Health:
        """The watcher's part of ``tb.check``'s line, and its state first
        when it is not serving."""
        ref = rec.watcher
        status = resident.ask(self.host.paths, "status") if resident.alive(ref) else None
        if status is None:
            who = f"the watcher (pid {ref.pid})" if ref else "the watcher"
            what = "does not answer" if resident.alive(ref) else "is gone"
            return Health(
                Status.NO_WATCHER, self.label,
                f"{who} {what}: nothing serves 127.0.0.1:{rec.local_port}; tb.start restores it with the same URL; "
                f"the rest: {seen.detail}",
                watcher=None,
            )
        phase = str(status.get("phase"))
        line = f"watcher={status.get('pid')} {phase} reconnects={status.get('reconnects', 0)}"
        if status.get("last_outage"):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(status["last_outage"])))
            line += f" last-outage={when} ({status.get('last_outage_seconds')}s)"
        waiting = {
            "reconnecting": Status.RECONNECTING, "needs-login": Status.NEEDS_LOGIN,
            "host-key-refused": Status.HOST_KEY_REFUSED, "job-ended": Status.JOB_ENDED,
            "waiting-for-job": Status.WAITING_FOR_JOB,
        }
        if phase in waiting:
            since = status.get("outage_since")
            lost = time.strftime(" since %H:%M:%S", time.localtime(float(since))) if since else ""
            said = {
                "reconnecting": f"reconnecting by itself (attempt {status.get('attempt')}{lost}; last try: {status.get('error') or '-'})",
                "needs-login": f"needs you to log in again{lost}: run tb.start (it logs in once; the URL stays the same)",
                "host-key-refused": f"{status.get('error')}: stopped reconnecting; fix known_hosts, then tb.start",
                "job-ended": f"{status.get('error')}: stopped reconnecting; tb.exit cleans up",
                "waiting-for-job": f"{status.get('error')} (the same URL serves it once it runs; tb.exit stops following)",
            }[phase]
            # Following, the last job's step having ended is the news already
            # said (its "tb.exit cleans up" would read as advice to stop).
            rest = "" if phase == "waiting-for-job" else f"; the rest: {seen.detail}"
            return Health(waiting[phase], self.label, f"{said}; {line}{rest}", watcher=status)
        return dataclasses.replace(seen, detail=f"{seen.detail} {line}", watcher=status)

    def _check_tunnel(self, rec: Optional[Record]) -> Health:
        """Master, link, remote TensorBoard and page (the probe goes through
        the relay socket of a watched session: the master's forward)."""
        host, label = self.host, self.label
        master = host.follow(rec.borrowed if rec else None)

        def unwell(status: Status, detail: str) -> Health:
            return Health(status, label, detail)

        if rec is None:
            if master.state is MasterState.UP:
                return unwell(Status.UNRECORDED_MASTER, f"an ssh master of ours is up (pid {master.pid}) but no TensorBoard is recorded: run tb.start or tb.exit")
            if master.state is MasterState.STALE:
                return unwell(Status.STALE_SOCKET, f"stale control socket {host.paths.socket} (the ssh master died); tb.start repairs it")
            return unwell(Status.NO_TUNNEL, "no tunnel (start one with tb.start)")
        pid = rec.remote_pid
        if master.borrowed and master.state is not MasterState.UP:
            return unwell(Status.NO_TUNNEL, f"your ssh master ({host.socket}) that the session rode is gone; TensorBoard pid {pid} not checked; tb.start (or the watcher) opens one of ours")
        if master.state is MasterState.STALE:
            return unwell(Status.STALE_SOCKET, f"stale control socket (the ssh master died); TensorBoard pid {pid} not checked; tb.start reopens the tunnel")
        if master.state is MasterState.NONE:
            return unwell(Status.NO_TUNNEL, f"no tunnel (the ssh master is gone); TensorBoard pid {pid} not checked; tb.start reopens the tunnel")
        seen = health.answer(rec, self.probe)
        if seen is Answer.PROVEN:
            return self._healthy(rec, master.pid, pid)
        if seen is Answer.HUNG and not host.link_answers():
            return unwell(Status.HUNG_LINK, f"the tunnel does not answer ({rec.url} gave nothing for {HUNG_AFTER:g}s: a laptop that slept, or a dropped link?); tb.start reconnects")
        try:
            reply = host.run(remote.status_script(rec.rundir))
        except TbError as error:
            return unwell(Status.REMOTE_SILENT, f"tunnel up but the remote did not answer: {error}")
        if reply.word is not Word.RUNNING:
            return unwell(Status.NOT_RUNNING, self.placement.not_running(label, rec))
        if not rec.url:
            return unwell(Status.NO_FORWARD, f"TensorBoard pid {reply.detail} is running but no forward was set up; tb.start completes it")
        page = self.probe(rec.url, via=rec.relay)
        if not page.ok:
            return unwell(Status.PAGE_SILENT, f"TensorBoard pid {reply.detail} is running but {rec.url} is not answering ({page.reason})")
        return self._healthy(rec, master.pid, int(reply.detail))

    def _healthy(self, rec: Record, master_pid: Optional[int], remote_pid: Optional[int]) -> Health:
        yours = "(yours)" if rec.borrowed else ""
        return Health(Status.OK, self.label, f"ok {rec.url} ssh-master={master_pid}{yours} tensorboard={remote_pid} logdir={rec.logdir}")

    # ------------------------------------------------------------- stop

    def stop(self, say: Say) -> None:
        """Close the tunnel and stop only the TensorBoard we started."""
        host, label = self.host, self.label
        # The watcher first, outside the lock: a reconnect in flight holds
        # it, and is cancelled by this.
        first = record.load(host.paths)
        if first is not None and first.relay and resident.stop(host.paths, first.watcher):
            say(f"{label}: stopped the watcher (pid {first.watcher.pid if first.watcher else '?'}); 127.0.0.1:{first.local_port} is closed")
        with state.locked(host.paths):
            rec = record.load(host.paths)
            master = host.follow(rec.borrowed if rec else None)
            if rec is None:
                if master.state is MasterState.UP:
                    host.close()
                    say(f"{label}: closed the tunnel (ssh master pid {master.pid}); no TensorBoard was recorded")
                else:
                    if master.state is MasterState.STALE:
                        host.clear_stale()
                    say(f"{label}: nothing to stop")
                state.remove(host.paths)
                self.placement.after_stop(host, say)
                return
            up = master.state is MasterState.UP
            if not up:
                say(f"{label}: the tunnel is gone; connecting to stop TensorBoard")
            try:
                reply = host.run(remote.stop_script(rec.rundir), timeout=host.shell.quick + 10, through_master=up)
            except TbError as error:
                forgotten = None if up else self.placement.unreachable(host, rec, error)
                if forgotten is None:
                    raise TbError(
                        f"could not stop TensorBoard pid {rec.remote_pid} on {label}: {error}; "
                        f"its record is kept, run tb.exit again when {label} is reachable"
                    ) from None
                state.remove(host.paths)
                self.placement.after_stop(host, say)
                say(f"{label}: {forgotten}")
                return
            if reply.word is Word.ERROR:
                raise TbError(f"could not stop TensorBoard on {label}: {reply.detail}")
            if up:
                host.release(rec.forward)
            elif master.state is MasterState.STALE:
                host.clear_stale()
            state.remove(host.paths)
            parts = []
            if reply.word is Word.STOPPED:
                parts.append(self.placement.stopped(rec, reply))
            elif reply.word is Word.GONE:
                parts.append(f"TensorBoard pid {reply.detail} had already exited")
            if up and master.borrowed:
                parts.append(f"removed our forward from your ssh master (pid {master.pid}), which stays up")
            else:
                parts.append(f"closed the tunnel (ssh master pid {master.pid})" if up else "no tunnel was open")
            say(f"{label}: " + "; ".join(parts))
            self.placement.after_stop(host, say)


class _Launch:
    """One start of TensorBoard behind a session's master: run the start
    script, forward to where TensorBoard listens, wait for the page."""

    def __init__(self, session: Session, settings: Settings, report: Reporter) -> None:
        self.session = session
        self.host = session.host
        self.placement = session.placement
        self.settings = settings
        self.report = report
        self.label = session.label
        self.deadline = 0.0

    def run(self, rec: Record, opened: bool) -> Record:
        """Start or reuse TensorBoard, forward to it, wait for the page; the
        record as saved."""
        launch = self.placement.launch(rec)
        self.deadline = time.monotonic() + self.settings.start_timeout
        reply = self._start_script(rec, launch)
        rec = dataclasses.replace(rec, remote_pid=int(reply.detail))
        record.save(self.host.paths, rec)
        if reply.info.get("endpoint"):
            endpoint, isolation = reply.info["endpoint"], reply.info.get("isolation", "shared")
        else:
            endpoint, isolation = self._wait_endpoint(rec)
        rec = dataclasses.replace(rec, endpoint=endpoint, isolation=isolation)
        reused = reply.word is Word.RUNNING
        self._announce(rec, reused, opened)
        if "logdir-missing" in reply.info:
            self.report.say(f"{self.label}: {messages.logdir_missing(rec.logdir, reply.info['logdir-missing'])}")
        rec = self._forward(rec, launch, reused)
        self.report.phase(f"{self.label}: waiting for the page")
        try:
            self._wait_page(rec)
        except _NotThroughTheirs:
            return self.run(self._own_master(rec), True)
        except StreamLocalRefused:
            return self.run(self._fall_back_to_tcp(rec), opened)
        except ForwardingForbidden as error:
            self.session.discard(rec)
            raise TbError(str(error)) from None
        return rec

    def _start_script(self, rec: Record, launch: Launch) -> remote.Reply:
        """One round trip: the script starts TensorBoard and waits, on the
        remote, until it listens (each remote command pays the login shell's
        start-up, e.g. a conda or pyenv init in ~/.bashrc)."""
        settings = self.settings
        data_server = settings.data_server
        if rec.serve == "tcp" and data_server == "auto" and launch.step is None:
            data_server = "off"  # TCP must be reachable from sshd: no namespace (a job step has our relay)
        port = launch.port if launch.port is not None else (0 if rec.fallback else settings.remote_port)
        script = remote.start_script(
            rec.rundir, rec.logdir, settings.tensorboard_cmd, settings.activate,
            python=settings.python, serve=rec.serve, port=port if rec.serve == "tcp" else 0, data_server=data_server,
            token=rec.token, wait=settings.start_timeout, step=launch.step,
        )
        self.report.phase(self.placement.starting(self.label, rec))
        reply = self.host.run(script, timeout=settings.start_timeout + self.host.shell.quick + 10)
        if reply.word is Word.ERROR:
            self.session.discard(rec)
            raise TbError(messages.start_error(reply.detail, self.label, settings))
        if reply.word is Word.DIED:
            self._died(rec)
        return reply

    def _announce(self, rec: Record, reused: bool, opened: bool) -> None:
        """The TensorBoard line (the tunnel's own line was said when it opened)."""
        say, label, pid = self.report.say, self.label, rec.remote_pid
        if reused and not opened:
            say(f"{label}: reusing the tunnel (ssh master pid {rec.master_pid}) and TensorBoard (pid {pid})")
        elif reused:
            say(f"{label}: TensorBoard pid {pid} was still running")
        else:
            assert pid is not None
            say(self.placement.started(label, rec, pid, str(rec.isolation), opened))

    def _forward(self, rec: Record, launch: Launch, reused: bool) -> Record:
        """Point the master's forward at where TensorBoard listens."""
        assert rec.local_port is not None and rec.endpoint is not None
        spec = sshargv.forward_spec(rec.relay or rec.local_port, rec.endpoint, launch.forward_host)
        if spec != rec.forward:
            self.report.phase(f"{self.label}: opening the tunnel")
            if rec.forward:
                self.host.cancel(rec.forward)
            if rec.relay:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(rec.relay)  # left by a lost master; ours, in our 0700 directory
            try:
                self.host.forward(spec, rec.local_port)
            except TbError:
                if not reused:
                    self.session.discard(rec)
                raise
            self.report.say(f"{self.label}: forwarding 127.0.0.1:{rec.local_port} here to {self.placement.forwarded(rec, launch)}")
        rec = dataclasses.replace(rec, forward=spec)
        record.save(self.host.paths, rec)
        return rec

    def _fall_back_to_tcp(self, rec: Record) -> Record:
        """The server refused Unix-socket forwarding: stop this TensorBoard,
        and start again on TCP."""
        if rec.serve != "unix":
            raise TbError(f"{self.label} refused the forward to TensorBoard") from None
        self.report.say(
            f"{self.label}: the server refuses Unix-socket forwarding (AllowStreamLocalForwarding no); "
            f"falling back to TCP on its 127.0.0.1 with a free port"
            + (" and the URL token" if rec.token else "")
        )
        self.host.run(remote.stop_script(rec.rundir), timeout=self.host.shell.quick + 10)
        if rec.forward:
            self.host.cancel(rec.forward)
        rec = dataclasses.replace(rec, serve="tcp", fallback=True, forward=None, endpoint=None)
        record.save(self.host.paths, rec)
        return rec

    def _wait_endpoint(self, rec: Record) -> tuple[str, str]:
        """Poll the remote until TensorBoard says where it listens."""
        while True:
            reply = self.host.run(remote.status_script(rec.rundir))
            if reply.word is not Word.RUNNING:
                self._died(rec)
            if reply.info.get("endpoint"):
                return reply.info["endpoint"], reply.info.get("isolation", "shared")
            if time.monotonic() >= self.deadline:
                raise TbError(self._timed_out(rec, "not listening yet"))
            time.sleep(PROBE_EVERY)

    def _wait_page(self, rec: Record) -> None:
        """Poll the page through the tunnel; check liveness now and then.

        TensorBoard wrote its endpoint only once its socket listened, so a
        connection through a Unix-socket forward that the master reports as
        "open failed" while TensorBoard is alive means the server refused
        stream-local forwarding (``AllowStreamLocalForwarding no``).
        """
        assert rec.url is not None
        unix = str(rec.endpoint).startswith("unix ")
        mark = self.host.log_size()
        next_liveness = time.monotonic() + LIVENESS_EVERY
        closed = 0
        while True:
            page = self.session.probe(rec.url, via=rec.relay)
            if page.ok:
                return
            if self.host.borrowing:
                # No log of theirs to read: two connections closed unanswered.
                closed = closed + 1 if page.dropped else 0
                if closed >= 2 and self.host.run(remote.status_script(rec.rundir)).word is Word.RUNNING:
                    raise _NotThroughTheirs()
            elif "open failed" in self.host.log_since(mark):
                self._refused(rec, unix)
            now = time.monotonic()
            if now >= next_liveness or now >= self.deadline:
                if self.host.run(remote.status_script(rec.rundir)).word is not Word.RUNNING:
                    self._died(rec)
                next_liveness = time.monotonic() + LIVENESS_EVERY
            if now >= self.deadline:
                raise TbError(self._timed_out(rec, page.reason))
            time.sleep(PROBE_EVERY)

    def _own_master(self, rec: Record) -> Record:
        """Leave the user's master (cancel our forward on it) for one of ours."""
        host, label = self.host, self.label
        self.report.say(f"{label}: your ssh master closes the connections of our forward: opening a master of our own")
        if rec.forward:
            host.cancel(rec.forward)
        host.borrowing = False
        pid = self.session.open_master(self.settings, self.report)
        rec = dataclasses.replace(rec, forward=None, borrowed=None, master_pid=pid)
        record.save(host.paths, rec)
        return rec

    def _refused(self, rec: Record, unix: bool) -> None:
        """The master says a connection through our forward was refused
        while TensorBoard listens: the server forbids forwarding (no way
        through), or only to Unix sockets (fall back to TCP)."""
        if self.host.run(remote.status_script(rec.rundir)).word is not Word.RUNNING:
            return  # the liveness check says why
        if self.host.forwarding_forbidden():
            raise ForwardingForbidden(messages.forwarding_forbidden(self.label))
        if unix:
            raise StreamLocalRefused(f"{self.label} refuses Unix-socket forwarding")

    def _timed_out(self, rec: Record, why: str) -> str:
        return messages.timed_out(self.host.log_tail(rec.rundir), self.label, self.settings, rec.remote_pid or 0, why)

    def _died(self, rec: Record) -> NoReturn:
        """TensorBoard exited before it answered: say why, leave nothing behind."""
        message = messages.died(self.host.log_tail(rec.rundir), self.label, self.settings)
        self.session.discard(rec)
        raise TbError(message)
