"""Local port picking: the default moves up, a port the user set is used or refused."""

import concurrent.futures
import socket

import pytest

from tensorboard_remote import ports
from tensorboard_remote.errors import TbError
from tensorboard_remote.settings import settings


def config(port=6006, explicit=False):
    import dataclasses

    return dataclasses.replace(settings({}, local_port=port), local_port_explicit=explicit)


def claims(busy=()):
    return ports.Claims(is_free=lambda port: port not in busy)


def test_a_free_wanted_port_is_taken_as_it_is():
    said = []
    assert claims().pick(config(), "h", said.append) == 6006
    assert said == []


def test_the_default_port_moves_up_past_busy_ones_and_says_so():
    said = []
    assert claims(busy={6006, 6007}).pick(config(), "h", said.append) == 6008
    assert said == ["h: local port 6006 is in use here; using 6008"]


def test_a_port_the_user_set_is_refused_when_another_program_holds_it():
    with pytest.raises(TbError, match="local port 7000 is already in use on this machine by another program"):
        claims(busy={7000}).pick(config(7000, explicit=True), "h", print)


def test_a_port_the_user_set_moves_up_when_our_own_tunnel_holds_it():
    said = []
    assert claims(busy={7000}).pick(config(7000, explicit=True), "b", said.append, ours=frozenset({7000})) == 7001
    assert said == ["b: local port 7000 is another tunnel of ours; using 7001"]


def test_hosts_started_at_once_never_get_the_same_port():
    picker = claims()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: picker.pick(config(), "h", lambda line: None), range(8)))
    assert sorted(got) == list(range(6006, 6014))


def test_no_free_port_in_the_range_is_a_clear_error():
    with pytest.raises(TbError, match=r"no free local port in 6006\.\.6105"):
        claims(busy=set(range(6006, 6200))).pick(config(), "h", print)


def test_the_real_check_sees_a_listener():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert not ports.free(held.getsockname()[1])
