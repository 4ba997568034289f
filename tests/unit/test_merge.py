"""A merged view's decisions: its identity, its record, its words, its settings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tensorboard_remote import cli, merge
from tensorboard_remote.errors import TbError
from tensorboard_remote.record import WatcherRef
from tensorboard_remote.settings import DEFAULTS, merge_mapping, settings
from tensorboard_remote.sshargv import Target


def wanted(*items: tuple[str, str]) -> list[merge.Wanted]:
    return [merge.Wanted(Target(host), logdir) for host, logdir in items]


def test_the_same_hosts_and_logdirs_are_the_same_session_in_any_order():
    a = merge.session_id(wanted(("gpu1", "~/runs"), ("gpu2", "/scratch/runs")), single=False)
    b = merge.session_id(wanted(("gpu2", "/scratch/runs"), ("gpu1", "~/runs")), single=False)
    assert a == b
    assert merge.session_id(wanted(("gpu1", "~/other"), ("gpu2", "/scratch/runs")), single=False) != a
    assert merge.session_id(wanted(("gpu1", "~/runs")), single=True) != merge.session_id(wanted(("gpu1", "~/runs")), single=False)
    # Overlapping hosts are another session (their own masters, mirror, port).
    assert merge.session_id(wanted(("gpu2", "/scratch/runs"), ("gpu3", "x")), single=False) != a


def test_a_job_member_is_named_by_its_login_host_and_job():
    one = merge.Wanted(Target("login1"), "~/exp", job="123")
    assert one.label == "login1/123"
    assert merge.session_id([one], single=False) != merge.session_id([merge.Wanted(Target("login1"), "~/exp")], single=False)


def record(tmp_path: Path, **changes) -> merge.MergeRecord:
    members = (
        merge.Member("me@gpu1:2222", Target("gpu1", user="me", port=2222), "~/runs", str(tmp_path / "tb-a-m1"), method="rsync"),
        merge.Member("login1-job7", Target("login1"), "~/exp", str(tmp_path / "tb-b-m1"), method="stream", job="7", asked="login1/7"),
    )
    values = dict(
        sid="0123456789abcdef", members=members, mirror=str(tmp_path / "mirror" / "merge-0123456789abcdef"), single=False,
        control_dir=str(tmp_path), started_at=time.time(), token="T" * 24, local_port=6006, tb_pid=42,
        endpoint=f"unix {tmp_path}/0123456789abcdef/tb.sock", isolation="netns", watcher=WatcherRef(7, "1@boot"),
    )
    values.update(changes)
    return merge.MergeRecord(**values)


def test_the_record_round_trips_through_its_file(tmp_path):
    rec = record(tmp_path)
    paths = merge.paths_of(tmp_path, rec.sid)
    merge.save(paths, rec)
    assert merge.load(paths) == rec
    assert json.loads(paths.state.read_text())["kind"] == "merge"
    assert rec.url == f"http://127.0.0.1:6006/{'T' * 24}/"
    assert rec.socket_path == f"{tmp_path}/0123456789abcdef/tb.sock"
    assert rec.logdir == rec.mirror
    assert rec.label == "merged view of me@gpu1:2222, login1-job7"


def test_a_single_host_reads_its_own_folder_and_keeps_run_names(tmp_path):
    rec = record(tmp_path, single=True, members=record(tmp_path).members[:1])
    assert rec.logdir == str(Path(rec.mirror) / "me@gpu1:2222")
    assert rec.label == "me@gpu1:2222 (TensorBoard here)"


@pytest.mark.parametrize("data", ["[]", '{"kind": "session"}', '{"kind": "merge", "schema": 99}', '{"kind": "merge", "schema": 1}'])
def test_a_record_that_is_not_one_is_a_one_line_error(tmp_path, data):
    paths = merge.paths_of(tmp_path, "0123456789abcdef")
    paths.state.write_text(data)
    with pytest.raises(TbError) as caught:
        merge.load(paths)
    assert str(paths.state) in str(caught.value) and "\n" not in str(caught.value)


def test_find_matches_the_hosts_as_asked_whatever_their_order(tmp_path):
    rec = record(tmp_path)
    merge.save(merge.paths_of(tmp_path, rec.sid), rec)
    found = merge.find(None, tmp_path, ["login1/7", "me@gpu1:2222"], batch=True)
    assert len(found) == 1
    assert merge.find(None, tmp_path, ["me@gpu1:2222"], batch=True) == []
    assert merge.find(None, tmp_path, ["login1/7", "me@gpu1:2222"], batch=True, single=True) == []


def member() -> merge.Member:
    return merge.Member("gpu1", Target("gpu1"), "~/runs", "/cm/tb-x", method="rsync")


def test_each_hosts_words_in_check():
    now = time.time()
    assert merge.describe({"health": "ok", "last_ok": now - 3, "method": "rsync"}, member()) == "synced 3s ago via rsync"
    stale = merge.describe({"health": "stale", "last_ok": now - 40, "error": "cannot connect to gpu1: refused"}, member())
    assert stale == "stale, last synced 40s ago: cannot connect to gpu1: refused"
    assert merge.describe({"health": "stale", "last_ok": None, "error": "x"}, member()).startswith("stale, last synced never")
    assert "no logdir ~/runs there yet" in merge.describe({"health": "waiting", "last_ok": now}, member())
    assert merge.describe({}, member()) == "not synced yet"
    # What the host could not give is said; the host is synced all the same.
    one = {"health": "ok", "last_ok": now - 3, "method": "rsync", "skipped": ["a/events.out.tfevents.1: a symlink to nothing"]}
    assert merge.describe(one, member()) == "synced 3s ago via rsync, but not a/events.out.tfevents.1: a symlink to nothing"
    two = {**one, "skipped": [*one["skipped"], "b: Permission denied"]}
    assert merge.describe(two, member()).endswith("a symlink to nothing and 1 more")


def test_list_counts_what_a_host_could_not_give():
    from tensorboard_remote import listing

    row = {"kind": "merge", "healthy": True, "status": "ok", "health": "ok", "hosts": {
        "gpu1": {"health": "ok", "age": 2.0, "method": "rsync", "skipped": ["x: Permission denied", "y: Permission denied"]},
        "gpu2": {"health": "ok", "age": 1.0, "method": "stream", "skipped": []},
    }}
    assert listing._health(row) == "ok: gpu1=ok (2s ago, rsync, 2 not synced) gpu2=ok (1s ago, stream)"


class Config(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def test_the_merge_setting_is_a_mapping_or_host_equals_logdir(monkeypatch):
    monkeypatch.delenv("INVOKE_TB_MERGE", raising=False)
    assert merge_mapping(Config(tb={"merge": {"gpu1": "~/a", "gpu2": {"logdir": "/b"}}})) == {"gpu1": "~/a", "gpu2": "/b"}
    assert merge_mapping(Config(tb={})) == {}
    monkeypatch.setenv("INVOKE_TB_MERGE", "gpu1=~/a, login1/7=~/exp")
    assert merge_mapping(Config(tb={"merge": {}})) == {"gpu1": "~/a", "login1/7": "~/exp"}
    monkeypatch.setenv("INVOKE_TB_MERGE", "gpu1")
    with pytest.raises(TbError):
        merge_mapping(Config(tb={}))
    with pytest.raises(TbError):
        merge_mapping(Config(tb={"merge": ["gpu1"]}))


def test_the_new_settings_are_validated_in_one_line():
    config = Config(tb=dict(DEFAULTS))
    good = settings(config)
    assert good.run_on == "remote" and good.rsync == "auto" and good.sync_every == 5
    assert good.mirror_patterns == "events.out.tfevents.*,plugins/**,projector_config.pbtxt"
    for key, bad in (("run_on", "cloud"), ("rsync", "maybe"), ("sync_every", "0"), ("mirror_patterns", "/etc"), ("mirror_dir", "")):
        with pytest.raises(TbError) as caught:
            settings(config, **{key: bad})
        assert "\n" not in str(caught.value)


def test_the_seed_command_takes_several_hosts_separated_by_commas():
    assert cli.translate(["tensorboard-remote", "gpu1,gpu2", "start", "--merge"]) == ["tensorboard-remote", "start", "--hosts", "gpu1,gpu2", "--merge"]
    assert cli.translate(["tensorboard-remote", "gpu1", "check"]) == ["tensorboard-remote", "check", "--host", "gpu1"]


def test_a_local_tensorboard_is_refused_in_one_line_where_it_cannot_run(monkeypatch):
    from tensorboard_remote import local

    with pytest.raises(TbError) as caught:
        local.require_tensorboard("darwin")
    assert "Linux" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TbError) as caught:
        local.require_tensorboard("linux")
    assert "pip install 'tensorboard-remote[local]'" in str(caught.value)
