"""The namespace's shape, the console command's usage errors, in-process Fab."""

import inspect

import pytest
from fabric.executor import Executor
from fabric.main import Fab
from fabric.config import Config as FabricConfig
from invoke import Collection

import tensorboard_remote
from tensorboard_remote import cli, targets, tb


def test_the_collection_is_named_tb_with_its_six_tasks():
    coll = Collection.from_module(tb)
    assert coll.name == "tb"
    assert sorted(coll.task_names) == ["check", "exit", "list", "logs", "open", "start"]
    assert set(coll.configuration()["tb"]) >= {
        "host", "logdir", "remote_port", "local_port", "control_dir",
        "ssh_config", "tensorboard_cmd", "activate",
    }


def test_the_repo_namespace_nests_the_collection_under_tb():
    assert sorted(tensorboard_remote.ns.task_names) == ["tb.check", "tb.exit", "tb.list", "tb.logs", "tb.open", "tb.start"]


def test_every_flag_has_help():
    for name in ("start", "check", "exit", "logs", "open", "list"):
        task = Collection.from_module(tb)[name]
        params = list(inspect.signature(task.body).parameters)[1:]
        helped = {k.replace("-", "_") for k in task.help}
        assert set(params) <= helped, (name, set(params) - helped)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tensorboard-remote"], "a host and an action are required"),
        (["tensorboard-remote", "hostA"], "a host and an action are required"),
        (["tensorboard-remote", "hostA", "stop"], "unknown action 'stop'"),
        (["tensorboard-remote", "hostA", "demo"], "unknown action 'demo'"),
    ],
)
def test_the_console_command_refuses_a_missing_host_or_unknown_action(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: tensorboard-remote HOST" in err


def test_the_console_command_maps_host_and_action_onto_the_task():
    assert cli.translate(["x", "hostA", "start", "--logdir", "runs"]) == [
        "x", "start", "--host", "hostA", "--logdir", "runs",
    ]


def test_a_bad_host_is_a_one_line_error_before_any_ssh_runs(capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["tensorboard-remote", "-oProxyCommand=touch /tmp/x", "check", "--control-dir", str(tmp_path)])
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorboard-remote: refusing host") and "\n" not in err


def fab(namespace):
    return Fab(name="Fabric", version="3", namespace=namespace, executor_class=Executor, config_class=FabricConfig)


def test_fab_in_process_check_with_nothing_open_fails_clearly(short_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FABRIC_TB_CONTROL_DIR", str(short_dir))
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host nowhere\n  HostName 127.0.0.1\n")
    with pytest.raises(SystemExit) as stopped:
        fab(Collection(tb)).run(["fab", "-H", "nowhere", "-S", str(cfg), "tb.check"])
    assert stopped.value.code == 1
    assert "nowhere: no tunnel (start one with tb.start)" in capsys.readouterr().out


def test_a_control_socket_path_too_long_for_the_os_is_refused(tmp_path, capsys):
    deep = tmp_path / ("d" * 60)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["tensorboard-remote", "hostA", "check", "--control-dir", str(deep)])
    assert stopped.value.code == 1
    assert "too long for a Unix socket" in capsys.readouterr().err


def test_loading_the_collection_imports_neither_fabric_paramiko_nor_rich():
    import subprocess
    import sys

    code = (
        "import sys, tensorboard_remote, tensorboard_remote.cli\n"
        "print(sorted(m for m in ('fabric', 'paramiko', 'rich', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "args, message",
    [
        (["start", "--job", "12", "--url-token", "no"], "--job needs url_token=yes"),
        (["start", "--job", "12", "--hosts", "a,b"], "--job and --hosts do not go together"),
        (["start", "--job", "12", "--slurm-via", "rsh"], "slurm_via must be one of srun, ssh, got 'rsh'"),
        (["start", "--job", "$(reboot)"], "refusing job '$(reboot)'"),
        (["check", "--job", "12"], "--job needs the login host"),
        (["start", "--job", "12", "--follow"], "--follow follows a job by name"),
        (["start", "--job", "train", "--follow", "--reconnect", "no"], "--follow needs reconnect=yes"),
    ],
)
def test_bad_job_options_are_one_line_errors_before_any_ssh_runs(args, message, short_dir, capsys, monkeypatch):
    monkeypatch.setenv("INVOKE_TB_CONTROL_DIR", str(short_dir))
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail(f"ran {a}"))
    host = [] if args[0] == "check" else ["--host", "login1"]
    with pytest.raises(SystemExit) as stopped:
        cli.program().run(["tensorboard-remote", args[0], *host, *args[1:]])
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tensorboard-remote: ") and message in err and "\n" not in err


def test_only_key_files_the_user_gave_reach_ssh_not_those_fabric_collected_from_ssh_config(tmp_path):
    from fabric import Config, Connection
    from paramiko import SSHConfig

    text = "".join(f"Host h{i}\n  IdentityFile /keys/h{i}\n" for i in range(7))
    config = Config(ssh_config=SSHConfig.from_text(text), overrides={"connect_kwargs": {"key_filename": ["/keys/given"]}})
    for i in range(7):
        Connection(f"h{i}", config=config)
    # Fabric 3.2.3 piles every host's IdentityFile into the shared config...
    assert len(config.connect_kwargs["key_filename"]) > 7
    # ...we pass only the user's own (OpenSSH reads ssh_config itself).
    assert targets.given_identities(config) == ("/keys/given",)
