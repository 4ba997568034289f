"""A throwaway sshd on 127.0.0.1 for the current user, and a sample logdir.

Used by ``tensorboard-remote demo`` (``cli.py``: a newcomer with no cluster
yet) and by the test suite, so the sandbox is written once. The sshd has its own host
key, an authorized key of its own, a pinned known_hosts and strict host key
checking; an ``ssh_config`` file names it ``sandbox`` so every ssh call
(ours and yours: ``ssh -F DIR/ssh_config sandbox``) reaches it.
"""

from __future__ import annotations

import getpass
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

SSHD = "/usr/sbin/sshd"
ALIAS = "sandbox"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sandbox:
    """An sshd bound to 127.0.0.1 that lets only the current user in, by key."""

    def __init__(
        self,
        directory: os.PathLike | str,
        *,
        alias: str = ALIAS,
        user: Optional[str] = None,
        address: str = "127.0.0.1",
        wrap: tuple[str, ...] = (),
    ) -> None:
        self.dir = Path(directory).absolute()
        self.alias = alias
        # Another user than ours (tests run as root and log in as an
        # ordinary user, e.g. on a Slurm login node).
        self.user = user or getpass.getuser()
        self.address = address
        # Words run before sshd's own, e.g. ("ip", "netns", "exec", NS) for
        # the link-fault tests: the command must exec sshd, keeping its argv.
        self.wrap = tuple(wrap)

    # Files ------------------------------------------------------------
    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def pidfile(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def port(self) -> int:
        for line in self.sshd_config.read_text().splitlines():
            if line.startswith("Port "):
                return int(line.split()[1])
        raise RuntimeError(f"no Port in {self.sshd_config}")

    def create(self, port: Optional[int] = None, *, extra_sshd: str = "") -> "Sandbox":
        """Write keys and configs (idempotent for keys)."""
        if not Path(SSHD).exists():
            raise RuntimeError(
                f"{SSHD} not found: install the OpenSSH server (Debian: apt-get install openssh-server)"
            )
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        other = self.user != getpass.getuser()
        # sshd reads authorized_keys as the user logging in.
        os.chmod(self.dir, 0o755 if other else 0o700)
        for name in ("host_ed25519", "client_ed25519"):
            key = self.dir / name
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tensorboard-remote-{name}", "-f", str(key)],
                    check=True,
                )
        port = port or free_port()
        (self.dir / "authorized_keys").write_text((self.dir / "client_ed25519.pub").read_text())
        if other:
            os.chmod(self.dir / "authorized_keys", 0o644)
        host_key = (self.dir / "host_ed25519.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[{self.address}]:{port} {host_key[0]} {host_key[1]}\n")
        self.sshd_config.write_text(
            "\n".join(
                [
                    # First: sshd keeps the first value it reads for a keyword.
                    extra_sshd,
                    f"Port {port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.dir / 'host_ed25519'}",
                    f"PidFile {self.pidfile}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    # Keys live in a temporary directory, not in ~/.ssh.
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    "AllowTcpForwarding yes",
                    "AllowStreamLocalForwarding yes",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                ]
            )
            + "\n"
        )
        self.ssh_config.write_text(
            "\n".join(
                [
                    f"Host {self.alias}",
                    f"  HostName {self.address}",
                    f"  Port {port}",
                    f"  User {self.user}",
                    f"  IdentityFile {self.dir / 'client_ed25519'}",
                    "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {self.dir / 'known_hosts'}",
                    "  GlobalKnownHostsFile /dev/null",
                    "  StrictHostKeyChecking yes",
                    "  PreferredAuthentications publickey",
                ]
            )
            + "\n"
        )
        return self

    # Process ----------------------------------------------------------
    def pid(self) -> Optional[int]:
        """Our sshd's pid, if it runs: the pid file's, and only while that
        process is our sshd (a reused pid is not). ``ps``, not ``/proc``:
        the demo runs on macOS too."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        # Only our sshd: its command line is ours, naming our config file
        # (not, say, "tail -f" of it).
        return pid if os.fsencode(f"{SSHD} -f {self.sshd_config} ") in _command_line(pid) else None

    def start(self, timeout: float = 10.0) -> "Sandbox":
        """Start sshd (it daemonizes) and wait until it accepts connections."""
        if self.pid():
            return self
        if os.geteuid() == 0:
            # sshd as root wants its privilege separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        result = subprocess.run(
            [*self.wrap, SSHD, "-f", str(self.sshd_config), "-E", str(self.log)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"sshd failed to start: {result.stderr.strip() or self.log.read_text()[-500:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid():
                try:
                    with socket.create_connection((self.address, self.port), timeout=1) as conn:
                        if conn.recv(4).startswith(b"SSH-"):
                            return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not come up on {self.address}:{self.port}; see {self.log}")

    def stop(self) -> None:
        pid = self.pid()
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.pid():
            time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)

    def accepted_logins(self) -> int:
        """How many logins sshd accepted (its log's "Accepted" lines)."""
        try:
            return self.log.read_text(errors="replace").count("Accepted publickey")
        except FileNotFoundError:
            return 0


def _command_line(pid: int) -> bytes:
    """The process's command line (b"" if gone), from ``ps`` (macOS and
    Linux), or from ``/proc`` in a Linux container without ``ps``."""
    try:
        # -ww: unlimited width (into a pipe, ps cuts lines at 80 columns).
        return subprocess.run(["ps", "-ww", "-p", str(pid), "-o", "command="], capture_output=True, timeout=10).stdout
    except FileNotFoundError:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return b""
    except (OSError, subprocess.TimeoutExpired):
        return b""


def write_sample_logdir(logdir: os.PathLike | str, runs: tuple[str, ...] = ("baseline", "wider"), steps: int = 50) -> Path:
    """Event files with a couple of scalar curves, written by TensorBoard's own Writer."""
    import math

    from tensorboard.summary import Writer

    root = Path(logdir)
    for index, run in enumerate(runs):
        writer = Writer(str(root / run))
        for step in range(steps):
            writer.add_scalar("loss", 2.0 * math.exp(-step / (10 + 5 * index)) + 0.05, step)
            writer.add_scalar("accuracy", 1.0 - math.exp(-step / (8 + 4 * index)), step)
        writer.flush()
        writer.close()
    return root


def local_tensorboard_cmd() -> str:
    """The TensorBoard of this Python, as a remote command for the sandbox."""
    return f"{shlex.quote(sys.executable)} -m tensorboard.main"
