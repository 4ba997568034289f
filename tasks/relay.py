"""The data path of a watched session: 127.0.0.1:PORT here -> the master's forward.

The watcher (``watcher.py``) owns the session's local TCP port for the whole
session and relays every connection to a 0600 Unix socket in the control
directory, which the ssh master forwards to TensorBoard. So the port is never
released while the master is lost (no other program can take it, and the
browser is never refused). While the session cannot serve, the relay answers
at once, never hangs: a browser navigation gets a small page that says what
is happening and reloads itself; anything else (TensorBoard's data requests)
gets ``503`` with ``Retry-After``.

This module knows sockets and HTTP heads, not ssh: what to say comes from an
``outage()`` callable, and ``poke()`` tells the watcher that a connection
found the forward dead. ``/<token>/tensorboard-remote`` is the session's own
page, served or not: what ``status()`` says (the state, a Slurm job's time
left and its warning), with the token only.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import socket
from dataclasses import dataclass
from typing import Callable, Optional

from . import launcher

#: Bytes read per chunk: a large TensorBoard response (an image, a profile)
#: moves in few system calls.
CHUNK = 256 * 1024
#: The most of a request head we read before answering an outage.
HEAD_MAX = 16 * 1024
#: Seconds a client gets to send its request head during an outage.
HEAD_TIMEOUT = 5.0
#: The path, after the token, of the session's own page.
STATUS_PATH = "tensorboard-remote"


@dataclass(frozen=True)
class Outage:
    """What the URL says while the session cannot serve."""

    headline: str  # e.g. "reconnecting to gpu1 (attempt 3, link lost 12:04)"
    retry: int = 3  # seconds: Retry-After, and the page's reload


class Relay:
    """Accept on ``listener`` (bound and listening already), relay to the
    Unix socket ``upstream`` while ``outage()`` is None."""

    def __init__(
        self,
        listener: socket.socket,
        upstream: str,
        outage: Callable[[], Optional[Outage]],
        poke: Callable[[], None],
        token: Optional[str],
        status: Optional[Callable[[], str]] = None,
    ) -> None:
        self.listener = listener
        self.status = status
        self.upstream = upstream
        self.outage = outage
        self.poke = poke
        self.token = token
        self.cookie = launcher.cookie_for(token) if token else None
        self.server: Optional[asyncio.AbstractServer] = None
        # asyncio keeps only weak references to tasks: these are ours.
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.listener.setblocking(False)
        self.server = await asyncio.start_server(self._client, sock=self.listener, limit=CHUNK)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(OSError):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outage = self.outage()
        if outage is not None:
            await self._answer(reader, writer, outage, b"")
            return
        first = await reader.read(CHUNK)
        if not first:
            return
        if self._asks_status(first):
            await self._answer(reader, writer, None, first)
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream, limit=CHUNK)
        except OSError:
            # The forward's socket is gone or refuses: the master is lost.
            self.poke()
            await self._answer(reader, writer, self.outage() or Outage("the connection was lost: reconnecting"), first)
            return
        try:
            up_writer.write(first)
            sent_back = await self._pump_both(reader, writer, up_reader, up_writer)
            if not sent_back and not writer.is_closing():
                # The master accepted the connection and closed it without a
                # byte: its channel to TensorBoard was refused (TensorBoard
                # died, or the host rebooted).
                self.poke()
                await self._answer(reader, writer, self.outage() or Outage("TensorBoard is not answering: restarting it"), first)
        finally:
            with contextlib.suppress(OSError):
                up_writer.close()

    async def _pump_both(self, reader, writer, up_reader, up_writer) -> int:
        """Relay both ways until both are done; the bytes sent back to the client."""
        back = asyncio.ensure_future(_pump(up_reader, writer, eof=False))
        forth = asyncio.ensure_future(_pump(reader, up_writer, eof=True))
        self._tasks.update((back, forth))
        try:
            sent_back = await back
        finally:
            forth.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await forth
            self._tasks.difference_update((back, forth))
        return sent_back

    def _asks_status(self, head: bytes) -> bool:
        """Is this the request line of the session's own page (with the token)?"""
        if self.status is None:
            return False
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        path = line.partition(" ")[2].partition(" ")[0].partition("?")[0].rstrip("/")
        return path == (f"/{self.token}/{STATUS_PATH}" if self.token else f"/{STATUS_PATH}")

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outage: Optional[Outage], head: bytes,
    ) -> None:
        """Read the request head (within limits), answer 503 with a page or a
        line; ``outage`` None: the session's own page (200), if asked for it."""
        with contextlib.suppress(asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
            while b"\r\n\r\n" not in head and len(head) < HEAD_MAX:
                chunk = await asyncio.wait_for(reader.read(HEAD_MAX), HEAD_TIMEOUT)
                if not chunk:
                    break
                head += chunk
        if not head:
            return
        request = _Head.parse(head)
        if self._asks_status(head):
            assert self.status is not None
            home = f"/{self.token}/" if self.token else "/"
            writer.write(status_page(self.status(), request.navigation, home))
        else:
            writer.write(page(outage or Outage("the connection was lost: reconnecting"), request.navigation, self._authorised(request)))
        with contextlib.suppress(OSError):
            await writer.drain()

    def _authorised(self, request: "_Head") -> bool:
        """May this request read the session's state (host names, times)?
        Only with the URL token or its cookie, as TensorBoard itself."""
        if self.token is None:
            return True
        if request.path == f"/{self.token}" or request.path.startswith(f"/{self.token}/"):
            return True
        assert self.cookie is not None
        name, value = self.cookie
        return f"{name}={value}" in request.cookie.replace(" ", "").split(";")


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, eof: bool) -> int:
    """Copy until ``source`` ends; the bytes moved. With ``eof``, pass the
    end on (a half-close); without, the caller decides (the client's side:
    it may still get a page)."""
    moved = 0
    try:
        while True:
            data = await source.read(CHUNK)
            if not data:
                break
            moved += len(data)
            sink.write(data)
            await sink.drain()
    except (OSError, asyncio.IncompleteReadError):
        return moved
    with contextlib.suppress(OSError):
        if eof and sink.can_write_eof():
            sink.write_eof()
    return moved


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    accept: str
    fetch_mode: str
    cookie: str

    @property
    def navigation(self) -> bool:
        """A page load in a browser (not TensorBoard's own data requests)."""
        if self.method not in ("GET", "HEAD"):
            return False
        return self.fetch_mode == "navigate" or (not self.fetch_mode and "text/html" in self.accept)

    @classmethod
    def parse(cls, head: bytes) -> "_Head":
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return cls(method, path, headers.get("accept", ""), headers.get("sec-fetch-mode", ""), headers.get("cookie", ""))


