"""How long a large logdir takes to load under each data_server setting.

TensorBoard's fast loader (a separate data server on a loopback TCP port)
is readable by every user of the host; tensorboard-remote keeps it in a
private network namespace (data_server=netns, the "auto" choice where
allowed) or turns it off (data_server=off: --load_fast=false). This script
measures what "off" costs: it writes a logdir of RUNS runs x SCALARS
scalars with TensorBoard's own Writer, then times, for each mode, from
spawn until the scalars of every run are served in full.

    python bench/data_server.py [--runs 40] [--scalars 40000] [--rounds 1]

Prints a table; nothing is asserted. Needs tensorboard (the test extra) and,
for netns, unprivileged user namespaces (`unshare -rn true`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent.parent / "tasks" / "launcher.py"


def write_logdir(root: Path, runs: int, scalars: int) -> int:
    from tensorboard.summary import Writer

    for run in range(runs):
        writer = Writer(str(root / f"run{run:03d}"))
        for step in range(scalars):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.close()
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def loaded(sock: str, runs: int, scalars: int) -> bool:
    """Every run's scalars are served in full (TensorBoard downsamples to 1000)."""
    want = min(scalars, 1000)
    for run in (0, runs - 1):
        query = urllib.parse.urlencode({"run": f"run{run:03d}", "tag": "loss"})
        try:
            out = subprocess.run(
                ["curl", "-s", "--max-time", "5", "--unix-socket", sock, f"http://x/data/plugin/scalars/scalars?{query}"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            points = json.loads(out) if out.startswith("[") else []
        except (subprocess.TimeoutExpired, ValueError):
            return False
        if len(points) < want:
            return False
    return True


def time_mode(mode: str, logdir: Path, runs: int, scalars: int, timeout: float) -> float:
    run_dir = Path(tempfile.mkdtemp(prefix="tbr-bench-"))
    os.chmod(run_dir, 0o700)
    env = dict(os.environ, TBR_DIR=str(run_dir), TBR_SERVE="unix", TMPDIR=str(run_dir))
    argv = [sys.executable, str(LAUNCHER), "--logdir", str(logdir)]
    if mode == "off":
        argv.append("--load_fast=false")
    elif mode == "netns":
        env["TBR_NETNS"] = "1"
        argv = ["unshare", "-rn", *argv]
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sock = str(run_dir / "tb.sock")
    try:
        while time.perf_counter() - began < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{mode}: TensorBoard exited with {proc.returncode}")
            if (run_dir / "endpoint").exists() and loaded(sock, runs, scalars):
                return time.perf_counter() - began
            time.sleep(0.2)
        return float("nan")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--scalars", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tbr-logdir-") as tmp:
        logdir = Path(tmp)
        began = time.perf_counter()
        size = write_logdir(logdir, args.runs, args.scalars)
        print(f"logdir: {args.runs} runs x {args.scalars} scalars = {size / 1e6:.1f} MB (written in {time.perf_counter() - began:.1f} s)")
        netns_ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
        modes = ["netns" if netns_ok else None, "off", "shared"]
        print(f"{'data_server':<12} {'median load s':>14}  rounds")
        for mode in filter(None, modes):
            times = [time_mode(mode, logdir, args.runs, args.scalars, args.timeout) for _ in range(args.rounds)]
            print(f"{mode:<12} {statistics.median(times):>14.2f}  {', '.join(f'{t:.2f}' for t in times)}")
        if not netns_ok:
            print("netns: unshare -rn is not permitted on this machine")


if __name__ == "__main__":
    main()
