"""The files of a session on this machine, kept beside its control socket.

For a socket ``<control_dir>/tb-<hash>`` (the first 20 hex digits of ``%C``,
which ``ssh -G`` expands, and a suffix for a Slurm job's session) we keep
``tb-<hash>.json`` (the session's record: ``record.py`` says what is in
it), ``tb-<hash>.log`` (the master's stderr) and ``tb-<hash>.lock``
(serialises tasks on one session); with a watcher (``watcher.py``), also
``tb-<hash>.relay`` (the forward's Unix socket), ``tb-<hash>.watch`` (the
watcher's control socket) and ``tb-<hash>.watch.log``. The directory is 0700 and the files 0600:
they name hosts and paths of the user's. This module knows files, not what
they mean.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .errors import TbError


def socket_path_max(platform: str) -> int:
    """The longest control path a master can bind on ``platform``: sun_path
    holds 108 bytes on Linux and 104 on macOS (and the BSDs), with the final
    NUL, and a master first binds "<path>.<16 random characters>"."""
    return (107 if platform.startswith("linux") else 103) - 17


SOCKET_PATH_MAX = socket_path_max(sys.platform)

#: Hex digits of ``%C`` (40) that name a session: 80 bits tell hosts apart,
#: and a ``--job`` node's socket under ``/Users/<16 characters>/.ssh/
#: controlmasters`` stays within macOS's 86 bytes (the full 40 did not).
NAME_DIGITS = 20


@dataclass(frozen=True)
class Paths:
    socket: Path

    @property
    def node(self) -> "Paths":
        """ssh mode of a Slurm job: the node session's files, beside these
        (the login node's master)."""
        return Paths(self.socket.with_name(self.socket.name + "n"))

    @property
    def state(self) -> Path:
        return self.socket.with_name(self.socket.name + ".json")

    @property
    def log(self) -> Path:
        return self.socket.with_name(self.socket.name + ".log")

    @property
    def lock(self) -> Path:
        return self.socket.with_name(self.socket.name + ".lock")

    @property
    def relay(self) -> Path:
        """The 0600 Unix socket the master forwards to TensorBoard; the
        watcher relays the local port to it."""
        return self.socket.with_name(self.socket.name + ".relay")

    @property
    def control(self) -> Path:
        """The watcher's own socket: tasks ask it for its state, or to stop."""
        return self.socket.with_name(self.socket.name + ".watch")

    @property
    def watch_log(self) -> Path:
        return self.socket.with_name(self.socket.name + ".watch.log")


def control_dir(path: str) -> Path:
    """Expand and create the control directory (0700), or say why not."""
    directory = Path(os.path.expanduser(path)).absolute()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise TbError(f"cannot create control directory {directory}: {error.strerror}") from None
    if not directory.is_dir():
        raise TbError(f"control directory {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise TbError(f"control directory {directory} is not writable")
    return directory


def session_paths(expanded: Path, suffix: str = "") -> Paths:
    """The files of a session, from the control path ``ssh -G`` expanded
    for ``<dir>/tb-%C<suffix>``: ``tb-``, the first :data:`NAME_DIGITS` of
    ``%C``, and ``suffix``. Earlier releases used all of ``%C``: a session
    recorded under that name is found there (until ``tb.exit`` ends it),
    never taken for "nothing"."""
    name = expanded.name
    if not (name.startswith("tb-") and name.endswith(suffix)):
        raise TbError(f"ssh -G expanded the control path to an unexpected {expanded}")
    digest = name[len("tb-"): len(name) - len(suffix)]
    new = Paths(expanded.with_name(f"tb-{digest[:NAME_DIGITS]}{suffix}"))
    old = Paths(expanded)
    return old if old != new and not _in_use(new) and _in_use(old) else new


def _in_use(paths: Paths) -> bool:
    """Has a session of ours these files: a record or a socket, its own or
    (ssh mode) its node's?"""
    return any(path.exists() for p in (paths, paths.node) for path in (p.state, p.socket))


def check_socket_path(socket: Path) -> None:
    if len(os.fsencode(str(socket))) > SOCKET_PATH_MAX:
        raise TbError(
            f"control socket path {socket} is too long for a Unix socket "
            f"(max about {SOCKET_PATH_MAX} bytes): set tb.control_dir to a shorter directory"
        )


def read(paths: Paths) -> Optional[object]:
    """The JSON in the state file; None if there is none."""
    try:
        with open(paths.state, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise TbError(f"cannot read state file {paths.state}: {error}") from None


def write(paths: Paths, data: dict) -> None:
    """Replace the state file atomically (0600)."""
    tmp = paths.state.with_name(paths.state.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, paths.state)


def remove(paths: Paths, *, socket: bool = False) -> None:
    """Remove the session's files (its control socket too, with ``socket``)."""
    files = [paths.state, paths.log, paths.relay, paths.control, paths.watch_log] + ([paths.socket] if socket else [])
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def all_paths(directory: Path) -> list[Paths]:
    """Every session with a state file in ``directory``."""
    return [Paths(path.with_name(path.name[: -len(".json")])) for path in sorted(directory.glob("tb-*.json"))]


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Hold the session's lock: two tasks on one session never interleave.

    When the session is gone on the way out (no state file, no socket),
    the lock file goes too. A task that was waiting on the removed file
    then holds a lock nobody else can see: so after taking the lock, check
    that the file is still the one on disk, and take it again if not.
    """
    import fcntl  # here, not at the top: Windows has none, and must still import us

    while True:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:  # pragma: no cover - exotic filesystems
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                os.close(fd)
                raise
        try:
            current = os.stat(paths.lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        _unlink_lock_if_gone(paths)
        os.close(fd)


def drop_lock(paths: Paths) -> None:
    """Remove the lock file of a session that is gone (no state file, no
    socket), unless some task holds it now: it is taken without waiting
    (a task that holds it may hold another lock we hold: never wait here)."""
    import fcntl

    try:
        fd = os.open(paths.lock, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    try:
        _unlink_lock_if_gone(paths)
    finally:
        os.close(fd)


def _unlink_lock_if_gone(paths: Paths) -> None:
    """With the lock held: remove its file if the session is gone (no state
    file, no socket)."""
    if not paths.state.exists() and not paths.socket.exists():
        with contextlib.suppress(FileNotFoundError):
            paths.lock.unlink()
