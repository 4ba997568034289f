"""The URL keeps working: the watcher against real faults of a real sshd.

Each test starts a session with ``fab tb.start`` (the watcher on, the
default), breaks something, and then types nothing: the same URL, with the
same token, must serve TensorBoard again by itself. While it cannot, the URL
answers at once with a page or a 503, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import BIN, tensorboards
from .procs import alive, family, frozen, ours, wait_gone

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, accept: str = "application/json", timeout: float = 5.0) -> tuple[int, dict, str]:
    """Status, headers and body of a GET (a 503 is an answer too)."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")


def serves(url: str) -> bool:
    try:
        status, _, body = fetch(url + "data/logdir", timeout=3)
    except OSError:
        return False
    return status == 200 and "logdir" in body


def watch_logs(url: str) -> str:
    """The watchers' logs of the sessions whose URL is ``url`` (for a failure's message)."""
    port = url.split(":")[2].split("/")[0]
    found = []
    for log in Path("/tmp").glob("tbr-*/*/tb-*.watch.log"):
        text = log.read_text(errors="replace")
        if f":{port} ->" in text:
            found.append(f"--- {log}\n{text}")
    return "\n".join(found)


def wait_serving(url: str, timeout: float = 30.0) -> float:
    """Seconds until ``url`` serves TensorBoard again (fails after ``timeout``)."""
    start = time.monotonic()
    while not serves(url):
        assert time.monotonic() - start < timeout, f"{url} did not serve again within {timeout}s\n{watch_logs(url)}"
        time.sleep(0.2)
    return time.monotonic() - start


def watcher_pid(rig) -> int:
    return rig.only_state()["watcher"]["pid"]


def watchers(rig) -> list[int]:
    return [pid for pid, cmd in ours(str(rig.control_dir)) if ".watcher " in cmd]


@pytest.fixture
def started(rig):
    result = rig.fab("tb.start")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reconnects by itself" in result.stdout
    assert serves(rig.url)
    return rig


def test_a_session_has_one_watcher_that_holds_the_port_and_exit_ends_it(started):
    rig = started
    data = rig.only_state()
    assert watchers(rig) == [data["watcher"]["pid"]]
    # The master forwards a 0600 socket in our directory, not the port.
    assert data["forward"].startswith(str(rig.control_dir) + "/") and data["relay"] == data["forward"].split(":")[0]
    assert oct(os.stat(data["relay"]).st_mode & 0o777) == "0o600"
    check = rig.fab("tb.check")
    assert check.returncode == 0 and f"watcher={data['watcher']['pid']} serving reconnects=0" in check.stdout
    stop = rig.fab("tb.exit")
    assert stop.returncode == 0, stop.stderr
    assert "stopped the watcher" in stop.stdout
    assert wait_gone(data["watcher"]["pid"]) and rig.states() == []
    assert sorted(p.name for p in rig.control_dir.iterdir()) == []
    again = rig.fab("tb.exit")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_a_killed_master_is_replaced_by_itself_and_the_same_url_serves(started):
    rig = started
    url, data = rig.url, rig.only_state()
    os.kill(data["master_pid"], signal.SIGKILL)
    assert wait_gone(data["master_pid"])
    took = wait_serving(url, timeout=20)
    now = rig.only_state()
    assert now["master_pid"] != data["master_pid"] and now["remote_pid"] == data["remote_pid"]
    assert rig.url == url
    check = rig.fab("tb.check")
    assert check.returncode == 0 and "serving reconnects=1 last-outage=" in check.stdout, check.stdout
    print(f"served again {took:.1f}s after the master was killed")


def test_while_it_reconnects_the_url_answers_at_once_with_a_page_or_a_503(started):
    rig = started
    url, data = rig.url, rig.only_state()
    box = rig.sandbox
    # The host goes away (sshd restarted, or a reboot that spared
    # TensorBoard): sshd and the connections it serves end, and nothing
    # answers on its port for a while.
    sshd = box.pid()
    keep = set(family(data["remote_pid"]))
    serving = [pid for pid in family(sshd) if pid != sshd and pid not in keep]
    box.stop()
    for pid in serving:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        assert wait_gone(data["master_pid"], timeout=10)
        deadline = time.monotonic() + 15
        while True:
            began = time.monotonic()
            status, headers, body = fetch(url, accept="text/html")
            assert time.monotonic() - began < 2, "the URL must answer at once"
            if "reconnecting to sandbox" in body or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 503 and "reconnecting to sandbox (attempt" in body, body
        assert 'http-equiv="refresh"' in body and headers.get("Retry-After")
        status, headers, body = fetch(url + "data/runs")
        assert status == 503 and headers.get("Retry-After") and body.startswith("tensorboard-remote: reconnecting")
        check = rig.fab("tb.check")
        assert check.returncode == 1 and "sandbox: reconnecting by itself (attempt" in check.stdout, check.stdout
        listed = rig.fab("tb.list", "--json")
        import json

        row = json.loads(listed.stdout)[0]
        assert row["health"] == "reconnecting" and row["watcher"]["phase"] == "reconnecting"
    finally:
        box.start()
    wait_serving(url, timeout=20)
    assert rig.only_state()["remote_pid"] == data["remote_pid"]


