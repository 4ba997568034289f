"""The same job cycle under ``proctrack/linuxproc`` (test_slurm.py runs
``proctrack/cgroup``): there a step's leftovers survive the step, here our
step is what we keep in the foreground, so both end TensorBoard alike."""

from __future__ import annotations

import pytest

from .procs import wait_gone
from .slurm_fixtures import JobCycle, job_tensorboards, running_job
from .slurmcluster import why_not

PROCTRACK = "linuxproc"

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")


def test_this_clusters_slurmd_tracks_steps_with_linuxproc(slurm):
    assert "ProctrackType=proctrack/linuxproc" in slurm.conf.read_text()


class TestTheJobCycleWorksTheSameUnderLinuxproc(JobCycle):
    """The job cycle of test_slurm.py (slurm_fixtures.JobCycle), here."""


def test_when_the_job_is_cancelled_its_tensorboard_step_ends_under_linuxproc_too(session, slurm):
    job = running_job(slurm)
    started = session.fab("tb.start", "--job", job)
    assert started.returncode == 0, started.stdout + started.stderr
    (pid,) = job_tensorboards(slurm)
    slurm.cancel(job)
    assert wait_gone(pid, 15)
    assert session.fab("tb.check", "--job", job).returncode == 1
    assert session.fab("tb.exit", "--job", job).returncode == 0


def test_follow_under_linuxproc_ends_the_old_jobs_tensorboard_and_serves_the_next(session, slurm):
    """Under linuxproc a step's leftovers could outlive the job: following
    must leave exactly one TensorBoard, the next job's, behind the URL."""
    from . import procs
    from .slurm_fixtures import ready_url
    from .test_slurm import _check_until, _exit_leaves_the_job, _serves_job

    first = running_job(slurm, name="lp-chain")
    started = session.fab("tb.start", "--job", "lp-chain", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    (old,) = job_tensorboards(slurm)
    slurm.cancel(first)
    assert wait_gone(old, 15)
    _check_until(session, "lp-chain", "waiting for the next job named lp-chain")
    second = running_job(slurm, name="lp-chain")
    board, _ = _serves_job(slurm, url, second)
    assert job_tensorboards(slurm) == [board] and procs.environ(board)["SLURM_JOB_ID"] == second
    _exit_leaves_the_job(session, slurm, "lp-chain", board, second)
