"""tb.start --job against a real one-node Slurm (see slurmcluster.py), under
``proctrack/cgroup``; the cluster, its users and the runner are in
slurm_fixtures.py.

These tests need root (Slurm's daemons, useradd); without it they say so
and skip. CI runs as root, so there they run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from . import procs
from .conftest import http_json
from .procs import alive, cmdline, wait_gone
from .slurm_fixtures import ALICE, BOB, JobCycle, Session, job_tensorboards, ready_url, records, running_job
from .slurmcluster import NODE, SlurmCluster, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")


#: How slurmd tracks a step's processes (the slurm fixture reads it).
PROCTRACK = "cgroup"


def _started(session: "Session", slurm: SlurmCluster, name: str, via: str = "srun", reconnect: str = "yes") -> tuple[str, str]:
    """A running job of alice's named ``name``, and TensorBoard started in it."""
    job = running_job(slurm, name=name)
    started = session.fab("tb.start", "--job", job, "--slurm-via", via, "--reconnect", reconnect)
    assert started.returncode == 0, started.stdout + started.stderr
    return job, ready_url(started)


class TestStartJobRunsTensorBoardAsAStepOfTheJobAndExitEndsOnlyThatStep(JobCycle):
    """The job cycle (slurm_fixtures.JobCycle) under proctrack/cgroup."""


def _nothing_recorded(session: Session) -> None:
    assert not list(session.control_dir.glob("tb-*.json"))
    assert not list(session.control_dir.glob("tb-*[0-9a-f]")), "a control socket is left"
    assert not [pid for pid in procs.pids() if str(session.control_dir) in cmdline(pid) and alive(pid)]


def test_a_pending_ended_unknown_or_someone_elses_job_is_a_one_line_error(session, slurm):
    pending = slurm.submit(ALICE, extra=("--begin=now+3600",))
    ended = running_job(slurm, name="short")
    slurm.cancel(ended)
    deadline = time.monotonic() + 10
    while slurm.job_state(ended) not in ("CANCELLED", "") and time.monotonic() < deadline:
        time.sleep(0.1)
    bobs = running_job(slurm, BOB)
    cases = [
        (pending, f"job {pending} is pending: it has no node yet; run tb.start --job {pending} again once squeue shows it RUNNING"),
        (ended, f"job {ended} has ended (cancelled): there is no node to start TensorBoard on"),
        ("999999", "job 999999 is not in Slurm's queue on login: it has ended or never existed"),
        (bobs, f"job {bobs} belongs to {BOB}, not to you ({ALICE}) on login: tensorboard-remote attaches only to your own jobs"),
        ("nosuchname", f"no job named 'nosuchname' of yours ({ALICE}) is in Slurm's queue on login"),
    ]
    for job, message in cases:
        result = session.fab("tb.start", "--job", job)
        assert result.returncode == 1, (job, result.stdout, result.stderr)
        assert result.stderr.strip() == f"tensorboard-remote: {message}", result.stderr
        _nothing_recorded(session)
    # Someone else's job keeps running, untouched.
    assert slurm.job_state(bobs) == "RUNNING"
    bad = session.fab("tb.start", "--job", "1;rm -rf ~")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("tensorboard-remote: refusing job '1;rm -rf ~'")
    for job in (pending, bobs):
        slurm.cancel(job)


