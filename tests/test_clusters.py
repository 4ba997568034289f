"""Real clusters and laptops (issue 12): hosts that forbid forwarding, deep
home directories, proxies in the environment, settings changed under a
running session, missing logdirs, busy-looking ports, leftovers, help."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tensorboard_remote.sandbox import Sandbox, local_tensorboard_cmd

from .conftest import BIN, REPO, http_json, tensorboards
from .test_faults import one_line_error
from .test_user_master import UserMaster


# ------------------------------------------------- forwarding forbidden


@pytest.fixture(scope="module", params=["AllowTcpForwarding no", "DisableForwarding yes"])
def forbidding(request, base, nothing_left_behind) -> Sandbox:
    """An sshd that forbids port forwarding, as some clusters' nodes do."""
    name = request.param.split()[0].lower()
    box = Sandbox(base / f"sshd-{name}", alias="nofwd").create(extra_sshd=request.param).start()
    yield box
    box.stop()


def test_a_host_that_forbids_forwarding_is_a_one_line_error_within_seconds_and_leaves_nothing(rig, forbidding):
    began = time.monotonic()
    result = rig.run([str(BIN / "fab"), "-H", "nofwd", "-S", str(forbidding.ssh_config), "tb.start"])
    took = time.monotonic() - began
    line = one_line_error(result)
    assert line.startswith("tensorboard-remote: nofwd forbids port forwarding (its sshd has AllowTcpForwarding no or DisableForwarding yes)")
    assert "nothing was left running" in line
    assert took < 20, took  # the start timeout is 30 s here: the refusal was seen, not waited out
    assert tensorboards(rig) == [] and rig.states() == []
    assert list(rig.control_dir.iterdir()) == []  # no socket, state, log or lock file


def test_through_the_users_own_master_a_host_that_forbids_forwarding_says_so_and_leaves_their_master_up(rig, forbidding):
    user = UserMaster(rig, forbidding)
    user.open()
    try:
        result = rig.run([str(BIN / "fab"), "-H", "nofwd", "-S", str(user.config), "tb.start"])
        line = one_line_error(result)
        assert "riding your ssh master" in result.stdout
        # Their master's log is not ours to read: our own master tells why.
        assert "opening a master of our own" in result.stdout
        assert line.startswith("tensorboard-remote: nofwd forbids port forwarding"), line
        assert user.up(), "the user's master was closed"
        assert tensorboards(rig) == [] and rig.states() == []
        assert list(rig.control_dir.iterdir()) == []
    finally:
        user.close()


# ------------------------------------------- a deep remote directory


def test_a_run_directory_too_deep_for_a_unix_socket_serves_from_a_short_private_one(rig):
    deep = rig.root / ("d" * 60) / ("e" * 60)
    result = rig.fab("tb.start", "--remote-dir", str(deep))
    assert result.returncode == 0, result.stdout + result.stderr
    data = rig.only_state()
    kind, path = data["endpoint"].split(" ", 1)
    assert kind == "unix" and path.startswith("/tmp/tbr.") and len(path.encode()) <= 107
    assert oct(Path(path).parent.stat().st_mode & 0o777) == "0o700"
    assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
    assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}
    logs = rig.fab("tb.logs")
    assert "too long for a Unix socket: serving on " + path in logs.stdout
    assert rig.fab("tb.check").returncode == 0
    assert rig.fab("tb.exit").returncode == 0
    assert not Path(path).parent.exists()


# ------------------------------------------------------------ proxies


