"""The URL keeps working, against the faults issue 13 names that need more
than a plain sandbox: a link that drops packets for longer than the
keepalive window, a clock that jumps (the laptop slept), a host that wants a
password, and a Slurm job (both ``slurm_via`` modes) whose master dies and
whose job then ends.

Each test starts a real session (real sshd, real TensorBoard), breaks one
thing, types nothing until the issue says a person must, and ends with
``tb.exit`` leaving nothing of ours behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tensorboard_remote import resident, state

from .links import ClockJump
from .procs import alive, cmdline, family, pids, wait_gone
from .slurm_fixtures import job_tensorboards, ready_url, running_job
from .slurmcluster import why_not
from .terminal_fixtures import NEEDS_ROOT_AND_TMUX, PASSWORD, PW_USER
from .test_reconnect import fetch, serves, wait_serving, watch_logs, watchers

#: The keepalive of the link test: the master gives up after 3 unanswered (3 s).
KEEPALIVE = 1


def watch_log(rig) -> Path:
    """The session's watcher log (beside its control socket)."""
    (log,) = rig.control_dir.glob("tb-*.watch.log")
    return log


def wait_phase(rig, phase: str, timeout: float = 30.0) -> dict:
    """The watcher's status (as tb.list --json shows it) once it is in ``phase``."""
    deadline = time.monotonic() + timeout
    while True:
        listed = rig.fab("tb.list", "--json")
        rows = json.loads(listed.stdout) if listed.returncode == 0 and listed.stdout.strip() else []
        status = rows[0].get("watcher") if rows else None
        if status and status.get("phase") == phase:
            return status
        assert time.monotonic() < deadline, f"the watcher never reached {phase}: {status}\n{watch_logs(rig.url)}"
        time.sleep(0.3)


def ours_left(*markers: str) -> list[tuple[int, str]]:
    return [(pid, cmdline(pid)) for pid in pids() if pid != os.getpid() and alive(pid) and any(m in cmdline(pid) for m in markers)]


def records(control_dir: Path) -> list[dict]:
    return [state.read(paths) for paths in state.all_paths(control_dir)] if control_dir.exists() else []


def exits_leaving_nothing(runner, *args: str) -> None:
    """tb.exit stops the session; nothing of ours runs (watcher, masters,
    TensorBoard) and nothing is left in the control directory (as
    test_reconnect's first test asks)."""
    data = records(runner.control_dir)
    (watcher,) = [rec["watcher"]["pid"] for rec in data if rec.get("watcher")]
    stop = runner.fab("tb.exit", *args)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped the watcher" in stop.stdout, stop.stdout
    assert wait_gone(watcher)
    for rec in data:
        assert wait_gone(rec["master_pid"]), f"master {rec['master_pid']} outlived tb.exit"
        if rec.get("remote_pid"):
            assert wait_gone(rec["remote_pid"], timeout=15), "TensorBoard outlived tb.exit"
    assert records(runner.control_dir) == []
    assert sorted(p.name for p in runner.control_dir.iterdir()) == []
    assert ours_left(str(runner.control_dir)) == []


def started_with(rig, **env: str):
    result = rig.fab("tb.start", env=rig.env(**env))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reconnects by itself" in result.stdout
    assert serves(rig.url)
    return result


# ------------------------------------------------ 1. the link, down and back


def answers_while_down(rig, url: str) -> None:
    """The URL answers at once: the page for a navigation, a 503 for data;
    tb.check says reconnecting."""
    status, headers, body = fetch(url, accept="text/html", timeout=3)
    assert status == 503 and "reconnecting to linked (attempt" in body, body
    assert 'http-equiv="refresh"' in body and headers.get("Retry-After")
    status, headers, body = fetch(url + "data/runs", timeout=3)
    assert status == 503 and headers.get("Retry-After") and body.startswith("tensorboard-remote: reconnecting"), body
    check = rig.fab("tb.check")
    assert check.returncode != 0 and "reconnecting" in check.stdout, check.stdout
    assert "linked: reconnecting by itself (attempt" in check.stdout, check.stdout


