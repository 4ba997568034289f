"""The local mirror of a remote logdir: only what TensorBoard reads, only new bytes.

A merged view (``merge.py``) runs TensorBoard on this machine over a mirror
of each host's logdir, kept in sync through the host's ssh master (no new
login). :func:`sync` makes one round for one host:

- **rsync** where both ends have it: ``rsync -e 'ssh -S SOCKET ...'`` with
  include patterns, ``--inplace`` (an appended event file is written where it
  grows, never copied whole into a temporary file) and 128 KiB blocks (a
  100 MB file costs ~800 block checksums, so an append moves little more than
  the new bytes; a shrunk or rewritten file is repaired by the same delta).
- **stream**, our own, where the remote has no rsync: one remote command per
  round. We send what we have (each file's size and a hash of its last 4 KiB);
  a small Python program on the remote walks the logdir and streams back only
  the new bytes of each file that grew, and the whole of a file that is new,
  shrank, or whose bytes before our end differ (it was rewritten).

Only files that match the :class:`Patterns` are copied (event files and
plugin data by default): never checkpoints. Nothing in the mirror is ever
deleted by a sync: a run removed on the host stays readable here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import select
import shlex
import shutil
import stat
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from . import sshargv
from .errors import TbError

#: What TensorBoard reads: event files (scalars, images, histograms, text,
#: hparams, graphs) and plugin data beside them (the profiler's
#: ``plugins/profile/``, projector configs).
DEFAULT_PATTERNS = ("events.out.tfevents.*", "plugins/**", "projector_config.pbtxt")
#: Bytes of a file's end that must match for an append (else: fetch it whole).
TAIL = 4096
#: Bytes per chunk of the stream method.
CHUNK = 1 << 20
#: rsync's block size (its maximum): few checksums for a large event file.
BLOCK = 131072
#: Seconds without a byte either way before a round gives up (a hung link:
#: the host is then marked stale and its master checked; rsync's own
#: ``--timeout`` for rsync). A round that moves data is never cut short.
IDLE = 20
#: Suffix of a file the stream method is fetching whole (renamed when complete).
PART = ".tbr-part"


class SyncFailed(TbError):
    """A sync round failed; the mirror keeps what it had."""


class LogdirMissing(SyncFailed):
    """The host has no such logdir (yet)."""


@dataclass(frozen=True)
class Patterns:
    """Which files of a logdir are mirrored: rsync-style globs. A pattern
    matches the end of a file's path at a directory boundary (``*`` stays
    within one name, ``**`` crosses ``/``): ``events.out.tfevents.*``
    matches that file in any run, ``plugins/**`` everything under any
    ``plugins`` directory."""

    globs: tuple[str, ...] = DEFAULT_PATTERNS

    @classmethod
    def parse(cls, value: Any) -> "Patterns":
        if value is None or value == "":
            return cls()
        items = value.split(",") if isinstance(value, str) else list(value)
        globs = tuple(str(item).strip() for item in items if str(item).strip())
        if not globs:
            raise TbError("mirror_patterns must name at least one pattern")
        for glob in globs:
            if any(c in glob for c in "\0\n\r") or glob.startswith(("/", "+", "-", "!")) or glob in ("*/", "**/"):
                raise TbError(f"mirror_patterns: {glob!r} is not a file pattern")
        return cls(globs)

    def regexes(self) -> list[str]:
        return [_regex(glob) for glob in self.globs]

    def matches(self, relpath: str) -> bool:
        return any(re.search(rx, relpath) for rx in self.regexes())

    def rsync_filters(self) -> list[str]:
        return ["--include=*/", *(f"--include={glob}" for glob in self.globs), "--exclude=*"]


def _regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "(?:^|/)" + "".join(out) + "$"


