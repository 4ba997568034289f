"""Fixtures: a real sshd on 127.0.0.1, a real TensorBoard, hermetic CLIs.

The sshd is the same sandbox ``tensorboard-remote demo`` uses. The "remote"
is this machine, so each test gets its own local and remote port, control
directory, remote run directory and an empty HOME (no user invoke/fabric
config). Nothing reads the user's ssh config: every ssh call gets ``-F``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tensorboard_remote import merge, record, state
from tensorboard_remote.host import Host
from tensorboard_remote.session import Session
from tensorboard_remote.shell import Shell
from tensorboard_remote.slurm import placement_of
from tensorboard_remote.sandbox import Sandbox, free_port, local_tensorboard_cmd, write_sample_logdir

from .procs import ours

#: The Slurm tests' fixtures (cluster, login node, runner), for both proctrack modules; the link faults';
#: the merged view's (several hosts, one behind a jump host, one without rsync).
pytest_plugins = ["tests.slurm_fixtures", "tests.link_fixtures", "tests.terminal_fixtures", "tests.merge_fixtures"]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Fixtures of what this machine has one of: the Slurm cluster (its
#: cgroups, node address, users and venv), the network namespace of the
#: link faults (fixed names), the password user. Under pytest-xdist
#: (``-n 2 --dist loadgroup``, as .ci/run runs) every test that uses one runs
#: in the same worker, one after another, as without xdist; so do the tests
#: marked ``machine_wide`` (they use a fixed port).
MACHINE_WIDE = {"slurm", "link_namespace", "password_host"}


def pytest_configure(config):
    config.addinivalue_line("markers", "machine_wide: uses something this machine has one of (a fixed port): one xdist worker runs them all")
    # pytest-xdist's own (registered here too, for a run without it).
    config.addinivalue_line("markers", "xdist_group(name): the tests of one group run in one xdist worker")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """xdist groups (read only with ``--dist loadgroup``): the machine-wide
    tests in one; a module's tests together when it has a module-scoped
    fixture, a class's when it has a class-scoped one (set up once, its
    steps in order); every other test on its own."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
        if MACHINE_WIDE & set(item.fixturenames) or item.get_closest_marker("machine_wide"):
            group = "machine"
        elif any(d.scope == "module" for d in defs):
            group = item.module.__name__
        elif item.cls is not None and any(d.scope == "class" for d in defs):
            group = f"{item.module.__name__}.{item.cls.__name__}"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


