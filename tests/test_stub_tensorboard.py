"""The benchmark's stand-in TensorBoard (bench/stub_tensorboard.py): as the
``python`` setting, it makes a real session, started through the real
launcher and token guard, whose /data/logdir answers at once."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request

import pytest

from .conftest import REPO, http_json, tensorboards
from .procs import wait_gone
from .test_lifecycle import started


def _stub():
    spec = importlib.util.spec_from_file_location("stub_tensorboard", REPO / "bench" / "stub_tensorboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The ``python`` setting that runs the stub, as bench.py gets it.
STUB_PYTHON = _stub().python_setting()


def test_a_session_with_the_stub_answers_through_the_tunnel_and_exit_ends_it(rig):
    env = rig.env(INVOKE_TB_SSH_CONFIG=rig.ssh_config, INVOKE_TB_PYTHON=STUB_PYTHON)
    started(rig.cli("sandbox", "start", env=env), rig)
    [pid] = tensorboards(rig)
    assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}
    assert rig.only_state()["endpoint"].startswith("unix ")
    # Behind the real guard: without the token, 403.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{rig.local_port}/data/logdir", timeout=5)
    assert refused.value.code == 403
    stop = rig.cli("sandbox", "exit", env=env)
    assert stop.returncode == 0 and "stopped TensorBoard" in stop.stdout, stop.stdout + stop.stderr
    assert wait_gone(pid)
    assert rig.states() == []
