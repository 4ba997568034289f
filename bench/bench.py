"""tensorboard-remote against doing it by hand, on local sandbox sshd instances.

    python bench/bench.py [--rounds 5] [--hosts 1,2,4,8] [--smoke] [--markdown FILE]
    python bench/bench.py --only merge [--rounds 5] [--writes 20] [--smoke]
    python bench/bench.py --only slurm [--rounds 5] [--markdown FILE]   (root: tests/bench_slurm.py)

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
Then the merged view's figures (issue 14; ``--only merge`` runs only these):
  9. a scalar written on a host (h0 or h1) -> served by the merged view's
     scalars endpoint through the token URL (``tensorboard-remote h0,h1 start
     --merge``, the default sync_every), each write at a random phase; also
     when the mirror had it;
 10. bytes moved by ``tensorboard_remote.mirror.sync`` (rsync and stream) on
     h0: a round with nothing new, 1 MiB appended to a 100 MiB event file, a
     1 GiB (sparse) checkpoint added; by our counters and on the wire (the
     kernel's byte counts of the master's TCP connection, ``ss -ti``);
 11. the first sync of a 100 MiB logdir from 3 hosts at once: our engine
     (threads, as the syncer) against ``rsync -a`` over ssh by hand, one host
     after the other and all at once.
Every figure is printed with its target (issues 13, 14) and whether it is met.
Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
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


# ------------------------------------------------------ the merged view (issue 14)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
#: The tag the latency figure writes (a run of its own on each host: ``live``).
LIVE_TAG = "bench/latency"


def wire(port: int) -> tuple[int, int]:
    """Bytes on the wire of the TCP connections from here to the sandbox sshd
    on ``port``, as the kernel counts them (``ss -ti``, our end; SSH's
    framing, MACs and padding included): (received, sent and acked).
    Not our counters: a check on them."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", "dport", "=", f":{port}"], capture_output=True, text=True, check=True
    ).stdout
    received = sum(int(n) for n in re.findall(r"\bbytes_received:(\d+)", out))
    acked = sum(int(n) for n in re.findall(r"\bbytes_acked:(\d+)", out))
    return received, acked


