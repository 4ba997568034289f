"""Several hosts: concurrent start, per-host state, tb.list, one login per cycle."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import BIN, http_json, tensorboards


def combined_config(rig, boxes, tmp_path) -> Path:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("\n".join(box.ssh_config.read_text() for box in [rig.sandbox, *boxes]))
    return cfg


def test_start_several_hosts_at_once_each_with_its_own_port_then_list_check_and_exit(rig, more_sandboxes, tmp_path):
    cfg = combined_config(rig, more_sandboxes, tmp_path)
    env = rig.env(INVOKE_TB_SSH_CONFIG=str(cfg))
    start = rig.invoke("tb.start", "--hosts", "sandbox,host2,host3", env=env)
    assert start.returncode == 0, start.stdout + start.stderr
    states = rig.states()
    assert sorted(s["target"]["host"] for s in states) == ["host2", "host3", "sandbox"]
    ports = sorted(s["local_port"] for s in states)
    assert len(set(ports)) == 3 and ports[0] >= rig.local_port
    for data in states:
        url = f"http://127.0.0.1:{data['local_port']}/{data['token']}/"
        assert f"TensorBoard ready at {url}" in start.stdout
        assert http_json(url + "data/logdir")["logdir"] == str(rig.logdir)

    listing = rig.invoke("tb.list", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert sorted(r["host"] for r in rows) == ["host2", "host3", "sandbox"]
    assert all(r["healthy"] and r["url"] and r["remote_pid"] and r["uptime_seconds"] >= 0 for r in rows)
    table = rig.invoke("tb.list", env=env).stdout.splitlines()
    assert table[0].split() == ["HOST", "URL", "PID", "LOGDIR", "UPTIME", "HEALTH"]
    assert len(table) == 4 and all(line.rstrip().endswith("ok") for line in table[1:])

    check = rig.invoke("tb.check", env=env)
    assert check.returncode == 0 and check.stdout.count(": ok http://127.0.0.1:") == 3

    # One host's TensorBoard dies: check and list say which, and exit 1.
    dead = next(s for s in states if s["target"]["host"] == "host2")
    import os, signal

    os.kill(dead["remote_pid"], signal.SIGKILL)
    check = rig.invoke("tb.check", env=env)
    assert check.returncode == 1
    assert "host2: TensorBoard is not running" in check.stdout and check.stdout.count(": ok ") == 2

    stop = rig.invoke("tb.exit", env=env)
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
