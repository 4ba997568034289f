"""Private by default: no TCP port of ours on the remote, a secret URL, the fallback."""

from __future__ import annotations

import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


from . import procs
from .conftest import BIN, http_json
from .procs import cmdline, family, listening_tcp_inodes, socket_inodes


def exposed_ports(pid: int) -> list[str]:
    """Listening TCP sockets (host namespace) held by ``pid`` or its children."""
    listening = listening_tcp_inodes()
    return [f"{p}:{cmdline(p)[:60]}" for p in family(pid) if socket_inodes(p) & listening]


def data_servers(pid: int) -> list[int]:
    return [p for p in family(pid) if "tensorboard_data_server" in cmdline(p)]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="class")
def default_start(class_rig):
    """fab tb.start with the defaults, once for the class of tests that asks."""
    return class_rig.fab("tb.start")


class TestTheDefaultSession:
    """One fab tb.start with the defaults, and a test per thing it keeps
    private. None of them changes the session, so they share it:
    default_start runs once for the class."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    def test_by_default_tensorboard_serves_a_0600_unix_socket_and_no_tcp_port(self, rig, default_start):
        result = default_start
        assert result.returncode == 0, result.stderr
        assert "Unix socket, data server in a private network namespace" in result.stdout
        data = rig.only_state()
        kind, path = data["endpoint"].split(" ", 1)
        assert kind == "unix"
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and oct(mode & 0o777) == "0o600"
        # The master forwards a 0600 socket in our 0700 control directory (the
        # watcher holds the local port and relays to it), never a TCP port.
        assert data["forward"] == f"{data['relay']}:{path}" and data["relay"].startswith(str(rig.control_dir) + "/")
        assert oct(os.stat(data["relay"]).st_mode & 0o777) == "0o600"
        remote = data["remote_pid"]
        # The fast loader is kept, inside its own network namespace...
        assert wait_for(lambda: data_servers(remote)), "no data server: the fast loader was turned off"
        assert os.readlink(f"/proc/{data_servers(remote)[0]}/ns/net") != os.readlink("/proc/self/ns/net")
        # ...so nothing of ours listens on TCP where other users could connect.
        assert exposed_ports(remote) == []
        assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}

    def test_the_url_token_is_required_and_never_on_a_command_line_or_in_a_log(self, rig, default_start):
        result = default_start
        assert result.returncode == 0, result.stderr
        data = rig.only_state()
        token = data["token"]
        assert len(token) >= 20 and f"/{token}/" in result.stdout
        bare = f"http://127.0.0.1:{data['local_port']}/data/logdir"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bare, timeout=5)
        assert refused.value.code == 403
        assert http_json(rig.url + "data/logdir")["logdir"] == str(rig.logdir)
        # Not in any process's command line, nor in any log of ours.
        for pid in procs.pids():
            if pid != os.getpid():
                assert token not in cmdline(pid), cmdline(pid)
        rundir = rig.remote_dir / data["sid"]
        assert token not in (rundir / "log").read_text()
        assert token not in Path(data["socket"] + ".log").read_text()
        token_file = rundir / "token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"

    def test_tensorboard_gets_a_private_tmpdir(self, rig, default_start):
        assert default_start.returncode == 0
        data = rig.only_state()
        assert procs.environ(data["remote_pid"]).get("TMPDIR") == str(rig.remote_dir / data["sid"])
        assert list((rig.remote_dir / data["sid"] / ".tensorboard-info").glob("pid-*.info"))


def test_the_shared_data_server_is_exposed_which_is_why_it_is_not_the_default(rig):
    env = rig.env(FABRIC_TB_DATA_SERVER="shared")
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 0, result.stderr
    assert "data server shared with local users" in result.stdout
    remote = rig.only_state()["remote_pid"]
    assert wait_for(lambda: exposed_ports(remote)), "the check above could never fail"


def test_data_server_off_uses_the_slow_loader_and_no_port(rig):
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_DATA_SERVER="off"))
    assert result.returncode == 0, result.stderr
    assert "data server off (--load_fast=false)" in result.stdout
    remote = rig.only_state()["remote_pid"]
    assert "--load_fast=false" in cmdline(remote)
    time.sleep(0.5)
    assert data_servers(remote) == [] and exposed_ports(remote) == []


def test_a_server_refusing_unix_socket_forwarding_falls_back_to_tcp_with_the_token(rig, strict_sandbox):
    argv = [str(BIN / "fab"), "-H", "strict", "-S", str(strict_sandbox.ssh_config), "tb.start"]
    result = rig.run(argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refuses Unix-socket forwarding (AllowStreamLocalForwarding no); falling back to TCP" in result.stdout
    data = rig.only_state()
    assert data["serve"] == "tcp" and data["endpoint"].startswith("tcp ")
    assert data["token"] and f"/{data['token']}/" in result.stdout
    assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}
    # The TCP listener is TensorBoard's own on 127.0.0.1, and only one TensorBoard runs.
    check = rig.run([str(BIN / "fab"), "-H", "strict", "-S", str(strict_sandbox.ssh_config), "tb.check"])
    assert check.returncode == 0, check.stdout
    stop = rig.run([str(BIN / "fab"), "-H", "strict", "-S", str(strict_sandbox.ssh_config), "tb.exit"])
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout


def test_the_seed_way_is_one_setting_away(rig):
    env = rig.env(FABRIC_TB_SERVE="tcp", FABRIC_TB_URL_TOKEN="no", FABRIC_TB_DATA_SERVER="shared")
    result = rig.fab("tb.start", env=env)
    assert result.returncode == 0, result.stderr
    data = rig.only_state()
    assert data["endpoint"] == f"tcp {rig.remote_port}"
    assert rig.url == f"http://127.0.0.1:{rig.local_port}/"
    assert http_json(f"http://127.0.0.1:{rig.remote_port}/data/logdir")["logdir"] == str(rig.logdir)
