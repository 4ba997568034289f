"""The same job cycle under ``proctrack/linuxproc`` (test_slurm.py runs
``proctrack/cgroup``): there a step's leftovers survive the step, here our
step is what we keep in the foreground, so both end TensorBoard alike."""

from __future__ import annotations

import pytest

from .procs import wait_gone
from .slurm_fixtures import cycle, job_tensorboards, running_job
from .slurmcluster import why_not

PROCTRACK = "linuxproc"

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")


def test_the_job_cycle_works_the_same_under_linuxproc(session, slurm, cluster):
    assert "ProctrackType=proctrack/linuxproc" in slurm.conf.read_text()
    cycle(session, slurm, cluster)


def test_when_the_job_is_cancelled_its_tensorboard_step_ends_under_linuxproc_too(session, slurm):
    job = running_job(slurm)
    started = session.fab("tb.start", "--job", job)
    assert started.returncode == 0, started.stdout + started.stderr
    (pid,) = job_tensorboards(slurm)
    slurm.cancel(job)
    assert wait_gone(pid, 15)
    assert session.fab("tb.check", "--job", job).returncode == 1
    assert session.fab("tb.exit", "--job", job).returncode == 0