@dataclass(frozen=True)
class Synced:
    """One round: files matching, files changed, bytes each way, how, how long."""

    files: int
    changed: int
    bytes_in: int
    bytes_out: int
    method: str
    seconds: float
    #: Files or directories the host could not give us (a dangling symlink
    #: named like an event file, one not readable by us): the rest is
    #: synced; ``tb.check`` names the first.
    skipped: tuple[str, ...] = ()


def remote_logdir(logdir: str) -> str:
    """The logdir as a path relative to the remote login directory (where
    ssh starts), or absolute: ``~/x`` is ``x``."""
    if logdir in ("~", "~/"):
        return "."
    if logdir.startswith("~/"):
        return logdir[2:] or "."
    if logdir.startswith("~"):
        raise TbError(f"logdir {logdir!r}: ~user paths are not supported in a merged view; give the path")
    return logdir


def ssh_command(host: Any) -> list[str]:
    """The ssh command rsync runs (``-e``), riding the host's master: every
    option from ``sshargv.remote_argv`` except the destination and command."""
    argv = sshargv.remote_argv(host.target, host.socket)
    return argv[: argv.index("--")]


def detect(host: Any, want_rsync: bool = True) -> str:
    """``rsync`` if this machine and the host both have it (and we want it),
    else ``stream`` (which needs a Python 3 on the host)."""
    script = (
        "command -v rsync >/dev/null 2>&1 && echo 'tbr-sync rsync'\n"
        "for py in python3 python; do command -v $py >/dev/null 2>&1 && { echo \"tbr-sync python $py\"; break; }; done\n"
        "echo 'tbr-sync end'\n"
    )
    said = host.output(script)
    if "tbr-sync end" not in said:
        raise SyncFailed(f"{host.label}: the host did not answer the sync check")
    if want_rsync and shutil.which("rsync") and "tbr-sync rsync" in said:
        return "rsync"
    if "tbr-sync python" not in said:
        raise SyncFailed(f"{host.label} has neither rsync nor python3: the mirror cannot read its logdir")
    return "stream"