#: Test files all of whose tests are machine-wide: their node ids must carry the group.
_ALL_MACHINE_WIDE = ("tests/test_slurm.py::", "tests/test_slurm_linuxproc.py::", "tests/test_slurm_nodes.py::", "tests/test_prompts.py::")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """pytest-xdist reads the groups from the node ids (a suffix its worker
    adds). pytest 9.2's node ids drop it (pytest-xdist#1386), hence the test
    extra's pytest < 9.2; if it is lost anyway, the Slurm and link tests
    would run in two workers at once: stop at collection instead."""
    if node.config.getoption("dist") != "loadgroup":
        return
    lost = [nodeid for nodeid in ids if nodeid.startswith(_ALL_MACHINE_WIDE) and "@" not in nodeid]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist lost the test groups ({lost[0]} has none): with this pytest --dist loadgroup "
            "cannot group (pytest-xdist#1386); use pytest < 9.2, as the test extra says"
        )


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def short_base():
    """Control sockets need short paths (sun_path is 108 bytes): not pytest's."""
    path = Path(tempfile.mkdtemp(prefix="tbr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_dir(short_base, request) -> Path:
    path = Path(tempfile.mkdtemp(dir=short_base))
    return path


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(base, short_base):
    """The suite leaves no sshd, ssh master or TensorBoard behind."""
    yield
    # Sandbox sshd instances are stopped by their own fixture teardown,
    # which runs before this (it was requested later).
    def leftovers():
        return ours(str(base)) + ours(str(short_base))

    deadline = time.monotonic() + 5
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers()
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="session")
def sandbox(base, nothing_left_behind) -> Sandbox:
    box = Sandbox(base / "sshd").create().start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def logdir(base) -> Path:
    return write_sample_logdir(base / "logdir", runs=("baseline", "wider"), steps=20)


class Runner:
    """Runs fab, invoke and tensorboard-remote as a user would, hermetically:
    its own HOME, a fixed PATH, and the tb settings given in the environment
    under both the INVOKE_ and the FABRIC_ prefix. Subclasses say which host
    and ssh_config, where HOME is, and which settings."""

    host: str
    home: Path
    timeout: float = 90

    @property
    def ssh_config(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict[str, str]:
        """tb settings by key (``LOGDIR``), for both CLIs' environments."""
        raise NotImplementedError

    def env(self, **extra: str) -> dict:
        env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
        }
        for prefix in ("INVOKE", "FABRIC"):
            env.update({f"{prefix}_TB_{key}": value for key, value in self.settings().items()})
        env.update(extra)
        return env

    def run(self, argv: list[str], *, cwd: Path = REPO, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=cwd, env=env or self.env(), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout or self.timeout,
        )

    def fab(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run([str(BIN / "fab"), "-H", self.host, "-S", self.ssh_config, *args], **kw)

    def invoke(self, *args: str, **kw) -> subprocess.CompletedProcess:
        env = kw.pop("env", None) or self.env(INVOKE_TB_SSH_CONFIG=self.ssh_config)
        return self.run([str(BIN / "invoke"), *args], env=env, **kw)

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        env = kw.pop("env", None) or self.env(INVOKE_TB_SSH_CONFIG=self.ssh_config)
        return self.run([str(BIN / "tensorboard-remote"), *args], env=env, **kw)


@dataclass
class Rig(Runner):
    """One test's world: its ports and directories, and CLI runners."""

    sandbox: Sandbox
    root: Path
    logdir: Path
    control_dir: Path
    local_port: int = field(default_factory=free_port)
    remote_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.remote_dir = self.root / "remote"
        self.home = self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        while self.remote_port == self.local_port:
            self.remote_port = free_port()

    @property
    def url(self) -> str:
        """The session's URL (with its token), from the recorded state."""
        return record.Record.from_json(self.only_state(), self.control_dir).url

    @property
    def host(self) -> str:
        return self.sandbox.alias

    @property
    def ssh_config(self) -> str:
        return str(self.sandbox.ssh_config)

    def settings(self) -> dict[str, str]:
        return {
            "CONTROL_DIR": str(self.control_dir),
            "REMOTE_DIR": str(self.remote_dir),
            "LOGDIR": str(self.logdir),
            "LOCAL_PORT": str(self.local_port),
            "REMOTE_PORT": str(self.remote_port),
            "TENSORBOARD_CMD": local_tensorboard_cmd(),
            "START_TIMEOUT": "30",
        }

    def states(self) -> list[dict]:
        if not self.control_dir.exists():
            return []
        return [state.read(paths) for paths in state.all_paths(self.control_dir)]

    def only_state(self) -> dict:
        states = self.states()
        assert len(states) == 1, states
        return states[0]

    def cleanup(self) -> None:
        if self.control_dir.exists():
            shell = Shell()
            for paths, rec in record.all_records(self.control_dir):
                session = Session(Host(shell, rec.target.with_batch(True), paths), placement_of(rec))
                try:
                    session.stop(lambda line: None)
                except Exception as error:  # noqa: BLE001 - best effort
                    print(f"cleanup of {paths} failed: {error}")
            for merged in merge.recorded(shell, self.control_dir, batch=True):
                try:
                    merged.stop(lambda line: None)
                except Exception as error:  # noqa: BLE001 - best effort
                    print(f"cleanup of {merged.paths} failed: {error}")


@contextlib.contextmanager
def rig_in(sandbox: Sandbox, logdir: Path, root: Path, control_dir: Path):
    """A Rig in ``root``; on the way out its sessions are stopped and nothing
    of its may still run."""
    # A per-test path to the shared logdir puts root in TensorBoard's
    # command line, so a TensorBoard this test leaves behind is found.
    (root / "logdir").symlink_to(logdir)
    world = Rig(sandbox=sandbox, root=root, logdir=root / "logdir", control_dir=control_dir)
    yield world
    world.cleanup()
    left = ours(str(root)) + ours(str(control_dir))
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"test left processes behind: {left}"


@pytest.fixture
def rig(sandbox, logdir, tmp_path, short_dir) -> Rig:
    with rig_in(sandbox, logdir, tmp_path, short_dir) as world:
        yield world


@pytest.fixture(scope="class")
def class_rig(sandbox, logdir, tmp_path_factory, short_base) -> Rig:
    """One Rig for a class of tests that check one scenario step by step."""
    with rig_in(sandbox, logdir, tmp_path_factory.mktemp("rig"), Path(tempfile.mkdtemp(dir=short_base))) as world:
        yield world


def http_json(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def tensorboards(rig: Rig) -> list[int]:
    """Pids of TensorBoard processes serving this test's logdir."""
    return [pid for pid, cmd in ours(str(rig.logdir)) if "launch.py" in cmd and "--logdir" in cmd]


@pytest.fixture(scope="session")
def strict_sandbox(base, nothing_left_behind) -> Sandbox:
    """An sshd that refuses Unix-socket forwarding, as some clusters do."""
    box = Sandbox(base / "sshd-strict", alias="strict").create(extra_sshd="AllowStreamLocalForwarding no").start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def more_sandboxes(base, nothing_left_behind) -> list[Sandbox]:
    """Two more hosts, for several-host tests."""
    boxes = [Sandbox(base / f"sshd-{name}", alias=name).create().start() for name in ("host2", "host3")]
    yield boxes
    for box in boxes:
        box.stop()


def chromium_flags(profile: Path) -> list[str]:
    """Headless Chromium that reaches 127.0.0.1 and nothing else: its own
    background calls (updates, safe browsing, fonts) go to a closed local
    proxy port and no name resolves, so the tests send no traffic off this
    machine."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
        "--no-pings", "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1280,900",
    ]

