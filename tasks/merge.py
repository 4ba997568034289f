"""A merged view: one TensorBoard here over a mirror of several hosts' logdirs.

``tb.start --hosts a,b --merge`` (or the ``merge`` setting, a mapping of
host to logdir) opens one master per host, as any session does (or rides
the user's own), and no TensorBoard on the hosts at all. Each host's logdir
is mirrored into ``<mirror_dir>/merge-<sid>/<HOST>/`` (``mirror.py``), and a
TensorBoard on this machine (``local.py``) serves the mirror, so runs are
named ``HOST/RUN``: two hosts' ``baseline`` stay apart. The session's syncer
(``syncer.py``, its resident process) owns the local port, relays it to that
TensorBoard's private socket, and syncs every host every ``sync_every``
seconds through its master; a host it cannot reach is marked stale while the
view keeps serving what was synced, and its master is reopened (in
BatchMode, never prompting) when it is back.

``--run-on local`` for one host is the same with one member, whose runs keep
their own names (TensorBoard reads that host's folder of the mirror).

The record (:class:`MergeRecord`) is ``merge-<sid>.json`` in the control
directory; ``<sid>`` comes from the hosts and their logdirs, so the same
start finds the same session, and two merged views over overlapping hosts
are two sessions, each with masters, a mirror and a port of its own.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from . import health, local, mirror, ports, remote, resident, state
from .errors import TbError
from .health import Health, Status
from .host import Host, MasterState
from .progress import Reporter
from .record import WatcherRef
from .remote import Word
from .settings import Settings
from .shell import Shell
from .slurm import find_job
from .sshargv import Target
from .state import Paths

Say = Callable[[str], None]

#: The merged record's format (its own numbering; ``kind`` tells it from a session's).
SCHEMA = 1
KIND = "merge"
PREFIX = "merge-"
#: Seconds a start waits for the syncer to answer and the page to serve.
READY = 20.0


@dataclass(frozen=True)
class Wanted:
    """A host the user asked for: where, which logdir, and a Slurm job on it
    (``LOGIN/JOB``: the job's logdir read through its login node, a shared
    file system as on most clusters; its runs are named ``LOGIN-jobID/RUN``)."""

    target: Target
    logdir: str
    job: Optional[str] = None

    @property
    def label(self) -> str:
        return f"{self.target.label}/{self.job}" if self.job else self.target.label


@dataclass(frozen=True)
class Member:
    """One host of a merged view."""

    label: str  # the host as given: names its folder of the mirror, and its runs
    target: Target
    logdir: str
    socket: str  # our control socket for this host (the master the sync rides)
    borrowed: Optional[str] = None  # the user's own master, when ridden
    method: str = "rsync"  # rsync or stream (mirror.detect)
    job: Optional[str] = None  # a Slurm job's id, when the member is one (its label LOGIN-jobID)
    asked: str = ""  # as the user named it (LOGIN/JOB for a job): how tb.check --hosts finds it

    @property
    def folder(self) -> str:
        return self.label.replace("/", "_")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target"] = self.target.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Member":
        values = dict(data)
        values["target"] = Target.from_dict(data["target"])
        return cls(**values)


@dataclass(frozen=True)
class MergeRecord:
    sid: str
    members: tuple[Member, ...]
    mirror: str  # this session's mirror: one folder per host
    single: bool  # --run-on local for one host: its runs keep their names
    control_dir: str
    started_at: float
    requested: dict[str, Any] = field(default_factory=dict)
    token: Optional[str] = None
    local_port: Optional[int] = None
    tb_pid: Optional[int] = None
    endpoint: Optional[str] = None  # "unix PATH" of the local TensorBoard
    isolation: Optional[str] = None
    watcher: Optional[WatcherRef] = None  # the syncer

    @property
    def url(self) -> Optional[str]:
        if not self.local_port:
            return None
        return f"http://127.0.0.1:{self.local_port}/" + (f"{self.token}/" if self.token else "")

    @property
    def label(self) -> str:
        return label_of([m.label for m in self.members], self.single)

    @property
    def logdir(self) -> str:
        """What the local TensorBoard reads."""
        return str(Path(self.mirror) / self.members[0].folder) if self.single else self.mirror

    @property
    def rundir(self) -> str:
        return remote.run_dir(self.control_dir, self.sid)

    @property
    def socket_path(self) -> Optional[str]:
        kind, _, where = (self.endpoint or "").partition(" ")
        return where if kind == "unix" else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["members"] = [m.to_json() for m in self.members]
        data["kind"] = KIND
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path) -> "MergeRecord":
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise TbError(f"state file {source} is not a merged view's record: remove it")
        if not isinstance(data.get("schema"), int) or data["schema"] > SCHEMA:
            raise TbError(f"state file {source} has merged-view schema {data.get('schema')!r}, newer than this tensorboard-remote reads ({SCHEMA})")
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            values["members"] = tuple(Member.from_json(m) for m in data["members"])
            if data.get("watcher"):
                values["watcher"] = WatcherRef(pid=int(data["watcher"]["pid"]), since=str(data["watcher"]["since"]))
            rec = cls(**values)
            remote.run_dir(rec.control_dir, rec.sid)
        except (KeyError, TypeError, ValueError) as error:
            raise TbError(f"state file {source} is damaged ({type(error).__name__}: {error}): remove it") from None
        return rec


def label_of(labels: list[str], single: bool) -> str:
    if single:
        return f"{labels[0]} (TensorBoard here)"
    return "merged view of " + ", ".join(labels)


def session_id(members: list[Wanted], single: bool) -> str:
    """The same hosts with the same logdirs: the same session."""
    key = json.dumps({"members": sorted([w.label, w.logdir] for w in members), "single": single})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def paths_of(control_dir: Path, sid: str) -> Paths:
    """The session's files: ``merge-<sid>.json`` and its siblings (the
    ``socket`` of these Paths is only their common name: no master binds it)."""
    return Paths(control_dir / f"{PREFIX}{sid}")


def load(paths: Paths) -> Optional[MergeRecord]:
    data = state.read(paths)
    return None if data is None else MergeRecord.from_json(data, paths.state)


def save(paths: Paths, rec: MergeRecord) -> None:
    state.write(paths, rec.to_json())


def all_paths(directory: Path) -> list[Paths]:
    return [Paths(p.with_name(p.name[: -len(".json")])) for p in sorted(directory.glob(f"{PREFIX}*.json"))]


def requested(settings: Settings) -> dict[str, Any]:
    return {
        "mirror_dir": settings.mirror_dir,
        "mirror_patterns": list(mirror.Patterns.parse(settings.mirror_patterns).globs),
        "rsync": settings.rsync,
        "sync_every": settings.sync_every,
        "url_token": settings.url_token,
        "data_server": settings.data_server,
    }


def mirror_root(settings: Settings) -> Path:
    return Path(os.path.expanduser(settings.mirror_dir)).absolute()


class MergedSession:
    """Start, check and stop one merged view (``targets`` yields it where a
    ``Session`` goes: ``check()``, ``stop()``, ``record()``, ``label``)."""

    def __init__(self, shell: Shell, paths: Paths, *, batch: bool = True, label: str = "") -> None:
        self.shell = shell
        self.paths = paths
        self.batch = batch
        self._label = label

    @property
    def label(self) -> str:
        rec = self.record()
        return rec.label if rec else (self._label or self.paths.socket.name)

    def record(self) -> Optional[MergeRecord]:
        return load(self.paths)

    def member_host(self, member: Member) -> Host:
        host = Host(self.shell, member.target.with_batch(self.batch), Paths(Path(member.socket)))
        host.follow(member.borrowed)
        return host

    # ------------------------------------------------------------ start

    def start(self, settings: Settings, wanted: list[Wanted], single: bool, report: Reporter) -> tuple[str, list[str]]:
        """Open what is missing, sync once, serve; the URL and the hosts that failed."""
        local.require_tensorboard()
        patterns = mirror.Patterns.parse(settings.mirror_patterns)
        sid = self.paths.socket.name[len(PREFIX):]
        label = label_of([w.label for w in wanted], single)
        with state.locked(self.paths):
            rec = load(self.paths)
            if rec is not None:
                _refuse_other_settings(rec, settings)
                same = sorted(m.asked or m.label for m in rec.members) == sorted(w.label for w in wanted)
                if same and self._serving(rec):
                    report.say(f"{label}: reusing it (syncer pid {rec.watcher.pid if rec.watcher else '?'}, TensorBoard pid {rec.tb_pid})")
                    assert rec.url
                    report.result(rec.url, f"{label}: TensorBoard ready at {rec.url}")
                    return rec.url, []
                self._stop_parts(rec, lambda line: None)
            members, failures = self._reach(rec, wanted, settings, sid, report)
            if failures and members and not settings.merge_partial:
                for host in (self.member_host(m) for m in members):
                    host.release(None)
                    host.paths.log.unlink(missing_ok=True)
                state.remove(self.paths)
                raise TbError("\n".join(failures) + f"\nthe {label} did not start (merge_partial: no): nothing of it runs")
            if not members:
                for host in self._hosts_of(rec):
                    host.release(None)
                state.remove(self.paths)
                raise TbError(f"no host of the {label} could be reached:\n" + "\n".join(failures))
            root = mirror_root(settings) / f"{PREFIX}{sid}"
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            report.say(f"{label}: mirror {root}")
            rec = MergeRecord(
                sid=sid, members=tuple(members), mirror=str(root), single=single,
                control_dir=str(self.paths.socket.parent), started_at=time.time(), requested=requested(settings),
                token=(rec.token if rec else None) or (secrets.token_urlsafe(18) if settings.url_token else None),
                local_port=rec.local_port if rec else None,
            )
            save(self.paths, rec)
            try:
                self._first_sync(rec, patterns, report)
                rec = self._serve(rec, settings, report)
                self._hand_over(rec)
            except BaseException:
                self._abandon(rec)
                raise
        assert rec.url
        report.result(rec.url, f"{rec.label}: TensorBoard ready at {rec.url}")
        return rec.url, failures

    def _serving(self, rec: MergeRecord) -> bool:
        if not resident.alive(rec.watcher) or not rec.url:
            return False
        return health.probe(rec.url).ok

    def _hosts_of(self, rec: Optional[MergeRecord]) -> list[Host]:
        return [self.member_host(m) for m in rec.members] if rec else []

    def _reach(self, rec: Optional[MergeRecord], wanted: list[Wanted], settings: Settings, sid: str, report: Reporter) -> tuple[list[Member], list[str]]:
        """A master to every host (one at a time: a prompt stays readable),
        and how to sync it. A host that fails is left out, and said."""
        members: list[Member] = []
        failures: list[str] = []
        for one in wanted:
            try:
                members.append(self._member(one, settings, sid, report))
            except TbError as error:
                failures.append(f"{one.label}: {error}")
                report.say(f"{one.label}: {error}")
        return members, failures

    def _member(self, wanted: Wanted, settings: Settings, sid: str, report: Reporter) -> Member:
        target, logdir = wanted.target, wanted.logdir
        host = Host.locate(self.shell, target, settings.control_dir, f"-m{sid[:8]}", user_master=settings.user_master)
        master = host.ride(None, new=False)
        if master.borrowed:
            report.say(f"{host.label}: riding your ssh master (pid {master.pid}, {host.socket}): no new login")
        elif master.state is MasterState.UP:
            report.say(f"{host.label}: reusing the tunnel (ssh master pid {master.pid})")
        else:
            if master.state is MasterState.STALE:
                host.clear_stale()
            with report.login(f"{host.label}: connecting", prompts=host.may_prompt):
                pid = host.open(settings.keepalive)
            report.say(f"{host.label}: opened the tunnel (ssh master pid {pid})")
        label, job_id = target.label, None
        if wanted.job is not None:
            job_id = find_job(host, wanted.job, report).id
            label = f"{target.label}-job{job_id}"
        method = mirror.detect(host, settings.rsync == "auto")
        return Member(
            label=label, target=target, logdir=logdir, socket=str(host.paths.socket),
            borrowed=host.socket if host.borrowing else None, method=method, job=job_id, asked=wanted.label,
        )

    def _first_sync(self, rec: MergeRecord, patterns: mirror.Patterns, report: Reporter) -> None:
        """Every host at once, so the view opens with their runs."""
        report.phase(f"{rec.label}: first sync")

        def one(member: Member) -> str:
            host = self.member_host(member)
            try:
                done = mirror.sync(host, member.logdir, Path(rec.mirror) / member.folder, patterns, member.method)
            except mirror.LogdirMissing:
                return f"{member.label}: {member.logdir} does not exist there (yet): its runs appear when it does"
            except TbError as error:
                return f"{member.label}: first sync failed ({error}); the syncer tries again"
            return f"{member.label}: first sync: {done.files} files ({mirror.size_text(done.bytes_in)} moved) via {done.method} [{done.seconds:.1f}s]"

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(rec.members), 8)) as pool:
            for line in pool.map(one, rec.members):
                report.say(line)

    def _serve(self, rec: MergeRecord, settings: Settings, report: Reporter) -> MergeRecord:
        """TensorBoard here over the mirror, and the syncer on the local port."""
        board = local.LocalBoard(rec.rundir)
        report.phase(f"{rec.label}: starting TensorBoard here")
        reply = board.start(rec.logdir, rec.token, settings.data_server, settings.start_timeout)
        if reply.word is Word.ERROR:
            raise TbError(f"{rec.label}: cannot start TensorBoard here: {reply.detail}")
        if reply.word is Word.DIED or not reply.info.get("endpoint"):
            tail = board.log_tail()
            board.stop()
            raise TbError(f"{rec.label}: TensorBoard here exited or did not listen: {tail.splitlines()[-1] if tail else 'no log'}")
        rec = dataclasses.replace(rec, tb_pid=int(reply.detail), endpoint=reply.info["endpoint"], isolation=reply.info.get("isolation", "shared"))
        save(self.paths, rec)
        how = {"netns": "data server in a private network namespace", "off": "fast loader off", "shared": "data server shared"}.get(str(rec.isolation), str(rec.isolation))
        report.say(f"{rec.label}: started TensorBoard here (pid {rec.tb_pid}; Unix socket, {how}) over {rec.logdir}")
        try:
            listener = self._listen(rec, settings, report.say)
        except TbError:
            board.stop()
            raise
        spec = {"label": rec.label, "settings": dataclasses.asdict(settings)}
        port = listener.getsockname()[1]
        rec = dataclasses.replace(rec, local_port=port)
        save(self.paths, rec)
        ref = resident.spawn(self.paths, listener, spec, module="syncer")
        rec = dataclasses.replace(rec, watcher=ref)
        save(self.paths, rec)
        every = f"{settings.sync_every:g}"
        report.say(f"{rec.label}: syncer pid {ref.pid} holds 127.0.0.1:{port} and syncs every {every}s")
        return rec

    def _abandon(self, rec: MergeRecord) -> None:
        """A start that failed half-way leaves nothing: no syncer, no
        TensorBoard here, no master it opened, no record (the mirror stays)."""
        with contextlib.suppress(Exception):
            self._stop_parts(load(self.paths) or rec, lambda line: None)
        for host in self._hosts_of(rec):
            with contextlib.suppress(Exception):
                if host.master().state is MasterState.UP:
                    host.release(None)
            with contextlib.suppress(FileNotFoundError):
                host.paths.log.unlink()
        state.remove(self.paths)

    def _listen(self, rec: MergeRecord, settings: Settings, say: Say):
        if rec.local_port:
            with contextlib.suppress(TbError):
                return resident.bind(rec.local_port)
        port = ports.CLAIMS.pick(settings, rec.label, say, ours=ports.ours(self.paths))
        return resident.bind(port)

    def _hand_over(self, rec: MergeRecord) -> None:
        deadline = time.monotonic() + READY
        while time.monotonic() < deadline:
            status = resident.ask(self.paths, "status")
            if status is not None and rec.url and health.probe(rec.url).ok:
                return
            if not resident.alive(rec.watcher):
                raise TbError(f"{rec.label}: the syncer exited at once: see {self.paths.watch_log}")
            time.sleep(0.1)
        raise TbError(f"{rec.label}: {rec.url} does not answer through the syncer: see {self.paths.watch_log}")

    # ------------------------------------------------------------ check

    def check(self, warn_before: float = 0.0) -> Health:
        rec = self.record()
        label = self.label
        if rec is None:
            return Health(Status.NO_TUNNEL, label, "nothing recorded (start one with tb.start --merge)")
        status = resident.ask(self.paths, "status") if resident.alive(rec.watcher) else None
        if status is None:
            who = f"the syncer (pid {rec.watcher.pid})" if rec.watcher else "the syncer"
            what = "does not answer" if resident.alive(rec.watcher) else "is gone"
            return Health(Status.NO_WATCHER, label, f"{who} {what}: nothing serves 127.0.0.1:{rec.local_port} and nothing syncs; tb.start restores it", watcher=None)
        try:
            reply = local.LocalBoard(rec.rundir).status()
        except TbError as error:
            reply = None
            why = str(error)
        if reply is None or reply.word is not Word.RUNNING:
            what = why if reply is None else f"is not running ({reply.word.value})"
            return Health(Status.NOT_RUNNING, label, f"TensorBoard here (pid {rec.tb_pid}) {what}: tb.start restarts it", watcher=status)
        page = health.probe(rec.url) if rec.url else None
        if page is None or not page.ok:
            return Health(Status.PAGE_SILENT, label, f"TensorBoard here (pid {rec.tb_pid}) runs but {rec.url} is not answering ({page.reason if page else 'no URL'})", watcher=status)
        hosts = status.get("hosts") or {}
        parts, stale = [], False
        late = overdue(float(rec.requested.get("sync_every") or 5))
        for member in rec.members:
            seen = late(hosts.get(member.label) or {})
            parts.append(f"{member.label}: {describe(seen, member)}")
            stale = stale or seen.get("health") == "stale"
        word = "stale" if stale else "ok"
        served = " (serves what was synced)" if stale else ""
        detail = f"{word} {rec.url}{served} tensorboard={rec.tb_pid} syncer={rec.watcher.pid if rec.watcher else '?'}; " + "; ".join(parts)
        return Health(Status.STALE if stale else Status.OK, label, detail, watcher=status)

    # ------------------------------------------------------------- stop

    def stop(self, say: Say, remove_mirror: bool = False) -> None:
        first = self.record()
        if first is not None and resident.stop(self.paths, first.watcher):
            say(f"{first.label}: stopped the syncer (pid {first.watcher.pid if first.watcher else '?'}); 127.0.0.1:{first.local_port} is closed")
        with state.locked(self.paths):
            rec = self.record()
            if rec is None:
                say(f"{self.label}: nothing to stop")
                state.remove(self.paths)
                return
            parts = self._stop_parts(rec, say)
            closed = []
            for member, host in zip(rec.members, self._hosts_of(rec), strict=True):
                master = host.master()
                if master.state is MasterState.UP:
                    host.release(None)
                    closed.append(f"{member.label} (yours, left up)" if host.borrowing else member.label)
                elif master.state is MasterState.STALE:
                    host.clear_stale()
                with contextlib.suppress(FileNotFoundError):
                    host.paths.log.unlink()
            state.remove(self.paths)
            if closed:
                parts.append("closed the tunnels to " + ", ".join(closed))
            if remove_mirror:
                shutil.rmtree(rec.mirror, ignore_errors=True)
                parts.append(f"removed the mirror {rec.mirror}")
            else:
                parts.append(f"the mirror stays in {rec.mirror} (tb.exit --remove-mirror removes it)")
            say(f"{rec.label}: " + "; ".join(parts))

    def _stop_parts(self, rec: MergeRecord, say: Say) -> list[str]:
        """Stop the syncer (if still there) and the local TensorBoard."""
        if resident.alive(rec.watcher):
            resident.stop(self.paths, rec.watcher)
        parts = []
        try:
            reply = local.LocalBoard(rec.rundir).stop()
        except TbError as error:
            parts.append(f"could not stop TensorBoard here ({error})")
        else:
            if reply.word is Word.STOPPED:
                parts.append(f"stopped TensorBoard here (pid {reply.detail})")
            elif reply.word is Word.GONE:
                parts.append(f"TensorBoard here (pid {reply.detail}) had already exited")
        return parts

    # ------------------------------------------------------------- list

    def row(self) -> dict[str, Any]:
        rec = self.record()
        seen = self.check()
        late = overdue(float(rec.requested.get("sync_every") or 5)) if rec else (lambda h: h)
        hosts = {label: late(h) for label, h in ((seen.watcher or {}).get("hosts") or {}).items()}
        now = time.time()
        return {
            "kind": KIND,
            "host": "merge: " + ",".join(m.label for m in rec.members) if rec else self.label,
            "url": rec.url if rec else None,
            "remote_pid": rec.tb_pid if rec else None,
            "logdir": rec.mirror if rec else None,
            "mirror": rec.mirror if rec else None,
            "uptime_seconds": round(now - (rec.started_at if rec else now)),
            "healthy": seen.ok,
            "status": seen.detail,
            "health": seen.status.value,
            "watcher": seen.watcher,
            "hosts": {
                m.label: {
                    "health": (hosts.get(m.label) or {}).get("health", "unknown"),
                    "age": _age((hosts.get(m.label) or {}).get("last_ok"), now),
                    "method": (hosts.get(m.label) or {}).get("method", m.method),
                    "error": (hosts.get(m.label) or {}).get("error", ""),
                    "skipped": (hosts.get(m.label) or {}).get("skipped") or [],
                    "logdir": m.logdir,
                }
                for m in (rec.members if rec else ())
            },
        }


def overdue(every: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A host whose last good round is long past is stale, whatever its last
    word was: a round that hangs (a dead link the keepalives have not yet
    ended) must never read as "synced"."""
    limit = 3 * every + mirror.IDLE + 5

    def judged(seen: dict[str, Any]) -> dict[str, Any]:
        age = _age(seen.get("last_ok"), time.time())
        if seen.get("health") in ("ok", "waiting") and age is not None and age > limit:
            return {**seen, "health": "stale", "error": f"no round has finished for {age:.0f}s (the host does not answer?)"}
        return seen

    return judged