def test_a_link_down_for_longer_than_the_keepalive_window_serves_again_by_itself(linked_rig, link):
    rig = linked_rig
    started_with(rig, FABRIC_TB_KEEPALIVE=str(KEEPALIVE))
    url, data = rig.url, rig.only_state()
    assert f"ServerAliveInterval={KEEPALIVE}" in cmdline(data["master_pid"])
    link.down()
    down_at = time.monotonic()
    try:
        # The master's ssh is dropped (by the watcher, or by its keepalives).
        assert wait_gone(data["master_pid"], timeout=KEEPALIVE * 3 + 15), watch_logs(url)
        wait_phase(rig, "reconnecting")
        answers_while_down(rig, url)
        # The outage outlasts the keepalive window (3 unanswered): still at
        # once, still reconnecting.
        time.sleep(max(0.0, KEEPALIVE * 4 - (time.monotonic() - down_at)))
        answers_while_down(rig, url)
        assert not serves(url)
    finally:
        link.up()
    # No command typed: the same URL serves again.
    wait_serving(url, timeout=40)
    now = rig.only_state()
    assert rig.url == url and now["master_pid"] != data["master_pid"]
    assert now["remote_pid"] == data["remote_pid"]  # TensorBoard lived on behind the link
    check = rig.fab("tb.check")
    assert check.returncode == 0, check.stdout
    found = re.search(r"serving reconnects=(\d+) last-outage=\S+ \S+ \(", check.stdout)
    assert found and int(found.group(1)) >= 1, check.stdout
    assert watchers(rig) == [data["watcher"]["pid"]]
    print(watch_log(rig).read_text())
    exits_leaving_nothing(rig)


# ------------------------------------------------ 2. the clock jumps (the laptop slept)


