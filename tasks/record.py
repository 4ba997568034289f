"""The record of a session: what we started, kept in its state file.

One :class:`Record` per session (a host, or a Slurm job on a login host),
written by ``tb.start`` and read by every task. It is a frozen dataclass:
a change is a new record (``dataclasses.replace``) saved in one place. What
can be derived is not stored: the remote run directory comes from
``remote_dir`` and ``sid``, the URL from ``local_port`` and ``token``.

The file is JSON with a ``schema`` number. A file of the previous release
(no ``schema``: the same keys) is read as it is; a newer schema, or a file
that is not a record, is a one-line error naming the file, never a
``KeyError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import remote, state
from .errors import TbError
from .jobclock import Clock
from .sshargv import Target
from .state import Paths

#: The record format this version writes. 1: the first release's (no
#: ``schema`` key); 2: the same keys, typed, with ``schema``; 3: a watcher
#: owns the local port (``relay``, ``watcher``): a release before it must
#: not take the session for its own; 4: the session may ride the user's own
#: master (``borrowed``), which a release before it would not know to spare.
SCHEMA = 4


@dataclass(frozen=True)
class JobRef:
    """The Slurm job a session's TensorBoard belongs to."""

    spec: str  # as the user gave it: an id or a job name
    id: str
    node: str  # the node TensorBoard runs on (the job's first)
    addr: str  # its NodeAddr, or the node name when Slurm gives none usable
    via: str  # "srun" (a step of the job) or "ssh" (the node's sshd)
    left: str = "-"  # squeue's time left at the lookup ("3:59:12", "UNLIMITED")
    seen: str = "0"  # when it said so (wall clock, seconds)

    def clock(self) -> Clock:
        """The time left as of the lookup (counted down from then)."""
        return Clock(self.left, float(self.seen or 0))


@dataclass(frozen=True)
class WatcherRef:
    """The session's watcher process here (``resident.py``): its pid and
    what identifies that process (its start time and boot), so a reused pid
    is never taken for it."""

    pid: int
    since: str


@dataclass(frozen=True)
class Record:
    """One session: where, what was asked for, and what runs."""

    sid: str  # names the remote run directory: <remote_dir>/<sid>
    target: Target  # as reached (batch is decided per call, not stored)
    serve: str  # "unix" or "tcp", as served (a fallback or a job step is tcp)
    logdir: str
    remote_dir: str
    socket: str  # our control socket (the state file sits beside it)
    started_at: float
    #: The settings that define the session (see session.requested): a
    #: start asking for others must not reuse it.
    requested: dict[str, Any] = field(default_factory=dict)
    token: Optional[str] = None  # the secret URL prefix
    local_port: Optional[int] = None
    master_pid: Optional[int] = None
    remote_pid: Optional[int] = None  # TensorBoard's (srun's, for a job step)
    forward: Optional[str] = None  # the -L spec on the master, once added
    endpoint: Optional[str] = None  # "unix PATH" or "tcp PORT", once listening
    isolation: Optional[str] = None  # the data server's: netns, off or shared
    fallback: bool = False  # TCP because the server refused Unix-socket forwarding
    job: Optional[JobRef] = None
    #: With a watcher: the Unix socket here that the master forwards to
    #: TensorBoard (the watcher owns the local port and relays to it).
    relay: Optional[str] = None
    watcher: Optional[WatcherRef] = None
    #: The user's own master's socket (their ControlPath), when the session
    #: rides it: never closed by us; ``socket`` stays ours.
    borrowed: Optional[str] = None

    @property
    def rundir(self) -> str:
        """The remote run directory, as a shell word."""
        return remote.run_dir(self.remote_dir, self.sid)

    @property
    def url(self) -> Optional[str]:
        """The local URL: 127.0.0.1, the local port and the token."""
        if not self.local_port:
            return None
        return f"http://127.0.0.1:{self.local_port}/" + (f"{self.token}/" if self.token else "")

    @property
    def label(self) -> str:
        return self.target.label

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target"] = self.target.to_dict()
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path) -> "Record":
        """A record from a state file's JSON; a :class:`TbError` naming
        ``source`` if it is not one."""
        if not isinstance(data, dict):
            raise _damaged(source, "not a JSON object")
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise TbError(
                f"state file {source} has record schema {schema!r}, newer than this "
                f"tensorboard-remote reads ({SCHEMA}): use the newer version, or remove the file"
            )
        try:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
            values["target"] = Target.from_dict(data["target"])
            if data.get("job"):
                # Keys a record of an earlier release lacks take their defaults.
                given = data["job"]
                values["job"] = JobRef(**{
                    f.name: str(given[f.name]) for f in dataclasses.fields(JobRef)
                    if f.name in given or f.default is dataclasses.MISSING
                })
            if data.get("watcher"):
                values["watcher"] = WatcherRef(pid=int(data["watcher"]["pid"]), since=str(data["watcher"]["since"]))
            record = cls(**values)
            _check_types(record)
        except (KeyError, TypeError, ValueError) as error:
            raise _damaged(source, f"{type(error).__name__}: {error}") from None
        return record


def _check_types(record: Record) -> None:
    for name in ("sid", "serve", "logdir", "remote_dir", "socket"):
        if not isinstance(getattr(record, name), str):
            raise TypeError(f"{name} is not a string")
    for name in ("relay", "borrowed"):
        if getattr(record, name) is not None and not isinstance(getattr(record, name), str):
            raise TypeError(f"{name} is not a string")
    for name in ("local_port", "master_pid", "remote_pid"):
        value = getattr(record, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} is not an integer")
    remote.run_dir(record.remote_dir, record.sid)  # a bad sid: ValueError


def _damaged(source: Path, why: str) -> TbError:
    return TbError(
        f"state file {source} is damaged ({why}): remove it; a TensorBoard it recorded, "
        f"if any, is then no longer known to tensorboard-remote"
    )


def load(paths: Paths) -> Optional[Record]:
    """The session's record, or None if it has none."""
    data = state.read(paths)
    return None if data is None else Record.from_json(data, paths.state)


def save(paths: Paths, record: Record) -> None:
    state.write(paths, record.to_json())


def all_records(directory: Path) -> list[tuple[Paths, Record]]:
    """Every session recorded in ``directory``."""
    found = []
    for paths in state.all_paths(directory):
        record = load(paths)
        if record is not None:
            found.append((paths, record))
    return found
