"""Several hosts: concurrent start, per-host state, tb.list, one login per cycle."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from .conftest import BIN, http_json, tensorboards


def combined_config(rig, boxes, tmp_path) -> Path:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("\n".join(box.ssh_config.read_text() for box in [rig.sandbox, *boxes]))
    return cfg


@pytest.fixture(scope="class")
def hosts_env(class_rig, more_sandboxes):
    """The environment for invoke with all three hosts in its ssh_config."""
    cfg = combined_config(class_rig, more_sandboxes, class_rig.root)
    return class_rig.env(INVOKE_TB_SSH_CONFIG=str(cfg))


@pytest.fixture(scope="class")
def hosts_start(class_rig, hosts_env):
    """tb.start on the three hosts at once, and the sessions it recorded."""
    return class_rig.invoke("tb.start", "--hosts", "sandbox,host2,host3", env=hosts_env), class_rig.states()


@pytest.fixture(scope="class")
def host2_died(class_rig, hosts_env, hosts_start):
    """tb.check after host2's TensorBoard was killed."""
    _, states = hosts_start
    dead = next(s for s in states if s["target"]["host"] == "host2")
    os.kill(dead["remote_pid"], signal.SIGKILL)
    return class_rig.invoke("tb.check", env=hosts_env)


class TestSeveralHostsAtOnce:
    """tb.start on three hosts at once, then tb.list, tb.check, one host's
    TensorBoard dying, and tb.exit: a test per step, in this order;
    hosts_start and host2_died run once for the class."""

    @pytest.fixture
    def rig(self, class_rig):
        return class_rig

    def test_start_brings_up_every_host_each_with_its_own_local_port(self, rig, hosts_start):
        result, states = hosts_start
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(s["target"]["host"] for s in states) == ["host2", "host3", "sandbox"]
        ports = sorted(s["local_port"] for s in states)
        assert len(set(ports)) == 3 and ports[0] >= rig.local_port

    def test_start_prints_each_hosts_url_and_each_serves_the_logdir(self, rig, hosts_start):
        result, states = hosts_start
        assert states, result.stdout + result.stderr
        for data in states:
            url = f"http://127.0.0.1:{data['local_port']}/{data['token']}/"
            assert f"TensorBoard ready at {url}" in result.stdout
            assert http_json(url + "data/logdir")["logdir"] == str(rig.logdir)

    def test_list_json_shows_every_host_healthy(self, rig, hosts_env, hosts_start):
        listing = rig.invoke("tb.list", "--json", env=hosts_env)
        assert listing.returncode == 0, listing.stderr
        rows = json.loads(listing.stdout)
        assert sorted(r["host"] for r in rows) == ["host2", "host3", "sandbox"]
        assert all(r["healthy"] and r["url"] and r["remote_pid"] and r["uptime_seconds"] >= 0 for r in rows)

    def test_list_shows_a_table_with_every_host_ok(self, rig, hosts_env, hosts_start):
        table = rig.invoke("tb.list", env=hosts_env).stdout.splitlines()
        assert table[0].split() == ["HOST", "URL", "PID", "LOGDIR", "UPTIME", "HEALTH"]
        assert len(table) == 4 and all(line.rstrip().endswith("ok") for line in table[1:])

    def test_check_reports_every_host_ok(self, rig, hosts_env, hosts_start):
        check = rig.invoke("tb.check", env=hosts_env)
        assert check.returncode == 0 and check.stdout.count(": ok http://127.0.0.1:") == 3

    def test_when_one_hosts_tensorboard_dies_check_names_that_host_and_fails(self, host2_died):
        check = host2_died
        assert check.returncode == 1
        assert "host2: TensorBoard is not running" in check.stdout and check.stdout.count(": ok ") == 2

    def test_exit_closes_every_tunnel_and_leaves_no_tensorboard(self, rig, hosts_env, host2_died):
        stop = rig.invoke("tb.exit", env=hosts_env)
        assert stop.returncode == 0
        assert stop.stdout.count("closed the tunnel") == 3
        assert rig.states() == [] and tensorboards(rig) == []


def test_fab_with_several_hosts_keeps_per_host_state(rig, more_sandboxes, tmp_path):
    cfg = combined_config(rig, more_sandboxes, tmp_path)
    env = rig.env()  # local_port configured (FABRIC_TB_LOCAL_PORT)
    fab = [str(BIN / "fab"), "-H", "sandbox,host2", "-S", str(cfg)]
    start = rig.run([*fab, "tb.start"], env=env)
    assert start.returncode == 0, start.stdout + start.stderr
    assert start.stdout.count("TensorBoard ready at") == 2
    # Each host: the first free port from the configured one upwards; the
    # configured port held by our own tunnel to the first host is no error.
    ports = {s["target"]["host"]: s["local_port"] for s in rig.states()}
    assert ports["sandbox"] == rig.local_port and ports["host2"] > rig.local_port, ports
    assert f"host2: local port {rig.local_port} is another tunnel of ours; using {ports['host2']}" in start.stdout
    check = rig.run([*fab, "tb.check"], env=env)
    assert check.returncode == 0 and check.stdout.count(": ok ") == 2
    assert rig.run([*fab, "tb.exit"], env=env).returncode == 0
    assert rig.states() == []


def test_a_whole_start_check_exit_cycle_logs_in_once(rig):
    before = rig.sandbox.accepted_logins()
    assert rig.fab("tb.start").returncode == 0
    assert rig.fab("tb.check").returncode == 0
    assert rig.fab("tb.logs").returncode == 0
    assert rig.fab("tb.start").returncode == 0
    assert rig.fab("tb.exit").returncode == 0
    assert rig.sandbox.accepted_logins() - before == 1
