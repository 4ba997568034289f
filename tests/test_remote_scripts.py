"""The remote sh scripts, run here with ``sh -s`` (no ssh): identity, quoting, ports."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tensorboard_remote import remote
from tensorboard_remote.settings import TbError

from .procs import alive, starttime, state, wait_gone

SID = "0123456789abcdef"


def sh(script: str) -> tuple[str, str]:
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=30).stdout
    reply = remote.parse_reply(out)
    assert reply, out
    return reply


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.fixture
def stub(tmp_path):
    """A fake Python for ``tensorboard_cmd="FAKE -m tensorboard.main"``: it
    records its arguments (launch.py and TensorBoard's flags) and idles."""
    args = tmp_path / "args"
    path = tmp_path / "python-fake"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args}\nexec sleep 60\n')
    path.chmod(0o755)
    return f"{path} -m tensorboard.main", args


def write_pidfile(rundir: Path, pid: int, start: str) -> None:
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "pid").write_text(f"{pid} {start} {os.getuid()} {boot_id()}\n")


def test_a_pid_file_pointing_at_a_reused_pid_is_never_signalled(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # Same pid, but a start time that is not the one we recorded.
        wrong = str(int(starttime(stranger.pid)) + 1)
        write_pidfile(tmp_path / SID, stranger.pid, wrong)
        rundir = remote.run_dir(str(tmp_path), SID)
        assert sh(remote.status_script(rundir)) == ("dead", str(stranger.pid))
        assert sh(remote.stop_script(rundir)) == ("gone", str(stranger.pid))
        assert stranger.poll() is None, "the unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_pid_from_another_boot_is_not_ours(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        rundir = tmp_path / SID
        rundir.mkdir()
        (rundir / "pid").write_text(f"{stranger.pid} {starttime(stranger.pid)} {os.getuid()} not-this-boot\n")
        assert sh(remote.stop_script(remote.run_dir(str(tmp_path), SID)))[0] == "gone"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_zombie_is_not_alive(tmp_path):
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while state(child.pid) != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    write_pidfile(tmp_path / SID, child.pid, starttime(child.pid))
    assert sh(remote.status_script(remote.run_dir(str(tmp_path), SID)))[0] == "dead"
    child.wait()


def test_start_then_stop_with_verified_identity(tmp_path, stub):
    path, args = stub
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    word, pid = sh(remote.start_script(rundir, "logs", path, ""))
    assert word == "started"
    pid = int(pid)
    assert alive(pid)
    assert sh(remote.start_script(rundir, "logs", path, "")) == ("running", str(pid))
    assert sh(remote.stop_script(rundir)) == ("stopped", str(pid))
    assert wait_gone(pid)
    assert not (tmp_path / "runs" / SID).exists()


def test_hostile_logdir_and_activation_reach_the_remote_literally(tmp_path, stub):
    path, args = stub
    canary = tmp_path / "canary"
    logdir = f"my runs/'quote\"$(touch {canary})`touch {canary}`;touch {canary}\nnext"
    rundir = remote.run_dir(str(tmp_path / "runs"), SID)
    activate = f"X='$(touch {canary})'"
    word, pid = sh(remote.start_script(rundir, logdir, path, activate, token="t0ken-abcdef"))
    assert word == "started"
    deadline = time.monotonic() + 5
    while not args.exists() or not args.read_text().endswith("next\n"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    words = args.read_text().split("\n")
    assert words[0].endswith("/launch.py")
    assert words[-4] == "--logdir"
    assert "\n".join(words[-3:-1]) == logdir
    # The token sits in a private flagfile, not on the command line.
    assert "t0ken-abcdef" not in args.read_text()
    flagfile = tmp_path / "runs" / SID / "flags"
    assert flagfile.read_text() == "--path_prefix=/t0ken-abcdef\n"
    assert oct(flagfile.stat().st_mode & 0o777) == "0o600"
    assert not canary.exists(), "a shell command hidden in a setting ran"
    sh(remote.stop_script(rundir))


def test_a_foreign_listener_on_the_remote_port_is_left_alone(tmp_path, stub):
    path, _ = stub
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    busy = listener.getsockname()[1]
    try:
        rundir = remote.run_dir(str(tmp_path), SID)
        reply = sh(remote.start_script(rundir, "logs", path, "", serve="tcp", port=busy))
        assert reply == ("error", f"port-in-use {busy}")
        assert listener.fileno() != -1
        listener.settimeout(0.1)
        with socket.create_connection(("127.0.0.1", busy)):
            listener.accept()[0].close()
    finally:
        listener.close()


def test_remote_paths_expand_the_remote_home_only_for_a_leading_tilde():
    assert remote.remote_path("~/.tensorboard-remote") == '"$HOME"/.tensorboard-remote'
    assert remote.remote_path("/abs/x y") == "'/abs/x y'"
    assert remote.remote_path("a~b") == "'a~b'"
    with pytest.raises(ValueError):
        remote.run_dir("/x", "../../etc")


@pytest.mark.parametrize(
    "script, expected",
    [
        ("#!/opt/tb/bin/python3.11\nimport sys\n", "/opt/tb/bin/python3.11 |  | --reload_interval 5"),
        # pip's form when the interpreter path is too long for a shebang.
        ("#!/bin/sh\n'''exec' \"/very/long path/bin/python\" \"$0\" \"$@\"\n' '''\n", "/very/long path/bin/python |  | --reload_interval 5"),
        ("#!/usr/bin/env python3\n", "/usr/bin/env | python3 | --reload_interval 5"),
    ],
)
def test_the_python_behind_a_console_script_is_found_from_its_shebang(tmp_path, script, expected):
    exe = tmp_path / "tensorboard"
    exe.write_text(script)
    exe.chmod(0o755)
    probe = f"set -- {exe} --reload_interval 5\n{remote._FIND_PYTHON}\necho \"$py | $pyarg | $*\"\n"
    out = subprocess.run(["sh", "-s"], input=probe, capture_output=True, text=True).stdout.strip()
    assert out == expected


def test_python_dash_m_tensorboard_names_its_python_directly():
    probe = f"set -- /opt/py/bin/python -m tensorboard.main --samples_per_plugin x=1\n{remote._FIND_PYTHON}\necho \"$py | $*\"\n"
    out = subprocess.run(["sh", "-s"], input=probe, capture_output=True, text=True).stdout.strip()
    assert out == "/opt/py/bin/python | --samples_per_plugin x=1"


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "kill"])
def test_stop_signals_only_a_verified_process_through_a_pidfd_or_kill(tmp_path, pidfd):
    ours_ = subprocess.Popen(["sleep", "60"])
    try:
        write_pidfile(tmp_path / SID, ours_.pid, starttime(ours_.pid))
        out = subprocess.run(
            ["sh", "-s"], input=remote.stop_script(remote.run_dir(str(tmp_path), SID), pidfd=pidfd),
            capture_output=True, text=True, timeout=30,
        ).stdout
        assert remote.parse_reply(out) == ("stopped", str(ours_.pid))
        assert remote.parse_info(out)["via"] == ("pidfd" if pidfd else "kill")
        assert ours_.wait(timeout=5) == -15
    finally:
        ours_.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    try:
        time.sleep(0.2)
        write_pidfile(tmp_path / SID, stubborn.pid, starttime(stubborn.pid))
        reply = sh(remote.stop_script(remote.run_dir(str(tmp_path), SID), grace=0.3))
        assert reply == ("stopped", str(stubborn.pid))
        assert stubborn.wait(timeout=5) == -9
    finally:
        stubborn.kill()


