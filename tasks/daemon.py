"""What the two resident processes share: a session's watcher (``watcher.py``)
and a merged view's syncer (``syncer.py``).

Each owns the session's local port for its life and relays it
(``relay.py``) to a Unix socket; runs its work in threads; and answers one
line on its control socket with one JSON line (``status``; ``stop``, which
cancels what is in flight, joins the threads and ends the process; and a
command of its own). This module is that scaffolding: :class:`Daemon` is
subclassed, and :func:`main` is how either is started (``resident.spawn``:
the control socket's name in argv, the instructions as JSON on stdin, the
listening socket's fd in ``TBR_WATCH_FD``). ``resident.py`` is the tasks'
side of the same conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .relay import Outage, Relay
from .state import Paths

#: Seconds ``stop`` waits for each thread to finish what it was doing.
JOIN_TIMEOUT = 15


def log(line: str) -> None:
    """One line of the process's log (its stdout is the ``.watch.log`` file)."""
    print(time.strftime("%Y-%m-%d %H:%M:%S ") + line, flush=True)


class Daemon:
    """A resident process: subclasses give ``status``, ``stop``, ``threads``
    and ``command``."""

    paths: Paths

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def stop(self) -> None:
        """Refuse new work and cancel what runs (the threads then return)."""
        raise NotImplementedError

    def work(self) -> list[tuple[str, Callable[[], None]]]:
        """The work, by thread name: each runs in a thread of its own, and
        the process ends when the first of them returns."""
        raise NotImplementedError

    def command(self, word: str) -> None:
        """A command of the subclass's own (run in an executor: it may wait)."""

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        word = ""
        loop = asyncio.get_running_loop()
        try:
            word = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace").strip()
            if word == "stop":
                self.stop()
                for thread in self._threads:
                    await loop.run_in_executor(None, thread.join, JOIN_TIMEOUT)
            elif word != "status":
                await loop.run_in_executor(None, self.command, word)
            writer.write(json.dumps(self.status()).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
        if word == "stop":
            self._done.set()

    async def serve(
        self, listener: socket.socket, upstream: str, outage: Callable[[], Optional[Outage]],
        poke: Callable[[], None], token: Optional[str], what: str,
        words: Optional[Callable[[], str]] = None,
    ) -> None:
        """Relay the port to ``upstream``, answer the control socket, run
        the threads, until stopped (a command, a signal, or a thread ends).
        ``words``: what the session's own page says (``relay.STATUS_PATH``)."""
        self._done = asyncio.Event()
        loop = asyncio.get_running_loop()
        relay = Relay(listener, upstream, outage, poke, token, words)
        await relay.start()
        with contextlib.suppress(FileNotFoundError):
            self.paths.control.unlink()
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._control, path=str(self.paths.control))
        finally:
            os.umask(old)
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            loop.add_signal_handler(number, lambda: (self.stop(), self._done.set()))
        self._threads = [
            threading.Thread(target=self._then_done, args=(job, loop), daemon=True, name=name) for name, job in self.work()
        ]
        for thread in self._threads:
            thread.start()
        log(f"{what}: 127.0.0.1:{listener.getsockname()[1]} -> {upstream}")
        await self._done.wait()
        relay.close()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.control.unlink()
        log("stopped")

    def _then_done(self, job: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            job()
        finally:
            loop.call_soon_threadsafe(self._done.set)


def main(argv: list[str], make: Callable[[Paths, dict[str, Any]], Any]) -> int:
    """Start a resident process: ``make(paths, spec)`` builds it, its
    ``run(listener)`` coroutine runs it."""
    # kill -USR1 PID writes every thread's stack to the log (what is it doing?).
    faulthandler.register(signal.SIGUSR1, file=sys.stdout)
    paths = Paths(Path(argv[0]))
    spec = json.load(sys.stdin)
    sys.stdin.close()
    listener = socket.socket(fileno=int(os.environ.pop("TBR_WATCH_FD")))
    asyncio.run(make(paths, spec).run(listener))
    return 0
