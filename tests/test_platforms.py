"""Native Windows and macOS laptops, end to end: the real fab, invoke and
tensorboard-remote, against the real sshd (and Slurm), with this machine
made to look like the other platform to Python (tests/simulated/
sitecustomize.py: ``sys.platform``, and what that platform's Python lacks).

macOS leaves a control path 86 bytes (Linux 90): the sessions here live in
a control directory exactly as long as a 16-character user's default,
``/Users/<16 characters>/.ssh/controlmasters`` (43 bytes), under /tmp.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Config, Context

from tensorboard_remote import state, tb
from tensorboard_remote.sandbox import Sandbox, free_port
from tensorboard_remote.settings import DEFAULTS

from .conftest import BIN, REPO, http_json, rig_in
from .procs import ours
from .slurm_fixtures import ready_url, running_job, session_in
from .slurmcluster import why_not

SIMULATED = REPO / "tests" / "simulated"
#: ``/Users/`` and 16 characters: a macOS home.
MAC_HOME = len("/Users/abcdefghijklmnop")
#: That home's ``.ssh/controlmasters``, the default control directory.
MAC_CONTROL_DIR = MAC_HOME + len("/.ssh/controlmasters")
MAC_SOCKET_MAX = 86

WSL = (
    "tensorboard-remote: native Windows is not supported: its OpenSSH cannot share one connection "
    "(no ControlMaster; Win32-OpenSSH issue #1328): run tensorboard-remote in WSL "
    "(wsl --install, then pip install tensorboard-remote there)"
)


def simulated(runner, platform: str, **extra: str) -> dict:
    """The runner's environment, as seen on ``platform`` (Windows always
    sets USERNAME)."""
    return runner.env(
        PYTHONPATH=str(SIMULATED), TBR_SIMULATE=platform, USERNAME="you",
        INVOKE_TB_SSH_CONFIG=runner.ssh_config, **extra,
    )


def padded(base: Path, length: int) -> Path:
    """A new directory under ``base`` whose path is ``length`` bytes long."""
    name_length = length - len(str(base)) - 1
    assert name_length > 0, base
    path = base / os.urandom(name_length).hex()[:name_length]
    path.mkdir()
    return path


def fits_macos(path: str) -> None:
    assert len(path.encode()) <= MAC_SOCKET_MAX, f"{path} is {len(path.encode())} bytes"


def ok(result) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------ Windows


def test_on_windows_help_listing_completion_and_the_import_still_work(rig):
    env = simulated(rig, "windows")
    runs = {
        "fab --list": [BIN / "fab", "--list"],
        "fab --help tb.start": [BIN / "fab", "--help", "tb.start"],
        "invoke --list": [BIN / "invoke", "--list"],
        "tensorboard-remote --help": [BIN / "tensorboard-remote", "--help"],
        "tensorboard-remote HOST start --help": [BIN / "tensorboard-remote", rig.host, "start", "--help"],
        "completion": [BIN / "fab", "--complete", "--", "fab", "tb."],
        "import": [sys.executable, "-c", "import sys, tensorboard_remote; print(sys.platform, tensorboard_remote.tb.ns.name)"],
    }
    seen = {what: rig.run([str(word) for word in argv], env=env) for what, argv in runs.items()}
    for what, result in seen.items():
        ok(result)
    assert "tb.start" in seen["fab --list"].stdout and "tb.start" in seen["invoke --list"].stdout
    assert "--local-port" in seen["fab --help tb.start"].stdout
    assert "tb.start" in seen["completion"].stdout.split()
    assert seen["import"].stdout.split() == ["win32", "tb"]


def test_on_windows_every_command_says_in_one_line_to_use_wsl_and_exits_1(rig):
    env = simulated(rig, "windows")
    logins = rig.sandbox.accepted_logins()
    commands = {
        "tensorboard-remote HOST check": [BIN / "tensorboard-remote", rig.host, "check"],
        "tensorboard-remote HOST start": [BIN / "tensorboard-remote", rig.host, "start"],
        "tensorboard-remote demo": [BIN / "tensorboard-remote", "demo"],
        "fab -H HOST tb.start": [BIN / "fab", "-H", rig.host, "-S", rig.ssh_config, "tb.start"],
        "fab -H HOST tb.exit": [BIN / "fab", "-H", rig.host, "-S", rig.ssh_config, "tb.exit"],
        "invoke tb.start": [BIN / "invoke", "tb.start", "--host", rig.host],
        "invoke tb.list": [BIN / "invoke", "tb.list"],
    }
    for what, argv in commands.items():
        result = rig.run([str(word) for word in argv], env=env)
        assert (result.returncode, result.stderr.strip(), result.stdout) == (1, WSL, ""), what
    # Refused before anything ran: no ssh, no files, no sandbox of the demo's.
    assert rig.sandbox.accepted_logins() == logins
    assert not list(rig.control_dir.iterdir())
    assert not (rig.home / ".cache").exists()


# -------------------------------------------------------------- macOS


@pytest.fixture
def mac_rig(sandbox, logdir, tmp_path, short_base):
    """A Rig whose control directory is as long as a 16-character macOS
    user's default one."""
    with rig_in(sandbox, logdir, tmp_path, padded(short_base, MAC_CONTROL_DIR)) as world:
        yield world


