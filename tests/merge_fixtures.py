"""Fixtures of the merged view's tests (issue 14; registered as a plugin in
conftest.py): several real sshd hosts, a logdir of its own on each, and a
runner for a merged session.

The hosts (all of them sshd's on 127.0.0.1, the "remote" being this machine):

- ``sandbox``, ``host2``, ``host3``: conftest's ``sandbox`` and ``more_sandboxes``;
- ``far``: an sshd reached only through a jump host (``ProxyJump strict``,
  conftest's ``strict_sandbox`` as the bastion);
- ``bare``: an sshd whose sessions get a PATH without rsync (``SetEnv
  PATH=DIR``, DIR holding symlinks to everything in /usr/bin and /usr/sbin
  but rsync), so the mirror must use its own stream;
- ``refuser``: strict's sshd with a key it does not authorize (it refuses us).

One ssh_config names them all. Each host reads its own logdir: the tb.merge
mapping (host -> logdir) in the runner's ~/.invoke.yaml and ~/.fabric.yaml
gives sandbox, host2, far and bare theirs; host3 is not in it and takes
tb.logdir (the environment's INVOKE_TB_LOGDIR / FABRIC_TB_LOGDIR).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from tensorboard_remote.sandbox import Sandbox, free_port, local_tensorboard_cmd, write_sample_logdir

from .conftest import BIN, REPO, Runner
from .procs import alive, family, ours

#: The hosts of the tb.merge mapping (in this order), and host3 outside it.
MAPPED = ("sandbox", "host2", "far", "bare")
UNMAPPED = "host3"
#: What a merged view copies by default (the contract's mirror_patterns).
DEFAULT_PATTERNS = ("events.out.tfevents.*", "plugins/**", "projector_config.pbtxt")
#: Run names that are hard for a shell or a protocol.
SPACE_RUN = "run with space"
NEWLINE_RUN = "line\nbreak"
LINKED_RUN = "linked"
#: A dangling symlink named like an event file (populate's extras).
PRUNED = "pruned/events.out.tfevents.1.gone"


# ------------------------------------------------------------------ hosts


def ssh(cfg: Path, host: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """One plain ssh command to ``host`` (BatchMode: never a prompt)."""
    return subprocess.run(
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, command],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
    )


def path_without_rsync(directory: Path) -> Path:
    """A directory of symlinks to every program in /usr/bin and /usr/sbin
    except rsync: a PATH on which rsync is not found."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in (Path("/usr/sbin"), Path("/usr/bin")):
        for program in source.iterdir():
            link = directory / program.name
            if program.name.startswith("rsync") or link.exists() or link.is_symlink():
                continue
            link.symlink_to(program)
    return directory


@dataclass
class MergeHosts:
    """The session's hosts by alias, one ssh_config naming all of them, and
    ``bastion``, the jump host ``far`` is reached through."""

    boxes: dict[str, Sandbox]
    bastion: Sandbox
    ssh_config: Path

    def box(self, alias: str) -> Sandbox:
        return self.boxes[alias]


def _block(box: Sandbox, alias: Optional[str] = None, extra: str = "") -> str:
    text = box.ssh_config.read_text()
    if alias:
        text = text.replace(f"Host {box.alias}\n", f"Host {alias}\n", 1)
    return text.rstrip("\n") + "\n" + extra


