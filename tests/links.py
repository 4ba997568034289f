"""Faults of the link and of the clock, for the tests of what reconnects ssh
after a laptop sleeps or its network drops.

``Namespace``: a network namespace joined to ours by a veth pair
(``10.231.47.1/30`` here, ``.2`` inside); a Sandbox sshd runs in it through
``Namespace.wrap``. ``Link``: cuts and restores that pair the way a dead Wi-Fi
does, with no RST and no ICMP: an open connection just hangs and a new
connect times out. ``ClockJump``: a child Python whose wall clock jumps
forward at run time while its monotonic clock does not, as after a suspend.

Linux and root only (CI runs as root); one run at a time per machine (the
names are fixed; the suite runs under a lock): a run first removes what a
crashed one left under the same names.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

NAME = "tbr-links"
#: The pair's ends: ours, and the one moved into the namespace (15 bytes at most).
HOST_IF, NS_IF = "tbrl-h", "tbrl-n"
#: A /30 from 10/8 that nothing here uses (checked at create).
SUBNET = "10.231.47"
HOST_ADDR, NS_ADDR, PREFIX = f"{SUBNET}.1", f"{SUBNET}.2", 30


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class Link:
    """The veth pair between us and the namespace.

    ``down()`` sets the namespace's end down. Our end then has no carrier:
    its route stays (the kernel keeps routes of a device without carrier),
    so nothing goes out by the default route instead, and its neighbour
    entry is permanent, so no ARP fails with "No route to host" either: the
    packets are dropped at the veth, silently. (Setting our end down
    removes its route: a connect would then leave by the default route.
    This kernel has no ``sch_netem`` and there is no iptables.)"""

    def __init__(self, namespace: str = NAME) -> None:
        self.namespace = namespace

    @property
    def is_down(self) -> bool:
        return Path(f"/sys/class/net/{HOST_IF}/operstate").read_text().strip() != "up"

    def down(self) -> None:
        ip("-n", self.namespace, "link", "set", NS_IF, "down")

    def up(self, timeout: float = 5.0) -> None:
        """Bring the namespace's end up again, with its address, route and
        our neighbour entry as ``Namespace.create`` made them (the kernel
        re-adds the connected route; ``replace`` makes sure), and wait
        until our end has its carrier back."""
        ns = ("-n", self.namespace)
        ip(*ns, "link", "set", NS_IF, "up")
        ip(*ns, "addr", "replace", f"{NS_ADDR}/{PREFIX}", "dev", NS_IF)
        ip(*ns, "route", "replace", f"{SUBNET}.0/{PREFIX}", "dev", NS_IF, "proto", "kernel", "scope", "link", "src", NS_ADDR)
        mac = ip(*ns, "-br", "link", "show", NS_IF).stdout.split()[2]
        ip("neigh", "replace", NS_ADDR, "lladdr", mac, "dev", HOST_IF, "nud", "permanent")
        deadline = time.monotonic() + timeout
        while self.is_down:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{HOST_IF} has no carrier {timeout}s after {NS_IF} went up")
            time.sleep(0.02)

    @contextlib.contextmanager
    def cut(self):
        """The link is down inside the block, up again after it."""
        self.down()
        try:
            yield self
        finally:
            self.up()


class Namespace:
    """The network namespace ``NAME`` and its veth pair."""

    def __init__(self, name: str = NAME) -> None:
        self.name = name
        self.link = Link(name)

    @property
    def wrap(self) -> tuple[str, ...]:
        """Words that run a command inside (it execs the command)."""
        return ("ip", "netns", "exec", self.name)

    def create(self) -> "Namespace":
        self.remove(leftovers=True)
        used = [line for line in ip("-o", "-4", "addr", "show").stdout.splitlines() if f" {SUBNET}." in line]
        if used:
            raise RuntimeError(f"{SUBNET}.0/{PREFIX} is in use here: {used[0]}")
        ip("netns", "add", self.name)
        ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", self.name)
        ip("addr", "add", f"{HOST_ADDR}/{PREFIX}", "dev", HOST_IF)
        ip("link", "set", HOST_IF, "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        self.link.up()
        return self

    def pids(self) -> list[int]:
        """Processes in the namespace."""
        result = ip("netns", "pids", self.name, check=False)
        return [int(word) for word in result.stdout.split()] if result.returncode == 0 else []

    def remove(self, *, leftovers: bool = False) -> None:
        """Delete the pair (both ends go together) and the namespace's name.
        ``leftovers``: a crashed run's, whose processes in it (its sshd) are
        killed first. At teardown they are not: whatever still runs there
        is then found by ``nothing_left_behind``."""
        if leftovers:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        ip("link", "del", HOST_IF, check=False)
        ip("netns", "del", self.name, check=False)


#: The ``sitecustomize`` that ``ClockJump`` puts first on a child's
#: ``PYTHONPATH``: the wall clocks read the offset file's seconds on every
#: call; the monotonic clock and the sleeps are the real ones.
_SITECUSTOMIZE = '''\
"""A wall clock that jumps: tests/links.py ClockJump (test use only)."""
import os
import time

_FILE = os.environ.get("TBR_TEST_CLOCK_OFFSET_FILE", "")
_WALL = (time.CLOCK_REALTIME, time.CLOCK_BOOTTIME)
_time, _time_ns, _clock_gettime, _clock_gettime_ns = time.time, time.time_ns, time.clock_gettime, time.clock_gettime_ns


def _offset():
    try:
        with open(_FILE) as handle:
            return float(handle.read() or 0)
    except (OSError, ValueError):
        return 0.0


if _FILE:
    time.time = lambda: _time() + _offset()
    time.time_ns = lambda: _time_ns() + int(_offset() * 1e9)
    time.clock_gettime = lambda clock: _clock_gettime(clock) + (_offset() if clock in _WALL else 0)
    time.clock_gettime_ns = lambda clock: _clock_gettime_ns(clock) + (int(_offset() * 1e9) if clock in _WALL else 0)
'''


class ClockJump:
    """A child Python whose wall clock jumps forward while its monotonic
    clock does not, as after a laptop's suspend (``CLOCK_REALTIME`` and
    ``CLOCK_BOOTTIME`` go on, ``CLOCK_MONOTONIC`` stops).

    ``env(base)`` is the child's environment; ``jump(600)`` moves its wall
    clock 600 s on, at once (cumulative). Python-level: ``time.time``,
    ``time.time_ns`` and ``time.clock_gettime(_ns)`` of those two clocks;
    ``datetime.now``, the programs it runs (ssh) and ``time.sleep`` keep the
    real time. Not libfaketime: Debian's 0.9.10 breaks every ``time.sleep``
    of Python >= 3.11 once ``FAKETIME_DONT_FAKE_MONOTONIC=1`` is set
    (clock_nanosleep with TIMER_ABSTIME gets a negative time: EINVAL;
    libfaketime#426, fixed in 0.9.11), and without that setting the
    monotonic clock jumps too."""

    def __init__(self, directory: os.PathLike | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.offset_file = self.dir / "offset"
        self.offset = 0.0
        self._write()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.dir), env.get("PYTHONPATH", "")]))
        env["TBR_TEST_CLOCK_OFFSET_FILE"] = str(self.offset_file)
        return env

    def jump(self, seconds: float) -> None:
        self.offset += seconds
        self._write()

    def _write(self) -> None:
        # Atomic: the child never reads a half-written number.
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(repr(self.offset))
        os.replace(tmp, self.offset_file)
