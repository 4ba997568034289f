"""Fixtures for link faults (registered as a plugin in conftest.py): a
sandbox sshd inside the network namespace of ``tests/links.py``, the
``link`` to it that a test cuts, and a Rig on that sandbox.

The sshd, and what it starts (TensorBoard, on its Unix socket), run inside
the namespace; ssh, our masters and the forwards run here and reach it at
``links.NS_ADDR`` through the veth pair.
"""

from __future__ import annotations

import pytest

from tensorboard_remote.sandbox import Sandbox

from .conftest import Rig, rig_in
from .links import NS_ADDR, Link, Namespace


@pytest.fixture(scope="session")
def link_namespace(nothing_left_behind) -> Namespace:
    """The namespace and its veth pair, for the whole run (after a crashed
    run, its leftovers of the same names are removed first)."""
    namespace = Namespace().create()
    yield namespace
    namespace.remove()


@pytest.fixture(scope="session")
def linked_sandbox(base, link_namespace) -> Sandbox:
    """An sshd at ``NS_ADDR``, inside the namespace; ``ssh -F
    linked_sandbox.ssh_config linked`` reaches it."""
    box = Sandbox(base / "sshd-linked", alias="linked", address=NS_ADDR, wrap=link_namespace.wrap)
    box.create().start()
    yield box
    box.stop()


@pytest.fixture
def link(link_namespace, linked_sandbox) -> Link:
    """The link to ``linked_sandbox``: up at the start of the test, and up
    again after it, whatever the test did."""
    link_namespace.link.up()
    yield link_namespace.link
    link_namespace.link.up()


@pytest.fixture
def linked_rig(linked_sandbox, logdir, tmp_path, short_dir) -> Rig:
    """A Rig (ports, directories, CLI runners) whose host is ``linked_sandbox``."""
    with rig_in(linked_sandbox, logdir, tmp_path, short_dir) as world:
        yield world