def test_a_proxy_in_the_environment_is_never_used_for_our_own_ports(rig):
    # A proxy that answers nothing: a probe sent there would fail.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    proxy = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()
    env = rig.env(http_proxy=proxy, HTTP_PROXY=proxy, all_proxy=proxy, ALL_PROXY=proxy)
    started = rig.fab("tb.start", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    checked = rig.fab("tb.check", env=env)
    assert checked.returncode == 0 and ": ok http://127.0.0.1:" in checked.stdout, checked.stdout
    assert rig.fab("tb.exit", env=env).returncode == 0


# ---------------------------------------- settings of a running session


@pytest.fixture(scope="class")
def running(class_rig):
    """fab tb.start with the defaults, once for the class."""
    return class_rig.fab("tb.start")


class TestASecondStartWithAnotherSetting:
    """One running session; each refused start leaves it as it was (the
    test says so), so the settings share it: running starts it once."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    @pytest.mark.parametrize(
        "flag, value, key",
        [
            ("--data-server", "off", "data_server"),
            ("--tensorboard-cmd", "/no/such/tensorboard", "tensorboard_cmd"),
            ("--activate", "true", "activate"),
        ],
    )
    def test_a_second_start_with_another_setting_is_refused_naming_the_value_in_force(self, rig, running, flag, value, key):
        assert running.returncode == 0, running.stdout + running.stderr
        pid = rig.only_state()["remote_pid"]
        again = rig.fab("tb.start", flag, value)
        line = one_line_error(again)
        in_force = {"data_server": "auto", "tensorboard_cmd": local_tensorboard_cmd(), "activate": ""}[key]
        assert f"sandbox already has a tb session with {key}={in_force!r} (this start asks for {key}={value!r})" in line
        assert rig.only_state()["remote_pid"] == pid and tensorboards(rig) == [pid]


@pytest.mark.machine_wide  # 6006, the default local port, and up
def test_the_refusal_names_the_local_port_in_use(rig):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    busy = held.getsockname()[1]
    try:
        env = rig.env()
        for prefix in ("INVOKE", "FABRIC"):
            env.pop(f"{prefix}_TB_LOCAL_PORT")  # the default, 6006, moves up when taken
        first = rig.fab("tb.start", env=env)
        assert first.returncode == 0, first.stderr
        in_use = rig.only_state()["local_port"]
        line = one_line_error(rig.fab("tb.start", "--local-port", str(busy), env=env))
        assert f"with local_port={in_use} (this start asks for local_port={busy})" in line
    finally:
        held.close()


# ------------------------------------------------------ a missing logdir


def test_a_logdir_missing_on_the_remote_is_said_and_the_start_goes_on(rig):
    missing = rig.root / "not-yet"
    result = rig.fab("tb.start", "--logdir", str(missing))
    assert result.returncode == 0, result.stderr
    assert f"sandbox: note: the logdir {missing} does not exist there (yet): TensorBoard shows runs once training writes them" in result.stdout
    missing.mkdir()
    assert http_json(rig.url + "data/logdir") == {"logdir": str(missing)}


def test_an_unquoted_tilde_expanded_here_is_named(rig, tmp_path):
    # The "remote" is this machine, so make its home differ from the local
    # one as a laptop's does: the remote login's home comes from passwd.
    here = rig.home / "runs"
    result = rig.fab("tb.start", "--logdir", str(here))
    assert result.returncode == 0, result.stderr
    assert (
        f"; {rig.home} is this machine's home directory (your shell expanded an unquoted ~): "
        f"quote it, --logdir '~/runs', for the remote's home" in result.stdout
    )


# ---------------------------------------------------------- local ports


def test_a_local_port_with_only_time_wait_connections_is_used(rig):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the side that closes first keeps 127.0.0.1:PORT in TIME_WAIT
    time.sleep(0.1)
    client.close()
    server.close()
    states = Path("/proc/net/tcp").read_text()
    assert f":{port:04X} " in states and " 06 " in states  # TIME_WAIT is state 06
    result = rig.fab("tb.start", "--local-port", str(port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"http://127.0.0.1:{port}/" in result.stdout


def test_exit_and_a_failed_connect_leave_no_files_here(rig, tmp_path):
    assert rig.fab("tb.start").returncode == 0
    assert rig.fab("tb.exit").returncode == 0
    assert list(rig.control_dir.iterdir()) == []
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cfg = tmp_path / "ssh_config"
    cfg.write_text(rig.sandbox.ssh_config.read_text().replace(f"Port {rig.sandbox.port}", f"Port {port}"))
    failed = rig.run([str(BIN / "fab"), "-H", "sandbox", "-S", str(cfg), "tb.start"])
    assert "Connection refused" in one_line_error(failed)
    assert list(rig.control_dir.iterdir()) == []


# --------------------------------------------------------- help, fab


def test_help_shows_open_as_a_switch():
    result = subprocess.run([str(BIN / "fab"), "--help", "tb.start"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if "--open" in line)
    assert "[=" not in line and "STRING" not in line, line


def test_the_readmes_three_line_fabfile_works_outside_this_project(rig, tmp_path):
    readme = (REPO / "README.md").read_text()
    start = readme.index("# fabfile.py, anywhere")
    fabfile = readme[start:readme.index("```", start)]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    nothing = rig.run([str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.start"], cwd=elsewhere)
    assert "Can't find any collection named 'fabfile'" in nothing.stderr  # as the README warns
    (elsewhere / "fabfile.py").write_text(fabfile)
    result = rig.run([str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.start"], cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rig.run([str(BIN / "fab"), "-H", "sandbox", "-S", rig.ssh_config, "tb.exit"], cwd=elsewhere).returncode == 0