def test_a_setting_holding_the_reserved_heredoc_word_is_a_clear_error():
    from tensorboard_remote.settings import TbError

    with pytest.raises(TbError, match="reserved word TBR_SH_EOF"):
        remote.start_script(remote.run_dir("/x", SID), "logs", "tensorboard", "echo\nTBR_SH_EOF\nrm -rf ~")


def _jobs(*lines):
    return remote.parse_jobs("tbr-info user alice\n" + "".join(f"tbr-job {line}\n" for line in lines) + "tbr jobs\n")


def test_a_running_job_of_ours_gives_its_first_node_and_address():
    job = remote.pick_job(_jobs("12 RUNNING alice cn3 10.0.0.3"), "12", "alice", "login")
    assert (job.id, job.node, job.addr) == ("12", "cn3", "10.0.0.3")
    by_name = remote.pick_job(_jobs("12 PENDING alice - -", "13 RUNNING alice cn4 -"), "train", "alice", "login")
    assert by_name.id == "13"


@pytest.mark.parametrize(
    "lines, spec, message",
    [
        ((), "12", "job 12 is not in Slurm's queue on login: it has ended or never existed"),
        ((), "train", "no job named 'train' of yours (alice) is in Slurm's queue on login"),
        (("12 RUNNING bob cn1 -",), "12", "job 12 belongs to bob, not to you (alice) on login"),
        (("12 PENDING alice - -",), "12", "job 12 is pending: it has no node yet"),
        (("12 COMPLETED alice - -",), "12", "job 12 has ended (completed)"),
        (("12 SUSPENDED alice - -",), "12", "job 12 is suspended, not running"),
        (("12 RUNNING alice cn1 -", "13 RUNNING alice cn2 -"), "train", "several running jobs of yours are named 'train' (12, 13)"),
    ],
)
def test_a_job_we_cannot_attach_to_is_a_one_line_reason(lines, spec, message):
    with pytest.raises(TbError) as error:
        remote.pick_job(_jobs(*lines), spec, "alice", "login")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("spec", ["1;rm -rf ~", "", "-1", "a b", "$(id)", "x" * 201])
