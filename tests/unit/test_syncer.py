"""The syncer's repair decisions under a stop: a round cut short by tb.exit
never reads as a lost master, so no live master's socket is cleared (the
master would then outlive tb.exit: found in CI, the stream host's master
left behind)."""

from __future__ import annotations

import dataclasses

import pytest

from tensorboard_remote import merge, mirror, syncer
from tensorboard_remote.errors import Cancelled
from tensorboard_remote.host import Host
from tensorboard_remote.settings import DEFAULTS, Settings
from tensorboard_remote.state import Paths

from .fakes import FakeShell
from .test_merge import record


def _host(tmp_path, member: merge.Member, shell: FakeShell) -> Host:
    host = Host(shell, member.target, Paths(tmp_path / member.socket.rsplit("/", 1)[1]))
    host.paths.socket.write_text("")  # stands for the live master's socket
    return host


def test_a_check_cut_short_by_a_stop_raises_and_leaves_the_socket(tmp_path):
    rec = record(tmp_path)
    shell = FakeShell({r"-O check": Cancelled("cancelled: the session is being stopped")})
    host = _host(tmp_path, rec.members[1], shell)
    with pytest.raises(Cancelled):
        host.master()
    assert host.paths.socket.exists()


def test_a_round_failing_as_the_syncer_stops_is_a_cancel_and_repairs_nothing(tmp_path, monkeypatch):
    rec = record(tmp_path)
    paths = merge.paths_of(tmp_path, rec.sid)
    merge.save(paths, rec)
    known = {f.name for f in dataclasses.fields(Settings)}
    the = syncer.Syncer(paths, {"settings": {k: v for k, v in DEFAULTS.items() if k in known}})
    shell = FakeShell({})  # any ssh call (a check, a reopen) fails the test
    member = rec.members[1]
    host = _host(tmp_path, member, shell)

    def cut_short(*_args, **_kwargs):
        the.stop()  # tb.exit arrives while the stream runs ...
        raise mirror.SyncFailed("sync from login1-job7 was cut short (the connection ended)")  # ... and kills it

    monkeypatch.setattr(mirror, "sync", cut_short)
    with pytest.raises(Cancelled):
        the.round(host, member, tmp_path / "dest")
    assert shell.calls == []
    assert host.paths.socket.exists()
    assert the.hosts[member.label]["health"] == "starting"  # not marked stale on the way out