def test_on_macos_a_session_in_a_control_dir_as_long_as_a_16_character_users_starts_checks_and_exits(mac_rig):
    env = simulated(mac_rig, "macos")
    started = mac_rig.fab("tb.start", env=env)
    ok(started)
    fits_macos(mac_rig.only_state()["socket"])
    assert http_json(mac_rig.url + "data/logdir") == {"logdir": str(mac_rig.logdir)}
    checked = mac_rig.fab("tb.check", env=env)
    ok(checked)
    assert checked.stdout.startswith(f"{mac_rig.host}: ok {mac_rig.url}")
    stopped = mac_rig.fab("tb.exit", env=env)
    ok(stopped)
    assert "stopped TensorBoard" in stopped.stdout and not list(mac_rig.control_dir.iterdir())


@pytest.fixture
def mac_home(short_base):
    """A HOME as long as ``/Users/<16 characters>``; the demo's sshd and
    TensorBoard in it are gone afterwards."""
    home = padded(short_base, MAC_HOME)
    yield home
    for pid, _ in ours(str(home)):
        os.kill(pid, signal.SIGKILL)


def test_on_macos_the_demo_starts_checks_and_stops_with_a_16_character_users_home(mac_home):
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(mac_home), "LANG": "C.UTF-8",
        "PYTHONPATH": str(SIMULATED), "TBR_SIMULATE": "macos", "INVOKE_TB_LOCAL_PORT": str(free_port()),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "tensorboard-remote"), *args], env=env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=90,
        )

    demo = run("demo")
    ok(demo)
    assert "TensorBoard ready at http://127.0.0.1:" in demo.stdout
    sockets = [path for path in (mac_home / ".ssh/controlmasters").iterdir() if path.is_socket()]
    # The control socket, the watcher's relay and control sockets beside it: each fits macOS.
    (socket,) = [path for path in sockets if "." not in path.name]
    assert sorted(path.name for path in sockets) == sorted(socket.name + end for end in ("", ".relay", ".watch"))
    for path in sockets:
        fits_macos(str(path))
    ok(run("sandbox", "check", "--ssh-config", str(mac_home / ".cache/tensorboard-remote/sandbox/ssh_config")))
    stopped = run("demo", "--stop")
    ok(stopped)
    assert "stopped TensorBoard" in stopped.stdout and "demo: stopped the sandbox sshd" in stopped.stdout
    assert not ours(str(mac_home))


def test_the_sandbox_takes_only_its_own_sshd_for_its_sshd(sandbox, tmp_path):
    assert sandbox.pid() == int(sandbox.pidfile.read_text().split()[0])
    # Another process naming the same config file, whose pid the pid file now holds.
    other = Sandbox(tmp_path)
    other.dir.mkdir(exist_ok=True)
    other.sshd_config.write_text("")
    with subprocess.Popen(["tail", "-f", str(other.sshd_config)], stdout=subprocess.DEVNULL) as tail:
        try:
            other.pidfile.write_text(f"{tail.pid}\n")
            assert other.pid() is None
        finally:
            tail.kill()


# ----------------------------------------------------- after upgrading


def test_a_session_recorded_under_the_previous_releases_full_hash_is_checked_and_exited(rig, monkeypatch):
    # Started as the previous release named it: all 40 hex digits of %C.
    with monkeypatch.context() as previous:
        previous.setattr(state, "NAME_DIGITS", 40)
        settings = {key.lower(): value for key, value in rig.settings().items()}
        tb.start(Context(Config(overrides={"tb": dict(DEFAULTS)})), host=rig.host, ssh_config=rig.ssh_config,
                 quiet=True, **settings)
    (name,) = [path.name for path in rig.control_dir.glob("tb-*.json")]
    assert len(name) == len("tb-") + 40 + len(".json")
    checked = rig.fab("tb.check")
    ok(checked)
    assert checked.stdout.startswith(f"{rig.host}: ok {rig.url}")
    stopped = rig.fab("tb.exit")
    ok(stopped)
    assert "stopped TensorBoard" in stopped.stdout and not list(rig.control_dir.iterdir())


# -------------------------------------------------------------- Slurm


@pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")
@pytest.mark.parametrize("via", ["srun", "ssh"])
def test_on_macos_job_sessions_fit_a_control_dir_as_long_as_a_16_character_users(
    via, cluster, slurm, short_base, tmp_path
):
    with session_in(cluster, slurm, padded(short_base, MAC_CONTROL_DIR), tmp_path) as session:
        env = simulated(session, "macos")
        job = running_job(slurm, name=f"mac-{via}")
        started = session.fab("tb.start", "--job", job, "--slurm-via", via, env=env)
        ok(started)
        (recorded,) = [json.loads(path.read_text()) for path in session.control_dir.glob("tb-*.json")]
        fits_macos(recorded["socket"])
        if via == "ssh":
            fits_macos(recorded["target"]["jump_socket"])
        assert sorted(http_json(ready_url(started) + "data/runs")) == ["baseline", "wider"]
        checked = session.fab("tb.check", "--job", job, env=env)
        ok(checked)
        assert f"job {job}" in checked.stdout and f": ok {ready_url(started)} " in checked.stdout
        ok(session.fab("tb.exit", "--job", job, env=env))
        left = [path for path in session.control_dir.iterdir() if path.suffix == ".json" or path.is_socket()]
        assert not left
        slurm.cancel(job)
