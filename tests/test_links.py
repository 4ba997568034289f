"""The link-fault machinery itself (tests/links.py, tests/link_fixtures.py):
the sandbox in its network namespace, a cut link that drops packets without
a word, and a child Python whose wall clock jumps.

These prove the tools the reconnect tests stand on: through a cut link an
ssh master still answers ``-O check`` (that is local) while a command
through it hangs, and a new connect times out, never refused, as after a
laptop's sleep or a dropped Wi-Fi.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import http_json
from .links import NS_ADDR, ClockJump
from .procs import wait_gone
from .test_lifecycle import started
from .test_stub_tensorboard import STUB_PYTHON

#: How long a command through a cut link is given to prove that it hangs.
HANG = 4


def ssh(box, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", str(box.ssh_config), "-o", "BatchMode=yes", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
    )


def fresh(box, *command: str) -> subprocess.CompletedProcess:
    """A new connection (no master), that gives up connecting after 2 s."""
    return ssh(box, "-S", "none", "-o", "ConnectTimeout=2", box.alias, *command)


@pytest.fixture
def master(linked_sandbox, short_dir):
    """An ssh master to the linked sandbox (no keepalives: it waits as long
    as the link is down); ``-O exit`` after the test."""
    sock = str(short_dir / "master")
    opened = ssh(linked_sandbox, "-M", "-S", sock, "-fN", linked_sandbox.alias)
    assert opened.returncode == 0, opened.stderr
    check = ssh(linked_sandbox, "-S", sock, "-O", "check", linked_sandbox.alias)
    pid = int(check.stderr.split("pid=")[1].split(")")[0])
    yield sock
    ssh(linked_sandbox, "-S", sock, "-O", "exit", linked_sandbox.alias)
    assert wait_gone(pid), f"master {pid} did not exit"


def test_the_linked_sandbox_runs_in_its_own_network_namespace_and_logs_in(linked_sandbox, link):
    before = linked_sandbox.accepted_logins()
    result = fresh(linked_sandbox, "readlink /proc/self/ns/net; ip -o -4 addr show")
    assert result.returncode == 0, result.stderr
    namespace, addresses = result.stdout.split("\n", 1)
    assert namespace != os.readlink("/proc/self/ns/net")
    assert f"inet {NS_ADDR}/30" in addresses
    assert linked_sandbox.accepted_logins() == before + 1
    assert os.readlink(f"/proc/{linked_sandbox.pid()}/ns/net") == namespace


def test_a_master_runs_commands_over_the_link(linked_sandbox, master, link):
    result = ssh(linked_sandbox, "-S", master, linked_sandbox.alias, "echo through the master")
    assert (result.returncode, result.stdout) == (0, "through the master\n"), result.stderr


def test_through_a_cut_link_check_answers_but_a_command_through_the_master_hangs(linked_sandbox, master, link):
    with link.cut():
        assert link.is_down
        check = ssh(linked_sandbox, "-S", master, "-O", "check", linked_sandbox.alias, timeout=HANG)
        assert check.returncode == 0 and "Master running" in check.stderr
        with pytest.raises(subprocess.TimeoutExpired):
            ssh(linked_sandbox, "-S", master, linked_sandbox.alias, "echo hung", timeout=HANG)
    assert not link.is_down


def test_through_a_cut_link_a_new_ssh_times_out_and_is_never_refused(linked_sandbox, link):
    with link.cut():
        result = fresh(linked_sandbox, "true")
    assert result.returncode == 255
    assert "timed out" in result.stderr, result.stderr
    assert "refused" not in result.stderr and "No route" not in result.stderr


def test_once_the_link_is_up_again_a_new_ssh_and_the_old_master_work(linked_sandbox, master, link):
    link.down()
    with pytest.raises(subprocess.TimeoutExpired):
        ssh(linked_sandbox, "-S", master, linked_sandbox.alias, "true", timeout=HANG)
    link.up()
    result = fresh(linked_sandbox, "echo back")
    assert (result.returncode, result.stdout) == (0, "back\n"), result.stderr
    # The master's connection outlived the cut (TCP retransmits).
    result = ssh(linked_sandbox, "-S", master, linked_sandbox.alias, "echo master back")
    assert (result.returncode, result.stdout) == (0, "master back\n"), result.stderr


def test_a_session_through_the_linked_sandbox_answers_on_its_url(linked_rig, link):
    started(linked_rig.cli("linked", "start", env=linked_rig.env(
        INVOKE_TB_SSH_CONFIG=linked_rig.ssh_config, INVOKE_TB_PYTHON=STUB_PYTHON)), linked_rig)
    assert http_json(linked_rig.url + "data/logdir") == {"logdir": str(linked_rig.logdir)}
    stop = linked_rig.cli("linked", "exit")
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout, stop.stdout + stop.stderr


CHILD = """
import subprocess, sys, time
wall, mono = time.time(), time.monotonic()
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.05)
subprocess.run(["true"], timeout=5)
print(time.time() - wall, time.monotonic() - mono, time.clock_gettime(time.CLOCK_REALTIME) - wall, flush=True)
"""


def test_a_clock_jump_moves_a_childs_wall_clock_at_run_time_and_not_its_monotonic_clock(tmp_path):
    clock = ClockJump(tmp_path / "clock")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], env=clock.env(), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        clock.jump(600)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0, err
    wall, mono, realtime = (float(word) for word in out.split())
    assert wall >= 600 and realtime >= 600
    assert mono < 600