def test_when_the_job_ends_check_says_so_and_exit_cleans_up(session, slurm):
    job = running_job(slurm, name="ends")
    started = session.fab("tb.start", "--job", "ends")
    assert started.returncode == 0, started.stdout + started.stderr
    (pid,) = job_tensorboards(slurm)
    private = Path(procs.environ(pid)["TBR_DIR"])
    srun = records(session)[0]["remote_pid"]  # ours, on the login node
    slurm.cancel(job)
    # Slurm ends the step with the job (proctrack/cgroup): TensorBoard too,
    # and it removes its private directory on the way out; our srun ends
    # once Slurm has wound the step up (a moment later: it is COMPLETING).
    assert wait_gone(pid, 15)
    assert not private.exists()
    assert wait_gone(srun, 15)
    checked = session.fab("tb.check", "--job", "ends")
    assert checked.returncode == 1
    assert f"TensorBoard's step in job {job} on {NODE} has ended (has the job ended? squeue -j {job}); tb.exit cleans up" in checked.stdout
    stopped = session.fab("tb.exit", "--job", "ends")
    assert stopped.returncode == 0, stopped.stderr
    assert "had already exited" in stopped.stdout
    _nothing_recorded(session)


def test_ssh_mode_reaches_the_nodes_sshd_through_the_login_node_with_one_login_each(session, slurm, cluster):
    job = running_job(slurm, name="viassh")
    login_before = cluster["login"].accepted_logins()
    node_before = cluster["node"].accepted_logins()

    started = session.invoke("tb.start", "--host", "login", "--job", "viassh", "--slurm-via", "ssh")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    assert sorted(http_json(url + "data/runs")) == ["baseline", "wider"]
    assert f"{ALICE}@{NODE}" not in started.stdout  # the user comes from ssh_config
    assert f"{NODE} (job {job} via login): started TensorBoard" in started.stdout
    # On the node, as on any host: a private Unix socket, no TCP port.
    import json

    (record,) = [json.loads(p.read_text()) for p in session.control_dir.glob("tb-*.json")]
    assert record["endpoint"].startswith("unix ")
    assert record["job"]["via"] == "ssh" and record["target"]["host"] == NODE

    checked = session.invoke("tb.check", "--host", "login", "--job", "viassh")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    everything = session.invoke("tb.check")
    assert everything.returncode == 0 and f"{NODE} (job {job} via login): ok" in everything.stdout

    stopped = session.invoke("tb.exit", "--host", "login", "--job", "viassh")
    assert stopped.returncode == 0, stopped.stderr
    assert "closed the connection to the login node" in stopped.stdout
    _nothing_recorded(session)
    assert cluster["login"].accepted_logins() - login_before == 1
    assert cluster["node"].accepted_logins() - node_before == 1
    assert slurm.job_state(job) == "RUNNING"
    slurm.cancel(job)


@pytest.mark.parametrize("via", ["srun", "ssh"])
def test_after_the_connection_drops_start_reconnects_to_the_same_tensorboard(session, slurm, cluster, via):
    # A laptop that slept: the ssh master(s) died, TensorBoard did not.
    job, url = _started(session, slurm, f"sleepy-{via}", via)
    tensorboards = job_tensorboards(slurm) if via == "srun" else [
        pid for pid in procs.pids() if str(cluster["logdir"]) in cmdline(pid) and "launch.py" in cmdline(pid) and alive(pid)
    ]
    assert len(tensorboards) == 1
    masters = [pid for pid in procs.pids() if str(session.control_dir) in cmdline(pid) and " -M " in cmdline(pid) and alive(pid)]
    assert len(masters) == (1 if via == "srun" else 2)
    for pid in masters:
        os.kill(pid, 9)
    for pid in masters:
        assert wait_gone(pid)
    down = session.fab("tb.check", "--job", job)
    assert down.returncode == 1

    again = session.fab("tb.start", "--job", job, "--slurm-via", via)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ready_url(again) == url
    assert "was still running" in again.stdout
    assert all(alive(pid) for pid in tensorboards)
    assert sorted(http_json(url + "data/runs")) == ["baseline", "wider"]
    assert session.fab("tb.exit", "--job", job).returncode == 0
    assert all(wait_gone(pid) for pid in tensorboards)
    _nothing_recorded(session)
    slurm.cancel(job)