@pytest.fixture(scope="session")
def far_sandbox(base, nothing_left_behind) -> Sandbox:
    """The host behind the jump host (its own sshd)."""
    box = Sandbox(base / "sshd-far", alias="far").create().start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def bare_sandbox(base, nothing_left_behind) -> Sandbox:
    """A host whose remote has no rsync (python3 and sh it has)."""
    bindir = path_without_rsync(base / "bin-without-rsync")
    box = Sandbox(base / "sshd-bare", alias="bare").create(extra_sshd=f"SetEnv PATH={bindir}").start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def merge_hosts(base, sandbox, more_sandboxes, strict_sandbox, far_sandbox, bare_sandbox) -> MergeHosts:
    """Every host of the merged view's tests in one ssh_config, each checked
    to be what it claims: reachable (far only through the bastion), bare
    really without rsync, refuser really refusing."""
    host2, host3 = more_sandboxes
    cfg = base / "merge-ssh_config"
    refuser = _block(strict_sandbox, "refuser").replace(
        f"IdentityFile {strict_sandbox.dir / 'client_ed25519'}", f"IdentityFile {host2.dir / 'client_ed25519'}"
    )
    cfg.write_text(
        "\n".join(
            [
                _block(sandbox),
                _block(host2),
                _block(host3),
                _block(strict_sandbox),
                _block(far_sandbox, extra="  ProxyJump strict\n"),
                _block(bare_sandbox),
                refuser,
            ]
        )
    )
    hosts = MergeHosts(
        boxes={"sandbox": sandbox, "host2": host2, "host3": host3, "far": far_sandbox, "bare": bare_sandbox},
        bastion=strict_sandbox,
        ssh_config=cfg,
    )
    for alias in hosts.boxes:
        said = ssh(cfg, alias, "echo tbr-$((6*7))")
        assert said.returncode == 0 and said.stdout.strip() == "tbr-42", (alias, said.stderr)
    # far: through the bastion (one more login there per ssh to far).
    before = strict_sandbox.accepted_logins()
    assert ssh(cfg, "far", "true").returncode == 0
    assert strict_sandbox.accepted_logins() == before + 1, "far was not reached through the jump host"
    # bare: no rsync on its PATH; a shell and python3 it has (the stream needs them).
    said = ssh(cfg, "bare", "command -v rsync; echo rc=$?; command -v python3; command -v sh; echo $PATH")
    lines = said.stdout.splitlines()
    # (The login shell's rc files may put more on PATH, as root's here do: none has rsync.)
    assert lines[0] == "rc=1", said.stdout
    assert lines[1].endswith("/python3") and lines[2].endswith("/sh"), said.stdout
    assert str(base / "bin-without-rsync") in lines[3].split(":"), said.stdout
    assert ssh(cfg, "host2", "command -v rsync").returncode == 0, "the other hosts have rsync"
    # refuser: strict's sshd, a key it does not know.
    said = ssh(cfg, "refuser", "true")
    assert said.returncode == 255 and "Permission denied" in said.stderr, said.stderr
    return hosts


# ------------------------------------------------------------------ logdirs


def write_runs(logdir: Path, runs: tuple[str, ...], steps: int = 20) -> Path:
    logdir.mkdir(parents=True, exist_ok=True)
    return write_sample_logdir(logdir, runs=runs, steps=steps)


def write_checkpoint(run: Path, size: int = 20 * 1024 * 1024) -> list[Path]:
    """What a training job leaves beside its event files: a 20 MB checkpoint."""
    data = run / "model.ckpt-1.data-00000-of-00001"
    with open(data, "wb") as handle:
        handle.write(os.urandom(1 << 20) * (size >> 20))
    index = run / "model.ckpt-1.index"
    index.write_bytes(os.urandom(4096))
    marker = run / "checkpoint"
    marker.write_text('model_checkpoint_path: "model.ckpt-1"\nall_model_checkpoint_paths: "model.ckpt-1"\n')
    return [data, index, marker]


def event_files(run: Path) -> list[Path]:
    return sorted(run.glob("events.out.tfevents.*"))


