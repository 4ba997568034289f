"""What a user does, end to end: real fab/invoke/tensorboard-remote, real sshd, real TensorBoard."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import http_json, tensorboards
from .procs import alive, frozen, wait_gone


def started(result: subprocess.CompletedProcess, rig) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"TensorBoard ready at {rig.url}" in result.stdout
    assert rig.url.startswith(f"http://127.0.0.1:{rig.local_port}/")


# ------------------------------------------------------------ fab -H host


@pytest.fixture(scope="class")
def logins_before(class_rig) -> int:
    """The sandbox's accepted logins before fab_start."""
    return class_rig.sandbox.accepted_logins()


@pytest.fixture(scope="class")
def fab_start(class_rig, logins_before):
    """fab tb.start, once for the class of tests that asks."""
    return class_rig.fab("tb.start")


@pytest.fixture(scope="class")
def fab_exit(class_rig, fab_start):
    """tb.exit after fab_start, and the sessions recorded before it."""
    before = class_rig.states()
    return class_rig.fab("tb.exit"), before


class TestFabStartCheckAndExit:
    """fab tb.start, tb.check, a second tb.start, tb.exit and tb.exit again
    on one host: a test per step, in this order; fab_start and fab_exit run
    once for the class."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    def test_start_serves_the_page_through_a_new_tunnel(self, rig, fab_start):
        started(fab_start, rig)
        assert "opened the tunnel" in fab_start.stdout and "started TensorBoard" in fab_start.stdout
        assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}
        runs = http_json(rig.url + "data/runs")
        assert {"baseline", "wider"} <= set(runs)

    def test_one_start_logs_in_once(self, rig, logins_before, fab_start):
        started(fab_start, rig)
        assert rig.sandbox.accepted_logins() - logins_before == 1

    def test_tensorboard_outlives_the_ssh_session_that_started_it(self, rig, fab_start):
        started(fab_start, rig)
        remote = rig.only_state()["remote_pid"]
        # Its session is its own (setsid), not the sshd session's.
        assert os.getsid(remote) == remote
        time.sleep(0.3)
        assert alive(remote)
        assert http_json(rig.url + "data/logdir")["logdir"] == str(rig.logdir)

    def test_start_records_both_pids_and_keeps_its_files_private(self, rig, fab_start):
        data = rig.only_state()
        master, remote = data["master_pid"], data["remote_pid"]
        assert alive(master) and alive(remote)
        assert tensorboards(rig) == [remote]
        # The run directory on the remote is private.
        rundir = rig.remote_dir / data["sid"]
        assert (rundir / "pid").exists() and (rundir / "log").exists()
        assert oct(rundir.stat().st_mode & 0o777) == "0o700"
        assert oct(rig.control_dir.stat().st_mode & 0o777) == "0o700"
        assert oct(Path(data["socket"] + ".json").stat().st_mode & 0o777) == "0o600"

    def test_check_reports_the_url_both_pids_and_the_logdir(self, rig, fab_start):
        data = rig.only_state()
        master, remote = data["master_pid"], data["remote_pid"]
        check = rig.fab("tb.check")
        assert check.returncode == 0, check.stdout + check.stderr
        line = check.stdout.strip()
        assert line == (
            f"sandbox: ok {rig.url} ssh-master={master} tensorboard={remote} logdir={rig.logdir} "
            f"watcher={data['watcher']['pid']} serving reconnects=0"
        )

    def test_a_second_start_reuses_master_and_tensorboard(self, rig, fab_start):
        started(fab_start, rig)
        first = rig.only_state()
        again = rig.fab("tb.start")
        started(again, rig)
        assert f"reusing the tunnel (ssh master pid {first['master_pid']}) and TensorBoard (pid {first['remote_pid']})" in again.stdout
        second = rig.only_state()
        assert (second["master_pid"], second["remote_pid"]) == (first["master_pid"], first["remote_pid"])
        assert tensorboards(rig) == [first["remote_pid"]]

    def test_exit_stops_tensorboard_and_closes_the_tunnel(self, rig, fab_exit):
        result, before = fab_exit
        (data,) = before
        master, remote = data["master_pid"], data["remote_pid"]
        assert result.returncode == 0, result.stderr
        assert f"stopped TensorBoard (pid {remote})" in result.stdout
        assert f"closed the tunnel (ssh master pid {master})" in result.stdout
        assert wait_gone(remote) and wait_gone(master)

    def test_exit_removes_the_record_and_the_remote_run_directory(self, rig, fab_exit):
        _, before = fab_exit
        (data,) = before
        assert rig.states() == []
        assert not (rig.remote_dir / data["sid"]).exists()

    def test_a_second_exit_has_nothing_to_stop(self, rig, fab_exit):
        again = rig.fab("tb.exit")
        assert again.returncode == 0
        assert "sandbox: nothing to stop" in again.stdout


# ------------------------------------------------------------ reuse and repair


def test_a_killed_master_leaves_a_stale_socket_that_check_reports_and_start_repairs(rig):
    started(rig.fab("tb.start"), rig)
    first = rig.only_state()
    os.kill(first["master_pid"], signal.SIGKILL)
    assert wait_gone(first["master_pid"])
    assert Path(first["socket"]).exists(), "SIGKILL leaves the socket file"

    check = rig.fab("tb.check")
    assert check.returncode == 1
    assert "stale control socket" in check.stdout

    repaired = rig.fab("tb.start")
    started(repaired, rig)
    assert "removing a stale control socket" in repaired.stdout
    assert "reopened the tunnel" in repaired.stdout
    second = rig.only_state()
    assert second["remote_pid"] == first["remote_pid"], "TensorBoard was restarted needlessly"
    assert second["master_pid"] != first["master_pid"]
    assert rig.fab("tb.check").returncode == 0


def test_a_dead_tensorboard_is_reported_and_restarted_on_the_same_tunnel(rig):
    started(rig.fab("tb.start"), rig)
    first = rig.only_state()
    os.kill(first["remote_pid"], signal.SIGKILL)
    assert wait_gone(first["remote_pid"])

    check = rig.fab("tb.check")
    assert check.returncode == 1
    assert f"TensorBoard is not running on sandbox (pid {first['remote_pid']} is gone)" in check.stdout

    repaired = rig.fab("tb.start")
    started(repaired, rig)
    assert "reusing the tunnel" in repaired.stdout and "started TensorBoard" in repaired.stdout
    second = rig.only_state()
    assert second["master_pid"] == first["master_pid"]
    assert second["remote_pid"] != first["remote_pid"]


def test_check_without_a_tunnel_fails_and_says_so(rig):
    check = rig.fab("tb.check")
    assert check.returncode == 1
    assert "sandbox: no tunnel (start one with tb.start)" in check.stdout


def test_check_says_when_the_page_does_not_answer(rig):
    started(rig.fab("tb.start"), rig)
    data = rig.only_state()
    with frozen([data["remote_pid"]]):
        check = rig.fab("tb.check")
    assert check.returncode == 1
    assert f"TensorBoard pid {data['remote_pid']} is running but {rig.url} is not answering" in check.stdout


# ------------------------------------------------------------ exit is careful


def test_exit_never_signals_a_process_that_reused_the_recorded_pid(rig):
    started(rig.fab("tb.start"), rig)
    data = rig.only_state()
    os.kill(data["remote_pid"], signal.SIGKILL)
    assert wait_gone(data["remote_pid"])
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = rig.remote_dir / data["sid"] / "pid"
        _, start, uid, boot = pidfile.read_text().split()
        pidfile.write_text(f"{stranger.pid} {start} {uid} {boot}\n")
        stop = rig.fab("tb.exit")
        assert stop.returncode == 0, stop.stderr
        assert f"TensorBoard pid {stranger.pid} had already exited" in stop.stdout
        time.sleep(0.1)
        assert stranger.poll() is None, "exit signalled a process that was not ours"
    finally:
        stranger.kill()
        stranger.wait()


def test_exit_stops_tensorboard_even_when_the_tunnel_is_gone(rig):
    started(rig.fab("tb.start"), rig)
    data = rig.only_state()
    os.kill(data["master_pid"], signal.SIGKILL)
    stop = rig.fab("tb.exit")
    assert stop.returncode == 0, stop.stderr
    assert "the tunnel is gone; connecting to stop TensorBoard" in stop.stdout
    assert f"stopped TensorBoard (pid {data['remote_pid']})" in stop.stdout
    assert wait_gone(data["remote_pid"])
    assert not Path(data["socket"]).exists()
    assert rig.states() == []


# ------------------------------------------------------------ failures are clear


def test_tensorboard_missing_on_the_remote_path_is_a_clear_error(rig):
    env = rig.env(FABRIC_TB_TENSORBOARD_CMD="tensorboard-not-installed-here")
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 1
    assert "'tensorboard-not-installed-here' not found on sandbox in a non-interactive shell" in result.stderr
    assert "tb.activate" in result.stderr
    assert "remote log:" in result.stderr
    assert "Traceback" not in result.stderr
    assert rig.states() == [] and tensorboards(rig) == []


def test_an_activation_snippet_puts_tensorboard_on_path(rig, tmp_path):
    # As on a cluster: plain `tensorboard` is not on the non-interactive PATH
    # until the snippet (here, a venv-style PATH change) runs.
    bindir = tmp_path / "venv-bin"
    bindir.mkdir()
    # What pip writes for a console script.
    (bindir / "tensorboard").write_text(
        f"#!{sys.executable}\nimport sys\nfrom tensorboard.main import run_main\nsys.exit(run_main())\n"
    )
    (bindir / "tensorboard").chmod(0o755)
    env = rig.env(
        FABRIC_TB_TENSORBOARD_CMD="tensorboard",
        FABRIC_TB_ACTIVATE=f'PATH={bindir}:"$PATH"; export PATH',
    )
    started(rig.fab("tb.start", env=env), rig)


def test_a_failing_activation_snippet_is_named_in_the_error(rig):
    env = rig.env(FABRIC_TB_ACTIVATE="source /nonexistent/venv/bin/activate")
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("tensorboard-remote: the activation snippet failed on sandbox")
    assert rig.states() == []


def test_a_remote_port_held_by_another_program_is_left_alone(rig):
    foreign = socket.socket()
    foreign.bind(("127.0.0.1", rig.remote_port))
    foreign.listen()
    try:
        result = rig.fab("tb.start", env=rig.env(FABRIC_TB_SERVE="tcp"))
        assert result.returncode == 1
        assert f"remote port {rig.remote_port} on sandbox is already in use by another program" in result.stderr
        with socket.create_connection(("127.0.0.1", rig.remote_port), timeout=2):
            pass
    finally:
        foreign.close()
    assert rig.states() == []


def test_a_local_port_held_by_another_program_is_a_clear_error(rig):
    holder = socket.socket()
    holder.bind(("127.0.0.1", rig.local_port))
    holder.listen()
    try:
        result = rig.fab("tb.start")
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"local port {rig.local_port} is already in use" in result.stderr
    assert rig.states() == [] and tensorboards(rig) == []


def test_a_tensorboard_that_never_answers_times_out_with_the_log_tail(rig, tmp_path):
    # A "Python" that never serves: started as FAKE -m tensorboard.main.
    stub = tmp_path / "python-hanging"
    stub.write_text("#!/bin/sh\necho 'stub: loading forever'\nexec sleep 60\n")
    stub.chmod(0o755)
    env = rig.env(FABRIC_TB_TENSORBOARD_CMD=f"{stub} -m tensorboard.main", FABRIC_TB_START_TIMEOUT="1.5")
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 1
    assert "did not answer" in result.stderr and "within 1.5s" in result.stderr
    assert "stub: loading forever" in result.stderr
    # It is left running for the user to check later; exit stops it.
    stop = rig.fab("tb.exit", env=env)
    assert "stopped TensorBoard" in stop.stdout


# ------------------------------------------------------------ plain invoke


def test_invoke_with_a_host_flag_starts_and_without_a_host_checks_and_exits_every_tunnel(rig):
    started(rig.invoke("tb.start", "--host", "sandbox"), rig)
    check = rig.invoke("tb.check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith(f"sandbox: ok {rig.url}")
    stop = rig.invoke("tb.exit")
    assert stop.returncode == 0
    assert "stopped TensorBoard" in stop.stdout
    none = rig.invoke("tb.check")
    assert none.returncode == 1
    assert "no tunnel of ours is open on this machine" in none.stderr


def test_invoke_takes_the_host_from_the_tb_host_setting(rig):
    env = rig.env(INVOKE_TB_SSH_CONFIG=rig.ssh_config, INVOKE_TB_HOST="sandbox")
    started(rig.invoke("tb.start", env=env), rig)
    assert rig.invoke("tb.check", env=env).returncode == 0
    assert rig.invoke("tb.exit", env=env).returncode == 0
    assert rig.states() == []


# ------------------------------------------------------------ the seed's interface


def test_the_console_command_keeps_the_seed_interface(rig):
    started(rig.cli("sandbox", "start"), rig)
    check = rig.cli("sandbox", "check")
    assert check.returncode == 0 and "sandbox: ok" in check.stdout
    stop = rig.cli("sandbox", "exit")
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout
    bad = rig.cli("sandbox", "restart")
    assert bad.returncode == 2 and "unknown action 'restart'" in bad.stderr
    missing = rig.cli()
    assert missing.returncode == 2 and "a host and an action are required" in missing.stderr
