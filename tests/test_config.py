"""Settings precedence through the real CLIs, and composition into another fabfile."""

from __future__ import annotations

import shutil

import pytest

from .conftest import BIN, REPO, http_json

CLIS = {
    # binary, env prefix, user config file in $HOME
    "invoke": ("invoke", "INVOKE", ".invoke.yaml"),
    "fab": ("fab", "FABRIC", ".fabric.yaml"),
}


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_a_flag_beats_env_which_beats_a_config_file_which_beats_defaults(rig, cli):
    binary, prefix, filename = CLIS[cli]
    (rig.home / filename).write_text("tb:\n  local_port: from-file\n")
    env = rig.env()
    del env[f"{prefix}_TB_LOCAL_PORT"]
    argv = [str(BIN / binary)] + (["-H", "sandbox"] if cli == "fab" else []) + ["tb.start", "--host", "sandbox"]

    def error(extra_env: dict, *flags: str) -> str:
        result = rig.run(argv + list(flags), env={**env, **extra_env})
        assert result.returncode == 1, result.stdout + result.stderr
        return result.stderr.strip()

    assert error({}) == "tensorboard-remote: local_port must be an integer from 1 to 65535, got 'from-file'"
    assert error({f"{prefix}_TB_LOCAL_PORT": "from-env"}).endswith("got 'from-env'")
    assert error({f"{prefix}_TB_LOCAL_PORT": "from-env"}, "--local-port", "from-flag").endswith("got 'from-flag'")

    # And a valid value from the file is the one a real start uses.
    (rig.home / filename).write_text(f"tb:\n  local_port: {rig.local_port}\n  ssh_config: {rig.ssh_config}\n")
    result = rig.run(argv, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ready at http://127.0.0.1:{rig.local_port}/" in result.stdout


def test_a_composed_fabfile_gets_tb_tasks_and_its_own_config_wins(rig, tmp_path):
    project = tmp_path / "experiment"
    project.mkdir()
    shutil.copy(REPO / "tests" / "composed" / "fabfile.py", project / "fabfile.py")
    # The composer's project config sets the logdir; our defaults and the
    # environment supply the rest.
    (project / "fabric.yaml").write_text(f"tb:\n  logdir: {rig.logdir}\n")
    env = rig.env()
    del env["FABRIC_TB_LOGDIR"]

    listing = rig.run([str(BIN / "fab"), "--list"], cwd=project, env=env)
    assert listing.returncode == 0
    names = listing.stdout.split()
    assert {"train", "tb.start", "tb.check", "tb.exit"} <= set(names)

    train = rig.fab("train", cwd=project, env=env)
    assert train.returncode == 0 and "training on 127.0.0.1" in train.stdout

    start = rig.fab("train", "--watch", cwd=project, env=env)
    assert start.returncode == 0, start.stdout + start.stderr
    assert "TensorBoard ready at" in start.stdout
    again = rig.fab("tb.start", cwd=project, env=env)
    assert "reusing the tunnel" in again.stdout
    assert http_json(rig.url + "data/logdir") == {"logdir": str(rig.logdir)}
    check = rig.fab("tb.check", cwd=project, env=env)
    assert check.returncode == 0 and f"logdir={rig.logdir}" in check.stdout
    assert rig.fab("tb.exit", cwd=project, env=env).returncode == 0


def test_a_composers_single_tb_key_keeps_our_other_defaults_in_the_task():
    from invoke import Collection, Config

    from tensorboard_remote import tb
    from tensorboard_remote.settings import settings

    ns = Collection(tb)
    ns.configure({"tb": {"local_port": 16016}})
    # What invoke hands tb.start: the composer's tb section replaces ours whole.
    seen = ns.configuration("tb.start")
    assert seen["tb"] == {"local_port": 16016}
    resolved = settings(Config(overrides=seen))
    assert resolved.local_port == 16016
    assert resolved.remote_port == 6008 and resolved.logdir == "./logdir"
