"""Pure functions that turn a target and settings into OpenSSH argv.

This module decides every ssh flag we use; nothing here runs a process, so it
is tested without a network. Host names, users and ports that ssh_config
defines are left to OpenSSH (``ssh -G``); we never parse ssh_config ourselves.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from typing import Optional

from .errors import TbError

# Characters a host alias never needs and that would be dangerous if a
# string ever reached a shell or ssh's option parser.
_BAD_HOST = re.compile(r"[\s\x00-\x1f\x7f'\"`$;&|<>()\\*?!{}]")


@dataclass(frozen=True)
class Target:
    """Where to connect, as OpenSSH should be told."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    ssh_config: Optional[str] = None
    identities: tuple[str, ...] = field(default_factory=tuple)
    connect_timeout: int = 10
    # No terminal to prompt on: fail instead of waiting on a hidden prompt.
    batch: bool = False
    # Reach this host through the ControlMaster of another (a Slurm compute
    # node through its login node): ``ssh -S jump_socket -W %h:%p jump``.
    jump: Optional["Target"] = None
    jump_socket: Optional[str] = None
    # Shown after the host in messages, e.g. "job 123 on cn1".
    tag: Optional[str] = None

    @property
    def label(self) -> str:
        """The host as the user typed it, for messages."""
        text = self.host
        if self.user:
            text = f"{self.user}@{text}"
        if self.port:
            text = f"{text}:{self.port}"
        if self.tag:
            text = f"{text} ({self.tag})"
        return text

    def to_dict(self) -> dict:
        return {
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "ssh_config": self.ssh_config,
            "identities": list(self.identities),
            "connect_timeout": self.connect_timeout,
            "jump": self.jump.to_dict() if self.jump else None,
            "jump_socket": self.jump_socket,
            "tag": self.tag,
        }

    def with_batch(self, batch: bool) -> "Target":
        """The same target, prompting allowed or not (``batch``), jump host included."""
        jump = self.jump.with_batch(batch) if self.jump else None
        return dataclasses.replace(self, batch=batch, jump=jump)

    @classmethod
    def from_dict(cls, data: dict, *, batch: bool = False) -> "Target":
        return cls(
            host=data["host"],
            user=data.get("user"),
            port=data.get("port"),
            ssh_config=data.get("ssh_config"),
            identities=tuple(data.get("identities") or ()),
            connect_timeout=int(data.get("connect_timeout") or 10),
            batch=batch,
            jump=cls.from_dict(data["jump"], batch=batch) if data.get("jump") else None,
            jump_socket=data.get("jump_socket"),
            tag=data.get("tag"),
        )


def check_host(host: str) -> str:
    """Refuse host strings that could be read as options or shell syntax."""
    if not host:
        raise TbError("no host given: use fab -H HOST, --host HOST or the tb.host setting")
    if host.startswith("-"):
        raise TbError(f"refusing host {host!r}: a host may not start with '-'")
    if _BAD_HOST.search(host):
        raise TbError(f"refusing host {host!r}: it contains whitespace or shell characters")
    return host


def parse_host(text: str) -> tuple[Optional[str], str, Optional[int]]:
    """Split ``[user@]host[:port]`` (``[v6addr]:port`` too) as Fabric's -H does."""
    check_host(text)
    user: Optional[str] = None
    rest = text
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not user:
            raise TbError(f"refusing host {text!r}: empty user name before '@'")
    port: Optional[int] = None
    if rest.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", rest)
        if not match:
            raise TbError(f"refusing host {text!r}: malformed [address]:port")
        rest, port_text = match.group(1), match.group(2)
        port = int(port_text) if port_text else None
    elif rest.count(":") == 1:
        rest, port_text = rest.split(":")
        if not port_text.isdigit():
            raise TbError(f"refusing host {text!r}: the port after ':' must be a number")
        port = int(port_text)
    if port is not None and not 1 <= port <= 65535:
        raise TbError(f"refusing host {text!r}: port must be from 1 to 65535")
    if not rest:
        raise TbError(f"refusing host {text!r}: no host name")
    check_host(rest)
    return user, rest, port


