"""A followed job whose next run lands on another node: a two-node Slurm
(cn1 at 127.0.0.2, cn2 at 127.0.0.3: two slurmds on this machine;
slurmcluster.py). The rest of the Slurm tests run on one node."""

from __future__ import annotations

import pytest

from . import procs
from .procs import wait_gone
from .slurm_fixtures import job_tensorboards, ready_url, records, running_job
from .slurmcluster import NODE, NODE2, NODE2_ADDR, why_not
from .test_slurm import _check_until, _exit_leaves_the_job, _serves_job

PROCTRACK = "linuxproc"
NODES = 2

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")


def test_this_cluster_has_two_nodes(slurm):
    assert slurm.run(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split() == [NODE, NODE2]


def test_follow_moves_with_the_job_to_the_node_its_next_run_is_on(session, slurm):
    first = running_job(slurm, name="mover", extra=(f"--nodelist={NODE}",))
    started = session.fab("tb.start", "--job", "mover", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"job {first} runs on {NODE} (" in started.stdout
    url = ready_url(started)
    (old,) = job_tensorboards(slurm)
    assert procs.environ(old)["SLURMD_NODENAME"] == NODE
    slurm.cancel(first)
    assert wait_gone(old, 15)
    _check_until(session, "mover", "waiting for the next job named mover")
    second = running_job(slurm, name="mover", extra=(f"--nodelist={NODE2}",))
    board, took = _serves_job(slurm, url, second)
    print(f"followed job {second} onto {NODE2} {took:.1f}s after it ran")
    assert procs.environ(board)["SLURMD_NODENAME"] == NODE2 and job_tensorboards(slurm) == [board]
    (rec,) = records(session)
    assert (rec["job"]["id"], rec["job"]["node"], rec["job"]["addr"]) == (second, NODE2, NODE2_ADDR), rec["job"]
    checked = _check_until(session, "mover", ": ok ")
    assert f"; job {second}: " in checked
    _exit_leaves_the_job(session, slurm, "mover", board, second)