def test_a_job_spec_that_is_neither_an_id_nor_a_plain_name_is_refused(spec):
    with pytest.raises(TbError, match="refusing job"):
        remote.check_job(spec)
    assert remote.check_job("123_4") == "123_4" and remote.check_job("bert-large.v2") == "bert-large.v2"


def test_a_job_step_keeps_the_token_off_every_command_line():
    step = remote.Step("12", "cn1", "10.0.0.3")
    script = remote.start_script('"$HOME"/.tb/0123456789abcdef', "./logdir", "tensorboard", "", token="s3cretTOKEN", step=step)
    srun_line = [line for line in script.splitlines() if line.startswith("exec srun")]
    assert srun_line and "s3cretTOKEN" not in srun_line[0]
    assert "--overlap" in srun_line[0] and "--jobid=12" in srun_line[0] and "--nodelist=cn1" in srun_line[0]
    assert "TBR_HOST=10.0.0.3" in script and "TBR_REMOVE_DIR=1" in script
    with pytest.raises(ValueError):
        remote.Step("12;x", "cn1", "a")


def test_job_arrays_heterogeneous_jobs_and_odd_node_addresses_are_handled():
    # An array: the running task, whatever order squeue lists them in.
    array = _jobs("123_[3-10] PENDING alice - -", "123_1 RUNNING alice cn1 10.0.0.1")
    assert remote.pick_job(array, "123", "alice", "login").id == "123_1"
    with pytest.raises(TbError, match=r"job 123 has several running tasks \(123_1, 123_2\): give one of them"):
        remote.pick_job(_jobs("123_1 RUNNING alice cn1 -", "123_2 RUNNING alice cn2 -"), "123", "alice", "login")
    with pytest.raises(TbError, match="belongs to bob"):
        remote.pick_job(_jobs("123_1 RUNNING alice cn1 -", "123_2 RUNNING bob cn2 -"), "123", "alice", "login")
    with pytest.raises(TbError, match="heterogeneous"):
        remote.pick_job(_jobs("124+0 RUNNING alice cn1 -"), "124", "alice", "login")
    with pytest.raises(TbError, match="cannot tell the node of job 12"):
        remote.pick_job(_jobs("12 RUNNING alice - -"), "12", "alice", "login")
    # An IPv6 NodeAddr is not forwarded to: the node's name is.
    assert remote.pick_job(_jobs("12 RUNNING alice gpu_a17 fe80::1"), "12", "alice", "login").addr == "gpu_a17"


def test_the_job_lookup_keeps_squeue_warnings_out_of_the_job_lines(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\necho 'squeue: warning: a b c' >&2\necho '12|RUNNING|'$(id -un)'|cn[1-3]'\n")
    (fake / "scontrol").write_text(
        "#!/bin/sh\ncase $2 in hostnames) printf 'cn1\\ncn2\\ncn3\\n' ;; node) echo '   NodeAddr=10.0.0.1 NodeHostName=cn1' ;; esac\n"
    )
    for tool in fake.iterdir():
        tool.chmod(0o755)
    out = subprocess.run(["sh", "-s"], input=remote.job_script("12"), capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}).stdout
    jobs = remote.parse_jobs(out)
    assert [(j.id, j.node, j.addr) for j in jobs] == [("12", "cn1", "10.0.0.1")], out
    assert remote.parse_reply(out) == ("jobs", "")
