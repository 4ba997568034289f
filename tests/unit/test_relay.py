"""The relay on real sockets (no ssh): bytes both ways while serving, and
at once a page or a 503 while not, never a hang."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tensorboard_remote import launcher
from tensorboard_remote.relay import ANONYMOUS, Outage, Relay

TOKEN = "s3cret-token"


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


async def _request(port: int, head: str, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def _get(path: str, accept: str = "*/*", extra: str = "") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n{extra}Connection: close\r\n\r\n"


class World:
    def __init__(self, tmp_path, outage=None):
        self.upstream = str(tmp_path / "relay.sock")
        self.outage = outage
        self.pokes = 0
        self.listener = _listener()
        self.port = self.listener.getsockname()[1]
        self.relay = Relay(self.listener, self.upstream, lambda: self.outage, self._poke, TOKEN)

    def _poke(self) -> None:
        self.pokes += 1


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def _echo_upstream(path: str, reply: bytes):
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=path)


def test_while_serving_bytes_go_both_ways_unchanged_large_ones_too(tmp_path):
    world = World(tmp_path)
    big = bytes(range(256)) * 40000  # 10 MB

    async def scenario():
        upstream = await _echo_upstream(world.upstream, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        await world.relay.start()
        data = await _request(world.port, _get(f"/{TOKEN}/data/logdir"))
        upstream.close()
        return data

    data = run(scenario())
    assert data.endswith(big) and data.startswith(b"HTTP/1.1 200 OK")
    assert world.pokes == 0


def test_during_an_outage_a_navigation_gets_a_page_that_reloads_and_says_what_happens(tmp_path):
    world = World(tmp_path, Outage("reconnecting to gpu1 (attempt 3, link lost 12:04)"))

    async def scenario():
        await world.relay.start()
        return await _request(world.port, _get(f"/{TOKEN}/", accept="text/html,application/xhtml+xml"))

    data = run(scenario()).decode()
    assert data.startswith("HTTP/1.1 503 ")
    assert "Retry-After: 3\r\n" in data and 'http-equiv="refresh" content="3"' in data
    assert "reconnecting to gpu1 (attempt 3, link lost 12:04)" in data


def test_during_an_outage_data_requests_get_503_with_retry_after_and_a_line(tmp_path):
    world = World(tmp_path, Outage("gpu1 needs you to log in again: run tb.start", retry=5))
    name, value = launcher.cookie_for(TOKEN)

    async def scenario():
        await world.relay.start()
        return await _request(world.port, _get("/data/runs", accept="application/json", extra=f"Cookie: a=b; {name}={value}\r\n"))

    data = run(scenario()).decode()
    assert data.startswith("HTTP/1.1 503 ") and "Retry-After: 5\r\n" in data
    assert "Content-Type: text/plain" in data
    assert data.endswith("tensorboard-remote: gpu1 needs you to log in again: run tb.start\n")


def test_without_the_token_or_its_cookie_the_page_names_nothing_of_the_session(tmp_path):
    world = World(tmp_path, Outage("reconnecting to gpu1 (attempt 1, link lost 12:04)"))

    async def scenario():
        await world.relay.start()
        return await _request(world.port, _get("/", accept="text/html", extra="Cookie: tbr-0000=forged\r\n"))

    data = run(scenario()).decode()
    assert "gpu1" not in data and ANONYMOUS in data


@pytest.mark.parametrize("upstream_kind", ["missing", "closes at once"])
def test_a_dead_forward_is_answered_at_once_and_pokes_the_watcher(tmp_path, upstream_kind):
    world = World(tmp_path)

    async def scenario():
        upstream = None
        if upstream_kind == "closes at once":
            # The master accepts, then closes the connection whose channel
            # the remote refused (TensorBoard is gone): not one byte back.
            async def slam(reader, writer):
                writer.close()

            upstream = await asyncio.start_unix_server(slam, path=world.upstream)
        await world.relay.start()
        data = await _request(world.port, _get(f"/{TOKEN}/data/logdir", accept="application/json"))
        if upstream:
            upstream.close()
        return data

    data = run(scenario()).decode()
    assert data.startswith("HTTP/1.1 503 ") and "Retry-After:" in data
    assert world.pokes == 1


class _StatusWorld(World):
    def __init__(self, tmp_path, outage=None):
        super().__init__(tmp_path, outage)
        self.said = "gpu1: serving; job 123 on node7: 0:04:12 left"
        self.relay = Relay(self.listener, self.upstream, lambda: self.outage, self._poke, TOKEN, lambda: self.said)


@pytest.mark.parametrize("outage", [None, Outage("reconnecting to gpu1 (attempt 2, link lost 12:04)")])
def test_the_sessions_own_page_answers_with_the_token_served_or_not(tmp_path, outage):
    world = _StatusWorld(tmp_path, outage)

    async def scenario():
        upstream = await _echo_upstream(world.upstream, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nTB")
        await world.relay.start()
        page = await _request(world.port, _get(f"/{TOKEN}/tensorboard-remote", accept="text/html"))
        line = await _request(world.port, _get(f"/{TOKEN}/tensorboard-remote/?x=1"))
        # Without the token it is not ours to answer: TensorBoard's (or the outage's) as any path.
        other = await _request(world.port, _get("/tensorboard-remote"))
        upstream.close()
        return page.decode(), line.decode(), other.decode()

    page, line, other = run(scenario())
    assert page.startswith("HTTP/1.1 200 OK") and 'http-equiv="refresh" content="10"' in page
    assert "job 123 on node7: 0:04:12 left" in page and f'href="/{TOKEN}/"' in page
    assert line.startswith("HTTP/1.1 200 OK") and line.endswith(f"tensorboard-remote: {world.said}\n")
    if outage is None:
        assert other.endswith("TB")
    else:
        assert other.startswith("HTTP/1.1 503") and "gpu1" not in other and "0:04:12" not in other
    assert world.pokes == 0
