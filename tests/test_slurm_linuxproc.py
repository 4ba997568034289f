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