def test_a_frozen_server_side_is_found_dropped_and_reconnected(started):
    rig = started
    url, data = rig.url, rig.only_state()
    sshd = rig.sandbox.pid()
    keep = set(family(data["remote_pid"]))
    # SIGSTOP the sshd processes serving our master: the link hangs (new
    # logins still work: the listener is not frozen).
    with frozen([pid for pid in family(sshd) if pid != sshd and pid not in keep]):
        took = wait_serving(url, timeout=30)
        assert not alive(data["master_pid"])
    print(f"hung link found and repaired in {took:.1f}s")
    assert rig.only_state()["remote_pid"] == data["remote_pid"]


def test_a_killed_tensorboard_is_started_again_behind_the_same_url(started):
    rig = started
    url, data = rig.url, rig.only_state()
    os.kill(data["remote_pid"], signal.SIGKILL)
    assert wait_gone(data["remote_pid"])
    wait_serving(url, timeout=30)
    assert rig.only_state()["remote_pid"] != data["remote_pid"]
    assert len(tensorboards(rig)) == 1


def test_a_killed_watcher_is_said_by_check_and_start_restores_it_with_the_same_url(started):
    rig = started
    url, pid = rig.url, watcher_pid(rig)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    check = rig.fab("tb.check")
    assert check.returncode == 1 and f"the watcher (pid {pid}) is gone" in check.stdout, check.stdout
    again = rig.fab("tb.start")
    assert again.returncode == 0, again.stderr
    assert "the watcher was gone: restoring it" in again.stdout and f"TensorBoard ready at {url}" in again.stdout
    assert watcher_pid(rig) != pid and serves(url)


def test_two_starts_at_once_with_a_watcher_running_keep_one_watcher_and_one_master(started):
    rig = started
    url, pid = rig.url, watcher_pid(rig)
    argv = [str(BIN / "fab"), "-H", rig.host, "-S", rig.ssh_config, "tb.start"]
    procs = [subprocess.Popen(argv, env=rig.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert all(f"TensorBoard ready at {url}" in out for out, _ in outputs)
    assert watchers(rig) == [pid]
    masters = [p for p, cmd in ours(str(rig.control_dir)) if " -M " in cmd]
    assert len(masters) == 1


def test_exit_while_a_reconnect_is_in_flight_cancels_it_and_leaves_nothing(started):
    rig = started
    data = rig.only_state()
    sshd = rig.sandbox.pid()
    # Every new login now hangs in the banner exchange: freeze the listener.
    with frozen([sshd]):
        os.kill(data["master_pid"], signal.SIGKILL)
        # Wait until the watcher is in an attempt (an ssh of its own runs).
        deadline = time.monotonic() + 15
        while not [p for p in family(data["watcher"]["pid"]) if p != data["watcher"]["pid"]]:
            assert time.monotonic() < deadline, "the watcher started no reconnect"
            time.sleep(0.1)
        began = time.monotonic()
        # A new connection to the frozen listener hangs in the banner
        # exchange until ConnectTimeout: 2 s here, not the default 10.
        stop = rig.fab("tb.exit", env=rig.env(FABRIC_TB_CONNECT_TIMEOUT="2"), timeout=60)
        took = time.monotonic() - began
        assert "stopped the watcher" in stop.stdout, stop.stdout + stop.stderr
        assert not alive(data["watcher"]["pid"])
    # Once sshd answers again, the exit can reach TensorBoard: one more tb.exit if the first could not.
    if rig.states():
        assert "run tb.exit again" in stop.stderr, stop.stderr
        assert rig.fab("tb.exit").returncode == 0
    assert rig.states() == [] and wait_gone(data["remote_pid"], timeout=10)
    print(f"tb.exit during a reconnect took {took:.1f}s")


def test_reconnect_no_is_todays_session_with_nothing_resident_but_the_master(rig):
    result = rig.fab("tb.start", env=rig.env(FABRIC_TB_RECONNECT="no"))
    assert result.returncode == 0, result.stderr
    data = rig.only_state()
    assert data["relay"] is None and data["watcher"] is None and watchers(rig) == []
    assert data["forward"].startswith(f"127.0.0.1:{rig.local_port}:")
    resident = [cmd for _, cmd in ours(str(rig.control_dir))]
    assert len(resident) == 1 and " -M " in resident[0]
    refused = rig.fab("tb.start")  # the default asks for a watcher: a different session
    assert refused.returncode == 1 and "reconnect=False" in refused.stderr
    assert rig.fab("tb.exit").returncode == 0
