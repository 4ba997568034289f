"""Bad input and faults, end to end: a clear one-line error, nothing lost, nothing of anyone's killed."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BIN, http_json, tensorboards
from .procs import alive, family, frozen, ours, wait_gone


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tensorboard-remote: ")
    return lines[0]


# ------------------------------------------------------------ bad input


def test_a_host_that_is_an_ssh_option_is_refused_before_any_ssh_runs(rig, tmp_path):
    canary = tmp_path / "canary"
    for host in (f"-oProxyCommand=touch {canary}", "sandbox\n-oProxyCommand=x", "host name"):
        result = rig.invoke("tb.start", "--host", host)
        assert "refusing host" in one_line_error(result)
    assert not canary.exists()
    assert rig.states() == []


def test_a_hostile_logdir_reaches_tensorboard_literally_and_runs_nothing(rig, tmp_path):
    # A path name cannot hold "/", so the commands touch a relative name: in
    # the remote login directory, where the remote shell would run them.
    name = f"tbr-canary-{os.getpid()}"
    hostile = tmp_path / f"runs $(touch {name}) `touch {name}`; touch {name} 'q\" \\n"
    hostile.symlink_to(rig.logdir)
    result = rig.fab("tb.start", "--logdir", str(hostile))
    assert result.returncode == 0, result.stderr
    assert http_json(rig.url + "data/logdir") == {"logdir": str(hostile)}
    assert {"baseline", "wider"} <= set(http_json(rig.url + "data/runs"))
    login_dir = Path(pwd.getpwuid(os.getuid()).pw_dir)
    for where in (login_dir, tmp_path, Path.cwd(), rig.remote_dir):
        assert not (where / name).exists(), where


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--remote-port", "70000", "--serve", "tcp"], "remote_port must be an integer from 0 to 65535, got '70000'"),
        (["--local-port", "http"], "local_port must be an integer from 1 to 65535, got 'http'"),
        (["--serve", "udp"], "serve must be one of unix, tcp, got 'udp'"),
        (["--start-timeout", "-1"], "start_timeout must be a positive number of seconds"),
    ],
)
def test_bad_settings_are_one_line_errors_and_start_nothing(rig, flags, message):
    assert message in one_line_error(rig.fab("tb.start", *flags))
    assert rig.states() == []


def test_remote_port_zero_lets_tensorboard_take_any_free_port(rig):
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_SERVE="tcp", FABRIC_TB_REMOTE_PORT="0"))
    assert result.returncode == 0, result.stderr
    kind, port = rig.only_state()["endpoint"].split()
    assert kind == "tcp" and int(port) > 0
    assert http_json(rig.url + "data/logdir")["logdir"] == str(rig.logdir)


@pytest.mark.machine_wide  # 6006, the default local port
def test_the_default_local_port_moves_to_the_next_free_one_when_taken(rig):
    env = rig.env()
    del env["FABRIC_TB_LOCAL_PORT"]
    holder = socket.socket()
    # Held even when a test just before left 6006 in TIME_WAIT (a port with
    # only TIME_WAIT connections is free to tb.start: test_clusters).
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 6006))
        holder.listen()
    except OSError:
        pass  # already taken by someone else: the same situation
    try:
        result = rig.fab("tb.start", env=env)
        assert result.returncode == 0, result.stderr
        assert "local port 6006 is in use here; using " in result.stdout
        port = rig.only_state()["local_port"]
        assert port > 6006
        assert http_json(rig.url + "data/logdir")["logdir"] == str(rig.logdir)
    finally:
        holder.close()


def ssh_config_with(rig, tmp_path, old: str, new: str) -> Path:
    cfg = tmp_path / "ssh_config"
    text = rig.sandbox.ssh_config.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))
    return cfg


def start_with(rig, cfg: Path) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    result = rig.run([str(BIN / "fab"), "-H", "sandbox", "-S", str(cfg), "tb.start"])
    return result, time.monotonic() - began


def test_an_unknown_host_fails_at_once(rig, tmp_path):
    cfg = ssh_config_with(rig, tmp_path, "HostName 127.0.0.1", "HostName no-such-host.invalid")
    result, took = start_with(rig, cfg)
    assert "cannot connect to sandbox: ssh: Could not resolve hostname no-such-host.invalid" in one_line_error(result)
    assert took < 10 and rig.states() == []


def test_a_refused_connection_fails_at_once(rig, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cfg = ssh_config_with(rig, tmp_path, f"Port {rig.sandbox.port}", f"Port {port}")
    result, took = start_with(rig, cfg)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "cannot connect to sandbox" in line and "Connection refused" in line
    assert took < 10 and rig.states() == []


def test_a_key_the_server_does_not_accept_fails_without_a_prompt(rig, tmp_path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cfg = ssh_config_with(rig, tmp_path, str(rig.sandbox.dir / "client_ed25519"), str(key))
    result, took = start_with(rig, cfg)
    assert "Permission denied (publickey)" in one_line_error(result)
    assert took < 10 and rig.states() == []


def test_a_changed_host_key_is_refused_never_trusted(rig, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{rig.sandbox.port} {kind} {key}\n")
    cfg = ssh_config_with(rig, tmp_path, str(rig.sandbox.dir / "known_hosts"), str(known))
    result, took = start_with(rig, cfg)
    assert "Host key verification failed" in one_line_error(result)
    assert took < 10 and rig.states() == []
    assert known.read_text().count("\n") == 1, "the known_hosts file was changed"


def test_a_control_directory_that_cannot_exist_is_a_clear_error(rig, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = rig.env(FABRIC_TB_CONTROL_DIR=str(blocker / "cm"))
    assert "cannot create control directory" in one_line_error(rig.fab("tb.start", env=env))


# ------------------------------------------------------------ faults


def test_a_hung_control_socket_never_hangs_a_task(rig):
    assert rig.fab("tb.start").returncode == 0
    data = rig.only_state()
    os.kill(data["master_pid"], signal.SIGKILL)
    assert wait_gone(data["master_pid"])
    sock_path = data["socket"]
    os.unlink(sock_path)
    # Something that accepts on the socket and never answers.
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(sock_path)
    hung.listen()
    try:
        env = rig.env(FABRIC_TB_COMMAND_TIMEOUT="1")
        began = time.monotonic()
        check = rig.fab("tb.check", env=env)
        assert time.monotonic() - began < 8
        assert check.returncode == 1 and "stale control socket" in check.stdout
        repaired = rig.fab("tb.start", env=env)
        assert repaired.returncode == 0, repaired.stderr
        assert "removing a stale control socket" in repaired.stdout
    finally:
        hung.close()


def test_a_dropped_connection_ends_the_master_by_keepalive_and_check_says_so(rig):
    # Without a watcher (reconnect=no): the manual path. tests/test_reconnect.py has the watcher's.
    env = rig.env(FABRIC_TB_KEEPALIVE="1", FABRIC_TB_RECONNECT="no")
    assert rig.fab("tb.start", env=env).returncode == 0
    data = rig.only_state()
    sshd = rig.sandbox.pid()
    # Freeze the server side of every connection: the link is "dead".
    with frozen([pid for pid in family(sshd) if pid != sshd and pid != data["remote_pid"]]):
        assert wait_gone(data["master_pid"], timeout=15), "keepalives did not end the master"
        check = rig.fab("tb.check", env=env)
        assert check.returncode == 1
        assert "no tunnel (the ssh master is gone)" in check.stdout
    again = rig.fab("tb.start", env=env)
    assert again.returncode == 0, again.stderr
    assert "reopened the tunnel" in again.stdout
    assert rig.only_state()["remote_pid"] == data["remote_pid"]


def test_two_starts_at_the_same_moment_give_one_tensorboard_and_one_master(rig):
    argv = [str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.start"]
    procs = [subprocess.Popen(argv, env=rig.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert sum("started TensorBoard" in out for out, _ in outputs) == 1
    assert sum("reusing the tunnel" in out for out, _ in outputs) == 1
    assert len(tensorboards(rig)) == 1
    masters = [pid for pid, cmd in ours(str(rig.control_dir)) if " -M " in cmd]
    assert len(masters) == 1


def test_ctrl_c_during_start_leaves_a_state_that_exit_and_start_converge_from(rig, tmp_path):
    stub = tmp_path / "python-slow"
    stub.write_text("#!/bin/sh\necho 'stub: still importing'\nexec sleep 60\n")
    stub.chmod(0o755)
    env = rig.env(FABRIC_TB_TENSORBOARD_CMD=f"{stub} -m tensorboard.main")
    argv = [str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.start"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt while tb.start waits for TensorBoard to listen.
    deadline = time.monotonic() + 20
    pidfiles = []
    while not pidfiles:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
        pidfiles = list(rig.remote_dir.glob("*/pid"))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert err.strip() == "tensorboard-remote: interrupted; run tb.start to finish or tb.exit to clean up"
    stub_pid = int(pidfiles[0].read_text().split()[0])
    assert alive(stub_pid)

    stop = rig.fab("tb.exit")
    assert stop.returncode == 0 and f"stopped TensorBoard (pid {stub_pid})" in stop.stdout
    assert wait_gone(stub_pid) and rig.states() == []
    assert rig.fab("tb.start").returncode == 0
    assert rig.fab("tb.check").returncode == 0


def test_an_exit_interrupted_after_stopping_tensorboard_converges(rig):
    assert rig.fab("tb.start").returncode == 0
    data = rig.only_state()
    # As if tb.exit had stopped TensorBoard and died before closing the tunnel.
    os.kill(data["remote_pid"], signal.SIGKILL)
    assert wait_gone(data["remote_pid"])
    stop = rig.fab("tb.exit")
    assert stop.returncode == 0, stop.stderr
    assert "had already exited" in stop.stdout and "closed the tunnel" in stop.stdout
    assert wait_gone(data["master_pid"]) and rig.states() == []


def test_start_over_a_hung_connection_reconnects_at_once_instead_of_waiting_for_timeouts(rig):
    # A laptop that slept: the master process is alive and answers -O check
    # (that is local), but its connection is dead until keepalives give up.
    # Without a watcher (reconnect=no), tb.start is what reconnects.
    env = rig.env(FABRIC_TB_RECONNECT="no")
    assert rig.fab("tb.start", env=env).returncode == 0
    data = rig.only_state()
    sshd = rig.sandbox.pid()
    keep = set(family(data["remote_pid"]))
    with frozen([pid for pid in family(sshd) if pid != sshd and pid not in keep]):
        check = rig.fab("tb.check", env=env)
        assert check.returncode == 1
        assert "the tunnel does not answer" in check.stdout and "tb.start reconnects" in check.stdout
        again = rig.fab("tb.start", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "the tunnel does not answer (a laptop that slept, or a dropped link?); reconnecting" in again.stdout
        assert "TensorBoard pid" in again.stdout and "was still running" in again.stdout
        assert rig.only_state()["remote_pid"] == data["remote_pid"]
        assert not alive(data["master_pid"])
    assert rig.fab("tb.exit", env=env).returncode == 0
