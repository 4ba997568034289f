"""Riding the user's own master: which master a session rides, and that
theirs is never closed (``Host.ride``/``follow``/``release``, the plan's
``borrow`` row), against a fake shell that knows two control sockets."""

from __future__ import annotations

import re

import pytest

from tensorboard_remote import ports, record
from tensorboard_remote.shell import Outcome

from .fakes import hangs, reply
from .test_session import START, STARTED, STOP, World


class TwoMasters(World):
    """World with the user's own master at ``user/cm-h`` beside ours."""

    def __init__(self, tmp_path, run=None, *, theirs_up=True, **kw):
        super().__init__(tmp_path, run, **kw)
        self.theirs = tmp_path / "user" / "cm-h"
        self.theirs.parent.mkdir()
        if theirs_up:
            self.theirs.write_text("")
        self.host.user_socket = self.theirs
        self.shell.patterns.insert(0, (re.compile(re.escape(str(self.theirs)) + r" -O check"), self._check_theirs))
        self.shell.patterns.insert(0, (re.compile(re.escape(str(self.theirs)) + r" -O exit"), self._exit_theirs))

    def _check_theirs(self, argv, stdin):
        if self.theirs.exists():
            return Outcome(0, "", "Master running (pid=77)\n")
        return Outcome(255, "", "Control socket connect: No such file or directory\n")

    def _exit_theirs(self, argv, stdin):
        raise AssertionError("the user's master was asked to exit")

    def on_theirs(self, pattern: str) -> list[str]:
        return self.shell.ran(re.escape(f"-S {self.theirs}") + ".*" + pattern)


@pytest.fixture(autouse=True)
def free_ports(monkeypatch):
    monkeypatch.setattr(ports, "CLAIMS", ports.Claims(is_free=lambda port: True))


def test_a_new_session_rides_the_users_live_master_with_no_login_and_records_it(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED})
    started = world.start()
    rec = record.load(world.paths)
    assert world.shell.ran(r" -M ") == []  # no login of ours
    assert rec.borrowed == str(world.theirs) and rec.socket == str(world.paths.socket)
    assert world.on_theirs(r"-O forward") and world.on_theirs(r"sh -s")
    assert world.said()[0] == f"h: riding your ssh master (pid 77, {world.theirs}): no new login"
    assert started.url == rec.url


def test_exit_cancels_only_our_forward_on_the_users_master_and_leaves_it_up(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED, STOP: reply("tbr stopped 22")})
    world.start()
    forward = record.load(world.paths).forward
    world.session.stop(lambda line: world.out.write(line + "\n"))
    assert world.on_theirs(r"-O cancel -L " + re.escape(forward))
    assert world.theirs.exists() and record.load(world.paths) is None
    assert world.said()[-1].endswith("removed our forward from your ssh master (pid 77), which stays up")


def test_when_the_users_master_is_gone_the_session_falls_back_to_a_master_of_its_own(tmp_path):
    world = TwoMasters(tmp_path, {START: reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22")})
    world.start()
    world.theirs.unlink()  # they closed it (or it died)
    world.start()
    rec = record.load(world.paths)
    assert len(world.shell.ran(r" -M ")) == 1 and rec.borrowed is None
    assert rec.forward and world.shell.ran(re.escape(f"-S {world.paths.socket}") + r".*-O forward")


def test_a_session_on_our_own_live_master_keeps_it_even_when_the_user_opens_theirs(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED}, theirs_up=False)
    world.start()
    assert record.load(world.paths).borrowed is None
    world.theirs.write_text("")
    started = world.start()
    assert started.reused and record.load(world.paths).borrowed is None
    assert world.on_theirs(r"-O forward") == []


def test_a_hung_link_on_the_users_master_drops_only_our_forward_and_opens_ours(tmp_path):
    world = TwoMasters(tmp_path, {START: reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22"),
                                  r"-W 127\.0\.0\.1:1": hangs("ssh -W")})
    world.start()
    forward = record.load(world.paths).forward
    world.probes = ["timed out", "ok"]  # the laptop slept: their master's link is dead
    world.start()
    assert world.on_theirs(r"-O cancel -L " + re.escape(forward))
    assert len(world.shell.ran(r" -M ")) == 1 and record.load(world.paths).borrowed is None
    assert world.theirs.exists()


def test_user_master_off_means_no_socket_of_theirs_is_ever_asked(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED})
    world.host.user_socket = None
    world.start()
    assert world.on_theirs(".") == [] and len(world.shell.ran(r" -M ")) == 1


def test_check_reports_the_users_master_as_theirs_and_its_loss_as_such(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED})
    world.start()
    seen = world.session.check()
    assert seen.ok and "ssh-master=77(yours)" in seen.detail
    world.theirs.unlink()
    seen = world.session.check()
    assert not seen.ok and f"your ssh master ({world.theirs}) that the session rode is gone" in seen.detail


def test_a_users_master_that_drops_our_forwards_connections_is_left_for_a_master_of_ours(tmp_path):
    status = reply("tbr-info endpoint unix /r/0123456789abcdef/tb.sock", "tbr running 22")
    world = TwoMasters(tmp_path, {START: STARTED, r"sh -s'\n": status},
                       probes=("Remote end closed connection without response", "[Errno 104] Connection reset by peer", "ok"))
    world.start()
    rec = record.load(world.paths)
    assert "h: your ssh master closes the connections of our forward: opening a master of our own" in world.said()
    assert len(world.shell.ran(r" -M ")) == 1 and rec.borrowed is None
    assert world.on_theirs(r"-O cancel") and world.theirs.exists()


def test_one_refused_connection_is_not_yet_a_reason_to_leave_their_master(tmp_path):
    world = TwoMasters(tmp_path, {START: STARTED}, probes=("[Errno 111] Connection refused", "ok"))
    world.start()
    assert world.shell.ran(r" -M ") == [] and record.load(world.paths).borrowed == str(world.theirs)