def sync(host: Any, logdir: str, dest: Path, patterns: Patterns, method: str, *, timeout: float = 3600) -> Synced:
    """One sync round of ``logdir`` on ``host`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.monotonic()
    if method == "rsync":
        files, changed, sent, received, skipped = _rsync(host, logdir, dest, patterns, timeout)
    elif method == "stream":
        files, changed, sent, received, skipped = _stream(host, logdir, dest, patterns)
    else:
        raise ValueError(f"unknown sync method {method!r}")
    return Synced(files, changed, received, sent, method, round(time.monotonic() - started, 3), tuple(skipped))


# ------------------------------------------------------------------ rsync


def rsync_argv(host: Any, logdir: str, dest: Path, patterns: Patterns) -> list[str]:
    source = remote_logdir(logdir).rstrip("/") + "/"
    return [
        "rsync",
        # Recurse, keep mtimes (rsync's quick check), follow symlinked runs
        # and files as TensorBoard does.
        "-rtL",
        # Names with spaces or newlines reach the remote as they are.
        "-s",
        "--inplace",
        f"--block-size={BLOCK}",
        "--prune-empty-dirs",
        *patterns.rsync_filters(),
        "--stats",
        # A hung link ends the round instead of holding it forever.
        f"--timeout={IDLE}",
        "-e",
        shlex.join(ssh_command(host)),
        "--",
        f"{host.target.host}:{source}",
        str(dest) + "/",
    ]


_STAT = {
    "files": re.compile(r"^Number of regular files transferred: ([\d,.]+)", re.M),
    "total": re.compile(r"^Number of files: ([\d,.]+)(?: \(reg: ([\d,.]+))?", re.M),
    "sent": re.compile(r"^Total bytes sent: ([\d,.]+)", re.M),
    "received": re.compile(r"^Total bytes received: ([\d,.]+)", re.M),
}


def _number(text: str) -> int:
    return int(re.sub(r"[,.]", "", text))


def parse_stats(out: str) -> tuple[int, int, int, int]:
    """(matching files, files transferred, bytes sent, bytes received) from ``--stats``."""
    total = _STAT["total"].search(out)
    files = _number(total.group(2) or total.group(1)) if total else 0
    found = {key: _STAT[key].search(out) for key in ("files", "sent", "received")}
    changed, sent, received = (_number(m.group(1)) if m else 0 for m in found.values())
    return files, changed, sent, received


#: What rsync's sender says of one file or directory it cannot give us (the
#: round copies the rest and ends with code 23). Measured with rsync 3.2/3.5:
#: ``symlink has no referent: "PATH"``, ``rsync: [sender] opendir "PATH"
#: failed: Permission denied (13)``, ``rsync: [sender] send_files failed to
#: open "PATH": Permission denied (13)``.
_SKIP = re.compile(
    r'^(?:rsync: (?:\[sender\] )?)?(?:(?P<dangling>symlink has no referent: )"(?P<link>.*)"'
    r'|(?:opendir|send_files failed to open|readlink_stat\(|link_stat) ?"(?P<path>.*)"\)?(?: failed)?: (?P<why>.+?)(?: \(\d+\))?)$'
)
#: Lines of a partial round that are not about one file: the summary, and
#: files that vanished while copied (code 24's).
_PARTIAL_NOISE = re.compile(r"^(rsync error: some files.* \(code 2[34]\)|file has vanished: |rsync warning: some files vanished)")


def skipped_by_rsync(stderr: str) -> Optional[list[tuple[str, str]]]:
    """The files a partial rsync round (code 23) skipped, as (path, why);
    None if some line says something else (the round failed)."""
    skipped = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or _PARTIAL_NOISE.match(line):
            continue
        found = _SKIP.match(line)
        if found is None:
            return None
        if found.group("dangling"):
            skipped.append((found.group("link"), "a symlink to nothing"))
        else:
            skipped.append((found.group("path"), found.group("why")))
    return skipped


def _rsync(host: Any, logdir: str, dest: Path, patterns: Patterns, timeout: float) -> tuple[int, int, int, int, list[str]]:
    outcome = host.shell.run(
        rsync_argv(host, logdir, dest, patterns), timeout=timeout, what=f"rsync from {host.label}",
        # rsync's own ssh (riding the master, BatchMode): killed with it on tb.exit.
        group=True,
    )
    # 24: files vanished while we copied (TensorBoard rotates nothing, but
    # users delete runs): the rest is copied. 23 with only files it could
    # not give us (a dangling symlink, a run not readable by us on a shared
    # logdir): the rest is copied too, and those are said, not a failure
    # (a host stale for ever over one unreadable file of someone else's).
    skipped: list[str] = []
    if outcome.code == 23:
        named = [(_within(path, logdir), why) for path, why in skipped_by_rsync(outcome.stderr) or []]
        if all(rel for rel, _ in named):  # not the logdir itself: that is a failure
            skipped = [f"{rel}: {why}" for rel, why in named]
    if outcome.code not in (0, 24) and not skipped:
        if not logdir_exists(host, logdir):
            raise LogdirMissing(f"{host.label} has no logdir {logdir}")
        raise SyncFailed(f"rsync from {host.label} failed: {outcome.reason}")
    return (*parse_stats(outcome.stdout), skipped)


def _within(path: str, logdir: str) -> str:
    """``path`` (rsync names it absolute, on the host) relative to the logdir,
    as the stream names them ("" for the logdir itself; as it is if outside)."""
    root = remote_logdir(logdir).rstrip("/")
    full = path.rstrip("/") + "/"
    if root.startswith("/"):
        at = 0 if full.startswith(root + "/") else -1
        marker = root + "/"
    else:  # relative to the login directory, which rsync puts in front
        marker = "/" + root + "/"
        at = full.find(marker)
    return full[at + len(marker):].rstrip("/") if at >= 0 else path


def logdir_exists(host: Any, logdir: str) -> bool:
    """Is ``logdir`` a directory on the host (after a failed round: why)?"""
    word = shlex.quote(remote_logdir(logdir))
    return "tbr-yes" in host.output(f"cd || exit 1\n[ -d {word} ] && echo tbr-yes\necho tbr-end\n")


# ----------------------------------------------------------------- stream

#: The remote side of the stream method (Python 3.6+, standard library only).
#: Reads what we have, walks the logdir (following symlinks, each directory
#: once), and writes frames: ``F <b64 path> <offset> <W|A>`` then ``C <n>``
#: and n bytes, repeated, then ``D``; at the end ``E <files>``.
_REMOTE = r"""
import base64, hashlib, json, os, re, stat, sys, zlib
out = sys.stdout.buffer
root = os.path.expanduser(ROOT)
have = json.loads(zlib.decompress(base64.b64decode(HAVE)).decode())
pats = [re.compile(p) for p in PATS]
if not os.path.isdir(root):
    out.write(b"M\n"); out.flush(); sys.exit(0)