def append_steps(run: Path, first: int, last: int, tag: str = "loss") -> Path:
    """Append scalar events (steps first..last) to the run's event file, as a
    training job that keeps writing does (a new Writer would start a new file)."""
    from tensorboard.summary import Writer

    scratch = Path(tempfile.mkdtemp(prefix="tbr-steps-"))
    try:
        writer = Writer(str(scratch))
        for step in range(first, last + 1):
            writer.add_scalar(tag, 1.0 / (step + 1), step)
        writer.flush()
        writer.close()
        (written,) = event_files(scratch)
        target = event_files(run)[-1]
        with open(target, "ab") as handle:
            handle.write(written.read_bytes())
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remote_files(logdir: Path, patterns=DEFAULT_PATTERNS) -> dict[str, Path]:
    """The files a mirror of ``logdir`` must have (relative path -> file),
    following symlinks as TensorBoard does."""
    import fnmatch

    found = {}
    for directory, _, names in os.walk(logdir, followlinks=True):
        for name in names:
            path = Path(directory) / name
            if not path.exists():
                continue  # a symlink to nothing: TensorBoard reads nothing there either
            rel = path.relative_to(logdir).as_posix()
            parts = rel.split("/")
            if any(
                fnmatch.fnmatchcase(name, pattern)
                or ("/" in pattern and pattern.endswith("/**") and pattern[:-3] in parts[:-1])
                for pattern in patterns
            ):
                found[rel] = path
    return found


# ------------------------------------------------------------------ the runner