def write_random(path: Path, size: int, mode: str = "wb") -> None:
    """``size`` random bytes (incompressible: the worst case for any
    compression on the way) written to, or appended to, ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as handle:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 4 * MiB))
            handle.write(chunk)
            left -= len(chunk)


def same_file(a: Path, b: Path, tail: int = MiB) -> bool:
    """Same size and the same last ``tail`` bytes (the part an append changed)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as one, open(b, "rb") as two:
            start = max(0, a.stat().st_size - tail)
            one.seek(start)
            two.seek(start)
            return one.read() == two.read()
    except OSError:
        return False


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Engine:
    """Our masters to sandbox hosts, opened as a merged view opens them
    (``Host.locate``, ``Host.open``), for ``tensorboard_remote.mirror.sync``."""

    def __init__(self, bench: Bench, labels: list[str]) -> None:
        from tensorboard_remote.host import Host
        from tensorboard_remote.shell import Shell
        from tensorboard_remote.sshargv import Target

        self.control = Path(tempfile.mkdtemp(prefix="tbe-", dir="/tmp"))  # short: socket paths
        shell = Shell()
        self.hosts = {}
        self.ports = {}
        for index, label in enumerate(labels):
            host = Host.locate(shell, Target(label, ssh_config=str(bench.cfg), batch=True), str(self.control))
            host.open(15)
            self.hosts[label] = host
            self.ports[label] = bench.boxes[int(label[1:])].port

    def close(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.close()
        shutil.rmtree(self.control, ignore_errors=True)


def sync_counted(engine: Engine, label: str, logdir: Path, dest: Path, method: str):
    """One ``mirror.sync`` round, and the bytes on the wire it moved:
    (Synced, wire in, wire out)."""
    from tensorboard_remote import mirror

    port = engine.ports[label]
    before = wire(port)
    done = mirror.sync(engine.hosts[label], str(logdir), dest, mirror.Patterns.parse(None), method)
    time.sleep(0.02)  # loopback acks are immediate; be sure
    after = wire(port)
    return done, after[0] - before[0], after[1] - before[1]


def bytes_figures(bench: Bench, engine: Engine, base: int, rounds: int, add, moved: dict, notes: list[str], runs: int = 20,
                  methods: tuple[str, ...] = ("rsync", "stream")) -> None:
    """Issue 14's bytes moved, on h0, for both methods: a round with nothing
    new, 1 MiB appended to a ``base``-byte event file, a 1 GiB checkpoint
    (sparse: no disk) added beside it."""
    logdir = bench.root / "bytes-logdir"
    # A logdir as a sweep leaves it: 20 small runs (real event files), a
    # profile, and one large run.
    write_sample_logdir(logdir, runs=tuple(f"run{i:02d}" for i in range(runs)), steps=50)
    write_random(logdir / "run00" / "plugins" / "profile" / "2026_12_02_18_00_00" / "h0.xplane.pb", 256 * KiB)
    big = logdir / "big" / "events.out.tfevents.1764700000.h0.1.0"
    write_random(big, base)
    rel = big.relative_to(logdir)
    listed = subprocess.run(["ss", "-tnH", "state", "established", "dport", "=", f":{engine.ports['h0']}"],
                            capture_output=True, text=True).stdout.splitlines()
    if len(listed) != 1:  # the wire figures count every connection to h0's sshd
        notes.append(f"bytes: {len(listed)} connections to h0's sshd, not only our master's: the wire figures count them all")
    first = f"first sync ({tree_bytes(logdir) / MiB:.0f} MiB logdir, {base // MiB} MiB event file)"
    for method in methods:
        dest = bench.root / f"bytes-mirror-{method}"
        os.truncate(big, base)  # each method starts from the same logdir (the other's appends undone)

        def measured(case: str):
            done, wire_in, wire_out = sync_counted(engine, "h0", logdir, dest, method)
            if done.method != method:
                notes.append(f"bytes: asked for {method}, mirror.sync says {done.method}")
            moved.setdefault((case, method), []).append((done.bytes_in, done.bytes_out, wire_in, wire_out))
            return done

        measured(first)
        checkpoints = []
        for round_ in range(rounds):
            add(f"a round with nothing new, {method} (one host; mirror.sync's own seconds)", measured("nothing new").seconds)
            write_random(big, MiB, "ab")
            measured("1 MiB appended to the large event file")
            if not same_file(big, dest / rel):
                notes.append(f"bytes, {method}: after the append the mirror's {rel} differs from the host's")
            ckpt = logdir / "big" / f"model.ckpt-{round_}.data-00000-of-00001"
            subprocess.run(["truncate", "-s", str(GiB), str(ckpt)], check=True)
            checkpoints.append(ckpt)
            measured("1 GiB checkpoint added (sparse)")
            if (dest / ckpt.relative_to(logdir)).exists():
                notes.append(f"bytes, {method}: the checkpoint {ckpt.name} is in the mirror")
        for ckpt in checkpoints:
            ckpt.unlink()
        shutil.rmtree(dest, ignore_errors=True)


def first_sync_figures(bench: Bench, engine: Engine, size: int, rounds: int, add, moved: dict, notes: list[str],
                       *, quick: bool = False) -> None:
    """The first sync of a ``size``-byte logdir (event files only, so rsync
    by hand copies the same files) from 3 hosts at once: our engine (one
    thread per host, as the syncer's first sync does, over masters already
    up) against ``rsync -a`` over plain ssh run by hand, one host after the
    other and all three at once (each of those logs in: a handshake)."""
    from concurrent.futures import ThreadPoolExecutor

    labels = ["h0", "h1", "h2"]
    logdirs = {}
    for label in labels:
        logdirs[label] = bench.root / f"first-{label}"
        for run in range(10):
            write_random(logdirs[label] / f"run{run}" / f"events.out.tfevents.1764700000.{label}.{run}.0", size // 10)
    dests = {label: bench.root / f"first-mirror-{label}" for label in labels}
    want = {label: tree_bytes(logdirs[label]) for label in labels}

    def clear() -> None:
        for dest in dests.values():
            shutil.rmtree(dest, ignore_errors=True)
        if not quick:
            os.sync()  # the previous copy's dirty pages are not this one's

    def check(what: str) -> None:
        for label in labels:
            if not dests[label].exists() or tree_bytes(dests[label]) != want[label]:
                got = tree_bytes(dests[label]) if dests[label].exists() else 0
                notes.append(f"first sync, {what}: {label}'s copy has {got} of {want[label]} bytes")

    def ours(method: str) -> float:
        clear()
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(labels)) as pool:
            done = list(pool.map(lambda label: sync_counted(engine, label, logdirs[label], dests[label], method), labels))
        took = time.perf_counter() - began
        check(f"our engine ({method})")
        for synced, wire_in, wire_out in done:
            moved.setdefault((f"first sync, 3 hosts at once ({size // MiB} MiB each; per host)", method), []).append(
                (synced.bytes_in, synced.bytes_out, wire_in, wire_out))
        with ThreadPoolExecutor(max_workers=len(labels)) as pool:  # and the next round, as the syncer's next
            again = list(pool.map(lambda label: sync_counted(engine, label, logdirs[label], dests[label], method), labels))
        for synced, wire_in, wire_out in again:
            moved.setdefault(("nothing new, after that (per host)", method), []).append(
                (synced.bytes_in, synced.bytes_out, wire_in, wire_out))
        return took

    def by_hand(parallel: bool) -> float:
        clear()
        argvs = [["rsync", "-a", "-e", f"ssh -F {bench.cfg}", f"{label}:{logdirs[label]}/", f"{dests[label]}/"] for label in labels]
        began = time.perf_counter()
        if parallel:
            procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for argv in argvs]
            codes = [proc.wait() for proc in procs]
        else:
            codes = [subprocess.run(argv, stdin=subprocess.DEVNULL).returncode for argv in argvs]
        took = time.perf_counter() - began
        if any(codes):
            notes.append(f"rsync by hand exited {codes}")
        check("rsync by hand")
        return took

    trials = [
        ("first sync, 3 hosts: our engine, rsync (threads)", lambda: ours("rsync")),
        ("first sync, 3 hosts: our engine, stream (threads)", lambda: ours("stream")),
        ("first sync, 3 hosts: rsync -a by hand, one after the other", lambda: by_hand(False)),
        ("first sync, 3 hosts: rsync -a by hand, all at once", lambda: by_hand(True)),
    ]
    if quick:  # a check that it runs: each method once in the whole smoke run (stream: in the bytes)
        trials = [trial for trial in trials if "stream" not in trial[0] and "one after the other" not in trial[0]]
    for round_ in range(rounds):
        shift = round_ % len(trials)  # each trial first in turn
        for name, trial in trials[shift:] + trials[:shift]:
            add(name, trial())
        if not quick:
            began = time.perf_counter()
            subprocess.run(["ssh", "-F", str(bench.cfg), "h0", "true"], check=True)
            add("ssh handshake + a command (ssh h0 true)", time.perf_counter() - began)
    clear()
    for _ in range(0 if quick else min(rounds, 3)):
        cli_first_sync(bench, logdirs, add, notes)