def test_one_session_per_job_whatever_it_was_called_or_reached_by(session, slurm):
    job = running_job(slurm, name="onlyone")
    first = session.fab("tb.start", "--job", "onlyone")
    assert first.returncode == 0, first.stdout + first.stderr
    by_id = session.fab("tb.start", "--job", job)
    assert by_id.returncode == 1
    assert by_id.stderr.strip() == (
        f"tensorboard-remote: job {job} on login already has a tb session (started as --job onlyone "
        f"through srun): use that, or tb.exit --job onlyone first"
    )
    other_way = session.fab("tb.start", "--job", "onlyone", "--slurm-via", "ssh")
    assert other_way.returncode == 1
    assert other_way.stderr.strip() == (
        "tensorboard-remote: job onlyone on login already has a tb session through srun: "
        "run tb.exit --job onlyone first, or start it with --slurm-via srun"
    )
    assert len(job_tensorboards(slurm)) == 1
    assert session.fab("tb.check", "--job", "onlyone").returncode == 0
    assert session.fab("tb.exit", "--job", "onlyone").returncode == 0
    _nothing_recorded(session)
    slurm.cancel(job)


def test_ssh_mode_exit_after_the_job_ended_and_the_node_refuses_us_removes_the_record(session, slurm, cluster):
    job = running_job(slurm, name="adopted")
    started = session.fab("tb.start", "--job", job, "--slurm-via", "ssh")
    assert started.returncode == 0, started.stdout + started.stderr
    tensorboard = [pid for pid in procs.pids() if str(cluster["logdir"]) in cmdline(pid) and "launch.py" in cmdline(pid) and alive(pid)]
    assert len(tensorboard) == 1
    # The job ends; as with pam_slurm_adopt the node now refuses us, and our
    # connection to it is gone.
    slurm.cancel(job)
    node = cluster["node"]
    node.stop()
    try:
        for pid in procs.pids():
            if str(session.control_dir) in cmdline(pid) and " -M " in cmdline(pid) and f"{NODE}" in cmdline(pid):
                os.kill(pid, 9)
        stopped = session.fab("tb.exit", "--job", job)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert f"could not reach {NODE} to stop TensorBoard pid" in stopped.stdout
        assert f"job {job} has ended, so its record is removed" in stopped.stdout
        assert "closed the connection to the login node" in stopped.stdout
        _nothing_recorded(session)
    finally:
        # pam_slurm_adopt would have ended it with the job; here we must.
        for pid in tensorboard:
            os.kill(pid, 9)
        node.start()


@pytest.mark.parametrize("via", ["srun", "ssh"])
def test_start_over_a_hung_login_connection_reconnects_to_the_same_tensorboard(session, slurm, cluster, via):
    from .procs import frozen
    from .procs import family

    # Without a watcher (reconnect=no): tb.start is what reconnects.
    job, url = _started(session, slurm, f"hung-{via}", via, reconnect="no")
    sshd = cluster["login"].pid()
    with frozen([pid for pid in family(sshd) if pid != sshd]):
        again = session.fab("tb.start", "--job", job, "--slurm-via", via, "--reconnect", "no")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "the tunnel does not answer (a laptop that slept, or a dropped link?); reconnecting" in again.stdout
        assert "was still running" in again.stdout and ready_url(again) == url
        assert sorted(http_json(url + "data/runs")) == ["baseline", "wider"]
    assert session.fab("tb.exit", "--job", job).returncode == 0
    _nothing_recorded(session)
    slurm.cancel(job)


