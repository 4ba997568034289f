"""The watcher's decisions, one step at a time: probe, then repair with
tb.start's own code (here a stand-in), and which phase each outcome leaves."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from tensorboard_remote import record, watcher
from tensorboard_remote.errors import HostKeyRefused, JobEnded, LoginNeeded, TbError
from tensorboard_remote.health import Probe
from tensorboard_remote.record import Record, WatcherRef
from tensorboard_remote.settings import settings as resolve_settings
from tensorboard_remote.sshargv import Target
from tensorboard_remote.state import Paths


class World:
    def __init__(self, tmp_path, monkeypatch):
        self.paths = Paths(tmp_path / "tb-abc")
        rec = Record(
            sid="0123456789abcdef", target=Target("gpu1"), serve="unix", logdir="runs", remote_dir="/r",
            socket=str(self.paths.socket), started_at=time.time(), token="tok", local_port=6100,
            forward=f"{self.paths.relay}:/r/s", endpoint="unix /r/s", relay=str(self.paths.relay),
            watcher=WatcherRef(os.getpid(), "now"),
        )
        record.save(self.paths, rec)
        self.rec = rec
        self.answers = ["ok"]
        self.begun = []
        self.repair = None  # what targets.begin does: an exception, or None
        monkeypatch.setattr(watcher.health, "probe", self._probe)
        monkeypatch.setattr(watcher.targets, "begin", self._begin)
        settings = resolve_settings({}, control_dir=str(tmp_path))
        spec = {"label": "gpu1", "target": Target("gpu1").to_dict(), "job": None, "settings": dataclasses.asdict(settings)}
        self.watcher = watcher.Watcher(self.paths, spec)

    def _probe(self, url, timeout=3.0, via=None):
        assert via == str(self.paths.relay)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Probe(answer == "ok", answer)

    def _begin(self, shell, target, settings, report, job):
        assert target.batch, "a watcher never prompts"
        self.begun.append(target)
        if self.repair is not None:
            raise self.repair
        self.answers = ["ok"]

    @property
    def phase(self) -> str:
        return self.watcher.state.phase


@pytest.fixture
def world(tmp_path, monkeypatch):
    return World(tmp_path, monkeypatch)


def test_before_the_first_good_probe_the_watcher_repairs_nothing(world):
    world.answers = ["timed out"]
    world.watcher.step()
    assert world.phase == "starting" and world.begun == []


def test_a_lost_session_is_repaired_with_tb_starts_code_and_counted(world):
    world.watcher.step()
    assert world.phase == "serving" and world.watcher.state.reconnects == 0
    world.answers = ["Connection refused"]
    world.watcher.step()
    assert len(world.begun) == 1
    assert world.phase == "serving" and world.watcher.state.reconnects == 1
    assert world.watcher.state.last_outage is not None and world.watcher.state.outage_since is None


def test_a_failed_attempt_stays_reconnecting_with_its_reason_and_counts_attempts(world):
    world.watcher.step()
    world.answers = ["Connection refused"]
    world.repair = TbError("cannot connect to gpu1: connect to host gpu1 port 22: Network is unreachable")
    world.watcher.step()
    world.watcher.step()
    state = world.watcher.state
    assert world.phase == "reconnecting" and state.attempt == 2
    assert state.error.endswith("Network is unreachable")
    assert "reconnecting to gpu1 (attempt 2, link lost" in world.watcher.outage().headline


@pytest.mark.parametrize(
    "error, phase",
    [
        (LoginNeeded("cannot connect to gpu1: alice@gpu1: Permission denied (publickey,password)."), "needs-login"),
        (HostKeyRefused("cannot connect to gpu1: Host key verification failed."), "host-key-refused"),
        (JobEnded("job 12 is not in Slurm's queue on login: it has ended or never existed"), "job-ended"),
    ],
)
def test_what_needs_a_person_or_is_over_stops_the_retries(world, error, phase):
    world.watcher.step()
    world.answers = ["Connection refused"]
    world.repair = error
    world.watcher.step()
    assert world.phase == phase
    world.watcher.step()
    assert len(world.begun) == 1, "no second attempt: it waits for tb.start (or tb.exit)"
    # tb.start logs in (visibly) and the forward serves again: the next probe sees it.
    world.answers = ["ok"]
    world.watcher.step()
    assert world.phase == "serving" and world.watcher.state.reconnects == 1


def test_a_session_whose_record_is_gone_ends_its_watcher(world):
    world.watcher.step()
    world.paths.state.unlink()
    world.watcher.step()
    assert world.watcher.stopping


def test_a_record_that_names_another_watcher_ends_this_one(world):
    record.save(world.paths, dataclasses.replace(world.rec, watcher=WatcherRef(1, "other")))
    world.watcher.step()
    assert world.watcher.stopping


def test_the_watcher_process_imports_neither_invoke_nor_the_tasks():
    """What ``python -m tensorboard_remote.watcher`` loads: the package's
    tasks and invoke were half of its start-up CPU, per session."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tensorboard_remote.watcher\n"
         "print(sorted(m for m in sys.modules if m.split('.')[0] == 'invoke' or m == 'tensorboard_remote.tb'))"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert loaded.strip() == "[]"


def test_the_package_still_gives_invoke_its_namespace_and_the_task_module():
    import tensorboard_remote
    from invoke import Collection

    assert {"tb.start", "tb.exit", "tb.check"} <= set(Collection.from_module(tensorboard_remote).task_names)
    from tensorboard_remote import ns, tb

    assert tb.__name__ == "tensorboard_remote.tb" and "start" in ns.collections["tb"].tasks