seen = set()
count = 0
def tailhash(f, end):
    start = max(0, end - TAIL)
    f.seek(start)
    data = f.read(end - start)
    return hashlib.sha1(data).hexdigest()[:16] if len(data) == end - start else None
def skip(rel, why):
    out.write(b"S " + base64.b64encode(os.fsencode(rel)) + b" " + base64.b64encode(why.encode()) + b"\n")
def send(path, rel, size):
    global count
    count += 1
    mine = have.get(rel)
    try:
        f = open(path, "rb")
    except OSError as e:
        skip(rel, e.strerror or "cannot be read")
        return
    with f:
        offset, mode = 0, b"W"
        if mine is not None and mine[0] <= size:
            if mine[0] == 0 or tailhash(f, mine[0]) == mine[1]:
                offset, mode = mine[0], b"A"
        if mode == b"A" and offset == size:
            return
        out.write(b"F " + base64.b64encode(os.fsencode(rel)) + b" %d " % offset + mode + b"\n")
        f.seek(offset)
        left = size - offset
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                break
            out.write(b"C %d\n" % len(data)); out.write(data)
            left -= len(data)
        out.write(b"D\n")
def walk(d, rel):
    try:
        st = os.stat(d)
    except OSError:
        return
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        skip(rel or ".", e.strerror or "cannot be listed")
        return
    for n in names:
        p = os.path.join(d, n)
        r = rel + n
        try:
            s = os.stat(p)
        except OSError as e:
            if any(x.search(r) for x in pats):
                skip(r, "a symlink to nothing" if os.path.islink(p) else (e.strerror or "cannot be read"))
            continue
        if stat.S_ISDIR(s.st_mode):
            walk(p, r + "/")
        elif stat.S_ISREG(s.st_mode) and any(x.search(r) for x in pats):
            send(p, r, s.st_size)
walk(root, "")
out.write(b"E %d\n" % count)
out.flush()
"""


def _tail_hash(path: Path, size: int) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            start = max(0, size - TAIL)
            handle.seek(start)
            data = handle.read(size - start)
    except OSError:
        return None
    return hashlib.sha1(data).hexdigest()[:16] if len(data) == size - start else None


def manifest(dest: Path) -> dict[str, list]:
    """What the mirror has: each file's size and the hash of its last bytes."""
    have: dict[str, list] = {}
    for path in _files(dest):
        rel = path.relative_to(dest).as_posix()
        if rel.endswith(PART):
            with contextlib.suppress(OSError):
                path.unlink()  # left by a round that was cut short
            continue
        size = path.stat().st_size
        digest = _tail_hash(path, size)
        if digest is not None:
            have[rel] = [size, digest]
    return have


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def stream_script(logdir: str, have: dict[str, list], patterns: Patterns) -> str:
    packed = base64.b64encode(zlib.compress(json.dumps(have, separators=(",", ":")).encode(), 9)).decode()
    program = (
        f"ROOT = {remote_logdir(logdir)!r}\nHAVE = {packed!r}\nPATS = {patterns.regexes()!r}\n"
        f"TAIL = {TAIL}\nCHUNK = {CHUNK}\n" + _REMOTE
    )
    return (
        "cd || exit 1\n"
        "for py in python3 python; do command -v $py >/dev/null 2>&1 && break; done\n"
        '"$py" - <<\'TBR_PY_EOF\'\n' + program + "TBR_PY_EOF\n"
    )