def test_a_step_started_elsewhere_is_never_doubled_nor_touched(session, slurm, cluster, tmp_path):
    # Another computer (or another login node behind the same alias) has a
    # session on this job; this one has no record of it.
    job = running_job(slurm, name="elsewhere")
    first = session.fab("tb.start", "--job", job)
    assert first.returncode == 0, first.stdout + first.stderr
    (pid,) = job_tensorboards(slurm)
    other_dir = Path(str(session.control_dir) + "o")
    other_dir.mkdir(mode=0o700)
    try:
        other = session.env(INVOKE_TB_CONTROL_DIR=str(other_dir), FABRIC_TB_CONTROL_DIR=str(other_dir))
        second = session.fab("tb.start", "--job", job, env=other)
        assert second.returncode == 1
        err = second.stderr.strip()
        assert err.startswith(f"tensorboard-remote: job {job} already runs a tensorboard-remote step ({job}.")
        assert "\n" not in err
        assert not list(other_dir.glob("tb-*.json")) and not list(other_dir.glob("tb-*[0-9a-f]"))
        assert job_tensorboards(slurm) == [pid]
    finally:
        shutil.rmtree(other_dir, ignore_errors=True)
    assert session.fab("tb.check", "--job", job).returncode == 0
    assert session.fab("tb.exit", "--job", job).returncode == 0
    slurm.cancel(job)


@pytest.mark.parametrize("via", ["srun", "ssh"])
def test_check_and_exit_without_job_on_the_login_host_cover_its_job_sessions(session, slurm, via):
    job, _ = _started(session, slurm, f"forgot-{via}", via)
    pids = [r["remote_pid"] for r in records(session) if r.get("remote_pid")]  # srun's, or the node's TensorBoard
    assert pids
    checked = session.fab("tb.check")  # no --job: the login host's sessions, jobs included
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"(job {job}" in checked.stdout and ": ok http://127.0.0.1:" in checked.stdout
    assert "no tunnel" not in checked.stdout
    stopped = session.fab("tb.exit")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "nothing to stop" not in stopped.stdout and f"job {job}" in stopped.stdout
    assert all(wait_gone(pid, 15) for pid in pids)
    _nothing_recorded(session)
    assert list(session.control_dir.iterdir()) == []  # no lock or log file either, the login node's included
    assert slurm.job_state(job) == "RUNNING"  # the job itself is left running
    slurm.cancel(job)  # the one-node cluster has room for two jobs at a time


