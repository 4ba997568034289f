"""A login that prompts, in a real terminal: ssh's password prompt stays
visible and answerable under fab, invoke and tensorboard-remote.

A tmux pane is the terminal; the host is an sshd that takes passwords,
reached as an ordinary user with a known password and no usable key (the
ssh_config turns public keys off, the host key stays pinned and strict).
TensorBoard is the cluster venv's, readable by that user (``activate``).
"""

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
#: The frames of rich's "dots" spinner.
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tmux"), reason="needs root (a user with a password) and tmux"
)


@pytest.fixture(scope="session")
def password_host(nothing_left_behind):
    """An sshd that takes passwords, its user, an ssh_config that offers no key."""
    user = _user(PW_USER, PASSWORD)
    venv = _cluster_tensorboard()
    # sshd and the user read this directory: not under pytest's 0700 base.
    root = Path(tempfile.mkdtemp(prefix="tbr-pw-", dir="/tmp"))
    box = Sandbox(root / "sshd", alias="pwhost", user=PW_USER).create(extra_sshd="PasswordAuthentication yes").start()
    config = root / "password_ssh_config"
    config.write_text(
        "\n".join(
            [
                "Host pwhost",
                "  HostName 127.0.0.1",
                f"  Port {box.port}",
                f"  User {PW_USER}",
                f"  UserKnownHostsFile {box.dir / 'known_hosts'}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  PubkeyAuthentication no",
                "  PreferredAuthentications password",
                "  NumberOfPasswordPrompts 1",
            ]
        )
        + "\n"
    )
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


@pytest.mark.parametrize("cli", ["fab", "invoke", "tensorboard-remote"])
def test_the_password_prompt_stays_visible_on_a_terminal_and_typing_it_starts_tensorboard(user, terminal, cli):
    pane = terminal(*user.start_argv(cli))
    pane.wait_for(r"password:")
    # Several spinner frames later the prompt is still there, alone on the
    # last line: no redraw erased it.
    time.sleep(0.5)
    screen = pane.screen()
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[-1].endswith(f"{PW_USER}@127.0.0.1's password:"), screen
    assert not SPINNER & set(screen), screen
    assert "pwhost: connecting (ssh may ask for a password or a code)" in screen
    pane.type(PASSWORD)
    url = pane.wait_for(r"TensorBoard ready at (http://127\.0\.0\.1:\d+/\S+/)").group(1)
    assert pane.wait_for(r"tbr-exit=(\d+)").group(1) == "0", pane.screen()
    assert "opened the tunnel" in pane.screen()
    assert http_json(url + "data/logdir")["logdir"] == str(user.cluster["logdir"])
    stopped = user.invoke("tb.exit")
    assert stopped.returncode == 0 and "stopped TensorBoard" in stopped.stdout, stopped.stdout + stopped.stderr


def test_without_a_terminal_the_password_host_fails_at_once_and_nothing_waits_on_a_prompt(user):
    result = user.fab("tb.start")
    assert result.returncode == 1
    assert "cannot connect to pwhost: " in result.stderr and "Permission denied" in result.stderr, result.stderr
    assert not list(user.control_dir.iterdir())  # no record, socket or log
