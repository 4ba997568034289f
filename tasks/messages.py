"""What we tell the user when a start fails, and the words we reuse.

Each function turns what the remote said (a script's error detail, the
TensorBoard log) into one line that says what went wrong and what to change,
followed by the log's tail where that helps. Pure: tested without a host.
"""

from __future__ import annotations

import os

from . import remote
from .settings import Settings

RECONNECTING = "the tunnel does not answer (a laptop that slept, or a dropped link?); reconnecting"

#: How the data server is kept, as a start line says it.
ISOLATION = {
    "netns": "data server in a private network namespace",
    "off": "data server off (--load_fast=false)",
    "shared": "data server shared with local users",
}

#: Lines of the remote log shown under an error.
TAIL_LINES = 15


def isolation(word: str) -> str:
    return ISOLATION.get(word, word)


def with_log(head: str, log: str) -> str:
    """``head``, then the last lines of a remote log, indented."""
    tail = "\n".join("  | " + line for line in log.splitlines()[-TAIL_LINES:])
    return head + ("\nremote log:\n" + tail if tail else "")


def start_error(detail: str, label: str, settings: Settings) -> str:
    """The start script answered ``tbr error DETAIL``."""
    what, _, rest = detail.partition(" ")
    if what == "port-in-use":
        return (
            f"remote port {rest or settings.remote_port} on {label} is already in use by another program "
            f"(not ours; left alone): choose another with --remote-port"
        )
    if what == "rundir":
        return f"cannot create the run directory {rest} on {label}: check tb.remote_dir"
    if what == "no-srun":
        return f"{label} has no 'srun' on PATH in a non-interactive shell: is it a Slurm login node? (or use --slurm-via ssh)"
    if what == "step-exists":
        return (
            f"job {rest.split('.')[0]} already runs a tensorboard-remote step ({rest}) that this machine "
            f"has no record of (started from another login node or computer?): tb.exit it there, or scancel {rest}"
        )
    if what == "no-setsid":
        return f"{label} has no 'setsid' command (util-linux); cannot start TensorBoard detached"
    return f"starting TensorBoard on {label} failed ({detail})"


def died(log: str, label: str, settings: Settings) -> str:
    """TensorBoard exited before it answered: why, from its log."""
    if f"{remote.LOG_MARK} the activation snippet failed" in log:
        head = (
            f"the activation snippet failed on {label}: fix tb.activate "
            f"(currently {settings.activate!r})"
        )
    elif "command not found on PATH" in log:
        head = (
            f"{settings.tensorboard_cmd.split()[0]!r} not found on {label} in a non-interactive "
            f"shell: set tb.activate (e.g. 'source ~/venvs/tb/bin/activate') or "
            f"tb.tensorboard_cmd to its full path"
        )
    elif "data_server=netns requires it" in log:
        head = (
            f"{label} does not allow private network namespaces (unshare -rn): "
            f"set tb.data_server to auto or off"
        )
    elif "No module named" in log:
        head = (
            f"the Python behind {settings.tensorboard_cmd.split()[0]!r} on {label} cannot import "
            f"TensorBoard: point tb.tensorboard_cmd at the right one (e.g. 'python -m tensorboard.main')"
        )
    elif "could not bind to port" in log or "already in use" in log:
        head = (
            f"TensorBoard could not bind remote port {settings.remote_port} on {label}: "
            f"choose another with --remote-port"
        )
    else:
        head = f"TensorBoard exited on {label} before it answered"
    return with_log(head, log)


def timed_out(log: str, label: str, settings: Settings, remote_pid: int, why: str) -> str:
    """TensorBoard is alive but did not answer within the start timeout."""
    return with_log(
        f"TensorBoard (pid {remote_pid}) on {label} did not answer within "
        f"{settings.start_timeout:g}s ({why}); it is left running: tb.check later, or tb.exit",
        log,
    )


def forwarding_forbidden(label: str) -> str:
    return (
        f"{label} forbids port forwarding (its sshd has AllowTcpForwarding no or DisableForwarding yes), "
        f"so no ssh tunnel can reach a TensorBoard there: ask its admins to allow forwarding, or use a host "
        f"that allows it (a login node with tb.start --job JOB, or another host); nothing was left running"
    )


def logdir_missing(logdir: str, remote_home: str, local_home: str = "") -> str:
    """The start went on, but the logdir is not there (yet)."""
    line = f"note: the logdir {logdir} does not exist there (yet): TensorBoard shows runs once training writes them"
    local_home = local_home or os.path.expanduser("~")
    if local_home != remote_home and (logdir == local_home or logdir.startswith(local_home.rstrip("/") + "/")):
        rest = logdir[len(local_home):].lstrip("/")
        line += (
            f"; {local_home} is this machine's home directory (your shell expanded an unquoted ~): "
            f"quote it, --logdir '~/{rest}', for the remote's home ({remote_home})"
        )
    return line


def where(endpoint: str) -> str:
    """Where a forward leads, for the start line: a socket, or a TCP port."""
    kind, _, place = endpoint.partition(" ")
    return f"socket {place}" if kind == "unix" else f"127.0.0.1:{place}"