def test_a_job_in_a_merged_view_is_named_login_job_and_read_through_the_login_node(session, slurm, cluster):
    """tb.start --hosts login/JOB --merge: the job's logdir (on the file
    system the login node shares) mirrored here, its runs LOGIN-jobID/RUN;
    no TensorBoard and no step in the job."""
    job = running_job(slurm, name="merged")
    before = cluster["login"].accepted_logins()
    started = session.fab("tb.start", "--hosts", "login/merged", "--merge", "--sync-every", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"login: job {job} runs on {NODE}" in started.stdout
    assert cluster["login"].accepted_logins() == before + 1  # one login, every sync rides it
    assert not job_tensorboards(slurm)  # nothing of ours in the job
    url = ready_url(started)
    runs = http_json(url + "data/runs")
    assert runs and all(run.startswith(f"login-job{job}/") for run in runs), runs
    checked = session.fab("tb.check", "--hosts", "login/merged", "--merge")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"merged view of login-job{job}: ok {url}" in checked.stdout
    assert f"login-job{job}: synced" in checked.stdout
    stopped = session.fab("tb.exit", "--hosts", "login/merged", "--merge")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "the mirror stays in" in stopped.stdout
    _nothing_recorded(session)
    assert not list(session.control_dir.glob("merge-*"))
    assert slurm.job_state(job) == "RUNNING"
    slurm.cancel(job)


def test_start_check_and_list_say_how_long_the_job_has_left_and_check_warns_near_the_end(session, slurm):
    """A job with a 5-minute limit: less than job_warn (10 minutes) left."""
    job = running_job(slurm, name="short", extra=("--time=5",))
    started = session.fab("tb.start", "--job", job)
    assert started.returncode == 0, started.stdout + started.stderr
    said = re.search(rf"job {job} runs on {NODE} \(\S+\), 0:0([0-4]):(\d\d) left", started.stdout)
    assert said, started.stdout
    checked = session.fab("tb.check", "--job", job)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # it serves: a warning, not a failure
    assert re.search(rf"; job {job}: 0:0[0-4]:\d\d left; warning: job {job} reaches its time limit in 0:0[0-4]:\d\d \(at \d\d:\d\d\): TensorBoard ends with it", checked.stdout), checked.stdout
    quiet = session.fab("tb.check", "--job", job, env=session.env(FABRIC_TB_JOB_WARN="60"))
    assert "warning" not in quiet.stdout and f"job {job}: 0:0" in quiet.stdout, quiet.stdout
    listed = session.invoke("tb.list", "--json")
    (row,) = [r for r in json.loads(listed.stdout) if f"(job {job})" in r["host"]]
    assert 0 < row["job"]["left_seconds"] <= 300 and row["job"]["warning"].startswith(f"warning: job {job}")
    # The watcher's page says it too, beside TensorBoard (same URL, its own path).
    from .test_reconnect import fetch

    status, _, page = fetch(ready_url(started) + "tensorboard-remote", accept="text/html")
    assert status == 200, page
    assert re.search(rf": serving; job {job} on {NODE}: 0:0[0-4]:\d\d left; warning: job {job} reaches its time limit in 0:0[0-4]:\d\d", page), page
    assert fetch(ready_url(started) + "data/logdir")[0] == 200  # TensorBoard still serves
    stopped = session.fab("tb.exit", "--job", job)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    slurm.cancel(job)


def _check_until(session: Session, job: str, text: str, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = session.fab("tb.check", "--job", job).stdout
        if text in out:
            return out
        assert time.monotonic() < deadline, f"{text!r} never showed in tb.check:\n{out}"
        time.sleep(0.5)


def test_follow_starts_tensorboard_in_the_next_job_of_the_name_behind_the_same_url(session, slurm):
    """--follow: the job ends; nobody else's job of the name is taken; the
    user's next one is, by the watcher, with no command typed."""
    from .test_reconnect import fetch

    first = running_job(slurm, name="chain")
    refused = session.fab("tb.start", "--job", first, "--follow")
    assert refused.returncode == 1 and "--follow follows a job by name" in refused.stderr
    started = session.fab("tb.start", "--job", "chain", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    slurm.cancel(first)
    waiting = _check_until(session, "chain", f"job {first} has ended")
    assert "waiting for the next job named chain (the same URL serves it once it runs; tb.exit stops following)" in waiting
    assert session.fab("tb.check", "--job", "chain").returncode == 1  # not serving: never "all is well"
    status, _, body = fetch(url, accept="text/html")
    assert status == 503 and "waiting for the next job named chain" in body
    # Bob's job of the same name: never ours to follow.
    bobs = running_job(slurm, user=BOB, name="chain")
    from tensorboard_remote.watcher import FOLLOW_EVERY

    time.sleep(FOLLOW_EVERY + 2)  # a watcher's look for the next job, or more
    assert not [pid for pid in slurm.ours() if procs.environ(pid).get("SLURM_JOB_ID") == bobs and "launch.py" in cmdline(pid)]
    assert "waiting for the next job named chain" in session.fab("tb.check", "--job", "chain").stdout
    slurm.cancel(bobs)
    second = running_job(slurm, name="chain")
    running_at = time.monotonic()
    deadline = running_at + 40
    while fetch(url + "data/runs")[0] != 200:
        assert time.monotonic() < deadline, "the next job was not followed"
        time.sleep(0.2)
    print(f"followed job {second} {time.monotonic() - running_at:.1f}s after it ran")
    assert sorted(http_json(url + "data/runs")) == ["baseline", "wider"]
    (pid,) = job_tensorboards(slurm)
    assert procs.environ(pid)["SLURM_JOB_ID"] == second
    checked = _check_until(session, "chain", ": ok ")
    assert f"; job {second}: no time limit (UNLIMITED)" in checked
    _exit_leaves_the_job(session, slurm, "chain", pid, second)


def _exit_leaves_the_job(session: Session, slurm: SlurmCluster, spec: str, board: int, job: str) -> None:
    """tb.exit ends the following and its TensorBoard, nothing of ours is
    left, and the job runs on (then the test cancels it)."""
    stopped = session.fab("tb.exit", "--job", spec)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert wait_gone(board, 15)
    _nothing_recorded(session)
    assert slurm.job_state(job) == "RUNNING"
    slurm.cancel(job)


def _masters(session: Session) -> list[int]:
    """Our ssh masters (to the login node) in the session's control directory."""
    return [pid for pid in procs.pids() if str(session.control_dir) in cmdline(pid) and "-M" in cmdline(pid).split() and alive(pid)]


def _serves_job(slurm: SlurmCluster, url: str, job: str, besides: tuple[int, ...] = (), timeout: float = 60) -> tuple[int, float]:
    """Wait until the URL serves a TensorBoard of job ``job`` (not one of
    ``besides``): its pid, and the seconds it took."""
    from .test_reconnect import fetch

    began = time.monotonic()
    while True:
        boards = [pid for pid in job_tensorboards(slurm) if pid not in besides and procs.environ(pid).get("SLURM_JOB_ID") == job]
        try:
            ok = fetch(url + "data/runs", timeout=3)[0] == 200
        except OSError:
            ok = False
        if boards and ok:
            return boards[0], time.monotonic() - began
        assert time.monotonic() - began < timeout, f"job {job} not served at {url} after {timeout}s"
        time.sleep(0.2)


def test_follow_rides_out_a_slow_squeue_a_requeue_and_a_lost_master(session, slurm):
    """--follow under faults: the controller stops answering for a while
    (squeue hangs): the session keeps serving, check says what it knows and
    never that the job ended; the job is requeued (the same id, a new
    start): followed into its new run; the login master is killed while
    waiting for the next job: the watcher reconnects first (no prompt, no
    command), then follows."""
    import signal

    from .test_reconnect import fetch

    job = running_job(slurm, name="relay-chain")
    started = session.fab("tb.start", "--job", "relay-chain", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    (first,) = job_tensorboards(slurm)

    # 1. squeue slow: slurmctld frozen (SIGSTOP) for the length of a check.
    controller = slurm.procs["slurmctld"]
    os.kill(controller, signal.SIGSTOP)
    try:
        began = time.monotonic()
        checked = session.fab("tb.check", "--job", "relay-chain")
        took = time.monotonic() - began
        served = fetch(url + "data/logdir")[0]
    finally:
        os.kill(controller, signal.SIGCONT)
    print(f"tb.check with squeue hanging took {took:.1f}s")
    assert served == 200  # TensorBoard, in the job, serves all along
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"; job {job}: no time limit (UNLIMITED)" in checked.stdout and "ended" not in checked.stdout, checked.stdout
    assert alive(first)

    # 2. Requeued: the same id runs again (after Slurm's hold); the same URL serves it.
    requeued = slurm.run(["scontrol", "requeue", job])
    assert requeued.returncode == 0, requeued.stderr
    assert wait_gone(first, 30)
    # Slurm holds a requeued job (BeginTime, about 2 minutes here): the session waits for it.
    waiting = _check_until(session, "relay-chain", f"job {job} is pending (no node yet); waiting for the next job named relay-chain to run")
    assert "run tb.start" not in waiting, waiting
    slurm.run(["scontrol", "update", f"JobId={job}", "StartTime=now"])
    try:
        second, after = _serves_job(slurm, url, job, besides=(first,), timeout=90)
    except AssertionError:
        logs = "".join(p.read_text()[-3000:] for p in session.control_dir.glob("*.watch.log"))
        raise AssertionError(f"state {slurm.job_state(job)!r}; check: {session.fab('tb.check', '--job', 'relay-chain').stdout}; watcher: {logs}") from None
    print(f"followed requeued job {job} {after:.1f}s after the requeue's end")
    assert _check_until(session, "relay-chain", ": ok ")

    # 3. The master is lost while waiting for the next job: reconnect, then follow.
    slurm.cancel(job)
    _check_until(session, "relay-chain", "waiting for the next job named relay-chain")
    masters = _masters(session)
    assert masters, "no master of ours to the login node"
    for pid in masters:
        os.kill(pid, signal.SIGKILL)
    assert all(wait_gone(pid, 10) for pid in masters)
    following = running_job(slurm, name="relay-chain")
    third, after = _serves_job(slurm, url, following, timeout=60)
    print(f"followed job {following} {after:.1f}s after it ran, the master lost before")
    assert _masters(session) and not set(_masters(session)) & set(masters)
    checked = _check_until(session, "relay-chain", ": ok ")
    assert f"; job {following}: " in checked

    _exit_leaves_the_job(session, slurm, "relay-chain", third, following)


def test_two_running_jobs_of_the_name_are_refused_with_both_ids_follow_or_not(session, slurm):
    first, second = running_job(slurm, name="twin"), running_job(slurm, name="twin")
    for flags in ((), ("--follow",)):
        refused = session.fab("tb.start", "--job", "twin", *flags)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.strip() == (
            f"tensorboard-remote: several running jobs of yours are named 'twin' ({first}, {second}): give one of them with --job"
        ), refused.stderr
        _nothing_recorded(session)
    assert not job_tensorboards(slurm)
    for job in (first, second):
        assert slurm.job_state(job) == "RUNNING"
        slurm.cancel(job)


def test_squeue_failing_for_a_while_never_reads_as_a_job_end_and_follow_resumes(session, slurm):
    """squeue fails within seconds while munged is down (a restart, a
    crash): a session that serves keeps serving and check says the job's
    clock, never that it ended; a start cannot look its job up and says why
    in one line; while waiting for the next job, check and the page say the
    last look failed and why; once squeue answers again, the next job of the
    name is followed with no command typed."""
    from .test_reconnect import fetch

    job = running_job(slurm, name="munge-chain")
    started = session.fab("tb.start", "--job", "munge-chain", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    (first,) = job_tensorboards(slurm)

    # 1. Serving while squeue fails.
    slurm.stop_munge()
    try:
        checked = session.fab("tb.check", "--job", "munge-chain")
        other = session.fab("tb.start", "--job", "some-other-run")
        assert fetch(url + "data/logdir")[0] == 200
    finally:
        slurm.start_munge()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"; job {job}: no time limit (UNLIMITED)" in checked.stdout and "ended" not in checked.stdout, checked.stdout
    assert other.returncode == 1 and other.stdout.count("\n") <= 3, other.stdout + other.stderr
    (line,) = other.stderr.strip().splitlines()
    assert line.startswith("tensorboard-remote: squeue failed on ") and "authentication error" in line, line
    assert alive(first)

    # 2. Waiting for the next job while squeue fails: said, and waited out.
    slurm.cancel(job)
    _check_until(session, "munge-chain", "waiting for the next job named munge-chain")
    slurm.stop_munge()
    try:
        waiting = _check_until(session, "munge-chain", "; the last look failed: squeue failed on ", timeout=60)
        assert waiting.count("\n") == 1 and "authentication error" in waiting, waiting
        status, _, page = fetch(url + "tensorboard-remote", accept="text/html")
        assert status == 200 and "waiting for the next job named munge-chain; the last look failed: squeue failed on " in page, page
    finally:
        slurm.start_munge()
    following = running_job(slurm, name="munge-chain")
    board, after = _serves_job(slurm, url, following, besides=(first,), timeout=60)
    print(f"followed job {following} {after:.1f}s after it ran, squeue having failed before")
    checked = _check_until(session, "munge-chain", ": ok ")
    assert f"; job {following}: " in checked and "last look failed" not in checked
    _exit_leaves_the_job(session, slurm, "munge-chain", board, following)
