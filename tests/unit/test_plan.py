"""The start decision, for every combination of what tb.start can see."""

import itertools

import pytest

from tensorboard_remote.health import Answer
from tensorboard_remote.host import MasterState
from tensorboard_remote.record import Record
from tensorboard_remote.session import Board, Plan, Tunnel, plan
from tensorboard_remote.sshargv import Target

RECORDS = {
    "none": None,
    "forwarded": Record(sid="0123456789abcdef", target=Target("h"), serve="unix", logdir="l", remote_dir="r",
                        socket="/s", started_at=0.0, local_port=6006, forward="127.0.0.1:6006:/x/tb.sock"),
    "unforwarded": Record(sid="0123456789abcdef", target=Target("h"), serve="unix", logdir="l", remote_dir="r",
                          socket="/s", started_at=0.0),
}
ANY = object()

# The README's table, read top-down: the first row that matches decides.
# (master, record, probe, link) -> (tunnel, TensorBoard, keep the local port)
TABLE = [
    ((MasterState.STALE, ANY, ANY, ANY), (Tunnel.CLEAR, Board.ENSURE, False)),
    ((MasterState.NONE, ANY, ANY, ANY), (Tunnel.OPEN, Board.ENSURE, False)),
    ((MasterState.UP, "none", ANY, ANY), (Tunnel.REPLACE, Board.ENSURE, False)),
    ((MasterState.UP, ANY, Answer.PROVEN, ANY), (Tunnel.KEEP, Board.REUSE, True)),
    ((MasterState.UP, ANY, Answer.HUNG, False), (Tunnel.RECONNECT, Board.ENSURE, False)),
    ((MasterState.UP, ANY, Answer.HUNG, None), (Tunnel.RECONNECT, Board.ENSURE, False)),
    ((MasterState.UP, "forwarded", ANY, ANY), (Tunnel.KEEP, Board.ENSURE, True)),
    ((MasterState.UP, "unforwarded", ANY, ANY), (Tunnel.KEEP, Board.ENSURE, False)),
]


def expected(*seen):
    for pattern, outcome in TABLE:
        if all(want is ANY or want == got for want, got in zip(pattern, seen)):
            return Plan(*outcome)
    raise AssertionError(f"no row for {seen}")


@pytest.mark.parametrize(
    "master, rec, answer, link",
    list(itertools.product(MasterState, RECORDS, Answer, (None, True, False))),
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_the_start_plan_follows_the_decision_table(master, rec, answer, link):
    assert plan(master, RECORDS[rec], answer, link) == expected(master, rec, answer, link)


def test_only_a_master_that_is_kept_or_borrowed_is_not_opened_and_only_a_kept_one_keeps_its_forwards():
    for tunnel in Tunnel:
        assert Plan(tunnel, Board.ENSURE, False).opens is (tunnel not in (Tunnel.KEEP, Tunnel.BORROW))
        assert Plan(tunnel, Board.ENSURE, False).fresh is (tunnel is not Tunnel.KEEP)


@pytest.mark.parametrize("rec", RECORDS)
@pytest.mark.parametrize("answer", Answer)
def test_the_users_live_master_newly_ridden_is_borrowed_whatever_else_was_seen(rec, answer):
    assert plan(MasterState.UP, RECORDS[rec], answer, None, switched=True) == Plan(Tunnel.BORROW, Board.ENSURE, False)


@pytest.mark.parametrize("master", [MasterState.NONE, MasterState.STALE])
def test_a_users_master_that_is_not_up_is_never_borrowed(master):
    assert plan(master, RECORDS["forwarded"], Answer.UNPROVEN, None, switched=True).tunnel is not Tunnel.BORROW