def cli_first_sync(bench: Bench, logdirs: dict[str, Path], add, notes: list[str]) -> None:
    """The same first sync as a user meets it: ``tensorboard-remote
    h0,h1,h2 start --merge`` over the three 100 MiB logdirs (masters, first
    sync, TensorBoard here), read from the start's own timed lines; then
    ``exit --merge --remove-mirror``, so that the next start syncs from
    nothing again."""
    env = dict(bench.env)
    for prefix in ("INVOKE", "FABRIC"):
        env[f"{prefix}_TB_MERGE"] = ",".join(f"{label}={logdir}" for label, logdir in logdirs.items())
    cli = [str(BIN / "tensorboard-remote"), ",".join(logdirs)]
    os.sync()
    began = time.perf_counter()
    started = subprocess.run(cli + ["start", "--merge"], env=env, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - began
    try:
        if started.returncode != 0:
            notes.append(f"3-host merged start exited {started.returncode}: {started.stdout.strip()} {started.stderr.strip()}")
            return
        add("3 hosts x 100 MiB: tensorboard-remote h0,h1,h2 start --merge, until it returns", took)
        stamp = r"\s+\[([\d.]+)s\]$"
        opened = [float(m.group(1)) for m in re.finditer(r"^\S+: (?:opened|reusing) the tunnel.*?" + stamp, started.stdout, re.M)]
        synced = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r"^\S+: first sync: .*\[([\d.]+)s\]" + stamp, started.stdout, re.M)]
        if len(opened) != len(logdirs) or len(synced) != len(logdirs):
            notes.append(f"3-host merged start: {len(opened)} tunnel lines, {len(synced)} first-sync lines: {started.stdout.strip()}")
            return
        add("3 hosts x 100 MiB, that start: the 3 masters open (one after the other), at", max(opened))
        add("3 hosts x 100 MiB, that start: the first sync of all 3 (at once) done, at", max(at for _, at in synced))
        add("3 hosts x 100 MiB, that start: the first sync's own seconds (slowest host)", max(own for own, _ in synced))
    finally:
        stopped = subprocess.run(cli + ["exit", "--merge", "--remove-mirror"], env=env, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if stopped.returncode != 0:
            notes.append(f"3-host merged exit exited {stopped.returncode}: {stopped.stdout.strip()} {stopped.stderr.strip()}")


def scalar_steps(url: str, run: str, tag: str) -> set[int]:
    """The steps of ``run``'s ``tag`` the view serves (empty: not yet)."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    try:
        with DIRECT.open(f"{url}data/plugin/scalars/scalars?{query}", timeout=5) as response:
            return {int(point[1]) for point in json.loads(response.read())}
    except (OSError, ValueError):
        return set()


def latency_figures(bench: Bench, writes: int, add, notes: list[str], *, phase_random: bool) -> None:
    """A merged view of h0 and h1 (the real CLI, default sync_every): a
    scalar written on a host (appended to an event file in its logdir) ->
    the view's scalars endpoint serves it, through the token URL. Each
    write comes at a random phase against the sync rounds."""
    from tensorboard.summary import Writer

    labels = ["h0", "h1"]
    logdirs = {label: write_sample_logdir(bench.root / f"merge-{label}", runs=("baseline",), steps=20) for label in labels}
    writers = {label: Writer(str(logdirs[label] / "live")) for label in labels}
    for writer in writers.values():
        writer.add_scalar(LIVE_TAG, 0.0, 0)  # the run exists before the start
        writer.flush()
    env = dict(bench.env)
    for prefix in ("INVOKE", "FABRIC"):
        env[f"{prefix}_TB_MERGE"] = ",".join(f"{label}={logdirs[label]}" for label in labels)
    cli = [str(BIN / "tensorboard-remote"), ",".join(labels)]

    def run(action: str) -> tuple[float, subprocess.CompletedProcess]:
        began = time.perf_counter()
        done = subprocess.run(cli + [action, "--merge"], env=env, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - began, done

    took, started = run("start")
    try:
        found = re.search(r"ready at (http://\S+)", started.stdout)
        if started.returncode != 0 or not found:
            raise RuntimeError(f"tensorboard-remote h0,h1 start --merge failed ({started.returncode}): {started.stdout}{started.stderr}")
        add("merged start, 2 hosts (tensorboard-remote h0,h1 start --merge)", took)
        url = found.group(1)
        url += "" if url.endswith("/") else "/"
        notes += [f"merged start: {line.split(': ', 1)[1]}" for line in started.stdout.splitlines() if "first sync:" in line]
        root = re.search(r": mirror (/\S+)", started.stdout)
        mirror_root = Path(root.group(1)) if root else None
        for label in labels:
            wait_until(lambda: 0 in scalar_steps(url, f"{label}/live", LIVE_TAG), 60, f"{label}/live served", every=0.1)
        for step in range(1, writes + 1):
            label = labels[step % len(labels)]
            if phase_random:
                time.sleep(random.uniform(0, 5))  # sync_every's default: any phase
            [source] = (logdirs[label] / "live").glob("events.out.tfevents.*")
            writers[label].add_scalar(LIVE_TAG, float(step), step)
            writers[label].flush()
            began = time.perf_counter()
            size = source.stat().st_size
            copy = mirror_root / label / "live" / source.name if mirror_root else None
            mirrored = None
            while True:
                now = time.perf_counter() - began
                if mirrored is None and copy is not None and copy.exists() and copy.stat().st_size >= size:
                    mirrored = now
                if step in scalar_steps(url, f"{label}/live", LIVE_TAG):
                    break
                if now > 90:
                    raise RuntimeError(f"step {step} written on {label} not served after 90 s")
                time.sleep(0.05)
            add("scalar written on a host -> served by the merged view", now)
            if mirrored is not None:
                add("scalar written on a host -> in the mirror", mirrored)
                add("in the mirror -> served (TensorBoard's reload)", now - mirrored)
        took, checked = run("check")
        add("merged check (tensorboard-remote h0,h1 check --merge)", took)
        if checked.returncode != 0:
            notes.append(f"merged check exited {checked.returncode}: {checked.stdout.strip()} {checked.stderr.strip()}")
    finally:
        took, stopped = run("exit")
        if stopped.returncode == 0:
            add("merged exit (tensorboard-remote h0,h1 exit --merge)", took)
        else:
            notes.append(f"merged exit exited {stopped.returncode}: {stopped.stdout.strip()} {stopped.stderr.strip()}")
        for writer in writers.values():
            writer.close()


def merge_figures(bench: Bench, smoke: bool, rounds: int, writes: int, add, moved: dict) -> list[str]:
    """Issue 14's figures; notes returned."""
    notes: list[str] = []
    spent = {}
    began = time.perf_counter()
    latency_figures(bench, writes, add, notes, phase_random=not smoke)
    spent["latency"] = time.perf_counter() - began
    engine = Engine(bench, ["h0", "h1", "h2"])
    try:
        began = time.perf_counter()
        bytes_figures(bench, engine, (4 if smoke else 100) * MiB, rounds, add, moved, notes, runs=5 if smoke else 20,
                      methods=("stream",) if smoke else ("rsync", "stream"))
        spent["bytes"] = time.perf_counter() - began
        began = time.perf_counter()
        first_sync_figures(bench, engine, (2 if smoke else 100) * MiB, rounds, add, moved, notes, quick=smoke)
        spent["first sync"] = time.perf_counter() - began
    finally:
        engine.close()
    notes.append("merged-view sections took " + ", ".join(f"{k} {v:.1f} s" for k, v in spent.items()))
    if smoke:
        notes.append("--smoke: 1 write for the latency, written at once (no random phase); the bytes with stream only, "
                     "5 small runs and a 4 MiB event file; the first sync of 2 MiB logdirs with rsync only, and by hand "
                     "all at once only (the full run: both methods, 20 runs and 100 MiB, 100 MiB, by hand both ways), one round")
    return notes


def merge_tables(merged: dict[str, list[float]], moved: dict, smoke: bool) -> str:
    """The merged view's tables: figures, bytes, targets (issue 14)."""
    rows = [("merged-view figure (issue 14)", "median s", "min", "max", "runs")]
    for name, values in merged.items():
        rows.append((name, f"{median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}", str(len(values))))

    def kib(n: float) -> str:
        return f"{n / KiB:,.1f}"

    def med(case: str, method: str, index: int) -> float:
        return median([row[index] for row in moved.get((case, method), [])])

    byte_rows = [("bytes moved, KiB (issue 14)", "method", "ours: in", "ours: out", "wire: in", "wire: out", "rounds")]
    for (case, method), values in moved.items():
        byte_rows.append((case, method, *(kib(med(case, method, i)) for i in range(4)), str(len(values))))

    checks: list[tuple[str, str, str, str]] = []
    lat = merged.get("scalar written on a host -> served by the merged view", [])
    checks.append(("scalar written -> served, median" + (" (--smoke: 1 write)" if smoke else ""),
                   f"{median(lat):.2f} s (max {max(lat):.2f}, {len(lat)} write{'s' if len(lat) > 1 else ''})" if lat else "not measured", "<= 15 s",
                   ("yes" if median(lat) <= 15 else "NO") if lat else "-"))
    for method in ("rsync", "stream"):
        def total(case: str) -> tuple[float, float]:
            return med(case, method, 0) + med(case, method, 1), med(case, method, 2) + med(case, method, 3)

        def judged(what: str, case: str, limit: float, shown_limit: str) -> None:
            ours, on_wire = total(case)
            if ours != ours:
                checks.append((what, "not measured", shown_limit, "-"))
                return
            checks.append((what, f"{kib(on_wire)} KiB on the wire ({kib(ours)} by our count)", shown_limit,
                           "yes" if max(ours, on_wire) <= limit else "NO"))

        judged(f"{method}: a round with nothing new, per host", "nothing new", 64 * KiB, "<= 64 KiB")
        judged(f"{method}: 1 MiB appended to a {'4' if smoke else '100'} MiB event file", "1 MiB appended to the large event file",
               1.2 * MiB, "<= 1.2 MiB")
        ckpt, idle = total("1 GiB checkpoint added (sparse)"), total("nothing new")
        if ckpt[0] == ckpt[0]:
            excess = max(ckpt[1] - idle[1], ckpt[0] - idle[0])
            checks.append((f"{method}: a 1 GiB checkpoint added", f"{kib(ckpt[1])} KiB on the wire, {excess:+.0f} B against nothing new",
                           "0 B of it (< 1 KiB more than nothing new)", "yes" if excess < KiB else "NO"))
    hand = median(merged.get("first sync, 3 hosts: rsync -a by hand, all at once", []))
    for method in ("rsync", "stream"):
        ours = median(merged.get(f"first sync, 3 hosts: our engine, {method} (threads)", []))
        checks.append((f"first sync, 3 hosts at once, our engine ({method}) / rsync -a by hand, all at once",
                       f"{ours / hand:.2f}x ({ours:.2f} s / {hand:.2f} s)" if hand == hand and ours == ours else "not measured",
                       "no number in the issue (<= 1x: as fast as by hand)",
                       ("yes" if ours <= hand else "NO") if hand == hand and ours == ours else "-"))
    return "\n\n".join([render(rows), render(byte_rows), render([("target (issue 14)", "measured", "target", "met?")] + checks)])


def render(table: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def slurm_figures(args: argparse.Namespace) -> int:
    """Issue 15's figures: they need the tests' one-node Slurm, its users and
    sshds, which its pytest fixtures bring up; tests/bench_slurm.py prints
    the tables (no assertions on figures)."""
    env = dict(os.environ, TBR_BENCH_ROUNDS=str(args.rounds))
    if args.markdown:
        Path(args.markdown).write_text("")
        env["TBR_BENCH_OUT"] = str(Path(args.markdown).resolve())
    began = time.perf_counter()
    code = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/bench_slurm.py"],
        cwd=Path(__file__).resolve().parent.parent, env=env,
    ).returncode
    print(f"bench took {time.perf_counter() - began:.0f} s ({args.rounds} rounds, --only slurm) on {os.cpu_count()} cores")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description="tensorboard-remote benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the watcher's idle CPU is measured over")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round, 1 host, 1 and 2 stub hosts, idle window 3 s, 64 MB, no link cut: a quick check that it runs")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--only", choices=("merge", "slurm"),
                        help="only these figures: merge = the merged view's (issue 14: latency, bytes moved, first sync); "
                             "slurm = issue 15's against the tests' one-node Slurm (follow latency, a 105 MB logdir "
                             "in srun and ssh mode; root; tests/bench_slurm.py)")
    parser.add_argument("--writes", type=int, default=20, help="scalars written for the merged view's latency (>= 10)")
    args = parser.parse_args()
    if args.only == "slurm":
        sys.exit(slurm_figures(args))
    big = 256 << 20
    stub_counts = (1, 8)
    if args.smoke:
        args.rounds, args.hosts, args.idle, big = 1, "1", 3.0, 64 << 20
        stub_counts = (1, 2)
        args.writes = 1
    old = args.only is None
    if not old:
        counts, stub_counts = [], ()
    counts = [int(n) for n in args.hosts.split(",")] if old else []
    times: dict[str, list[float]] = {}
    figures: dict[str, list[float]] = {}
    resident: list[str] = []
    notes: list[str] = []
    merged: dict[str, list[float]] = {}
    moved: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    def figure(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tbr-bench-") as tmp:
        # 3 sandbox hosts for the merged view's first sync.
        bench = Bench(Path(tmp), max(counts + list(stub_counts) + [3]))
        try:
            for _ in range(args.rounds if old else 0):
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
            if old:
                stub_left = stub_hosts(bench, stub_counts, args.rounds, figure)
                notes += watcher_figures(bench, args.rounds, args.idle, figure, plain_hung=not args.smoke)
                if args.smoke:
                    notes.append("--smoke: the hung link without a clock jump, the link cut and the link back are not "
                                 "measured (the full run does them; the link in a network namespace)")
                else:
                    notes += link_figures(bench, args.rounds, figure)
                relay_figures(bench.root, 200, big, args.rounds, figure)
            notes += merge_figures(bench, args.smoke, args.rounds, args.writes,
                                   lambda name, value: merged.setdefault(name, []).append(value), moved)
        finally:
            bench.close()
    took = time.perf_counter() - began

    texts = []
    if old:
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
        texts.append(text)
    texts.append(merge_tables(merged, moved, args.smoke))
    text = "\n\n".join(texts)
    for line in notes:
        text += f"\nnote: {line}"
    text += f"\nbench took {took:.0f} s ({'--smoke' if args.smoke else f'{args.rounds} rounds'}{'' if old else ', --only ' + args.only}) on {os.cpu_count()} cores"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
