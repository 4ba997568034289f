"""The session record: its file round trip, older files, and damaged ones."""

import json

import pytest

from tensorboard_remote import record
from tensorboard_remote.errors import TbError
from tensorboard_remote.record import SCHEMA, JobRef, Record
from tensorboard_remote.sshargv import Target
from tensorboard_remote.state import Paths

LOGIN = Target("login", user="alice", port=2222, ssh_config="/cfg", identities=("/k",), connect_timeout=7)


def sample(**changes) -> Record:
    values = dict(
        sid="0123456789abcdef", target=LOGIN, serve="tcp", logdir="./runs", remote_dir="~/.tbr",
        socket="/c/tb-abc", started_at=1700000000.5, requested={"logdir": "./runs", "local_port": 6006},
        token="tok3n-abcdefgh", local_port=6007, master_pid=11, remote_pid=22,
        forward="127.0.0.1:6007:10.0.0.3:4444", endpoint="tcp 4444", isolation="off",
        job=JobRef(spec="train", id="12", node="cn1", addr="10.0.0.3", via="srun"),
    )
    values.update(changes)
    return Record(**values)


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(tmp_path / "tb-abc")


def test_a_record_survives_its_file_unchanged(paths):
    rec = sample()
    record.save(paths, rec)
    assert record.load(paths) == rec
    assert json.loads(paths.state.read_text())["schema"] == SCHEMA
    assert oct(paths.state.stat().st_mode & 0o777) == "0o600"


def test_the_url_and_run_directory_are_derived_not_stored(paths):
    rec = sample()
    assert rec.url == "http://127.0.0.1:6007/tok3n-abcdefgh/"
    assert rec.rundir == '"$HOME"/.tbr/0123456789abcdef'
    assert sample(token=None).url == "http://127.0.0.1:6007/"
    assert sample(local_port=None).url is None
    record.save(paths, rec)
    stored = json.loads(paths.state.read_text())
    assert "url" not in stored and "rundir" not in stored


def test_a_file_of_the_previous_release_is_read_as_it_is(paths):
    old = sample().to_json()
    del old["schema"]
    old["url"] = "http://127.0.0.1:6007/tok3n-abcdefgh/"  # extra keys are ignored
    paths.state.write_text(json.dumps(old))
    assert record.load(paths) == sample()


def test_no_file_is_no_record(paths):
    assert record.load(paths) is None


def test_a_file_from_a_newer_version_says_so(paths):
    paths.state.write_text(json.dumps({**sample().to_json(), "schema": SCHEMA + 1}))
    with pytest.raises(TbError, match=f"schema {SCHEMA + 1}, newer than this tensorboard-remote reads"):
        record.load(paths)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda data: "[1, 2]", "not a JSON object"),
        (lambda data: json.dumps({k: v for k, v in data.items() if k != "sid"}), "sid"),
        (lambda data: json.dumps({**data, "target": "login"}), "TypeError"),
        (lambda data: json.dumps({**data, "local_port": "6006"}), "local_port is not an integer"),
        (lambda data: json.dumps({**data, "sid": "../../etc"}), "bad session id"),
        (lambda data: json.dumps({**data, "job": {"id": "12"}}), "KeyError"),
    ],
    ids=["not-an-object", "missing-key", "target-not-an-object", "port-a-string", "bad-sid", "partial-job"],
)
def test_a_damaged_file_is_a_one_line_error_naming_it(paths, damage, why):
    paths.state.write_text(damage(sample().to_json()))
    with pytest.raises(TbError) as error:
        record.load(paths)
    message = str(error.value)
    assert message.startswith(f"state file {paths.state} is damaged (") and why in message
    assert "\n" not in message


def test_a_file_that_is_not_json_is_a_clear_error(paths):
    paths.state.write_text("{not json")
    with pytest.raises(TbError, match=f"cannot read state file {paths.state}"):
        record.load(paths)


def test_every_record_in_a_directory_is_listed(tmp_path):
    for name in ("tb-b", "tb-a"):
        record.save(Paths(tmp_path / name), sample(socket=str(tmp_path / name)))
    (tmp_path / "tb-a.log").write_text("")
    assert [paths.socket.name for paths, _ in record.all_records(tmp_path)] == ["tb-a", "tb-b"]


def test_a_target_keeps_its_jump_host_and_takes_batch_per_call():
    node = Target("cn1", jump=LOGIN, jump_socket="/c/tb-abc", tag="job 12 via login")
    rec = sample(target=node)
    again = Record.from_json(json.loads(json.dumps(rec.to_json())), "x")
    assert again.target == node
    batch = again.target.with_batch(True)
    assert batch.batch and batch.jump is not None and batch.jump.batch
