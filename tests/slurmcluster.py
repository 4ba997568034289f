"""A real one-node Slurm cluster for the tests (Debian's slurmctld, slurmd,
slurm-client and munge), started as root in a directory of its own.

Everything is private to the directory: its own munge key and socket, its
own ``slurm.conf`` (clients find it through ``SLURM_CONF``), free ports,
state and spool directories. The compute node is ``cn1`` at NodeAddr
127.0.0.2: a server bound there is not reachable at 127.0.0.1, as a compute
node's port is not on the login node. See ``shared/facts/slurm.md``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from tensorboard_remote.sandbox import free_port

from . import procs

NODE = "cn1"
NODE_ADDR = "127.0.0.2"
#: A second node (``nodes=2``): another slurmd on this machine, on its own
#: loopback address and port (a job that moves between nodes).
NODE2, NODE2_ADDR = "cn2", "127.0.0.3"
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/squeue", "/usr/sbin/munged")


def why_not() -> Optional[str]:
    """Why a Slurm cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "Slurm's daemons need root (the CI runs as root)"
    missing = [path for path in BINARIES if not Path(path).exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)}): apt-get install slurmctld slurmd slurm-client munge"
    return None


def _node_resources() -> tuple[int, int]:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


class SlurmCluster:
    """munged, slurmctld and slurmd with one node, ``cn1``."""

    def __init__(self, directory: os.PathLike | str, *, proctrack: str = "linuxproc", nodes: int = 1) -> None:
        self.dir = Path(directory).absolute()
        self.proctrack = proctrack
        self.nodes = [(NODE, NODE_ADDR), (NODE2, NODE2_ADDR)][:nodes]
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        munge = pwd.getpwnam("munge")
        mdir = self.dir / "munge"
        mdir.mkdir(mode=0o755)
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(128))
        for path in (mdir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        os.chmod(mdir, 0o755)
        for name in ("state", "spool", "log"):
            (self.dir / name).mkdir(mode=0o755)
        cpus, memory = _node_resources()
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        socket = f"socket={self.munge_socket}"
        lines = [
            "ClusterName=tbrtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            f"AuthInfo={socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self.dir / 'state'}",
            f"SlurmdSpoolDir={self.dir / 'spool'}/%n",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.dir / 'slurmd'}-%n.pid",
            f"SlurmctldLogFile={self.dir / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.dir / 'log' / 'slurmd'}-%n.log",
            f"ProctrackType=proctrack/{self.proctrack}",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SlurmdParameters=config_overrides",
            "SchedulerParameters=batch_sched_delay=0",
            "ReturnToService=2",
            "MailProg=/bin/true",
            "KillWait=2",
        ]
        # Each node its own slurmd port (one port would do for one node).
        ports = [self.slurmd_port] + [free_port() for _ in self.nodes[1:]]
        lines += [
            f"NodeName={name} NodeAddr={addr} Port={port} CPUs={cpus} RealMemory={memory} State=UNKNOWN"
            for (name, addr), port in zip(self.nodes, ports)
        ]
        lines.append(f"PartitionName=debug Nodes={','.join(name for name, _ in self.nodes)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        if self.proctrack == "cgroup":
            (self.dir / "cgroup.conf").write_text(
                "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\nConstrainCores=no\nConstrainRAMSpace=no\n"
            )

    def _daemon(self, name: str, argv: list[str], pidfile: Path, timeout: float = 10) -> int:
        env = {**os.environ, **self.env}
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, 0)
                self.procs[name] = pid
                return pid
            except (OSError, ValueError, IndexError):
                time.sleep(0.02)
        raise RuntimeError(f"{name} did not start; see {self.dir / 'log'}")

    def start_munge(self) -> int:
        """munged, which every Slurm command and daemon needs to authenticate."""
        munge = ["runuser", "-u", "munge", "--", "/usr/sbin/munged",
                 f"--key-file={self.dir / 'munge' / 'munge.key'}",
                 f"--socket={self.munge_socket}",
                 f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
                 f"--log-file={self.dir / 'munge' / 'munged.log'}",
                 f"--seed-file={self.dir / 'munge' / 'munged.seed'}"]
        return self._daemon("munged", munge, self.dir / "munge" / "munged.pid")

    def stop_munge(self) -> None:
        """Stop munged (as a restart or a crash does): Slurm commands then fail
        within seconds ("Munge encode failed ... Did you start munged?")."""
        pid = self.procs.pop("munged")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.munge_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.munge_socket.exists(), "munged did not stop"

    def start(self) -> "SlurmCluster":
        self._write()
        self.start_munge()
        self._daemon("slurmctld", ["/usr/sbin/slurmctld", "-f", str(self.conf)], self.dir / "slurmctld.pid")
        for name, _ in self.nodes:
            self._daemon(f"slurmd-{name}", ["/usr/sbin/slurmd", "-f", str(self.conf), "-N", name], self.dir / f"slurmd-{name}.pid")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = self.run(["sinfo", "-h", "-N", "-o", "%T"]).stdout.split()
            if out == ["idle"] * len(self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"nodes {', '.join(n for n, _ in self.nodes)} did not become idle (sinfo says {out!r})")

    def run(self, argv: list[str], *, user: Optional[str] = None, timeout: float = 20) -> subprocess.CompletedProcess:
        """A Slurm client command, as ``user`` (from that user's home)."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **self.env}
        cwd = "/"
        if user:
            home = pwd.getpwnam(user).pw_dir
            env.update(HOME=home, USER=user, LOGNAME=user)
            argv = ["/usr/sbin/runuser", "-u", user, "--", *argv]
            cwd = home
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)

    def submit(self, user: str, *, name: str = "train", seconds: int = 600, extra: tuple[str, ...] = ()) -> str:
        """``sbatch`` a sleeping job as ``user``; its id."""
        out = self.run(
            ["sbatch", "--parsable", "-J", name, "-o", "/dev/null", *extra, "--wrap", f"sleep {seconds}"],
            user=user,
        )
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def job_state(self, job: str) -> str:
        return self.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip()

    def wait_running(self, job: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.job_state(job) == "RUNNING":
                return
            time.sleep(0.05)
        raise RuntimeError(f"job {job} did not start: {self.job_state(job)!r}")

    def cancel(self, job: str) -> None:
        self.run(["scancel", job])

    def ours(self) -> list[int]:
        """Live processes of this cluster: their environment names our slurm.conf
        (daemons, step daemons, and whatever a job or step started)."""
        conf = str(self.conf)
        return [pid for pid in procs.pids() if procs.environ(pid).get("SLURM_CONF") == conf and procs.alive(pid)]

    def stop(self) -> None:
        """Cancel every job, stop the daemons, and kill anything left of ours."""
        jobs = self.run(["squeue", "-h", "-o", "%i"]).stdout.split()
        if jobs:
            self.run(["scancel", "--full", *jobs])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.run(["squeue", "-h", "-o", "%i"]).stdout.strip():
                time.sleep(0.1)
        for name in (*(f"slurmd-{node}" for node, _ in self.nodes), "slurmctld", "munged"):
            pid = self.procs.pop(name, None)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.ours():
            time.sleep(0.05)
        for pid in self.ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