def wait_logged(log: Path, pattern: str, start: int = 0, timeout: float = 30.0) -> re.Match:
    """The first match of ``pattern`` in ``log`` from character ``start`` on."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        found = re.compile(pattern, re.M).search(text, start)
        if found:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} never showed in {log}:\n{text}"
        time.sleep(0.1)


def phases(text: str) -> list[str]:
    """The phases the watcher logged, in order (its lines 'DATE TIME PHASE[: why]')."""
    names = "starting|serving|reconnecting|needs-login|host-key-refused|job-ended|stopping"
    return re.findall(rf"^\S+ \S+ ({names})(?::|$)", text, re.M)


def test_after_a_clock_jump_the_watcher_probes_at_once_and_reconnects_when_the_link_is_back(linked_rig, link, tmp_path):
    rig = linked_rig
    clock = ClockJump(tmp_path / "clock")
    # The watcher inherits tb.start's environment, and with it the clock.
    started = rig.fab("tb.start", env=clock.env(rig.env()))
    assert started.returncode == 0, started.stdout + started.stderr
    url, data = rig.url, rig.only_state()
    assert "TBR_TEST_CLOCK_OFFSET_FILE" in Path(f"/proc/{data['watcher']['pid']}/environ").read_text()
    log = watch_log(rig)
    (paths,) = state.all_paths(rig.control_dir)
    # A probe now (it serves): the watcher's next regular one is PROBE_EVERY away.
    assert resident.ask(paths, "probe", timeout=30)["phase"] == "serving"
    mark = len(log.read_text())
    link.down()  # the lid closes: the link drops without a word
    began = time.monotonic()
    try:
        clock.jump(600)  # ... and opens ten minutes later
        jumped = wait_logged(log, r"the clock jumped (\d+)s \(the machine slept\): probing now$", mark)
        assert int(jumped.group(1)) >= 590
        # The probe the jump asked for finds the link dead: reconnecting.
        wait_logged(log, r"^\S+ \S+ reconnecting$", mark)
        took = time.monotonic() - began
        text = log.read_text()
        assert phases(text[:mark])[-1] == "serving" and "reconnecting" not in phases(text[mark:jumped.start()]), text
        assert phases(text[jumped.end():])[0] == "reconnecting", text
        print(f"reconnecting {took:.1f}s after the jump")
        assert not serves(url)
    finally:
        link.up()
    wait_serving(url, timeout=40)
    assert rig.url == url and rig.only_state()["remote_pid"] == data["remote_pid"]
    assert phases(log.read_text())[-1] == "serving"
    check = rig.fab("tb.check")
    assert check.returncode == 0 and "serving reconnects=1 last-outage=" in check.stdout, check.stdout
    print(log.read_text())
    exits_leaving_nothing(rig)


# ------------------------------------------------ 3. a host that wants a password



def password_logins(user) -> int:
    return user.cluster["box"].log.read_text(errors="replace").count("Accepted password")


@NEEDS_ROOT_AND_TMUX
def test_a_password_host_waits_in_needs_login_without_prompting_and_start_logs_in_once_for_the_same_url(user, terminal):
    prompt = f"{PW_USER}@127.0.0.1's password:"
    before = password_logins(user)
    pane = terminal(*user.start_argv("fab"))
    pane.wait_for(re.escape(prompt))
    pane.type(PASSWORD)
    url = pane.wait_for(r"TensorBoard ready at (http://127\.0\.0\.1:\d+/\S+/)").group(1)
    assert pane.wait_for(r"tbr-exit=(\d+)").group(1) == "0", pane.screen()
    assert "reconnects by itself" in pane.screen() and serves(url)
    assert password_logins(user) == before + 1
    (data,) = records(user.control_dir)
    watcher = data["watcher"]["pid"]

    os.kill(data["master_pid"], signal.SIGKILL)
    assert wait_gone(data["master_pid"])
    # The watcher tries in BatchMode: no prompt, no password sent; it waits for a person.
    deadline = time.monotonic() + 30
    while True:
        status, headers, body = fetch(url, accept="text/html", timeout=3)
        if "needs you to log in" in body or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 503 and "pwhost needs you to log in again: run tb.start" in body, body
    assert 'http-equiv="refresh"' in body and headers.get("Retry-After")
    status, headers, body = fetch(url + "data/runs", timeout=3)
    assert status == 503 and headers.get("Retry-After"), body
    check = user.fab("tb.check")
    assert check.returncode != 0 and "needs-login" in check.stdout, check.stdout
    assert "pwhost: needs you to log in again" in check.stdout and f"watcher={watcher} needs-login" in check.stdout
    log = next(user.control_dir.glob("tb-*.watch.log")).read_text()
    assert "needs-login: " in log and "Permission denied" in log, log
    # Still waiting a while later: it does not retry a login that needs a person.
    time.sleep(3)
    assert phases(next(user.control_dir.glob("tb-*.watch.log")).read_text())[-1] == "needs-login"
    assert password_logins(user) == before + 1
    assert [p for p, cmd in ours_left(str(user.control_dir)) if " -M " in cmd] == []  # no master waits on a prompt

    # tb.start, at a terminal: the prompt, once; the same URL serves again.
    again = terminal(*user.start_argv("fab"))
    again.wait_for(re.escape(prompt))
    again.type(PASSWORD)
    assert again.wait_for(r"tbr-exit=(\d+)").group(1) == "0", again.screen()
    assert f"TensorBoard ready at {url}" in again.screen(), again.screen()
    assert again.screen().count(prompt) == 1, again.screen()
    wait_serving(url, timeout=20)
    assert password_logins(user) == before + 2
    (now,) = records(user.control_dir)
    assert now["watcher"]["pid"] == watcher and now["remote_pid"] == data["remote_pid"]
    check = user.fab("tb.check")
    assert check.returncode == 0 and f"watcher={watcher} serving reconnects=1" in check.stdout, check.stdout
    exits_leaving_nothing(user)


# ------------------------------------------------ 4. a Slurm job: the master dies, then the job ends



def masters_of(runner) -> list[int]:
    return [pid for pid, cmd in ours_left(str(runner.control_dir)) if " -M " in cmd]


def node_tensorboards(cluster) -> list[int]:
    return [pid for pid in pids() if str(cluster["logdir"]) in cmdline(pid) and "launch.py" in cmdline(pid) and alive(pid)]


def check_of(session, job: str) -> str:
    checked = session.fab("tb.check", "--job", job)
    return checked.stdout + checked.stderr


@pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")
@pytest.mark.parametrize("via", ["srun", "ssh"])
def test_a_job_session_reconnects_by_itself_and_stops_retrying_once_the_job_has_ended(session, slurm, cluster, via):
    job = running_job(slurm, name=f"faults-{via}")
    started = session.fab("tb.start", "--job", job, "--slurm-via", via)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "reconnects by itself" in started.stdout
    url = ready_url(started)
    assert serves(url)
    (watcher,) = [rec["watcher"]["pid"] for rec in records(session.control_dir) if rec.get("watcher")]
    tensorboards = job_tensorboards(slurm) if via == "srun" else node_tensorboards(cluster)
    assert len(tensorboards) == 1

    # The laptop slept: the master(s) died (the login node's, and in ssh mode the node's too).
    masters = masters_of(session)
    assert len(masters) == (1 if via == "srun" else 2)
    for pid in masters:
        os.kill(pid, signal.SIGKILL)
    assert all(wait_gone(pid) for pid in masters)
    wait_serving(url, timeout=40)  # no command typed
    assert all(pid not in masters for pid in masters_of(session)) and len(masters_of(session)) == len(masters)
    assert all(alive(pid) for pid in tensorboards)  # the same TensorBoard, in the same job
    checked = check_of(session, job)
    assert f"watcher={watcher} serving reconnects=1 last-outage=" in checked, checked

    # The job ends.
    slurm.cancel(job)
    if via == "ssh":
        # As pam_slurm_adopt does at the job's end: what was adopted into the
        # job (TensorBoard, and the node's sshd serving our connection) ends.
        node_sshd = cluster["node"].pid()
        for pid in tensorboards + [p for p in family(node_sshd) if p != node_sshd]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert all(wait_gone(pid, 15) for pid in tensorboards)
    deadline = time.monotonic() + 40
    while True:
        status, headers, body = fetch(url, accept="text/html", timeout=3)
        if f"job {job} has ended" in body or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 503 and f"job {job} has ended" in body and "tb.exit cleans up" in body, body
    assert headers.get("Retry-After")
    checked = check_of(session, job)
    assert "job-ended" in checked and f"job {job} has ended" in checked and "stopped reconnecting" in checked, checked
    # It stops retrying: a while later still job-ended, no attempt in flight, no new master.
    log_path = next(p for p in session.control_dir.glob("tb-*.watch.log") if p.stat().st_size)
    logged, standing = phases(log_path.read_text()), masters_of(session)
    time.sleep(4)  # longer than the longest backoff
    assert family(watcher) == [watcher], "the watcher still runs a reconnect"
    assert masters_of(session) == standing  # none opened meanwhile
    assert phases(log_path.read_text()) == logged and logged[-1] == "job-ended", log_path.read_text()
    checked = check_of(session, job)
    assert f"watcher={watcher} job-ended reconnects=1" in checked, checked
    print(log_path.read_text())
    exits_leaving_nothing(session, "--job", job)


# ------------------------------------------------------- a changed host key


def test_a_changed_host_key_is_never_accepted_the_watcher_stops_retrying_and_says_why(base, logdir, tmp_path, short_dir):
    """The host comes back with another host key (reinstalled, or someone in
    the middle): the watcher's BatchMode ssh refuses it, the session says so
    and stops retrying, and known_hosts is untouched."""
    from tensorboard_remote.sandbox import Sandbox

    from .conftest import rig_in

    box = Sandbox(base / "sshd-rekey", alias="rekey").create().start()
    keys = {name: (box.dir / name).read_bytes() for name in ("host_ed25519", "host_ed25519.pub")}
    try:
        with rig_in(box, logdir, tmp_path, short_dir) as rig:
            started = rig.fab("tb.start")
            assert started.returncode == 0, started.stdout + started.stderr
            url, known = rig.url, (box.dir / "known_hosts").read_bytes()
            master = rig.only_state()["master_pid"]
            # Another host key at the same address, and our master lost.
            box.stop()
            for name in keys:
                (box.dir / name).unlink()
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(box.dir / "host_ed25519")], check=True)
            box.start()
            os.kill(master, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                status, headers, body = fetch(url, accept="text/html")
                if "stopped reconnecting" in body or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert status == 503 and "Host key verification failed" in body and "stopped reconnecting" in body, body + watch_logs(url)
            checked = rig.fab("tb.check")
            assert checked.returncode != 0 and "host-key-refused" in checked.stdout, checked.stdout
            assert "fix known_hosts, then tb.start" in checked.stdout
            paths = state.Paths(Path(rig.only_state()["socket"]))
            before = resident.ask(paths, "status")
            time.sleep(4)  # longer than the longest backoff
            after = resident.ask(paths, "status")
            assert before["phase"] == after["phase"] == "host-key-refused" and after["attempt"] == before["attempt"], (before, after)
            assert (box.dir / "known_hosts").read_bytes() == known, "known_hosts was changed"
            # The host's own key back: tb.start carries on with the same URL.
            box.stop()
            for name, data in keys.items():
                (box.dir / name).write_bytes(data)
            (box.dir / "host_ed25519").chmod(0o600)
            box.start()
            restarted = rig.fab("tb.start")
            assert restarted.returncode == 0 and url in restarted.stdout, restarted.stdout + restarted.stderr
            wait_serving(url)
            stopped = rig.fab("tb.exit")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert rig.states() == [] and list(rig.control_dir.iterdir()) == []
    finally:
        box.stop()
