"""Where TensorBoard runs, as seen from the host we hold a master to.

A session (``session.py``) always holds one master to one host. Its
:class:`Placement` says what differs when TensorBoard is not simply on that
host: the default here is "on the host itself"; ``slurm.py`` has the two
others (a step of a Slurm job, started from the login node; a compute node
reached through the login node). The session calls these hooks and has no
branch of its own for any placement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from . import messages
from .remote import Reply, Step

if TYPE_CHECKING:  # pragma: no cover
    from .host import Host
    from .jobclock import Clock
    from .progress import Reporter
    from .record import JobRef, Record
    from .settings import Settings
    from .sshargv import Target


@dataclass(frozen=True)
class Launch:
    """How the start script is to run TensorBoard, and where the forward
    leads: ``step`` None is on the host itself; ``port`` None is as the
    settings say."""

    step: Optional[Step] = None
    forward_host: str = "127.0.0.1"
    port: Optional[int] = None


class Placement:
    """TensorBoard on the host itself (the default)."""

    def serve(self, settings: "Settings") -> str:
        """How a new session serves: the setting, unless the placement needs TCP."""
        return settings.serve

    def entry(self, host: "Host") -> tuple["Target", Optional[str]]:
        """How ``tb.start`` reaches this session again (the host it was given,
        and ``--job``): what a watcher repairs it with."""
        return host.target, None

    def find(self, host: "Host", report: "Reporter") -> Optional["JobRef"]:
        """After the master is up: the job to record (None: no job)."""
        return None

    def launch(self, rec: "Record") -> Launch:
        return Launch()

    def starting(self, label: str, rec: "Record") -> str:
        """The phase shown while TensorBoard starts."""
        return f"{label}: starting TensorBoard"

    def started(self, label: str, rec: "Record", pid: int, isolation: str, opened: bool) -> str:
        """The line for a TensorBoard that this start started."""
        how = f"{'Unix socket' if str(rec.endpoint).startswith('unix') else 'TCP 127.0.0.1'}, {messages.isolation(isolation)}"
        if not opened:
            return f"{label}: reusing the tunnel (ssh master pid {rec.master_pid}); started TensorBoard (pid {pid}; {how})"
        return f"{label}: started TensorBoard (pid {pid}; {how})"

    def forwarded(self, rec: "Record", launch: Launch) -> str:
        """Where the forward leads, for the "forwarding ... to ..." line."""
        return messages.where(str(rec.endpoint)) + " there"

    def clock(self, host: "Host", rec: "Record") -> Optional["Clock"]:
        """A Slurm job's time left, for ``tb.check`` and ``tb.list`` (None: no job)."""
        return None

    def not_running(self, label: str, rec: "Record") -> str:
        """``tb.check``'s words when TensorBoard is no longer running."""
        return f"TensorBoard is not running on {label} (pid {rec.remote_pid} is gone); tb.start restarts it"

    def stopped(self, rec: "Record", reply: Reply) -> str:
        """``tb.exit``'s words after the stop script said ``stopped``."""
        return f"stopped TensorBoard (pid {reply.detail})"

    def unreachable(self, host: "Host", rec: "Record", error: Exception) -> Optional[str]:
        """``tb.exit`` could not reach the host: a line saying why the record
        may go anyway, or None to keep it (the default: try again later)."""
        return None

    def after_stop(self, host: "Host", say: Callable[[str], None]) -> None:
        """Once the session is stopped and its master closed."""


#: TensorBoard on the host itself.
HERE = Placement()