def _age(when: Any, now: float) -> Optional[float]:
    return None if when is None else round(max(0.0, now - float(when)), 1)


def describe(seen: dict[str, Any], member: Member) -> str:
    """One host's part of ``tb.check``'s line."""
    now = time.time()
    age = _age(seen.get("last_ok"), now)
    method = seen.get("method", member.method)
    when = "never" if age is None else f"{age:.0f}s ago"
    if seen.get("health") == "stale":
        return f"stale, last synced {when}: {seen.get('error') or 'no answer'}"
    if seen.get("health") == "waiting":
        return f"no logdir {member.logdir} there yet (checked {when} via {method})"
    if seen.get("health") == "ok":
        skipped = seen.get("skipped") or []
        if skipped:
            more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
            return f"synced {when} via {method}, but not {skipped[0]}{more}"
        return f"synced {when} via {method}"
    return "not synced yet"


def _refuse_other_settings(rec: MergeRecord, settings: Settings) -> None:
    was, now = rec.requested, requested(settings)
    differ = [key for key in now if key in was and was[key] != now[key]]
    if differ:
        shown = ", ".join(f"{key}={was[key]!r}" for key in differ)
        asked = ", ".join(f"{key}={now[key]!r}" for key in differ)
        raise TbError(f"{rec.label} already runs with {shown} (this start asks for {asked}): run tb.exit for it first, or start with the same settings")


def recorded(shell: Shell, control_dir: Path, *, batch: bool) -> Iterator[MergedSession]:
    for paths in all_paths(control_dir):
        yield MergedSession(shell, paths, batch=batch)


def find(shell: Shell, control_dir: Path, labels: list[str], *, batch: bool, single: Optional[bool] = None) -> list[MergedSession]:
    """Merged sessions over exactly these hosts (any logdirs)."""
    found = []
    for session in recorded(shell, control_dir, batch=batch):
        rec = session.record()
        if rec is None:
            continue
        if sorted(m.asked or m.label for m in rec.members) == sorted(labels) and (single is None or rec.single == single):
            found.append(session)
    return found