def base_options(target: Target) -> list[str]:
    """Options every ssh call for this target carries."""
    argv: list[str] = []
    if target.ssh_config:
        argv += ["-F", target.ssh_config]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    for identity in target.identities:
        argv += ["-i", identity]
    argv += ["-o", f"ConnectTimeout={target.connect_timeout}"]
    if target.batch:
        argv += ["-o", "BatchMode=yes"]
    if target.jump is not None and target.jump_socket:
        argv += ["-o", f"ProxyCommand={proxy_command(target.jump, target.jump_socket)}"]
    return argv


def proxy_command(jump: Target, socket: str) -> str:
    """``ProxyCommand`` that reaches ``%h:%p`` through the jump host's master.

    It rides the master that is already logged in to the jump host, so
    while that master lives the jump host sees no second login (nor a second
    two-factor prompt); ``tb.start`` always opens or checks it first. If the
    master is gone (``tb.exit`` after the link dropped), ssh logs in to the
    jump host afresh, as a plain host's clean-up does; BatchMode makes that
    fail rather than prompt unseen.
    ssh runs a ProxyCommand with ``/bin/sh -c`` after expanding ``%`` tokens:
    every word is shell-quoted and every literal ``%`` doubled.
    """
    argv = [
        "ssh",
        *base_options(dataclasses.replace(jump, batch=True)),
        "-S",
        socket,
        "-o",
        "ControlMaster=no",
        "-W",
        "%h:%p",
        "--",
        jump.host,
    ]
    words = [shlex.quote(word.replace("%", "%%")) for word in argv]
    # The two tokens ssh must expand stay unquoted and undoubled.
    return " ".join(words).replace(shlex.quote("%%h:%%p"), "%h:%p")


def control_path_pattern(control_dir: str, suffix: str = "") -> str:
    """``%C`` keeps socket paths short (a hash), unlike the seed's %r@%h:%p.

    ``suffix`` (``-j`` and a hash of a job) gives a Slurm job's session a
    master and state of its own beside the login host's.
    """
    if not re.fullmatch(r"[A-Za-z0-9-]*", suffix):
        raise ValueError(f"bad control path suffix {suffix!r}")
    return f"{control_dir.rstrip('/').replace('%', '%%')}/tb-%C{suffix}"


def config_argv(target: Target, *options: str) -> list[str]:
    """``ssh -G``: what OpenSSH resolves for the host from ssh_config."""
    return ["ssh", "-G", *base_options(target), *options, "--", target.host]


def resolve_argv(target: Target, control_dir: str, suffix: str = "") -> list[str]:
    """``ssh -G`` that also expands our control path, in one call: our
    pattern goes in as ``IdentityAgent`` (a path option that expands the same
    ``%C``, and that only this ``-G`` call sees), so ``controlpath`` stays the
    user's own (the master they may keep open) and ``identityagent`` is ours."""
    return config_argv(target, "-o", f"IdentityAgent={control_path_pattern(control_dir, suffix)}")


def master_argv(target: Target, socket: str, keepalive: int, log: str) -> list[str]:
    """The ControlMaster that carries the forward and every remote step.

    It opens with no forward: the forward is added with ``-O forward`` once
    TensorBoard says where it listens (a Unix socket path or a TCP port).
    """
    return [
        "ssh",
        *base_options(target),
        "-M",
        "-S",
        socket,
        # After -f, ssh points stderr at /dev/null: -E keeps its messages
        # (failed channel opens included) in a file we can read.
        "-E",
        log,
        "-f",
        "-N",
        "-T",
        "-o",
        "ControlPersist=no",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        f"ServerAliveInterval={keepalive}",
        "-o",
        "ServerAliveCountMax=3",
        # Forwards from the user's ssh_config (LocalForward...) are not ours.
        "-o",
        "ClearAllForwardings=yes",
        # A forward to our relay socket replaces the file a lost master left
        # (the control directory is ours and 0700).
        "-o",
        "StreamLocalBindUnlink=yes",
        "--",
        target.host,
    ]


