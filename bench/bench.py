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
measured in this run.

Then the watcher's figures (issue 13), on one watched session:
  5. master SIGKILLed -> the URL serves again; the sshd children serving the
     master SIGSTOPped (a hung link) -> the watcher's phase leaves
     ``serving``, the same with the watcher's wall clock jumped 600 s at the
     freeze (a suspend: tests/links.py ClockJump), and the link cut in a
     network namespace (tests/links.py Namespace/Link) -> detected, link
     back -> serving (full run only: root, ``ip netns``);
  6. the relay (tasks/relay.py in its own process) against a direct Unix
     socket connection to the same upstream: per request, and one large
     response;
  7. the watcher's RSS and its CPU while idle;
  8. 8 hosts against 1 with the stub TensorBoard (bench/stub_tensorboard.py),
     so that the figure is the tool's and not this machine's.
Every figure is printed with its target (issue 13) and whether it is met.
Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import shutil
import socket
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

from tasks import record, resident, state  # noqa: E402
from tasks.watcher import PROBE_EVERY  # noqa: E402
from tasks.sandbox import Sandbox, free_port, local_tensorboard_cmd, write_sample_logdir  # noqa: E402
from tests.procs import family, frozen  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from stub_tensorboard import python_setting  # noqa: E402

#: No proxy from the environment: the URL is on 127.0.0.1.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def serves(url: str, timeout: float = 2.0) -> bool:
    """Does the session's URL answer as TensorBoard (its /data/logdir)?"""
    try:
        with DIRECT.open(url + "data/logdir", timeout=timeout) as response:
            return response.status == 200 and b"logdir" in response.read(4096)
    except (OSError, ValueError):
        return False


def wait_until(condition, timeout: float, what: str, every: float = 0.05) -> float:
    """Seconds until ``condition()`` is true (RuntimeError after ``timeout``)."""
    began = time.perf_counter()
    while not condition():
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"{what}: not within {timeout}s")
        time.sleep(every)
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU-seconds every process on this machine has used since boot
    (/proc/stat: all but idle and iowait), over all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU-seconds of the children this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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

    def run(self, argv: list[str], check: bool = True, env: dict | None = None) -> float:
        began = time.perf_counter()
        result = subprocess.run(argv, env=env or self.env, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        took = time.perf_counter() - began
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv} failed: {result.stdout}{result.stderr}")
        return took

    def fab(self, *args: str, host: str = "h0", env: dict | None = None) -> float:
        return self.run([str(BIN / "fab"), "-H", host, "-S", str(self.cfg), *args], env=env)

    def invoke(self, *args: str, env: dict | None = None) -> float:
        return self.run([str(BIN / "invoke"), *args], env=env)

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
        """Processes of ours (this tool's, by command line) left after tb.start:
        "ssh -M", "watcher", or the command line of anything else."""
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if str(self.control) in cmd and not cmd.startswith("flock "):
                    if cmd.startswith("ssh ") and " -M " in cmd:
                        left.append("ssh -M")
                    elif ".watcher " in cmd:
                        left.append("watcher")
                    else:
                        left.append(cmd)
        return sorted(left)

    def sessions(self) -> list[dict]:
        return [state.read(paths) for paths in state.all_paths(self.control)]

    def only_session(self) -> tuple[state.Paths, dict]:
        [paths] = state.all_paths(self.control)
        data = state.read(paths)
        data["url"] = record.load(paths).url  # with its token
        return paths, data

    def close(self) -> None:
        self.run([str(BIN / "invoke"), "tb.exit"], check=False)
        for box in self.boxes:
            box.stop()
        shutil.rmtree(self.control, ignore_errors=True)


# ------------------------------------------------------------------ the watcher


def phase(paths: state.Paths) -> str:
    answer = resident.ask(paths, "status", timeout=1.0)
    return answer["phase"] if answer else "no answer"


def settle(bench: Bench, timeout: float = 30.0) -> tuple[state.Paths, dict]:
    """Wait until the one session serves and its watcher says so."""
    paths, data = bench.only_session()
    wait_until(lambda: serves(data["url"]) and phase(paths) == "serving", timeout, "the session serving")
    return bench.only_session()


