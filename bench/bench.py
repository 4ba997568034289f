"""tensorboard-remote against doing it by hand, on local sandbox sshd instances.

    python bench/bench.py [--rounds 5] [--hosts 1,2,4,8] [--smoke] [--markdown FILE]

Rounds alternate, so both sides see the same machine state:
  1. by hand, the seed's way: `ssh host` to start TensorBoard detached, the
     seed's `ssh -M -S ... -fNL` master, then poll the page until it answers;
  2. cold `fab -H host tb.start` (nothing running) and cold
     `tensorboard-remote HOST start`, until they exit with the URL printed;
  3. warm `fab tb.start` (all up), `invoke tb.check`, `fab tb.exit`;
  4. N hosts at once (`invoke tb.start --hosts ...`), start and exit; and
     the largest N one by one (`fab -H h0,h1,... tb.start`), for comparison.
It prints medians, the ratios us/by-hand, and the floor: TensorBoard's own
spawn-to-first-answer plus one SSH handshake (plus the CLI's import), all
measured in this run. Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from tasks.sandbox import Sandbox, free_port, local_tensorboard_cmd, write_sample_logdir  # noqa: E402


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer")


class Bench:
    def __init__(self, root: Path, hosts: int) -> None:
        self.root = root
        self.logdir = write_sample_logdir(root / "logdir")
        self.boxes = [Sandbox(root / f"sshd{i}", alias=f"h{i}").create().start() for i in range(max(hosts, 1))]
        self.cfg = root / "ssh_config"
        self.cfg.write_text("\n".join(box.ssh_config.read_text() for box in self.boxes))
        self.control = Path(tempfile.mkdtemp(prefix="tbb-", dir="/tmp"))
        self.home = root / "home"
        self.home.mkdir()
        self.local_port = free_port()
        self.env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
        }
        for prefix in ("INVOKE", "FABRIC"):
            self.env.update(
                {
                    f"{prefix}_TB_CONTROL_DIR": str(self.control),
                    f"{prefix}_TB_REMOTE_DIR": str(root / "remote"),
                    f"{prefix}_TB_LOGDIR": str(self.logdir),
                    f"{prefix}_TB_LOCAL_PORT": str(self.local_port),
                    f"{prefix}_TB_TENSORBOARD_CMD": local_tensorboard_cmd(),
                    f"{prefix}_TB_SSH_CONFIG": str(self.cfg),
                }
            )

    def run(self, argv: list[str], check: bool = True) -> float:
        began = time.perf_counter()
        result = subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - began
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv} failed: {result.stdout}{result.stderr}")
        return took

    def fab(self, *args: str) -> float:
        return self.run([str(BIN / "fab"), "-H", "h0", "-S", str(self.cfg), *args])

    def invoke(self, *args: str) -> float:
        return self.run([str(BIN / "invoke"), *args])

    def by_hand(self) -> float:
        """The seed's steps, typed by hand (TensorBoard started over ssh)."""
        taken = {self.local_port}
        remote_port = free_port()
        while remote_port in taken:
            remote_port = free_port()
        local_port = free_port()
        while local_port in taken | {remote_port}:
            local_port = free_port()
        sock = str(self.control / "seed-%r@%h:%p")
        tb = local_tensorboard_cmd()
        began = time.perf_counter()
        subprocess.run(
            ["ssh", "-F", str(self.cfg), "h0",
             f"setsid -f {tb} --logdir {self.logdir} --port {remote_port} </dev/null >/dev/null 2>&1"],
            check=True,
        )
        subprocess.run(
            ["ssh", "-F", str(self.cfg), "-M", "-S", sock, "-fNL", f"{local_port}:localhost:{remote_port}", "h0"],
            check=True, stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{local_port}/data/logdir")
        took = time.perf_counter() - began
        subprocess.run(["ssh", "-F", str(self.cfg), "-S", sock, "-O", "exit", "h0"], capture_output=True)
        subprocess.run(["pkill", "-f", "--", f"--port {remote_port}"], capture_output=True)
        return took

    def floor_parts(self) -> dict[str, float]:
        port = free_port()
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir), "--port", str(port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/data/logdir")
            tensorboard = time.perf_counter() - began
            # CPU seconds TensorBoard spent to get there: N TensorBoards
            # starting on one machine need N times this, shared by its cores.
            with open(f"/proc/{proc.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            proc.terminate()
            proc.wait()
        began = time.perf_counter()
        subprocess.run(["ssh", "-F", str(self.cfg), "h0", "true"], check=True)
        handshake = time.perf_counter() - began
        imports = {}
        for name, module in (("fab", "fabric.main"), ("tensorboard-remote", "tensorboard_remote.cli")):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
            imports[name] = time.perf_counter() - began
        return {
            "tensorboard": tensorboard,
            "tensorboard CPU": cpu,
            "handshake": handshake,
            **{f"import {k}": v for k, v in imports.items()},
        }

    def resident_after_start(self) -> list[str]:
        """Processes of ours (this tool's, by command line) left after tb.start."""
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(self.control) in cmd:
                    left.append(cmd.split()[0] + (" -M" if " -M " in cmd else ""))
        return left

    def close(self) -> None:
        self.run([str(BIN / "invoke"), "tb.exit"], check=False)
        for box in self.boxes:
            box.stop()
        shutil.rmtree(self.control, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description="tensorboard-remote benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--smoke", action="store_true", help="1 round, hosts 1,2: a quick check that it runs")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.hosts = 1, "1,2"
    counts = [int(n) for n in args.hosts.split(",")]
    times: dict[str, list[float]] = {}
    resident: list[str] = []

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory(prefix="tbr-bench-") as tmp:
        bench = Bench(Path(tmp), max(counts))
        try:
            for _ in range(args.rounds):
                for name, value in bench.floor_parts().items():
                    add(f"floor: {name}", value)
                add("by hand (seed steps)", bench.by_hand())
                add("cold fab tb.start", bench.fab("tb.start"))
                resident = bench.resident_after_start()
                add("warm fab tb.start", bench.fab("tb.start"))
                add("invoke tb.check", bench.invoke("tb.check"))
                add("fab tb.exit", bench.fab("tb.exit"))
                add("cold tensorboard-remote HOST start", bench.run([str(BIN / "tensorboard-remote"), "h0", "start"]))
                bench.run([str(BIN / "tensorboard-remote"), "h0", "exit"])
                for n in counts:
                    hosts = ",".join(f"h{i}" for i in range(n))
                    add(f"{n} host(s) at once: start", bench.invoke("tb.start", "--hosts", hosts))
                    add(f"{n} host(s) at once: exit", bench.invoke("tb.exit"))
                if max(counts) > 1:
                    # Fabric's own -H a,b,...: one host after the other.
                    n = max(counts)
                    hosts = ",".join(f"h{i}" for i in range(n))
                    add(f"{n} host(s) one by one (fab -H): start",
                        bench.run([str(BIN / "fab"), "-H", hosts, "-S", str(bench.cfg), "tb.start"]))
                    bench.invoke("tb.exit")
        finally:
            bench.close()

    hand = median(times["by hand (seed steps)"])
    floor_tb = median(times["floor: tensorboard"]) + median(times["floor: handshake"])
    rows = [("step", "median s", "vs by hand", "rounds")]
    for name, values in times.items():
        ratio = f"{median(values) / hand:.2f}x" if not name.startswith("floor") else ""
        rows.append((name, f"{median(values):.3f}", ratio, str(len(values))))
    rows.append(("floor: TensorBoard + handshake", f"{floor_tb:.3f}", "", ""))
    rows.append(("floor + fab import", f"{floor_tb + median(times['floor: import fab']):.3f}", "", ""))
    rows.append(("floor + tensorboard-remote import", f"{floor_tb + median(times['floor: import tensorboard-remote']):.3f}", "", ""))
    if counts and max(counts) > 1:
        one = median(times[f"{counts[0]} host(s) at once: start"])
        top = median(times[f"{max(counts)} host(s) at once: start"])
        rows.append((f"{max(counts)} hosts / {counts[0]} host start", f"{top / one:.2f}x", "", ""))
        serial = median(times[f"{max(counts)} host(s) one by one (fab -H): start"])
        rows.append((f"{max(counts)} hosts one by one / at once", f"{serial / top:.2f}x", "", ""))
        cores = os.cpu_count() or 1
        cpu_floor = max(counts) * median(times["floor: tensorboard CPU"]) / cores
        rows.append((f"CPU floor: {max(counts)} TensorBoards on {cores} cores", f"{cpu_floor:.3f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    table = "\n".join(lines)
    print(table)
    print(f"resident after tb.start (ours): {resident}")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
