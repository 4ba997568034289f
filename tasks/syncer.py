"""The syncer: the resident process of a merged view (``merge.py``).

Like a session's watcher (``watcher.py``) it owns the session's local port
for the life of the session and relays it (``relay.py``), here to the local
TensorBoard's private Unix socket. One thread per host syncs that host's
logdir into the mirror every ``sync_every`` seconds through the host's
master (``mirror.sync``), and at once after the clock jumps (the machine
slept). When a round fails the host is marked stale (the view keeps serving
what was synced) and, if its master is lost or its link dead, the master is
reopened in BatchMode, never prompting: a host that wants a person to log
in says so until ``tb.start`` logs in.

Its control socket (``merge-<sid>.watch``) answers one line: ``status`` (JSON:
each host's health, the age of its last sync, how and why), ``sync`` (a round
for every host now, then the status) and ``stop`` (cancel the rounds in
flight, release the port, exit).

Run as ``python -m tensorboard_remote.syncer NAME`` with its instructions as
JSON on stdin and the listening socket's fd in ``TBR_WATCH_FD`` (``daemon.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from . import daemon, local, merge, mirror, state
from .daemon import log
from .errors import Cancelled, HostKeyRefused, LoginNeeded, TbError
from .host import Host, MasterState
from .relay import Outage
from .remote import Word
from .settings import Settings
from .shell import Shell
from .state import Paths
from .watcher import JUMP, TICK

#: Connect timeout of a reconnect (the setting, at most this).
CONNECT_TIMEOUT = 5
#: Seconds between attempts to reach a host that is down.
RETRY_EVERY = 3.0
#: Seconds between checks that the local TensorBoard runs (and at once
#: when a connection finds its socket dead).
BOARD_EVERY = 5.0


class Syncer(daemon.Daemon):
    def __init__(self, paths: Paths, spec: dict[str, Any]) -> None:
        self.paths = paths
        self.settings = Settings(**spec["settings"])
        self.shell = Shell(quick=self.settings.command_timeout)
        self.patterns = mirror.Patterns.parse(self.settings.mirror_patterns)
        self.session = merge.MergedSession(self.shell, paths, batch=True)
        rec = merge.load(paths)
        if rec is None:
            raise SystemExit("no record: nothing to sync")
        self.rec = rec
        self.lock = threading.Lock()
        self.hosts: dict[str, dict[str, Any]] = {
            m.label: {"health": "starting", "last_ok": None, "error": "", "method": m.method, "rounds": 0,
                      "bytes_in": 0, "last_bytes_in": 0, "last_seconds": None, "files": 0, "skipped": []}
            for m in rec.members
        }
        self.wakes = {m.label: threading.Event() for m in rec.members}
        self.rounds = threading.Condition(self.lock)
        self.stopping = False
        self.board_wake = threading.Event()
        self.board_down = False

    # ------------------------------------------------------------ state

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"phase": "stopping" if self.stopping else "serving", "pid": os.getpid(), "label": self.rec.label,
                    "hosts": {label: dict(seen) for label, seen in self.hosts.items()}}

    def _set(self, label: str, **changes: Any) -> None:
        with self.lock:
            before = dict(self.hosts[label])
            self.hosts[label].update(changes)
            after = self.hosts[label]
            self.rounds.notify_all()
        if before.get("health") != after.get("health") or before.get("error") != after.get("error"):
            log(f"{label}: {after['health']}" + (f": {after['error']}" if after.get("error") else ""))
        if before.get("skipped") != after.get("skipped") and after.get("skipped"):
            log(f"{label}: not synced (the rest is): " + "; ".join(after["skipped"]))

    # ------------------------------------------------------------ rounds

    def follow(self, member: merge.Member) -> None:
        """Sync one host until stopped."""
        target = member.target.with_batch(True)
        target = dataclasses.replace(target, connect_timeout=min(target.connect_timeout, CONNECT_TIMEOUT))
        host = Host(self.shell, target, Paths(Path(member.socket)))
        host.follow(member.borrowed)
        dest = Path(self.rec.mirror) / member.folder
        wake = self.wakes[member.label]
        while not self.stopping:
            try:
                pause = self.round(host, member, dest)
            except Cancelled:
                return
            except Exception as error:  # noqa: BLE001 - one host's failure must not end the syncer
                log(f"{member.label}: unexpected {type(error).__name__}: {error}")
                pause = RETRY_EVERY
            wake.wait(pause)
            wake.clear()

    def round(self, host: Host, member: merge.Member, dest: Path) -> float:
        """One sync of ``member``; seconds until the next."""
        seen = self.hosts[member.label]
        try:
            done = mirror.sync(host, member.logdir, dest, self.patterns, seen["method"])
        except mirror.LogdirMissing as error:
            self._set(member.label, health="waiting", last_ok=time.time(), error=str(error), rounds=seen["rounds"] + 1)
            return self.settings.sync_every
        except Cancelled:
            raise
        except TbError as error:
            if self.stopping:
                raise Cancelled("cancelled: the view is being stopped") from None
            self._set(member.label, health="stale", error=str(error).splitlines()[0], rounds=seen["rounds"] + 1)
            self.repair(host, member)
            return RETRY_EVERY
        self._set(
            member.label, health="ok", last_ok=time.time(), error="", rounds=seen["rounds"] + 1, skipped=list(done.skipped),
            bytes_in=seen["bytes_in"] + done.bytes_in, last_bytes_in=done.bytes_in, last_seconds=done.seconds, files=done.files,
        )
        return self.settings.sync_every

    def repair(self, host: Host, member: merge.Member) -> None:
        """After a failed round: reopen the master if it is lost or its link
        dead (BatchMode: never a prompt)."""
        master = host.master()
        if master.state is MasterState.UP:
            if host.link_answers():
                return  # the master is fine: the round failed for another reason
            log(f"{member.label}: the link does not answer: dropping the master")
            host.drop(master.pid)
        elif master.state is MasterState.STALE:
            host.clear_stale()
        if host.borrowing:
            host.borrowing = False  # their master is gone: ours from here on
            self._forget_borrowed(member)
        try:
            pid = host.open(self.settings.keepalive)
        except LoginNeeded as error:
            self._set(member.label, error=f"needs you to log in again: run tb.start ({error})")
            return
        except HostKeyRefused as error:
            self._set(member.label, error=str(error))
            return
        except Cancelled:
            raise
        except TbError as error:
            self._set(member.label, error=str(error).splitlines()[0])
            return
        log(f"{member.label}: reopened the tunnel (ssh master pid {pid})")
        host.paths.log.write_text("")  # its words from here on are the next outage's

    def _forget_borrowed(self, member: merge.Member) -> None:
        with state.locked(self.paths):
            rec = merge.load(self.paths)
            if rec is None:
                return
            members = tuple(dataclasses.replace(m, borrowed=None) if m.label == member.label else m for m in rec.members)
            merge.save(self.paths, dataclasses.replace(rec, members=members))

    def sync_now(self, timeout: float = 60.0) -> None:
        """A round for every host now; wait until each has made one."""
        with self.rounds:
            before = {label: seen["rounds"] for label, seen in self.hosts.items()}
            for wake in self.wakes.values():
                wake.set()
            self.rounds.wait_for(lambda: self.stopping or all(self.hosts[k]["rounds"] > v for k, v in before.items()), timeout)

    def clock(self) -> None:
        """Sync at once when the machine wakes from sleep."""
        wall, mono = time.time(), time.monotonic()
        while not self.stopping:
            time.sleep(TICK)
            now_wall, now_mono = time.time(), time.monotonic()
            if (now_wall - wall) - (now_mono - mono) > JUMP:
                log(f"the clock jumped {now_wall - wall - (now_mono - mono):.0f}s (the machine slept): syncing now")
                for wake in self.wakes.values():
                    wake.set()
            wall, mono = now_wall, now_mono

    def keep_board(self) -> None:
        """Restart the local TensorBoard when it is gone (killed, out of
        memory): the same socket, token and mirror, so the URL stays."""
        board = local.LocalBoard(self.rec.rundir)
        while not self.stopping:
            self.board_wake.wait(BOARD_EVERY)
            self.board_wake.clear()
            if self.stopping:
                return
            try:
                reply = board.status()
            except TbError as error:
                log(f"cannot check TensorBoard here: {error}")
                continue
            if reply.word is Word.RUNNING:
                self.board_down = False
                continue
            self.board_down = True
            log(f"TensorBoard here (pid {self.rec.tb_pid}) is not running: restarting it")
            try:
                started = board.start(self.rec.logdir, self.rec.token, self.settings.data_server, self.settings.start_timeout)
            except TbError as error:
                log(f"could not restart TensorBoard here: {error}")
                continue
            if self.stopping:
                board.stop()
                return
            if started.word in (Word.STARTED, Word.RUNNING) and started.info.get("endpoint"):
                self._restarted(int(started.detail), started.info["endpoint"])
            else:
                log(f"TensorBoard here did not start again: {started.word.value} {started.detail}: {board.log_tail(5)}")

    def _restarted(self, pid: int, endpoint: str) -> None:
        with state.locked(self.paths):
            rec = merge.load(self.paths)
            if rec is None:
                return
            self.rec = dataclasses.replace(rec, tb_pid=pid, endpoint=endpoint)
            merge.save(self.paths, self.rec)
        self.board_down = False
        log(f"restarted TensorBoard here (pid {pid})")

    def stop(self) -> None:
        self.stopping = True
        self.shell.cancel()
        self.board_wake.set()
        for wake in self.wakes.values():
            wake.set()

    # ---------------------------------------------------------- control

    def outage(self) -> Optional[Outage]:
        if self.stopping:
            return Outage(f"the {self.rec.label} is stopping")
        if self.board_down:
            return Outage(f"TensorBoard here for the {self.rec.label} stopped: restarting it (the mirror is intact)")
        return None

    def poke(self) -> None:
        """A connection found the local TensorBoard's socket dead."""
        self.board_down = True
        self.board_wake.set()

    def command(self, word: str) -> None:
        if word == "sync":
            self.sync_now()

    def work(self) -> list[tuple[str, Callable[[], None]]]:
        jobs: list[tuple[str, Callable[[], None]]] = [(f"sync {m.label}", functools.partial(self.follow, m)) for m in self.rec.members]
        return jobs + [("clock", self.clock), ("board", self.keep_board)]

    async def run(self, listener: socket.socket) -> None:
        upstream = self.rec.socket_path
        if upstream is None:
            log("the record names no TensorBoard socket: nothing to serve")
            return
        every = f"{self.settings.sync_every:g}"
        await self.serve(listener, upstream, self.outage, self.poke, self.rec.token, f"serving {self.rec.label}, syncing every {every}s")


if __name__ == "__main__":
    sys.exit(daemon.main(sys.argv[1:], Syncer))
