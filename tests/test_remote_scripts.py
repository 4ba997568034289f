"""The remote sh scripts, run here with ``sh -s`` (no ssh): identity, quoting, ports."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tensorboard_remote import remote

from .conftest import alive, wait_gone

SID = "0123456789abcdef"


def sh(script: str) -> tuple[str, str]:
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30).stdout
    reply = remote.parse_reply(out)
    assert reply, out
    return reply


def starttime(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.fixture
def stub(tmp_path):
    """A fake TensorBoard that records its arguments and then idles."""
    args = tmp_path / "args"
    path = tmp_path / "fake-tensorboard"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\nexec sleep 60\n')
    path.chmod(0o755)
    return path, args


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
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    write_pidfile(tmp_path / SID, child.pid, starttime(child.pid))
    assert sh(remote.status_script(remote.run_dir(str(tmp_path), SID)))[0] == "dead"
    child.wait()


def test_start_then_stop_with_verified_identity(tmp_path, stub):
    path, args = stub
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    word, pid = sh(remote.start_script(rundir, "logs", 16999, str(path), ""))
    assert word == "started"
    pid = int(pid)
    assert alive(pid)
    assert sh(remote.start_script(rundir, "logs", 16999, str(path), "")) == ("running", str(pid))
    assert sh(remote.stop_script(rundir)) == ("stopped", str(pid))
    assert wait_gone(pid)
    assert not (tmp_path / "runs" / SID).exists()


def test_hostile_logdir_and_activation_reach_the_remote_literally(tmp_path, stub):
    path, args = stub
    canary = tmp_path / "canary"
    logdir = f"my runs/'quote\"$(touch {canary})`touch {canary}`;touch {canary}\nnext"
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    activate = f"X='$(touch {canary})'"
    word, pid = sh(remote.start_script(rundir, logdir, 16998, str(path), activate))
    assert word == "started"
    deadline = time.monotonic() + 5
    while not args.exists() or not args.read_text().endswith("127.0.0.1\n"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    words = args.read_text().split("\n")
    assert words[:2] == ["--logdir", logdir.split("\n")[0]]
    assert "\n".join(words[1:3]) == logdir
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
        assert sh(remote.start_script(rundir, "logs", busy, str(path), "")) == ("error", f"port-in-use {busy}")
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
