"""The remote sh scripts, run here with ``sh -s`` (no ssh): identity, quoting, ports."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tensorboard_remote import remote
from tensorboard_remote.errors import TbError

from .procs import alive, starttime, state, wait_gone

SID = "0123456789abcdef"


def sh(script: str) -> tuple[str, str]:
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30).stdout
    reply = remote.parse_reply(out)
    assert reply, out
    return reply


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.fixture
def stub(tmp_path):
    """A fake Python for ``tensorboard_cmd="FAKE -m tensorboard.main"``: it
    records its arguments (launch.py and TensorBoard's flags) and idles."""
    args = tmp_path / "args"
    path = tmp_path / "python-fake"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\nexec sleep 60\n')
    path.chmod(0o755)
    return f"{path} -m tensorboard.main", args


def write_pidfile(rundir: Path, pid: int, start: str) -> None:
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "pid").write_text(f"{pid} {start} {os.getuid()} {boot_id()}\n")


def test_a_pid_file_pointing_at_a_reused_pid_is_never_signalled(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # Same pid, but a start time that is not the one we recorded.
        wrong = str(int(starttime(stranger.pid)) + 1)
        write_pidfile(tmp_path / SID, stranger.pid, wrong)
        rundir = remote.run_dir(str(tmp_path), SID)
        assert sh(remote.status_script(rundir)) == ("dead", str(stranger.pid))
        assert sh(remote.stop_script(rundir)) == ("gone", str(stranger.pid))
        assert stranger.poll() is None, "the unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_pid_from_another_boot_is_not_ours(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        rundir = tmp_path / SID
        rundir.mkdir()
        (rundir / "pid").write_text(f"{stranger.pid} {starttime(stranger.pid)} {os.getuid()} not-this-boot\n")
        assert sh(remote.stop_script(remote.run_dir(str(tmp_path), SID)))[0] == "gone"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_zombie_is_not_alive(tmp_path):
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while state(child.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    write_pidfile(tmp_path / SID, child.pid, starttime(child.pid))
    assert sh(remote.status_script(remote.run_dir(str(tmp_path), SID)))[0] == "dead"
    child.wait()


def test_start_then_stop_with_verified_identity(tmp_path, stub):
    path, args = stub
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    word, pid = sh(remote.start_script(rundir, "logs", path, ""))
    assert word == "started"
    pid = int(pid)
    assert alive(pid)
    assert sh(remote.start_script(rundir, "logs", path, "")) == ("running", str(pid))
    assert sh(remote.stop_script(rundir)) == ("stopped", str(pid))
    assert wait_gone(pid)
    assert not (tmp_path / "runs" / SID).exists()


def test_hostile_logdir_and_activation_reach_the_remote_literally(tmp_path, stub):
    path, args = stub
    canary = tmp_path / "canary"
    logdir = f"my runs/'quote\"$(touch {canary})`touch {canary}`;touch {canary}\nnext"
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    activate = f"X='$(touch {canary})'"
    word, pid = sh(remote.start_script(rundir, logdir, path, activate, token="t0ken-abcdef"))
    assert word == "started"
    deadline = time.monotonic() + 5
    while not args.exists() or not args.read_text().endswith("next\n"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    words = args.read_text().split("\n")
    assert words[0].endswith("/launch.py")
    assert words[-4] == "--logdir"
    assert "\n".join(words[-3:-1]) == logdir
    # The token sits in a private file for the launcher, not on the command line.
    assert "t0ken-abcdef" not in args.read_text()
    token_file = tmp_path / "runs" / SID / "token"
    assert token_file.read_text() == "t0ken-abcdef\n"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert not canary.exists(), "a shell command hidden in a setting ran"
    sh(remote.stop_script(rundir))


def test_a_foreign_listener_on_the_remote_port_is_left_alone(tmp_path, stub):
    path, _ = stub
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    busy = listener.getsockname()[1]
    try:
        rundir = remote.run_dir(str(tmp_path), SID)
        reply = sh(remote.start_script(rundir, "logs", path, "", serve="tcp", port=busy))
        assert reply == ("error", f"port-in-use {busy}")
        assert listener.fileno() != -1
        listener.settimeout(0.1)
        with socket.create_connection(("127.0.0.1", busy)):
            listener.accept()[0].close()
    finally:
        listener.close()


def test_remote_paths_expand_the_remote_home_only_for_a_leading_tilde():
    assert remote.remote_path("~/.tensorboard-remote") == '"$HOME"/.tensorboard-remote'
    assert remote.remote_path("/abs/x y") == "'/abs/x y'"
    assert remote.remote_path("a~b") == "'a~b'"
    with pytest.raises(ValueError):
        remote.run_dir("/x", "../../etc")


@pytest.mark.parametrize(
    "script, expected",
    [
        ("#!/opt/tb/bin/python3.11\nimport sys\n", "/opt/tb/bin/python3.11 |  | --reload_interval 5"),
        # pip's form when the interpreter path is too long for a shebang.
        ("#!/bin/sh\n'''exec' \"/very/long path/bin/python\" \"$0\" \"$@\"\n' '''\n", "/very/long path/bin/python |  | --reload_interval 5"),
        ("#!/usr/bin/env python3\n", "/usr/bin/env | python3 | --reload_interval 5"),
    ],
)
def test_the_python_behind_a_console_script_is_found_from_its_shebang(tmp_path, script, expected):
    exe = tmp_path / "tensorboard"
    exe.write_text(script)
    exe.chmod(0o755)
    probe = f"set -- {exe} --reload_interval 5\n{remote._FIND_PYTHON}\necho \"$py | $pyarg | $*\"\n"
    out = subprocess.run(["sh", "-s"], input=probe, capture_output=True, text=True).stdout.strip()
    assert out == expected


def test_python_dash_m_tensorboard_names_its_python_directly():
    probe = f"set -- /opt/py/bin/python -m tensorboard.main --samples_per_plugin x=1\n{remote._FIND_PYTHON}\necho \"$py | $*\"\n"
    out = subprocess.run(["sh", "-s"], input=probe, capture_output=True, text=True).stdout.strip()
    assert out == "/opt/py/bin/python | --samples_per_plugin x=1"


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "kill"])
def test_stop_signals_only_a_verified_process_through_a_pidfd_or_kill(tmp_path, pidfd):
    ours_ = subprocess.Popen(["sleep", "60"])
    try:
        write_pidfile(tmp_path / SID, ours_.pid, starttime(ours_.pid))
        out = subprocess.run(
            ["sh", "-s"], input=remote.stop_script(remote.run_dir(str(tmp_path), SID), pidfd=pidfd),
            capture_output=True, text=True, timeout=30,
        ).stdout
        assert remote.parse_reply(out) == ("stopped", str(ours_.pid))
        assert remote.parse_info(out)["via"] == ("pidfd" if pidfd else "kill")
        assert ours_.wait(timeout=5) == -15
    finally:
        ours_.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    try:
        time.sleep(0.2)
        write_pidfile(tmp_path / SID, stubborn.pid, starttime(stubborn.pid))
        reply = sh(remote.stop_script(remote.run_dir(str(tmp_path), SID), grace=0.3))
        assert reply == ("stopped", str(stubborn.pid))
        assert stubborn.wait(timeout=5) == -9
    finally:
        stubborn.kill()


def test_a_setting_holding_the_reserved_heredoc_word_is_a_clear_error():
    with pytest.raises(TbError, match="reserved word TBR_SH_EOF"):
        remote.start_script(remote.run_dir("/x", SID), "logs", "tensorboard", "echo\nTBR_SH_EOF\nrm -rf ~")
