"""What we tell the user when a start fails, and the words we reuse.

Each function turns what the remote said (a script's error detail, the
TensorBoard log) into one line that says what went wrong and what to change,
followed by the log's tail where that helps. Pure: tested without a host.
"""

from __future__ import annotations

import os
import re
from typing import Optional

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
        found = _NOT_FOUND.search(log)
        command = found.group(1) if found else (settings.python or settings.tensorboard_cmd).split()[0]
        head = (
            f"{command!r} not found on {label} in a non-interactive "
            f"shell: set tb.activate (e.g. 'source ~/venvs/tb/bin/activate') or "
            f"tb.{'python' if settings.python else 'tensorboard_cmd'} to its full path"
        )
    elif "data_server=netns requires it" in log:
        head = (
            f"{label} does not allow private network namespaces (unshare -rn): "
            f"set tb.data_server to auto or off"
        )
    elif (failed := import_failure(log, label, settings)) is not None:
        head = failed
    elif "could not bind to port" in log or "already in use" in log:
        head = (
            f"TensorBoard could not bind remote port {settings.remote_port} on {label}: "
            f"choose another with --remote-port"
        )
    else:
        head = f"TensorBoard exited on {label} before it answered"
    return with_log(head, log)


_NOT_FOUND = re.compile(rf"^{remote.LOG_MARK} (\S+): command not found on PATH", re.M)
#: The launcher's line naming the Python it runs under (see remote.launcher).
_PYTHON = re.compile(rf"^{remote.LOG_MARK} python (.+)$", re.M)
_MISSING = re.compile(r"No module named '([\w.]+)'")

#: What to install for a module TensorBoard's import misses, where its
#: package has another name or a version matters (measured, see the
#: README's supported range); any other module: its own name.
_INSTALL = {
    "six": "six",
    "pkg_resources": "'setuptools<82'",  # setuptools 82 removed pkg_resources
    "imghdr": "standard-imghdr",  # removed from the standard library in Python 3.13
    "absl": "absl-py",
    "google": "protobuf",
    "grpc": "grpcio",
}

#: TensorBoard's import failures that are not a missing module: the words
#: in the traceback, what they mean, what to do and what to install.
_BROKEN = (
    (
        "cannot import name 'main_lib' from 'tensorboard'",
        "is older than 2.5 (it has no tensorboard.main_lib), too old for tensorboard-remote "
        "(which supports TensorBoard 2.5 to 2.21)",
        "upgrade it", "'tensorboard>=2.5'",
    ),
    (
        "`np.string_` was removed in the NumPy 2.0 release",
        "is older than 2.18 and does not work with NumPy 2 (np.string_ is gone)",
        "install NumPy 1 into that Python (or a TensorBoard >= 2.18)", "'numpy<2'",
    ),
    (
        "Descriptors cannot be created directly",
        "does not work with the protobuf installed (4 or later)",
        "install an older protobuf into that Python", "'protobuf<3.21'",
    ),
)


def import_failure(log: str, label: str, settings: Settings) -> Optional[str]:
    """Why the launcher could not import TensorBoard and what to install,
    from the traceback in its log; None if the log shows no such failure."""
    used = _PYTHON.findall(log)
    python = used[-1] if used else settings.python or "python3"
    for words, meaning, remedy, package in _BROKEN:
        if words in log:
            return f"the TensorBoard of {python} on {label} {meaning}: {remedy}: {python} -m pip install {package}"
    missing = _MISSING.findall(log)
    if not missing:
        return None
    module = missing[-1]
    top = module.split(".")[0]
    if top == "tensorboard":
        if settings.python:
            return (
                f"tb.python ({settings.python!r}) on {label} has no TensorBoard (No module named 'tensorboard'): "
                f"set it to the command of the Python TensorBoard lives in"
            )
        return (
            f"the Python that {settings.tensorboard_cmd.split()[0]!r} led to on {label} ({python}) has no TensorBoard "
            f"(No module named 'tensorboard'): set tb.python to the Python TensorBoard lives in "
            f"(e.g. --python 'conda run -n tb python' or --python ~/venvs/tb/bin/python), "
            f"or tb.tensorboard_cmd to TensorBoard's own console script"
        )
    return (
        f"TensorBoard cannot be imported by {python} on {label}: a module it needs is missing "
        f"(No module named {module!r}); install it into that Python: {python} -m pip install {_INSTALL.get(top, top)}"
    )


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
