"""TensorBoard on this machine, for a merged view over a local mirror.

It is started, checked and stopped by the very scripts that do it on a
remote host (``remote.py``), run by ``/bin/sh`` here instead of through ssh:
the same launcher, the same private Unix socket in a 0700 run directory, the
same URL token guard, and the fast loader's data server in a private network
namespace where this machine allows it (else off). So no TCP port but the
session's own, which the syncer owns on 127.0.0.1, ever serves it. The
TensorBoard is the one of the Python running us (the ``local`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from typing import Optional

from . import remote
from .errors import TbError
from .remote import Reply

#: What to install when this Python has no TensorBoard.
EXTRA = "pip install 'tensorboard-remote[local]'"


def require_tensorboard(platform: Optional[str] = None) -> None:
    """One line when TensorBoard cannot run here: a platform whose process
    table our scripts cannot read (they prove a pid is ours through
    ``/proc``), or no TensorBoard in this Python."""
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        raise TbError(
            f"a merged view (or --run-on local) runs TensorBoard on this machine, which tensorboard-remote "
            f"can do on Linux (and WSL) only so far, not on {platform}: run it on a Linux machine, or use run_on: remote"
        )
    if importlib.util.find_spec("tensorboard") is None:
        raise TbError(
            f"a merged view (or --run-on local) runs TensorBoard on this machine, and this Python "
            f"({sys.executable}) has none: {EXTRA}"
        )


def python_cmd() -> str:
    """Our own interpreter, as the scripts' ``python`` shell fragment."""
    return shlex.quote(sys.executable)


class LocalBoard:
    """The local TensorBoard of one merged session, in ``rundir`` (a shell word)."""

    def __init__(self, rundir: str, timeout: float = 10.0) -> None:
        self.rundir = rundir
        self.timeout = timeout

    def _run(self, script: str, timeout: Optional[float] = None) -> Reply:
        try:
            done = subprocess.run(
                ["/bin/sh", "-s"], input=script, capture_output=True, text=True,
                timeout=timeout or self.timeout, cwd=os.path.expanduser("~"),
            )
        except subprocess.TimeoutExpired:
            raise TbError("the local TensorBoard script did not finish in time") from None
        reply = Reply.parse(done.stdout)
        if reply is None:
            raise TbError(f"the local TensorBoard script failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        return reply

    def start(self, logdir: str, token: Optional[str], data_server: str, wait: float) -> Reply:
        script = remote.start_script(
            self.rundir, logdir, "tensorboard", "", python=python_cmd(), serve="unix",
            data_server=data_server, token=token, wait=wait,
        )
        return self._run(script, timeout=wait + self.timeout)

    def status(self) -> Reply:
        return self._run(remote.status_script(self.rundir))

    def stop(self) -> Reply:
        return self._run(remote.stop_script(self.rundir), timeout=self.timeout + 10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            done = subprocess.run(["/bin/sh", "-s"], input=remote.log_script(self.rundir, lines), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.rstrip()
