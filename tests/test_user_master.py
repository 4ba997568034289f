"""Zero extra logins: the user keeps their own ssh master open all day
(``ControlMaster auto`` + ``ControlPersist`` in their ssh_config), and a
session rides it. Logins are counted in the real sshd's log."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import BIN
from .procs import ours
from .test_reconnect import fetch, serves, wait_serving


def logins(rig) -> int:
    """Logins the sandbox's sshd accepted so far (LogLevel VERBOSE)."""
    return rig.sandbox.log.read_text(errors="replace").count("Accepted publickey")


class UserMaster:
    """The user's ssh_config (the sandbox's plus a ControlMaster of their own)
    and their master, opened as they would: ``ssh -fN host``."""

    def __init__(self, rig, box=None) -> None:
        self.rig = rig
        self.box = box or rig.sandbox
        self.socket = Path(rig.control_dir).parent / f"u{rig.local_port}"
        self.config = Path(rig.root) / "user_ssh_config"
        self.config.write_text(
            Path(self.box.ssh_config).read_text()
            + f"  ControlMaster auto\n  ControlPath {self.socket}\n  ControlPersist yes\n"
        )

    def ssh(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.config), *args, self.box.alias], capture_output=True, text=True, timeout=30)

    def open(self) -> None:
        assert self.ssh("-fN").returncode == 0
        assert self.up()

    def up(self) -> bool:
        return self.ssh("-O", "check").returncode == 0

    def close(self) -> None:
        if self.socket.exists():
            self.ssh("-O", "exit")


@pytest.fixture
def user(rig):
    theirs = UserMaster(rig)
    theirs.open()
    yield theirs
    theirs.close()


def fab(rig, user, *args):
    """``fab`` with the user's own ssh_config."""
    return rig.run([str(BIN / "fab"), "-H", rig.host, "-S", str(user.config), *args])


def test_a_start_rides_the_users_open_master_with_zero_new_logins_and_exit_leaves_it_up(rig, user):
    before = logins(rig)
    started = fab(rig, user, "tb.start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "riding your ssh master" in started.stdout and str(user.socket) in started.stdout
    assert logins(rig) == before, "tb.start logged in although the user's master was up"
    assert serves(rig.url)
    assert rig.only_state()["borrowed"] == str(user.socket)
    check = fab(rig, user, "tb.check")
    assert check.returncode == 0 and "(yours)" in check.stdout, check.stdout + check.stderr
    assert "watcher=" in check.stdout and "serving" in check.stdout
    stopped = fab(rig, user, "tb.exit")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "which stays up" in stopped.stdout
    assert user.up(), "tb.exit closed the user's own master"
    assert logins(rig) == before
    assert rig.states() == [] and list(Path(rig.control_dir).glob("tb-*")) == []
    # Only the user's master is left of what ran: nothing of ours.
    assert [cmd for _, cmd in ours(str(rig.control_dir))] == []
    again = fab(rig, user, "tb.exit")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_when_the_users_master_closes_later_the_same_url_comes_back_on_one_login_of_ours(rig, user):
    started = fab(rig, user, "tb.start")
    assert started.returncode == 0, started.stdout + started.stderr
    url, before = rig.url, logins(rig)
    user.close()  # they close their master (or log out for the day)
    assert not user.up()
    wait_serving(url)  # the watcher moves to a master of ours, typed nothing
    assert logins(rig) == before + 1
    state = rig.only_state()
    assert state["borrowed"] is None and rig.url == url
    status, _, _ = fetch(url + "data/logdir")
    assert status == 200
    check = fab(rig, user, "tb.check")
    assert check.returncode == 0 and "(yours)" not in check.stdout, check.stdout
    assert "reconnects=1" in check.stdout
    stopped = fab(rig, user, "tb.exit")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "closed the tunnel" in stopped.stdout and rig.states() == []


def test_user_master_no_opens_a_master_of_ours_and_leaves_theirs_alone(rig, user):
    before = logins(rig)
    started = fab(rig, user, "tb.start", "--user-master", "no")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "opened the tunnel" in started.stdout and "riding" not in started.stdout
    assert logins(rig) == before + 1 and rig.only_state()["borrowed"] is None
    assert fab(rig, user, "tb.exit").returncode == 0
    assert user.up() and rig.states() == []


def test_without_a_watcher_the_session_rides_their_master_too_and_exit_cancels_the_port(rig, user):
    before = logins(rig)
    started = fab(rig, user, "tb.start", "--reconnect", "no")
    assert started.returncode == 0, started.stdout + started.stderr
    assert logins(rig) == before and serves(rig.url)
    url = rig.url
    assert fab(rig, user, "tb.exit").returncode == 0
    assert user.up() and not serves(url), "the local port still answers after tb.exit"
