"""Is a session healthy? The HTTP probe through our forward, what its answer
proves, and the typed result ``tb.check`` and ``tb.list`` report."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from .host import HUNG_AFTER
from .record import Record


@dataclass(frozen=True)
class Probe:
    """One ``GET <url>data/logdir``: did TensorBoard answer, and if not, why."""

    ok: bool
    reason: str

    @property
    def timed_out(self) -> bool:
        return not self.ok and "timed out" in self.reason

    @property
    def dropped(self) -> bool:
        """Accepted, then closed (or reset) with no answer: what a master
        does with a connection whose channel the server refused."""
        reason = self.reason.lower()
        return not self.ok and ("closed" in reason or "reset" in reason)


#: Our probes go to our own 127.0.0.1 port, never through a proxy
#: (``urllib`` would honour ``http_proxy``, ``HTTP_PROXY`` and ``all_proxy``,
#: common on clusters and corporate laptops).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _UnixConnection(http.client.HTTPConnection):
    """HTTP to a Unix socket: the relay socket a watched session's master
    forwards (the local port is the watcher's, which answers 503 while it
    reconnects)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("127.0.0.1", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _judged(status: int, body: bytes) -> Probe:
    """Is this answer to ``GET data/logdir`` TensorBoard's?"""
    if status == 200 and b"logdir" in body:
        return Probe(True, "ok")
    return Probe(False, f"HTTP {status}")


def _probe_unix(url: str, path: str, timeout: float) -> Probe:
    parts = urllib.parse.urlsplit(url + "data/logdir")
    connection = _UnixConnection(path, timeout)
    try:
        connection.request("GET", parts.path, headers={"Host": parts.netloc})
        response = connection.getresponse()
        return _judged(response.status, response.read(4096))
    except socket.timeout:
        return Probe(False, "timed out")
    except (OSError, http.client.HTTPException) as error:
        # The master closes a connection whose channel was refused at once,
        # with no answer: TensorBoard is not there (or a live link refuses).
        return Probe(False, str(error) or type(error).__name__)
    finally:
        connection.close()


def probe(url: str, timeout: float = 3.0, via: Optional[str] = None) -> Probe:
    """Does TensorBoard answer ``GET <url>data/logdir``? With ``via`` (a Unix
    socket path), ask through that socket instead of the URL's port."""
    if via is not None:
        return _probe_unix(url, via, timeout)
    try:
        with _DIRECT.open(url + "data/logdir", timeout=timeout) as response:
            return _judged(response.status, response.read(4096))
    except urllib.error.HTTPError as error:
        return Probe(False, f"HTTP {error.code}")
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        return Probe(False, str(reason) or type(error).__name__)


class Answer(Enum):
    """What one probe through a session's forward proves."""

    #: The page answers as only our TensorBoard could: on a socket in our
    #: 0700 run directory, or behind our secret URL token. No remote command
    #: is needed (each one pays the remote login shell's start-up, e.g. a
    #: conda or pyenv init).
    PROVEN = "proven"
    #: No answer at all, not even a refusal: after a laptop sleeps the master
    #: still answers ``-O check`` (that is local) while its connection is
    #: dead until the keepalives give up; a dead TensorBoard behind a live
    #: link fails at once instead (confirm with ``Host.link_answers``).
    HUNG = "hung"
    #: No forward yet, or an answer that proves nothing.
    UNPROVEN = "unproven"


def answer(rec: Optional[Record], check=None) -> Answer:
    """Probe ``rec``'s forward once (``check``: the probe, for tests)."""
    if rec is None or not rec.forward or not rec.url:
        return Answer.UNPROVEN
    result = (check or probe)(rec.url, timeout=HUNG_AFTER, via=rec.relay)
    if result.ok and (rec.token or str(rec.endpoint or "").startswith("unix ")):
        return Answer.PROVEN
    return Answer.HUNG if result.timed_out else Answer.UNPROVEN


class Status(Enum):
    """Why a session is or is not healthy (``tb.list --json`` shows it)."""

    OK = "ok"
    NO_TUNNEL = "no-tunnel"
    STALE_SOCKET = "stale-socket"
    UNRECORDED_MASTER = "unrecorded-master"
    HUNG_LINK = "hung-link"
    REMOTE_SILENT = "remote-silent"
    NOT_RUNNING = "not-running"
    NO_FORWARD = "no-forward"
    PAGE_SILENT = "page-silent"
    # A watched session (the watcher's phase, when it is not serving):
    NO_WATCHER = "no-watcher"
    RECONNECTING = "reconnecting"
    NEEDS_LOGIN = "needs-login"
    HOST_KEY_REFUSED = "host-key-refused"
    JOB_ENDED = "job-ended"
    WAITING_FOR_JOB = "waiting-for-job"  # --follow: the next job of the name is not running yet
    # A merged view: it serves, but a host's last sync failed.
    STALE = "stale"


@dataclass(frozen=True)
class Health:
    status: Status
    label: str
    detail: str  # what a person reads after "LABEL: "
    #: A watched session's watcher, as it says (``tb.list --json``).
    watcher: Optional[dict] = None
    #: A Slurm job's: its id and time left (``tb.list --json``).
    job: Optional[dict] = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def line(self) -> str:
        return f"{self.label}: {self.detail}"
