"""Issue 15's figures against the real one-node Slurm of the tests: not a
test (its name is not test_*.py: pytest collects it only when named), and
it asserts nothing; it prints figures.

    python -m pytest -q -s tests/bench_slurm.py      (bench/bench.py --only slurm runs this)

1. Follow latency: a session follows the job name ``bench-chain``; each
   round ends the job and submits the next; from the moment squeue shows
   the next job RUNNING to the same URL serving a TensorBoard of that job.
2. A large logdir (40 runs x 40,000 scalars, about 105 MB, TensorBoard's own
   Writer) loaded by a job's TensorBoard: from ``tb.start --job`` until the
   URL serves every scalar of the first and the last run, in srun mode
   (the fast loader in a private network namespace), ssh mode (the node's
   sshd; the fast loader likewise) and srun mode with ``data_server: off``
   (``--load_fast=false``, what srun mode did before).

Needs root, as the Slurm tests. Rounds: TBR_BENCH_ROUNDS (5); the table is
also appended to the file TBR_BENCH_OUT when set.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from .slurm_fixtures import ALICE, ready_url, running_job
from .slurmcluster import why_not
from .test_slurm import _check_until, _serves_job

pytestmark = pytest.mark.skipif(why_not() is not None, reason=f"no Slurm here: {why_not()}")

PROCTRACK = "cgroup"
ROUNDS = int(os.environ.get("TBR_BENCH_ROUNDS", "5"))
RUNS, SCALARS = 40, 40_000
LOAD_TIMEOUT = 400.0


def _emit(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    print("\n" + text, flush=True)
    out = os.environ.get("TBR_BENCH_OUT")
    if out:
        with open(out, "a") as handle:
            handle.write(text + "\n")


def _row(name: str, times: list[float], target: str) -> str:
    return (f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} | "
            f"{len(times)} | {target} |")


def test_follow_latency(session, slurm):
    job = running_job(slurm, name="bench-chain")
    started = session.fab("tb.start", "--job", "bench-chain", "--follow")
    assert started.returncode == 0, started.stdout + started.stderr
    url = ready_url(started)
    times = []
    for _ in range(ROUNDS):
        slurm.cancel(job)
        _check_until(session, "bench-chain", "waiting for the next job named bench-chain", timeout=60)
        job = slurm.submit(ALICE, name="bench-chain")
        slurm.wait_running(job)
        _, took = _serves_job(slurm, url, job, timeout=120)
        times.append(took)
    session.fab("tb.exit", "--job", "bench-chain")
    slurm.cancel(job)
    _emit([
        "| follow (issue 15) | median s | min | max | rounds | target |",
        "|---|---|---|---|---|---|",
        _row("next job RUNNING -> the same URL serves its TensorBoard", times, "<= 30 s median"),
    ])


def _write_logdir(root: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from data_server import write_logdir  # the same logdir as bench/data_server.py

    return write_logdir(root, RUNS, SCALARS)


def _loaded(url: str) -> bool:
    from .test_reconnect import fetch

    for run in (0, RUNS - 1):
        query = urllib.parse.urlencode({"run": f"run{run:03d}", "tag": "loss"})
        try:
            status, _, body = fetch(url + f"data/plugin/scalars/scalars?{query}", timeout=10)
        except OSError:
            return False
        if status != 200 or len(json.loads(body) if body.startswith("[") else []) < min(SCALARS, 1000):
            return False
    return True


def test_a_large_logdir_in_srun_mode_against_ssh_mode_and_the_loader_off(session, slurm, cluster):
    big = Path(cluster["logdir"]).parent / "bench-large"
    shutil.rmtree(big, ignore_errors=True)
    began = time.monotonic()
    size = _write_logdir(big)
    wrote = time.monotonic() - began
    modes = {
        "srun, fast loader private (netns)": ("--slurm-via", "srun"),
        "ssh (the node's sshd), fast loader": ("--slurm-via", "ssh"),
        "srun, data_server off (--load_fast=false)": ("--slurm-via", "srun"),
    }
    figures: dict[str, list[float]] = {name: [] for name in modes}
    said: dict[str, str] = {}
    job = running_job(slurm, name="bench-large")
    try:
        for _ in range(max(1, ROUNDS // 2)):
            for name, flags in modes.items():
                env = session.env(FABRIC_TB_LOGDIR=str(big))
                if "off" in name:
                    env = session.env(FABRIC_TB_LOGDIR=str(big), FABRIC_TB_DATA_SERVER="off")
                began = time.monotonic()
                started = session.fab("tb.start", "--job", job, *flags, env=env)
                assert started.returncode == 0, started.stdout + started.stderr
                url = ready_url(started)
                while not _loaded(url):
                    assert time.monotonic() - began < LOAD_TIMEOUT, f"{name}: not loaded in {LOAD_TIMEOUT}s"
                    time.sleep(0.5)
                figures[name].append(time.monotonic() - began)
                said[name] = next((line for line in started.stdout.splitlines() if "started TensorBoard" in line), "")
                stopped = session.fab("tb.exit", "--job", job, env=env)
                assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        slurm.cancel(job)
        shutil.rmtree(big, ignore_errors=True)
    srun, ssh, off = (statistics.median(figures[name]) for name in modes)
    lines = [
        f"| large logdir ({RUNS} runs x {SCALARS:,} scalars = {size / 1e6:.1f} MB, written in {wrote:.0f} s): "
        "tb.start -> every scalar of the first and last run served | median s | min | max | rounds | target |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_row(name, times, "") for name, times in figures.items()]
    lines += [
        "",
        f"srun / ssh: {srun / ssh:.2f}x (target <= 1.5x); srun with the loader off / srun: {off / srun:.1f}x",
    ]
    lines += [f"note: {name}: {line.split(': ', 1)[-1]}" for name, line in said.items() if line]
    _emit(lines)
