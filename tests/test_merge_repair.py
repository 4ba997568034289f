"""A merged view repairs itself, and spares what is the user's: the local
TensorBoard killed comes back behind the same URL; a host's own ssh master of
the user's is ridden (zero logins) and left up. Real sshd, TensorBoard."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tensorboard_remote.sandbox import write_sample_logdir

from .procs import alive, wait_gone
from .test_reconnect import fetch
from .test_user_master import UserMaster, fab, logins


def merged_record(rig) -> dict:
    (path,) = Path(rig.control_dir).glob("merge-*.json")
    return json.loads(path.read_text())


def url_of(rec: dict) -> str:
    return f"http://127.0.0.1:{rec['local_port']}/{rec['token']}/"


def runs(url: str) -> list[str]:
    code, _, body = fetch(url + "data/runs")
    return json.loads(body) if code == 200 else []


def wait_runs(url: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = runs(url)
        if found:
            return found
        time.sleep(0.2)
    return []


def test_the_local_tensorboard_killed_comes_back_by_itself_behind_the_same_url(rig):
    started = rig.fab("tb.start", "--run-on", "local", "--sync-every", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    rec = merged_record(rig)
    url = url_of(rec)
    before = wait_runs(url)
    assert before and not any("/" in run for run in before), before  # one host: its own run names
    os.kill(rec["tb_pid"], signal.SIGKILL)
    assert wait_gone(rec["tb_pid"], 10)
    # The next request finds it dead; the syncer restarts it (same socket,
    # token and mirror) with no command typed.
    assert sorted(wait_runs(url)) == sorted(before)
    again = merged_record(rig)
    assert again["tb_pid"] != rec["tb_pid"] and alive(again["tb_pid"])
    assert again["local_port"] == rec["local_port"] and again["token"] == rec["token"]
    checked = rig.fab("tb.check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"(TensorBoard here): ok {url} tensorboard={again['tb_pid']}" in checked.stdout
    assert "restarted TensorBoard here" in next(Path(rig.control_dir).glob("merge-*.watch.log")).read_text()
    stopped = rig.fab("tb.exit")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_gone(again["tb_pid"], 10)
    assert list(Path(rig.control_dir).glob("merge-*")) == []


def test_a_merged_view_rides_the_users_own_master_with_no_login_and_exit_leaves_it_up(rig):
    theirs = UserMaster(rig)
    theirs.open()
    try:
        before = logins(rig)
        started = fab(rig, theirs, "tb.start", "--hosts", rig.host, "--merge", "--sync-every", "1")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "riding your ssh master" in started.stdout and str(theirs.socket) in started.stdout
        url = url_of(merged_record(rig))
        assert all(run.startswith(f"{rig.host}/") for run in wait_runs(url))
        time.sleep(2.5)  # two more sync rounds, through their master
        assert logins(rig) == before, "the merged view logged in although the user's master was up"
        alone = fab(rig, theirs, "tb.exit")  # the host's own session: none; the merged view is named
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert f"merged view of {rig.host} still runs: tb.exit --hosts {rig.host} --merge stops it" in alone.stdout
        assert wait_runs(url)
        stopped = fab(rig, theirs, "tb.exit", "--hosts", rig.host, "--merge")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"closed the tunnels to {rig.host} (yours, left up)" in stopped.stdout
        assert theirs.up(), "tb.exit closed the user's own master"
        assert logins(rig) == before
    finally:
        theirs.close()


def check_says(rig, text: str, timeout: float = 40) -> str:
    """tb.check until its output has ``text``; that output."""
    deadline = time.monotonic() + timeout
    while True:
        out = rig.fab("tb.check").stdout
        if text in out:
            return out
        assert time.monotonic() < deadline, f"{text!r} never showed in tb.check:\n{out}"
        time.sleep(0.5)


def test_a_link_that_drops_marks_the_host_stale_the_view_serves_on_and_sync_resumes_by_itself(linked_rig, link, tmp_path):
    """Flaky Wi-Fi: the link to the host drops (packets lost, not refused)
    for longer than the keepalive window, then comes back."""
    rig = linked_rig
    logdir = tmp_path / "runs"
    write_sample_logdir(logdir, runs=("before",))
    started = rig.fab("tb.start", "--run-on", "local", "--sync-every", "1", "--logdir", str(logdir), env=rig.env(FABRIC_TB_KEEPALIVE="2"))
    assert started.returncode == 0, started.stdout + started.stderr
    url = url_of(merged_record(rig))
    assert wait_runs(url) == ["before"]
    link.down()
    try:
        out = check_says(rig, "linked: stale, last synced")
        assert "(TensorBoard here): stale " in out and "(serves what was synced)" in out
        assert rig.fab("tb.check").returncode == 1
        assert runs(url) == ["before"]  # readable on a plane
        write_sample_logdir(logdir, runs=("during",))
    finally:
        link.up()
    # No command typed: the master is reopened (BatchMode) and the run
    # written meanwhile arrives.
    check_says(rig, "linked: synced")
    deadline = time.monotonic() + 30
    while sorted(runs(url)) != ["before", "during"]:
        assert time.monotonic() < deadline, runs(url)
        time.sleep(0.5)
    assert "reopened the tunnel" in next(Path(rig.control_dir).glob("merge-*.watch.log")).read_text()
    stopped = rig.fab("tb.exit")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert list(Path(rig.control_dir).glob("merge-*")) == []
