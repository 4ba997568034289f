"""Which local port a session's forward listens on.

Always on 127.0.0.1. A port the user set is used or refused; our default
(6006) moves up to the next free port. Hosts started at the same time (one
process, several threads) must not pick the same port before either has
bound it, so this process remembers the ports it handed out.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
from pathlib import Path
from typing import Callable

from . import record
from .errors import TbError
from .settings import Settings
from .state import Paths

#: How far above the wanted port we look for a free one.
SEARCH = 100


def free(port: int) -> bool:
    """Can a listener bind 127.0.0.1:``port`` here now? Asked as ssh's own
    ``-L`` listener binds (``SO_REUSEADDR``), so a port whose only sockets
    are in TIME_WAIT counts as free, as it is for ssh."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    except OSError as error:
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        probe.close()
    return True


class Claims:
    """Ports this process has handed out (see the module docstring)."""

    def __init__(self, is_free: Callable[[int], bool] = free) -> None:
        self._ports: set[int] = set()
        self._lock = threading.Lock()
        self._free = is_free

    def pick(self, settings: Settings, label: str, say: Callable[[str], None], ours: frozenset[int] = frozenset()) -> int:
        """The configured port if free, else the next free one upwards.

        A port given explicitly (flag, env, config) that another program
        holds is an error; one that our own tunnel to another host holds
        (``ours``, or claimed by a concurrent start) is not: with ``fab -H
        a,b`` each host takes the first free port from the configured one up.
        """
        wanted = settings.local_port
        with self._lock:
            if wanted not in self._ports and self._free(wanted):
                self._ports.add(wanted)
                return wanted
            if settings.local_port_explicit and wanted not in self._ports and wanted not in ours:
                raise TbError(
                    f"local port {wanted} is already in use on this machine by another program: "
                    f"choose another with --local-port"
                )
            for candidate in range(wanted + 1, min(wanted + SEARCH, 65536)):
                if candidate not in self._ports and self._free(candidate):
                    self._ports.add(candidate)
                    holder = "another tunnel of ours" if (wanted in ours or wanted in self._ports) else "in use here"
                    say(f"{label}: local port {wanted} is {holder}; using {candidate}")
                    return candidate
        raise TbError(f"no free local port in {wanted}..{wanted + SEARCH - 1}: choose one with --local-port")


#: The claims of this process.
CLAIMS = Claims()


def ours(paths: Paths) -> frozenset[int]:
    """Local ports of our other sessions and merged views in the same control directory."""
    directory: Path = paths.socket.parent
    sessions = {rec.local_port for other, rec in record.all_records(directory) if other != paths and rec.local_port}
    return frozenset(sessions | _merged_views(directory, paths.state))


def _merged_views(directory: Path, own: Path) -> set[int]:
    """Local ports of our merged views (``merge-*.json``; read leniently: a
    damaged one is the merged view's to report, not a port's)."""
    held = set()
    for path in directory.glob("merge-*.json"):
        if path == own:
            continue
        try:
            port = json.loads(path.read_text()).get("local_port")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(port, int) and port > 0:
            held.add(port)
    return held