def hung_link(bench: Bench, box: Sandbox, clock=None) -> tuple[float, float]:
    """SIGSTOP the sshd processes serving the session's master (new logins
    still work: the listener is not frozen): seconds until the watcher's
    phase leaves ``serving``, and until the URL serves again. With
    ``clock`` (a ClockJump the watcher runs under), its wall clock jumps
    600 s at the freeze, as when a laptop wakes."""
    paths, data = settle(bench)
    sshd = box.pid()
    keep = set(family(data["remote_pid"]))
    serving = [pid for pid in family(sshd) if pid != sshd and pid not in keep]
    if not serving:
        raise RuntimeError("no sshd process serves the master")
    # A random phase against the watcher's probe cycle: settle() returns
    # just after a repair, i.e. just after a probe.
    time.sleep(random.uniform(0, PROBE_EVERY))
    with frozen(serving):
        began = time.perf_counter()
        if clock is not None:
            clock.jump(600)
        wait_until(lambda: phase(paths) != "serving", 60, "the hung link found", every=0.02)
        found = time.perf_counter() - began
        wait_until(lambda: serves(data["url"]), 60, "serving after the hung link")
        back = time.perf_counter() - began
    return found, back


def master_killed(bench: Bench) -> float:
    """SIGKILL the session's master: seconds until the same URL serves again."""
    paths, data = settle(bench)
    time.sleep(random.uniform(0, 1))
    os.kill(data["master_pid"], signal.SIGKILL)
    began = time.perf_counter()
    # Its exit is seen by the relay's next connection (the forward is gone).
    wait_until(lambda: serves(data["url"]), 60, "serving after the master was killed", every=0.02)
    return time.perf_counter() - began


def watcher_cost(paths: state.Paths, data: dict, window: float) -> tuple[float, float]:
    """The watcher's RSS (MB) and its CPU over ``window`` idle seconds (% of a core)."""
    pid = data["watcher"]["pid"]
    before, began = cpu_seconds(pid), time.perf_counter()
    time.sleep(window)
    used, took = cpu_seconds(pid) - before, time.perf_counter() - began
    return rss_mb(pid), 100 * used / took


def watcher_figures(bench: Bench, rounds: int, idle: float, add, plain_hung: bool = True) -> list[str]:
    """Issue 13's watcher figures on one watched session on h0 (the watcher
    under a ClockJump, at offset 0 until a round jumps it). Notes returned."""
    from tests.links import ClockJump

    clock = ClockJump(bench.root / "clock")
    env = clock.env(bench.env)
    bench.fab("tb.start", env=env)
    notes = []
    try:
        paths, data = settle(bench)
        rss, cpu = watcher_cost(paths, data, idle)
        add("watcher RSS after start (MB)", rss)
        add(f"watcher CPU idle over {idle:.0f} s (% of a core)", cpu)
        for _ in range(rounds):
            add("master killed -> serving", master_killed(bench))
        for _ in range(rounds if plain_hung else 0):
            found, back = hung_link(bench, bench.boxes[0])
            add("hung link -> detected", found)
            add("hung link -> serving", back)
        for _ in range(rounds):
            found, back = hung_link(bench, bench.boxes[0], clock)
            add("hung link + clock jump -> detected", found)
            add("hung link + clock jump -> serving", back)
        paths, data = settle(bench)
        add("watcher RSS after the faults (MB)", rss_mb(data["watcher"]["pid"]))
        if data["watcher"]["pid"] != bench.only_session()[1]["watcher"]["pid"]:
            notes.append("the watcher changed during the faults")
    finally:
        bench.invoke("tb.exit")
    return notes


def link_figures(bench: Bench, rounds: int, add) -> list[str]:
    """A session to an sshd in a network namespace whose link is cut (no
    RST, no ICMP: tests/links.py) and brought back."""
    try:
        from tests.links import NS_ADDR, Namespace

        namespace = Namespace().create()
    except Exception as error:  # noqa: BLE001 - a figure not measured, said so
        return [f"link cut / link back: not measured ({type(error).__name__}: {error})"]
    box = Sandbox(bench.root / "sshd-linked", alias="linked", address=NS_ADDR, wrap=namespace.wrap)
    saved = bench.cfg.read_text()
    try:
        box.create().start()
        bench.cfg.write_text(saved + "\n" + box.ssh_config.read_text())
        bench.fab("tb.start", host="linked")
        for _ in range(rounds):
            paths, data = settle(bench)
            time.sleep(random.uniform(0, PROBE_EVERY))  # as in hung_link
            namespace.link.down()
            try:
                began = time.perf_counter()
                wait_until(lambda: phase(paths) != "serving", 60, "the cut link found", every=0.02)
                add("link cut -> detected", time.perf_counter() - began)
                # Down a while longer: the watcher is in its attempts (each
                # times out), as after a real network change.
                time.sleep(random.uniform(3, 6))
            finally:
                namespace.link.up()
            began = time.perf_counter()
            wait_until(lambda: serves(data["url"]), 60, "serving after the link came back")
            add("link back -> serving", time.perf_counter() - began)
    finally:
        namespace.link.up()
        bench.invoke("tb.exit", env=None)
        box.stop()
        bench.cfg.write_text(saved)
        namespace.remove()
    return []


# -------------------------------------------------------------------- the relay

