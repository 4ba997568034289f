"""Slurm's pure side: which job a spec names, what a job session is
called, and the scripts' parts that must keep the token off command lines.
No Slurm and no sshd: squeue and scontrol are stand-ins where needed."""

import os
import subprocess

import pytest

from tensorboard_remote import remote, slurm
from tensorboard_remote.errors import TbError


def _jobs(*lines):
    return slurm.parse_jobs("tbr-info user alice\n" + "".join(f"tbr-job {line}\n" for line in lines) + "tbr jobs\n")


def test_a_running_job_of_ours_gives_its_first_node_and_address():
    job = slurm.pick_job(_jobs("12 RUNNING alice cn3 10.0.0.3"), "12", "alice", "login")
    assert (job.id, job.node, job.addr) == ("12", "cn3", "10.0.0.3")
    by_name = slurm.pick_job(_jobs("12 PENDING alice - -", "13 RUNNING alice cn4 -"), "train", "alice", "login")
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
        (("12 CANCELLED alice - -", "13 COMPLETED alice - -"), "train", "every job named 'train' of yours has ended (12: cancelled, 13: completed)"),
        (("12 PENDING alice - -", "13 PENDING alice - -"), "train", "no job named 'train' of yours is running yet (12, 13: pending)"),
    ],
)
def test_a_job_we_cannot_attach_to_is_a_one_line_reason(lines, spec, message):
    with pytest.raises(TbError) as error:
        slurm.pick_job(_jobs(*lines), spec, "alice", "login")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("spec", ["1;rm -rf ~", "", "-1", "a b", "$(id)", "x" * 201])
def test_a_job_spec_that_is_neither_an_id_nor_a_plain_name_is_refused(spec):
    with pytest.raises(TbError, match="refusing job"):
        slurm.check_job(spec)
    assert slurm.check_job("123_4") == "123_4" and slurm.check_job("bert-large.v2") == "bert-large.v2"


def test_a_job_step_keeps_the_token_off_every_command_line():
    step = slurm.Step("12", "cn1", "10.0.0.3")
    script = remote.start_script('"$HOME"/.tb/0123456789abcdef', "./logdir", "tensorboard", "", token="s3cretTOKEN", step=step)
    srun_line = [line for line in script.splitlines() if line.startswith("exec srun")]
    assert srun_line and "s3cretTOKEN" not in srun_line[0]
    assert "--overlap" in srun_line[0] and "--jobid=12" in srun_line[0] and "--nodelist=cn1" in srun_line[0]
    assert "TBR_HOST=10.0.0.3" in script and "TBR_REMOVE_DIR=1" in script
    with pytest.raises(ValueError):
        slurm.Step("12;x", "cn1", "a")


def test_job_arrays_heterogeneous_jobs_and_odd_node_addresses_are_handled():
    # An array: the running task, whatever order squeue lists them in.
    array = _jobs("123_[3-10] PENDING alice - -", "123_1 RUNNING alice cn1 10.0.0.1")
    assert slurm.pick_job(array, "123", "alice", "login").id == "123_1"
    with pytest.raises(TbError, match=r"job 123 has several running tasks \(123_1, 123_2\): give one of them"):
        slurm.pick_job(_jobs("123_1 RUNNING alice cn1 -", "123_2 RUNNING alice cn2 -"), "123", "alice", "login")
    with pytest.raises(TbError, match="belongs to bob"):
        slurm.pick_job(_jobs("123_1 RUNNING alice cn1 -", "123_2 RUNNING bob cn2 -"), "123", "alice", "login")
    with pytest.raises(TbError, match="heterogeneous"):
        slurm.pick_job(_jobs("124+0 RUNNING alice cn1 -"), "124", "alice", "login")
    with pytest.raises(TbError, match="cannot tell the node of job 12"):
        slurm.pick_job(_jobs("12 RUNNING alice - -"), "12", "alice", "login")
    # An IPv6 NodeAddr is not forwarded to: the node's name is.
    assert slurm.pick_job(_jobs("12 RUNNING alice gpu_a17 fe80::1"), "12", "alice", "login").addr == "gpu_a17"


def test_the_job_lookup_keeps_squeue_warnings_out_of_the_job_lines(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\necho 'squeue: warning: a b c' >&2\necho '12|RUNNING|'$(id -un)'|cn[1-3]'\n")
    (fake / "scontrol").write_text(
        "#!/bin/sh\ncase $2 in hostnames) printf 'cn1\\ncn2\\ncn3\\n' ;; node) echo '   NodeAddr=10.0.0.1 NodeHostName=cn1' ;; esac\n"
    )
    for tool in fake.iterdir():
        tool.chmod(0o755)
    out = subprocess.run(["sh", "-s"], input=slurm.job_script("12"), capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}).stdout
    jobs = slurm.parse_jobs(out)
    assert [(j.id, j.node, j.addr) for j in jobs] == [("12", "cn1", "10.0.0.1")], out
    assert remote.parse_reply(out) == ("jobs", "")


@pytest.mark.parametrize(
    "lines, kind",
    [
        # Ended jobs linger in squeue (MinJobAge): a followed name waits for what is still to come.
        (("11 CANCELLED alice - -", "12 CANCELLED alice - -"), slurm.JobEnded),
        (("11 COMPLETED alice - -",), slurm.JobEnded),
        (("11 CANCELLED alice - -", "12 PENDING alice - -"), slurm.JobPending),
        (("11 CANCELLED alice - -", "12 PENDING alice - -", "13 PENDING alice - -"), slurm.JobPending),
        (("11 CANCELLED alice - -", "12 COMPLETING alice cn1 -", "13 REQUEUED alice - -"), slurm.JobPending),
    ],
)
def test_ended_jobs_of_a_name_leave_the_decision_to_what_is_still_to_come(lines, kind):
    with pytest.raises(kind) as error:
        slurm.pick_job(_jobs(*lines), "train", "alice", "login")
    assert type(error.value) is kind
