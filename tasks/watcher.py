"""The watcher: one small process per session that keeps its URL working.

``tb.start`` starts it (``resident.spawn``) with the session's local port
already bound. It owns that port for the life of the session and relays it
(``relay.py``) to the Unix socket the ssh master forwards to TensorBoard. A
monitor thread probes through that socket every few seconds, and at once
when a connection finds it dead or the clock jumps (the machine slept). When
the session cannot serve it repairs it with the very code of ``tb.start``
(``targets.begin``: the same plan, the same session) in BatchMode, so it
never prompts: a host that wants a person to log in leaves the session in
``needs-login`` until ``tb.start`` logs in, visibly; a changed host key and
an ended Slurm job stop the retries.

Its control socket (``tb-<hash>.watch``) answers one line: ``status`` (this
module's :class:`State` as JSON), ``probe`` (probe now, then the status) and
``stop`` (cancel what is in flight, release the port, exit). Its page,
``URL + tensorboard-remote``, says the same to a browser, with a Slurm job's
time left and, near the end, the warning ``tb.check`` gives.

Run as ``python -m tensorboard_remote.watcher CONTROL_SOCKET`` with its
instructions as JSON on stdin and the listening socket's fd in
``TBR_WATCH_FD`` (``daemon.py``, shared with the syncer); it logs to
``tb-<hash>.watch.log``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from enum import Enum
from typing import Any, Callable, Optional

from . import daemon, health, record, targets
from .daemon import log
from .errors import Cancelled, HostKeyRefused, JobEnded, JobPending, LoginNeeded, TbError
from .host import HUNG_AFTER
from .progress import Reporter
from .relay import Outage
from .settings import Settings
from .shell import Shell
from .sshargv import Target
from .state import Paths

#: Seconds between probes while the session serves: a hung link is found
#: within this plus two probe timeouts (the page, then ``ssh -W``).
PROBE_EVERY = 4.0
#: Seconds between clock checks (they cost nothing).
TICK = 0.5
#: A gap this much larger on the wall clock than on the monotonic one
#: means the machine slept (the monotonic clock stops in suspend).
JUMP = 2.0
#: Seconds between reconnect attempts: 1, 2, then every 3 (an attempt to a
#: host that is down fails at once, or after the connect timeout).
BACKOFF = (1.0, 2.0, 3.0)
#: Seconds between looks for the next job of a followed name (``squeue``
#: through the master): sites rate-limit squeue, and a followed chain may
#: wait hours; the issue's target is 30 s from RUNNING to served.
FOLLOW_EVERY = 8.0
#: Connect timeout of a reconnect attempt (the setting, at most this).
CONNECT_TIMEOUT = 5


class Phase(Enum):
    STARTING = "starting"  # tb.start has not finished yet
    SERVING = "serving"
    RECONNECTING = "reconnecting"
    NEEDS_LOGIN = "needs-login"  # the host wants a person: tb.start
    HOST_KEY = "host-key-refused"  # never accepted unseen: retries stopped
    JOB_ENDED = "job-ended"  # the Slurm job is over: retries stopped
    NEXT_JOB = "waiting-for-job"  # --follow: the job is over; waiting for the next of its name
    STOPPING = "stopping"


#: Phases the watcher does not leave by itself (tb.start or tb.exit does).
WAITING = (Phase.NEEDS_LOGIN, Phase.HOST_KEY, Phase.JOB_ENDED)


@dataclasses.dataclass(frozen=True)
class State:
    """What the watcher tells tasks (``tb.check``, ``tb.list --json``)."""

    phase: str
    label: str
    pid: int
    attempt: int = 0  # reconnect attempts in this outage
    reconnects: int = 0  # outages repaired since the watcher started
    outage_since: Optional[float] = None  # wall-clock start of the current outage
    last_outage: Optional[float] = None  # start of the last repaired one
    last_outage_seconds: Optional[float] = None
    error: str = ""  # the last attempt's one-line reason


class Watcher(daemon.Daemon):
    def __init__(self, paths: Paths, spec: dict[str, Any]) -> None:
        self.paths = paths
        self.label = spec["label"]
        self.entry = Target.from_dict(spec["target"], batch=True)
        self.entry = dataclasses.replace(self.entry, connect_timeout=min(self.entry.connect_timeout, CONNECT_TIMEOUT))
        self.job: Optional[str] = spec.get("job")
        self.settings = Settings(**spec["settings"])
        self.shell = Shell(quick=self.settings.command_timeout)
        self.state = State(Phase.STARTING.value, self.label, os.getpid())
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.probed = threading.Condition(self.lock)
        self.steps = 0
        self.stopping = False
        self.armed = False  # served once: from then on, repair what breaks

    # ------------------------------------------------------------ state

    def phase(self) -> Phase:
        return Phase(self.state.phase)

    def _set(self, **changes: Any) -> None:
        with self.lock:
            before = self.state
            self.state = dataclasses.replace(self.state, **changes)
        if before.phase != self.state.phase or before.error != self.state.error:
            log(f"{self.state.phase}" + (f": {self.state.error}" if self.state.error else ""))

    def outage(self) -> Optional[Outage]:
        """What the URL says now (None: relay to TensorBoard)."""
        state, phase = self.state, self.phase()
        if phase in (Phase.SERVING, Phase.STARTING):
            return None
        if phase is Phase.RECONNECTING:
            since = time.strftime("%H:%M", time.localtime(state.outage_since or time.time()))
            why = f"; last try: {state.error}" if state.error else ""
            return Outage(f"reconnecting to {self.label} (attempt {max(state.attempt, 1)}, link lost {since}){why}{self._job_words()}")
        if phase is Phase.NEEDS_LOGIN:
            return Outage(f"{self.label} needs you to log in again: run tb.start", retry=5)
        if phase is Phase.HOST_KEY:
            return Outage(f"{self.label}: {state.error}; stopped reconnecting", retry=10)
        if phase is Phase.JOB_ENDED:
            return Outage(f"{state.error}; tb.exit cleans up", retry=10)
        if phase is Phase.NEXT_JOB:
            return Outage(f"{state.error} (this page reloads; tb.exit stops following)", retry=5)
        return Outage(f"the session on {self.label} is stopping")

    def _job_words(self) -> str:
        """``; job 123 on node7: 0:04:12 left; warning: ...`` for a running
        job's session ("" otherwise): the time squeue gave at the lookup,
        counted down (a reconnect looks it up again)."""
        if self.phase() in (Phase.JOB_ENDED, Phase.NEXT_JOB, Phase.STOPPING):
            return ""
        rec = record.load(self.paths)
        if rec is None or rec.job is None:
            return ""
        clock = rec.job.clock()
        said = f"; job {rec.job.id} on {rec.job.node}: {clock.words()}"
        warning = clock.warning(self.settings.job_warn, rec.job.id)
        return said + (f"; {warning}" if warning else "")

    def words(self) -> str:
        """What the session's own page says: the outage, else serving; a
        job's time left; the outages repaired."""
        outage, state = self.outage(), self.state
        if outage is not None:
            said = outage.headline
        else:
            said = f"{self.label}: {state.phase}{self._job_words()}"
        if state.reconnects:
            said += f"; reconnected {state.reconnects} time{'s' if state.reconnects > 1 else ''} (no command typed)"
        return said

    # ---------------------------------------------------------- monitor

    def monitor(self) -> None:
        """Probe, and repair, until stopped."""
        wall, mono = time.time(), time.monotonic()
        due = 0.0
        while not self.stopping:
            self.wake.wait(TICK)
            poked = self.wake.is_set()
            self.wake.clear()
            now_wall, now_mono = time.time(), time.monotonic()
            if (now_wall - wall) - (now_mono - mono) > JUMP:
                log(f"the clock jumped {now_wall - wall - (now_mono - mono):.0f}s (the machine slept): probing now")
                due = 0.0
            wall, mono = now_wall, now_mono
            if poked or now_mono >= due:
                try:
                    self.step()
                except Cancelled:
                    return
                except Exception as error:  # noqa: BLE001 - the watcher must outlive any one failure
                    log(f"unexpected {type(error).__name__}: {error}")
                with self.probed:
                    self.steps += 1
                    self.probed.notify_all()
                phase = self.phase()
                if phase in (Phase.SERVING, Phase.STARTING):
                    pause = PROBE_EVERY
                elif phase is Phase.NEXT_JOB:
                    pause = FOLLOW_EVERY
                else:
                    pause = BACKOFF[min(max(self.state.attempt, 1), len(BACKOFF)) - 1]
                due = time.monotonic() + pause

    def step(self) -> None:
        """One probe; a repair if it failed and the session is ours to repair."""
        rec = record.load(self.paths)
        if rec is None or (rec.watcher is not None and rec.watcher.pid != os.getpid()):
            log("the session's record is gone or names another watcher: exiting")
            self.stopping = True
            return
        if self._serves(rec):
            return
        phase = self.phase()
        if not self.armed or phase in WAITING:
            return  # tb.start is at it, or a person must act
        if phase is Phase.SERVING:
            self._set(phase=Phase.RECONNECTING.value, outage_since=time.time(), attempt=0, error="")
        self._set(attempt=self.state.attempt + 1)
        try:
            targets.begin(self.shell, self.entry, self.settings, Reporter(plain=True, stream=sys.stdout), self.job)
        except LoginNeeded as error:
            self._set(phase=Phase.NEEDS_LOGIN.value, error=str(error))
        except HostKeyRefused as error:
            self._set(phase=Phase.HOST_KEY.value, error=str(error))
        except JobEnded as error:
            log(str(error))
            said = f"job {rec.job.id} has ended (Slurm no longer runs it on {rec.job.node})" if rec.job else str(error)
            if self.settings.follow and self.job:
                # Follow the job by name: a resubmission, a requeue, the
                # next task of an array, the next link of a chain.
                self._set(phase=Phase.NEXT_JOB.value, error=f"{said}; waiting for the next job named {self.job}")
            else:
                self._set(phase=Phase.JOB_ENDED.value, error=said)
        except Cancelled:
            raise
        except TbError as error:
            said = str(error).splitlines()[0]
            if isinstance(error, JobPending) and self.settings.follow and self.job:
                # A requeued job (the same id, back in the queue) or the next
                # one, queued: it runs by itself; nothing for the user to type.
                self._set(
                    phase=Phase.NEXT_JOB.value,
                    error=f"job {error.job} is {error.state} (no node yet); waiting for the next job named {self.job} to run",
                )
                return
            if self.phase() is Phase.NEXT_JOB and self.job:
                said = f"waiting for the next job named {self.job}; the last look failed: {said}"
            self._set(error=said)
        else:
            rec = record.load(self.paths)
            if rec is not None:
                self._serves(rec)

    def _serves(self, rec: record.Record) -> bool:
        """Probe through the relay socket; on success, the session serves."""
        if not rec.relay or not rec.url:
            return False
        if not health.probe(rec.url, timeout=HUNG_AFTER, via=rec.relay).ok:
            return False
        state = self.state
        if state.phase != Phase.SERVING.value:
            changes: dict[str, Any] = {"phase": Phase.SERVING.value, "attempt": 0, "error": "", "outage_since": None}
            if state.phase == Phase.NEXT_JOB.value and rec.job is not None:
                log(f"following job {rec.job.id} (named {self.job}) on {rec.job.node}")
            if self.armed and state.outage_since is not None:
                changes.update(
                    reconnects=state.reconnects + 1, last_outage=state.outage_since,
                    last_outage_seconds=round(time.time() - state.outage_since, 1),
                )
            self._set(**changes)
        self.armed = True
        return True

    def probe_now(self, timeout: float = 30.0) -> None:
        """Wake the monitor and wait for its next step (``probe``)."""
        with self.probed:
            seen = self.steps
            self.wake.set()
            self.probed.wait_for(lambda: self.steps > seen or self.stopping, timeout)

    def stop(self) -> None:
        self.stopping = True
        self._set(phase=Phase.STOPPING.value)
        self.shell.cancel()
        self.wake.set()

    # ---------------------------------------------------------- control

    def status(self) -> dict[str, Any]:
        return dataclasses.asdict(self.state)

    def command(self, word: str) -> None:
        if word == "probe":
            self.probe_now()

    def work(self) -> list[tuple[str, Callable[[], None]]]:
        return [("monitor", self.monitor)]

    async def run(self, listener: socket.socket) -> None:
        rec = record.load(self.paths)
        if rec is None or not rec.relay:
            log("no record with a relay socket: nothing to watch")
            return
        await self.serve(listener, rec.relay, self.outage, self.wake.set, rec.token, f"watching {self.label}", self.words)


if __name__ == "__main__":
    sys.exit(daemon.main(sys.argv[1:], Watcher))