#: What anyone without the token reads: nothing about the session.
ANONYMOUS = "this tensorboard-remote session is not serving right now"


def _response(status: str, title: str, words: str, navigation: bool, refresh: int, footer: str, extra: str = "") -> bytes:
    """A whole HTTP response of ours: a small page that reloads itself every
    ``refresh`` seconds (a browser navigation) or one line (anything else)."""
    if navigation:
        body = (
            "<!doctype html><html><head><meta charset=utf-8>"
            f'<meta http-equiv="refresh" content="{refresh}">'
            f"<title>tensorboard-remote: {title}</title>"
            "<style>body{font:16px system-ui,sans-serif;margin:3em;color:#333}</style></head><body>"
            f"<h2>tensorboard-remote</h2><p id=state>{html.escape(words)}</p>"
            f"<p>{footer}</p>"
            "</body></html>\n"
        ).encode()
        kind = "text/html; charset=utf-8"
    else:
        body = f"tensorboard-remote: {words}\n".encode()
        kind = "text/plain; charset=utf-8"
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


def page(outage: Outage, navigation: bool, authorised: bool) -> bytes:
    """The whole HTTP response for a request during an outage."""
    headline = outage.headline if authorised else ANONYMOUS
    footer = f"This page reloads itself every {outage.retry} s; TensorBoard is back here as soon as the host answers."
    return _response(
        "503 Service Unavailable", "waiting", headline, navigation, outage.retry, footer,
        extra=f"Retry-After: {outage.retry}\r\n",
    )


def status_page(words: str, navigation: bool, home: str = "/") -> bytes:
    """The session's own page (``/<token>/tensorboard-remote``): ``200`` with
    what the watcher says, as a page that reloads itself or as a line."""
    footer = f'<a href="{html.escape(home)}">TensorBoard</a> &middot; this page reloads itself every 10 s.'
    return _response("200 OK", "this session", words, navigation, 10, footer)