@dataclass
class MergeRig(Runner):
    """A world for merged sessions: its own control directory (short: its
    sockets), mirror directory, HOME with the tb.merge mapping, a logdir
    per host and sync_every=1. ``settings`` holds the tb settings every
    call gets (both prefixes); ``call(..., SETTING=value)`` changes some
    for one call (None: unset)."""

    hosts: MergeHosts
    root: Path
    control_dir: Path
    logdirs: dict[str, Path] = field(default_factory=dict)
    local_port: int = field(default_factory=free_port)
    tb: dict[str, Optional[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.mirror_dir = self.root / "mirror"
        for alias in (*MAPPED, UNMAPPED):
            self.logdirs.setdefault(alias, self.root / f"logs-{alias}")
        self.tb = {
            "CONTROL_DIR": str(self.control_dir),
            "MIRROR_DIR": str(self.mirror_dir),
            "SYNC_EVERY": "1",
            "LOGDIR": str(self.logdirs[UNMAPPED]),
            "LOCAL_PORT": str(self.local_port),
            "REMOTE_DIR": str(self.root / "remote"),
            "TENSORBOARD_CMD": local_tensorboard_cmd(),
            "START_TIMEOUT": "30",
            **self.tb,
        }
        self.write_mapping({alias: self.logdirs[alias] for alias in MAPPED})

    host = "sandbox"

    @property
    def ssh_config(self) -> str:
        return str(self.hosts.ssh_config)

    def write_mapping(self, mapping: dict[str, Path]) -> None:
        """tb.merge in the user's invoke and fabric config files (JSON is YAML)."""
        text = json.dumps({"tb": {"merge": {alias: str(path) for alias, path in mapping.items()}}}, indent=2)
        for name in (".invoke.yaml", ".fabric.yaml"):
            (self.home / name).write_text(text + "\n")

    def settings(self) -> dict[str, str]:
        return {key: value for key, value in self.tb.items() if value is not None}

    def with_settings(self, **changes: Optional[str]) -> dict:
        """The environment with some tb settings changed (None: not set)."""
        saved = dict(self.tb)
        try:
            self.tb.update(changes)
            return self.env(INVOKE_TB_SSH_CONFIG=self.ssh_config)
        finally:
            self.tb = saved

    # The three CLIs, with the hosts' ssh_config; settings=... for one call.
    def cli(self, *args: str, settings: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
        return self.run([str(BIN / "tensorboard-remote"), *args], env=self.with_settings(**(settings or {})), **kw)

    def invoke(self, *args: str, settings: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
        return self.run([str(BIN / "invoke"), *args], env=self.with_settings(**(settings or {})), **kw)

    def fab(self, *args: str, settings: Optional[dict] = None, **kw) -> subprocess.CompletedProcess:
        """fab without -H (the hosts go to --hosts), with -S for the ssh_config."""
        return self.run([str(BIN / "fab"), "-S", self.ssh_config, *args], env=self.with_settings(**(settings or {})), **kw)

    # Logdirs --------------------------------------------------------
    def logdir(self, alias: str) -> Path:
        return self.logdirs[alias]

    def mirror_of(self, merged: Path, alias: str) -> Path:
        return merged / alias

    # What is ours ---------------------------------------------------
    def leftovers(self) -> list[tuple[int, str]]:
        """Processes of this world still running: TensorBoard (its logdir is
        in the mirror), the syncer and masters (control_dir), rsync on
        either end (the mirror, a logdir)."""
        return ours(str(self.root)) + ours(str(self.control_dir))

    def sshd_sessions(self, alias: str) -> list[int]:
        """Connections the host's sshd serves now (its children: masters, rsync's ssh)."""
        box = self.hosts.bastion if alias == "strict" else self.hosts.box(alias)
        sshd = box.pid()
        return [pid for pid in family(sshd) if pid != sshd] if sshd else []

    def wait_nothing_left(self, timeout: float = 10.0) -> list[tuple[int, str]]:
        deadline = time.monotonic() + timeout
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers()
        return left

    def cleanup(self) -> None:
        """Stop whatever a test left running (tb.exit of everything), then kill
        what is still there; a test that left something fails."""
        if self.leftovers():
            stop = self.invoke("tb.exit", timeout=60)
            if stop.returncode != 0:
                print(f"cleanup: tb.exit said {stop.stdout}{stop.stderr}")


def populate(rig: MergeRig, extras: bool) -> None:
    """Different runs on every host, ``baseline`` on two of them (host2's a
    different curve, with more steps). With ``extras``: names with a space
    and a newline, a symlinked run and a dangling event-file symlink (on an
    rsync host and on the stream host), checkpoints and a txt file beside the event files, and a run the
    truncation test rewrites."""
    write_runs(rig.logdir("sandbox"), ("baseline", "wider"), steps=20)
    write_runs(rig.logdir("host2"), ("deeper", "baseline"), steps=30)
    write_runs(rig.logdir("host3"), ("lr-0.1", "lr-0.01"), steps=20)
    write_runs(rig.logdir("far"), ("far-run",), steps=20)
    write_runs(rig.logdir("bare"), ("bare-run",), steps=20)
    if not extras:
        return
    for alias in ("sandbox", "bare"):
        logdir = rig.logdir(alias)
        write_runs(logdir, (SPACE_RUN, NEWLINE_RUN, "rewrite"), steps=20)
        outside = write_runs(rig.root / f"outside-{alias}", ("target",), steps=20)
        (logdir / LINKED_RUN).symlink_to(outside / "target")
        write_checkpoint(logdir / "baseline" if alias == "sandbox" else logdir / "bare-run")
        # An event file that was a symlink to storage since deleted: the
        # host cannot give it; the rest syncs and check names it.
        (logdir / PRUNED).parent.mkdir()
        (logdir / PRUNED).symlink_to(rig.root / f"deleted-{alias}")
    for alias in ("host2", "bare"):
        run = rig.logdir(alias) / ("baseline" if alias == "host2" else "bare-run")
        (run / "notes.txt").write_text(f"notes of {alias}: lr 0.1, 3 layers\n")


@pytest.fixture
def merge_rig(merge_hosts, tmp_path, short_dir) -> MergeRig:
    """A MergeRig for one test, each host's logdir written (no extras)."""
    world = MergeRig(hosts=merge_hosts, root=tmp_path, control_dir=short_dir)
    populate(world, extras=False)
    yield world
    finish(world)


@pytest.fixture(scope="class")
def class_merge_rig(merge_hosts, tmp_path_factory, short_base) -> MergeRig:
    """One MergeRig for a class of tests over one merged session, with every
    extra (odd names, checkpoints, txt files, a run to rewrite)."""
    world = MergeRig(
        hosts=merge_hosts, root=tmp_path_factory.mktemp("merge"), control_dir=Path(tempfile.mkdtemp(dir=short_base))
    )
    populate(world, extras=True)
    yield world
    finish(world)


def finish(world: MergeRig) -> None:
    world.cleanup()
    left = world.wait_nothing_left(timeout=5)
    for pid, _ in left:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"test left processes behind: {left}"