_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def forward_spec(local: "int | str", endpoint: str, remote_host: str = "127.0.0.1") -> str:
    """``-L`` spec: always bind 127.0.0.1 here, never an address others reach,
    or (``local`` a path) a Unix socket in our 0700 control directory, which
    the session's watcher relays the local port to.

    ``endpoint`` is ``unix /abs/path`` or ``tcp PORT``, on the remote's
    127.0.0.1 (never ``localhost``: ``::1`` may be another program) or, for a
    Slurm compute node reached from its login node, on ``remote_host``.
    """
    kind, _, where = endpoint.partition(" ")
    if not _ADDRESS.fullmatch(remote_host):
        raise ValueError(f"bad remote host {remote_host!r}")
    if isinstance(local, str):
        if not local.startswith("/") or ":" in local or any(c.isspace() for c in local):
            raise ValueError(f"bad local socket {local!r}")
        here = local
    else:
        here = f"127.0.0.1:{int(local)}"
    if kind == "unix" and where.startswith("/") and remote_host == "127.0.0.1":
        return f"{here}:{where}"
    if kind == "tcp" and where.isdigit():
        return f"{here}:{remote_host}:{int(where)}"
    raise ValueError(f"bad endpoint {endpoint!r}")


def forward_argv(target: Target, socket: str, spec: str, operation: str = "forward") -> list[str]:
    """Add (``forward``) or remove (``cancel``) a forward on our master."""
    if operation not in ("forward", "cancel"):
        raise ValueError(f"unsupported forward operation {operation!r}")
    return ["ssh", *base_options(target), "-S", socket, "-O", operation, "-L", spec, "--", target.host]


def control_argv(target: Target, socket: str, operation: str) -> list[str]:
    """``ssh -O check|exit`` against our master."""
    if operation not in ("check", "exit"):
        raise ValueError(f"unsupported control operation {operation!r}")
    return ["ssh", *base_options(target), "-S", socket, "-O", operation, "--", target.host]


#: A call meant to ride a master fails at once if that master is gone,
#: instead of logging in afresh: ``-S`` with ``ControlMaster=no`` falls back
#: to a connection of its own when the socket does not answer, and that
#: connection's ProxyCommand (first on the command line, so it wins over a
#: jump's and over ssh_config's ProxyJump) is ``false``. A live master never
#: looks at it. (Measured: a master that died between ``-O check`` and the
#: start script let the script log in by itself and report "reusing the
#: tunnel" with no master behind the forward.)
MASTER_ONLY = ("-o", "ProxyCommand=false")


def remote_argv(target: Target, socket: Optional[str]) -> list[str]:
    """Run a POSIX sh script (fed on stdin) on the remote.

    With a socket, the call rides our master (no new login). The script goes
    on stdin so that the remote login shell (bash, zsh, tcsh...) only ever
    sees the two words ``sh -s``.
    """
    argv = ["ssh"]
    if socket:
        argv += MASTER_ONLY
    argv += base_options(target)
    if socket:
        # Riding the master must never turn into a second, prompting login.
        argv += ["-S", socket, "-o", "ControlMaster=no"]
        if not target.batch:
            argv += ["-o", "BatchMode=yes"]
    else:
        # A login of its own: with the user's ``ControlMaster auto`` and
        # ``ControlPersist``, it would stay behind as a master of theirs.
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    argv += ["-T", "-o", "RemoteCommand=none", "--", target.host, "sh -s"]
    return argv


def link_probe_argv(target: Target, socket: str) -> list[str]:
    """Ask the remote's sshd, through our master, for a channel to a closed
    port: a live link answers at once (refused or prohibited); a dead one
    not at all. No login shell runs."""
    return [
        "ssh", *MASTER_ONLY, *base_options(target), "-S", socket, "-o", "ControlMaster=no", "-o", "BatchMode=yes",
        "-W", "127.0.0.1:1", "--", target.host,
    ]
