"""The errors tensorboard-remote explains to its user.

Every failure we can explain is a :class:`TbError` whose message is one line
(maybe followed by a remote log tail) that says what failed and what to do.
The task layer (``tb.py``) turns it into invoke's ``Exit`` in one place. The
subclasses say what failed where the code must tell the cases apart.
"""

from __future__ import annotations


class TbError(Exception):
    """A failure we can explain to the user in one line."""


class CommandTimeout(TbError):
    """A local command (ssh) did not finish within its timeout: a stale
    control socket or a hung link, rather than a refusal."""


class RemoteFailed(TbError):
    """A remote script gave no reply: ssh itself failed (the host is
    unreachable, or refused us)."""


class StreamLocalRefused(TbError):
    """The server refuses forwarding to a Unix socket
    (``AllowStreamLocalForwarding no``): fall back to TCP."""


class ForwardingForbidden(TbError):
    """The server forbids TCP forwarding: no tunnel can reach TensorBoard."""


class LoginNeeded(TbError):
    """The host wants a person to log in (a password, a second factor, a key
    passphrase with no agent): a watcher never prompts, it waits for tb.start."""


class HostKeyRefused(TbError):
    """The host's key is unknown or has changed: never accepted unseen."""


class JobEnded(TbError):
    """The Slurm job the session belongs to is no longer running."""


class JobPending(TbError):
    """The Slurm job is in the queue but has no node yet (pending, requeued,
    suspended): a followed job's session waits for it."""

    def __init__(self, message: str, job: str = "", state: str = "") -> None:
        super().__init__(message)
        self.job = job
        self.state = state


class Cancelled(TbError):
    """A command was cancelled (the session is being stopped)."""