UPSTREAM = r"""
import socket, sys
path, big = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(128)
small = b'{"logdir": "/bench"}'
blob = memoryview(bytes(big))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"GET /big"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % big)
            conn.sendall(blob)
        elif head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(small) + small)
"""

RELAY = r"""
import asyncio, socket, sys
sys.path.insert(0, sys.argv[2])
from tasks.relay import Relay
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print(listener.getsockname()[1], flush=True)
async def main():
    relay = Relay(listener, sys.argv[1], lambda: None, lambda: None, None)
    await relay.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def fetch_raw(address, path: str, buffer: bytearray) -> int:
    """One GET on a new connection, read to its end: the bytes received."""
    kind = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(kind, socket.SOCK_STREAM) as sock:
        sock.connect(address)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        view, got = memoryview(buffer), 0
        while True:
            n = sock.recv_into(view)
            if not n:
                return got
            got += n


def relay_figures(root: Path, requests: int, big: int, rounds: int, add) -> None:
    """tasks/relay.Relay (its own process, as in the watcher) against a
    direct connection to the same Unix-socket upstream (its own process)."""
    upstream_path = str(root / "upstream.sock")
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, upstream_path, str(big)], stdout=subprocess.PIPE, text=True)
    relay = subprocess.Popen([sys.executable, "-c", RELAY, upstream_path, str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None and relay.stdout is not None
        upstream.stdout.readline()
        port = int(relay.stdout.readline())
        buffer = bytearray(1 << 20)
        sides = {"direct": upstream_path, "relayed": ("127.0.0.1", port)}
        for address in sides.values():  # warm up
            fetch_raw(address, "/data/logdir", buffer)
        took: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(requests):
            for name, address in sides.items():
                began = time.perf_counter()
                fetch_raw(address, "/data/logdir", buffer)
                took[name].append(time.perf_counter() - began)
        direct, relayed = median(took["direct"]), median(took["relayed"])
        add(f"small request, direct (median of {requests}, ms)", 1000 * direct)
        add(f"small request, relayed (median of {requests}, ms)", 1000 * relayed)
        add("relay adds per request (ms)", 1000 * (relayed - direct))
        for _ in range(rounds):
            for name, address in sides.items():
                began = time.perf_counter()
                got = fetch_raw(address, "/big", buffer)
                seconds = time.perf_counter() - began
                if got < big:
                    raise RuntimeError(f"{name}: {got} of {big} bytes")
                add(f"{big >> 20} MB response, {name} (MB/s)", got / seconds / 1e6)
    finally:
        for proc in (relay, upstream):
            proc.kill()
            proc.wait()


# ------------------------------------------------------------ stub TensorBoards


def stub_hosts(bench: Bench, counts: tuple[int, ...], rounds: int, add) -> dict[int, list[str]]:
    """N sessions at once whose TensorBoard is the stub (answers at once);
    what stays resident after each start."""
    env = dict(bench.env)
    for prefix in ("INVOKE", "FABRIC"):
        env[f"{prefix}_TB_PYTHON"] = python_setting()
    left = {}
    for _ in range(rounds):
        for n in counts:
            hosts = ",".join(f"h{i}" for i in range(n))
            cpu, waited = machine_cpu(), children_cpu()
            add(f"stub: {n} host(s) at once: start", bench.invoke("tb.start", "--hosts", hosts, env=env))
            # Every process's CPU here (sshd, login shells, the stubs, our
            # watchers; and whatever else runs on this shared machine) ...
            add(f"stub: {n} host(s) at once: start, machine CPU-s", machine_cpu() - cpu)
            # ... and the part that is ours, here: invoke and what it waited
            # for (its ssh clients), the masters and the watchers it left.
            local = children_cpu() - waited
            for data in bench.sessions():
                local += sum(cpu_seconds(pid) for pid in (data["master_pid"], data["watcher"]["pid"]))
            add(f"stub: {n} host(s) at once: start, local CPU-s (invoke, ssh, watchers)", local)
            left[n] = bench.resident_after_start()
            cpu = machine_cpu()
            add(f"stub: {n} host(s) at once: exit", bench.invoke("tb.exit", env=env))
            add(f"stub: {n} host(s) at once: exit, machine CPU-s", machine_cpu() - cpu)
    return left


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description="tensorboard-remote benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the watcher's idle CPU is measured over")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round, 1 host, 1 and 2 stub hosts, idle window 3 s, 64 MB, no link cut: a quick check that it runs")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    big = 256 << 20
    stub_counts = (1, 8)
    if args.smoke:
        args.rounds, args.hosts, args.idle, big = 1, "1", 3.0, 64 << 20
        stub_counts = (1, 2)
    counts = [int(n) for n in args.hosts.split(",")]
    times: dict[str, list[float]] = {}
    figures: dict[str, list[float]] = {}
    resident: list[str] = []
    notes: list[str] = []

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    def figure(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tbr-bench-") as tmp:
        bench = Bench(Path(tmp), max(counts + list(stub_counts)))
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
            stub_left = stub_hosts(bench, stub_counts, args.rounds, figure)
            notes += watcher_figures(bench, args.rounds, args.idle, figure, plain_hung=not args.smoke)
            if args.smoke:
                notes.append("--smoke: the hung link without a clock jump, the link cut and the link back are not "
                             "measured (the full run does them; the link in a network namespace)")
            else:
                notes += link_figures(bench, args.rounds, figure)
            relay_figures(bench.root, 200, big, args.rounds, figure)
        finally:
            bench.close()
    took = time.perf_counter() - began

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
    figure_rows = [("watcher figure", "median", "runs")]
    for name, values in figures.items():
        figure_rows.append((name, f"{median(values):.3f}", str(len(values))))

    # Against issue 13's targets.
    def m(name: str) -> float:
        return median(figures.get(name, times.get(name, [])))

    checks: list[tuple[str, str, str, object]] = []

    def target(what: str, value: float, limit: float, unit: str, *, at_least: bool = False) -> None:
        if value != value:  # nan: not measured
            checks.append((what, "not measured", f"{'>=' if at_least else '<='} {limit:g}{unit}", "-"))
            return
        met = value >= limit if at_least else value <= limit
        shown = f"{value:.2f}{unit}" if unit == "x" else f"{value:.3g}{unit}"
        checks.append((what, shown, f"{'>=' if at_least else '<='} {limit:g}{unit}", "yes" if met else "NO"))

    target("cold tensorboard-remote HOST start / by hand", m("cold tensorboard-remote HOST start") / hand, 1.0, "x")
    target("cold fab tb.start / by hand", m("cold fab tb.start") / hand, 1.15, "x")
    target("warm fab tb.start", m("warm fab tb.start"), 0.25, " s")
    target("invoke tb.check", m("invoke tb.check"), 0.15, " s")
    target("fab tb.exit", m("fab tb.exit"), 0.35, " s")
    for label, n, left in [("cold fab tb.start", 1, resident)] + [(f"stub start, {n} host(s)", n, left) for n, left in sorted(stub_left.items())]:
        want = sorted(["ssh -M", "watcher"] * n)
        shown = ", ".join(f"{left.count(k)}x {k}" for k in sorted(set(left))) or "nothing"
        checks.append((f"resident after {label} returns", shown, f"{n}x ssh -M, {n}x watcher, nothing else",
                       "yes" if left == want else "NO"))
    target("master killed (SIGKILL) -> URL serves again", m("master killed -> serving"), 5, " s")
    target("link back -> URL serves again (netns)", m("link back -> serving"), 5, " s")
    target("hung link (sshd SIGSTOP) -> detected", m("hung link -> detected"), 15, " s")
    target("link cut (netns) -> detected", m("link cut -> detected"), 15, " s")
    target("hung link + clock jump -> detected", m("hung link + clock jump -> detected"), 5, " s")
    target("relay adds per small request", m("relay adds per request (ms)"), 1, " ms")
    target(f"relay throughput, one {big >> 20} MB response", m(f"{big >> 20} MB response, relayed (MB/s)"), 100, " MB/s", at_least=True)
    target("watcher RSS (the larger of after start, after faults)",
           max(m("watcher RSS after start (MB)"), m("watcher RSS after the faults (MB)")), 40, " MB")
    target(f"watcher CPU idle over {args.idle:.0f} s" + (" (--smoke: not 60 s)" if args.idle < 60 else ""),
           m(f"watcher CPU idle over {args.idle:.0f} s (% of a core)"), 0.5, "% of a core")
    many = max(stub_counts)
    for step in ("start", "exit"):
        one, several = m(f"stub: 1 host(s) at once: {step}"), m(f"stub: {many} host(s) at once: {step}")
        target(f"stub TensorBoard: {many} hosts / 1 host, {step}" + (" (--smoke: not 8)" if many != 8 else ""),
               several / one, 1.5, "x")

    def render(table: list[tuple]) -> str:
        widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
        lines = ["| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in table]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    text = "\n\n".join([
        render(rows),
        render(figure_rows),
        render([("target (issue 13)", "measured", "target", "met?")] + checks),
    ])
    text += f"\n\nresident after cold fab tb.start (ours): {resident}"
    for line in notes:
        text += f"\nnote: {line}"
    text += f"\nbench took {took:.0f} s ({'--smoke' if args.smoke else f'{args.rounds} rounds'}) on {os.cpu_count()} cores"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
