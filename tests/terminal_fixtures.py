"""Fixtures for logins that prompt (registered as a plugin in conftest.py):
the password host (an sshd that takes passwords, its ordinary user with a
known password and no usable key), a runner as that user, a real terminal
(a tmux pane), and a passphrase-protected key. Used by
``tests/test_prompts.py`` and the watcher's ``needs-login`` test."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tensorboard_remote.sandbox import Sandbox, free_port

from .conftest import BIN, REPO, http_json
from .procs import cmdline, pids
from .slurm_fixtures import Session as ClusterUser, _cluster_tensorboard, _logdir_of, _user

PW_USER = "tbr-pw"
PASSWORD = "Correct-Horse-7"
PASSPHRASE = "Staple-Battery-9"
#: The frames of rich's "dots" spinner.
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

#: For the test modules that use these fixtures.
NEEDS_ROOT_AND_TMUX = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tmux"), reason="needs root (a user with a password) and tmux"
)


#: The ssh_config lines for a login by password only.
BY_PASSWORD = ("PubkeyAuthentication no", "PreferredAuthentications password", "NumberOfPasswordPrompts 1")


def pwhost_config(path: Path, box: Sandbox, known_hosts: Path, checking: str, *login: str) -> Path:
    """An ssh_config naming the password host ``pwhost``: its known_hosts,
    StrictHostKeyChecking and the ``login`` lines (how to authenticate)."""
    lines = [
        "Host pwhost",
        "  HostName 127.0.0.1",
        f"  Port {box.port}",
        f"  User {PW_USER}",
        f"  UserKnownHostsFile {known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        f"  StrictHostKeyChecking {checking}",
        *(f"  {line}" for line in login),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def password_host(nothing_left_behind):
    """An sshd that takes passwords, its user, an ssh_config that offers no key."""
    user = _user(PW_USER, PASSWORD)
    venv = _cluster_tensorboard()
    # sshd and the user read this directory: not under pytest's 0700 base.
    root = Path(tempfile.mkdtemp(prefix="tbr-pw-", dir="/tmp"))
    root.chmod(0o755)  # mkdtemp's is 0700: sshd reads authorized_keys as the user
    box = Sandbox(root / "sshd", alias="pwhost", user=PW_USER).create(extra_sshd="PasswordAuthentication yes").start()
    config = pwhost_config(root / "password_ssh_config", box, box.dir / "known_hosts", "yes", *BY_PASSWORD)
    logdir = _logdir_of(user)
    yield {"box": box, "config": config, "logdir": logdir, "activate": f"source {venv}/bin/activate"}
    box.stop()
    shutil.rmtree(logdir.parent, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


class PasswordUser(ClusterUser):
    """fab, invoke and tensorboard-remote as the password user would run them."""

    host = "pwhost"

    def __init__(self, host: dict, control_dir: Path, tmp_path: Path) -> None:
        super().__init__(host, control_dir, tmp_path)
        self.local_port = free_port()
        #: The password host's own, unless a test gives one of its own.
        self.config = host["config"]

    @property
    def ssh_config(self) -> str:
        return str(self.config)

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "LOCAL_PORT": str(self.local_port)}

    def start_argv(self, cli: str) -> tuple[list[str], dict]:
        """tb.start as typed at a terminal with ``cli``, and its environment."""
        if cli == "fab":
            return [str(BIN / "fab"), "-H", self.host, "-S", self.ssh_config, "tb.start"], self.env()
        env = self.env(INVOKE_TB_SSH_CONFIG=self.ssh_config)
        if cli == "invoke":
            return [str(BIN / "invoke"), "tb.start", "--host", self.host], env
        return [str(BIN / "tensorboard-remote"), self.host, "start"], env


@pytest.fixture
def user(password_host, short_dir, tmp_path):
    runner = PasswordUser(password_host, short_dir, tmp_path)
    yield runner
    # Without a terminal tb.exit rides the master (no prompt); then nothing of ours runs.
    runner.invoke("tb.exit")
    left = [
        pid for pid in pids()
        if str(short_dir) in cmdline(pid) or ("launch.py" in cmdline(pid) and str(password_host["logdir"]) in cmdline(pid))
    ]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"left behind: {left}"


class Pane:
    """One tmux pane (200x50) on a tmux server of its own, running a command."""

    def __init__(self, directory: Path, argv: list[str], env: dict) -> None:
        self.socket = directory / "tmux.sock"
        script = directory / "typed.sh"
        words = " ".join(shlex.quote(f"{key}={value}") for key, value in env.items())
        script.write_text(
            f'cd {shlex.quote(str(REPO))}\nenv -i TERM="$TERM" {words} {shlex.join(argv)}\n'
            f'echo "tbr-exit=$?"\nexec sleep 600\n'
        )
        self.tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "tbr", f"sh {shlex.quote(str(script))}")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tbr")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.screen())
            if found or time.monotonic() > deadline:
                assert found, f"{pattern!r} never showed; the pane:\n{self.screen()}"
                return found
            time.sleep(0.1)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "tbr", "-l", text)
        self.tmux("send-keys", "-t", "tbr", "Enter")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.tmux("kill-server")


@pytest.fixture
def terminal(tmp_path):
    panes: list[Pane] = []

    def open_pane(argv: list[str], env: dict) -> Pane:
        directory = Path(tempfile.mkdtemp(prefix="tbr-tmux-", dir="/tmp"))
        panes.append(Pane(directory, argv, env))
        return panes[-1]

    yield open_pane
    for pane in panes:
        pane.close()
        shutil.rmtree(pane.socket.parent, ignore_errors=True)


def shows_the_prompt(pane: Pane, prompt: str) -> str:
    """Wait for ssh's ``prompt``; several spinner frames later it is still
    there, alone on the last line, with no spinner frame anywhere (no redraw
    erased it). The screen."""
    pane.wait_for(re.escape(prompt))
    time.sleep(0.5)
    screen = pane.screen()
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[-1].rstrip().endswith(prompt.rstrip()), screen
    assert not SPINNER & set(screen), screen
    assert "pwhost: connecting (ssh may ask for a password or a code)" in screen
    return screen


def goes_on_to_tensorboard(pane: Pane, user: PasswordUser) -> None:
    """The start ends with the URL and status 0; the page answers; tb.exit
    (no terminal: it rides the master) stops it."""
    url = pane.wait_for(r"TensorBoard ready at (http://127\.0\.0\.1:\d+/\S+/)").group(1)
    assert pane.wait_for(r"tbr-exit=(\d+)").group(1) == "0", pane.screen()
    assert "opened the tunnel" in pane.screen()
    assert http_json(url + "data/logdir")["logdir"] == str(user.cluster["logdir"])
    stopped = user.invoke("tb.exit")
    assert stopped.returncode == 0 and "stopped TensorBoard" in stopped.stdout, stopped.stdout + stopped.stderr


@pytest.fixture
def passphrase_key(password_host, tmp_path):
    """A client key under a passphrase, authorized for the password user
    (the password host's sshd takes keys too) while the test runs."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key)], check=True)
    authorized = password_host["box"].dir / "authorized_keys"
    before = authorized.read_text()
    authorized.write_text(before + (tmp_path / "id_ed25519.pub").read_text())
    yield key
    authorized.write_text(before)
