"""Shell: a command killed on a timeout or cancel takes its children with it
when it runs as a group (rsync and the ssh it starts), so nothing holds our
pipes open after it. Real processes (sh, sleep), no sshd."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tensorboard_remote.errors import Cancelled, CommandTimeout
from tensorboard_remote.shell import Shell


def _gone(pid: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _child_script(pidfile: Path) -> list[str]:
    # A parent that starts a long child sharing its stdout, as rsync starts ssh.
    return ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]


def _pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.01)
    raise AssertionError("the child never started")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_group_timed_out_is_killed_with_its_child(tmp_path):
    pidfile = tmp_path / "child"
    began = time.monotonic()
    with pytest.raises(CommandTimeout):
        Shell().run(_child_script(pidfile), timeout=0.5, group=True, what="rsync")
    assert time.monotonic() - began < 5
    assert _gone(_pid(pidfile))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_group_cancelled_returns_at_once_and_its_child_is_gone(tmp_path):
    pidfile = tmp_path / "child"
    shell = Shell()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            shell.run(_child_script(pidfile), timeout=60, group=True, what="rsync")
        except BaseException as error:  # noqa: BLE001 - the test reads it
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    child = _pid(pidfile)
    began = time.monotonic()
    shell.cancel()
    worker.join(10)
    assert not worker.is_alive(), "run() still waits on the pipe the child holds"
    assert time.monotonic() - began < 5
    assert outcome and isinstance(outcome[0], Cancelled), outcome
    assert _gone(child)


def test_a_command_not_in_a_group_stays_in_ours(tmp_path):
    # (ssh that may prompt must keep the terminal: it stays in our process group.)
    out = Shell().run(["sh", "-c", "ps -o pgid= -p $$"], timeout=10)
    assert int(out.stdout.strip()) == os.getpgrp()
    grouped = Shell().run(["sh", "-c", "ps -o pgid= -p $$"], timeout=10, group=True)
    assert int(grouped.stdout.strip()) != os.getpgrp()


def test_a_stream_cut_short_by_cancel_is_a_cancel_not_a_failure_of_the_host():
    # A sync stream's reader sees the end of a stream cancel() killed and
    # raises its own error; the syncer must see a cancel (measured: it took
    # it for a lost master and cleared the live master's socket).
    from tensorboard_remote.mirror import SyncFailed

    shell = Shell()
    with pytest.raises(Cancelled):
        with shell.process(["sh", "-c", "sleep 60"]) as (proc, _):
            shell.cancel()
            proc.wait(5)
            raise SyncFailed("sync from bare was cut short (the connection ended)")
    # Not cancelled: the reader's error is the host's, as it was.
    other = Shell()
    with pytest.raises(SyncFailed):
        with other.process(["sh", "-c", "exit 0"]):
            raise SyncFailed("sync from bare was cut short (the connection ended)")