def _stream(host: Any, logdir: str, dest: Path, patterns: Patterns) -> tuple[int, int, int, int, list[str]]:
    script = stream_script(logdir, manifest(dest), patterns).encode()
    argv = host.remote_argv()
    with host.shell.process(argv, what=f"ssh to {host.label}") as (proc, errors):
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(script)
            proc.stdin.close()
        reader = _Reader(proc.stdout, host.label)
        skipped: list[str] = []
        try:
            files, changed = _receive(reader, dest, skipped)
        except SyncFailed as error:
            proc.kill()
            proc.wait()
            why = errors()
            raise SyncFailed(f"{error}: {why}" if why else str(error)) from None
        proc.wait(timeout=IDLE)
        if files is None:
            raise LogdirMissing(f"{host.label} has no logdir {logdir}")
        return files, changed, len(script), reader.count, skipped


class _Reader:
    """Buffered reads from the remote with an idle timeout."""

    def __init__(self, pipe: Any, label: str) -> None:
        self.fd = pipe.fileno()
        self.label = label
        self.buffer = b""
        self.count = 0

    def _more(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], IDLE)
        if not ready:
            raise SyncFailed(f"sync from {self.label}: nothing from the host for {IDLE}s (a hung link?)")
        data = os.read(self.fd, CHUNK)
        if not data:
            raise SyncFailed(f"sync from {self.label} was cut short (the connection ended)")
        self.count += len(data)
        self.buffer += data

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def exactly(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buffer:
                self._more()
            piece, self.buffer = self.buffer[:n], self.buffer[n:]
            n -= len(piece)
            yield piece


def _receive(reader: _Reader, dest: Path, skipped: list[str]) -> tuple[Optional[int], int]:
    changed = 0
    while True:
        line = reader.line()
        if line == b"M":
            return None, 0
        if line.startswith(b"E "):
            return int(line[2:]), changed
        if line.startswith(b"S "):
            _, name, why = line.split(b" ")
            rel, said = os.fsdecode(base64.b64decode(name)), base64.b64decode(why).decode(errors="replace")
            if rel == ".":
                raise SyncFailed(f"sync from {reader.label}: the logdir cannot be listed: {said}")
            skipped.append(f"{rel}: {said}")
            continue
        if not line.startswith(b"F "):
            raise SyncFailed(f"sync from {reader.label}: unexpected reply {line[:80]!r}")
        _, name, offset_text, mode = line.split(b" ")
        rel = os.fsdecode(base64.b64decode(name))
        target = _inside(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        offset = int(offset_text)
        part = target.with_name(target.name + PART) if mode == b"W" else target
        with open(part, "wb" if mode == b"W" else "r+b") as handle:
            if mode == b"A":
                handle.seek(offset)
                handle.truncate(offset)
            while True:
                head = reader.line()
                if head == b"D":
                    break
                if not head.startswith(b"C "):
                    raise SyncFailed(f"sync from {reader.label}: unexpected frame {head[:80]!r}")
                for piece in reader.exactly(int(head[2:])):
                    handle.write(piece)
        if part != target:
            os.replace(part, target)
        changed += 1


def _inside(dest: Path, rel: str) -> Path:
    """``dest/rel``, refusing a name that would leave ``dest``."""
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise SyncFailed(f"refusing a file name from the host that leaves the mirror: {rel!r}")
    return dest.joinpath(*parts)


def size_text(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
