"""Which host, or which sessions, a task acts on.

From the task's context: ``--host``, else the Fabric connection's host
(``fab -H``, with the key files of ``fab -i``), else the ``tb.host``
setting; with none, every session recorded in the control directory. The
ssh_config file: ``--ssh-config``, else ``fab -S``, else ``tb.ssh_config``,
else Fabric's ``ssh_config_path``. OpenSSH resolves the rest (``ssh -G``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, Optional

from . import merge, record, slurm, state
from .errors import TbError
from .host import Host, MasterState
from .placement import HERE
from .progress import Reporter
from .session import Session, Started
from .settings import Settings, resolve
from .shell import Shell
from .sshargv import Target, parse_host


def ssh_config(c: Any, flag: Optional[str]) -> Optional[str]:
    """tb flag > fab -S > tb.ssh_config > fabric's ssh_config_path."""
    candidates = [
        flag,
        getattr(c.config, "_runtime_ssh_path", None),
        resolve(c.config, "ssh_config"),
        c.config.get("ssh_config_path") if hasattr(c.config, "get") else None,
    ]
    for candidate in candidates:
        if candidate:
            path = os.path.abspath(os.path.expanduser(str(candidate)))
            if not os.path.isfile(path):
                raise TbError(f"ssh config file {path} does not exist")
            return path
    return None


def prompting_allowed() -> bool:
    """Only with a terminal to prompt on; otherwise ssh runs in BatchMode
    and fails instead of waiting on a prompt nobody sees."""
    return sys.stdin.isatty()


def target(c: Any, host: Optional[str], ssh_config_path: Optional[str], connect_timeout: int) -> Optional[Target]:
    """The host to act on: --host, else the Fabric connection's, else tb.host."""
    identities: tuple[str, ...] = ()
    if host is None and hasattr(c, "original_host"):
        # A Fabric Connection (fab -H): take the host exactly as typed and
        # let OpenSSH resolve it; add the identity given with fab -i.
        host = c.original_host
        identities = given_identities(c.config)
        # fab -t / timeouts.connect
        connect_timeout = int(getattr(c, "connect_timeout", None) or connect_timeout)
    if host is None:
        host = resolve(c.config, "host")
    if not host:
        return None
    user, hostname, port = parse_host(str(host))
    return Target(
        host=hostname,
        user=user,
        port=port,
        ssh_config=ssh_config_path,
        identities=tuple(os.path.abspath(os.path.expanduser(i)) for i in identities),
        connect_timeout=connect_timeout,
        batch=not prompting_allowed(),
    )


def begin(shell: Shell, given: Target, settings: Settings, report: Reporter, job: Optional[str] = None) -> Started:
    """``tb.start`` for one host, or one Slurm job on a login host: what the
    task runs, and what a session's watcher repairs it with."""
    if job is not None:
        return slurm.start_job(shell, given, settings, report, str(job))
    return Session(Host.locate(shell, given, settings.control_dir, user_master=settings.user_master)).start(settings, report)


def given_identities(config: Any) -> tuple[str, ...]:
    """Key files the user gave Fabric (``fab -i`` or ``connect_kwargs`` in a
    config file), never the ones Fabric read from ssh_config: OpenSSH reads
    those itself, and Fabric 3.2.3 appends each host's IdentityFile to the
    shared ``connect_kwargs`` (with ``fab -H a,b,...`` the seventh host was
    offered six wrong keys and refused us: "Too many authentication
    failures"). So read the layers Fabric fills from the user, not the
    merged, modified view."""
    keys: list[str] = []
    for layer in ("_overrides", "_runtime", "_project", "_user", "_system", "_env"):
        section = (getattr(config, layer, None) or {}).get("connect_kwargs") or {}
        value = section.get("key_filename") or []
        for key in [value] if isinstance(value, str) else value:
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def sessions(
    c: Any, host: Optional[str], config: Settings, ssh_config_flag: Optional[str], shell: Shell, job: Optional[str] = None
) -> Iterator[Session]:
    """The given host's session (with --job: that job's), or every session
    recorded in the control directory."""
    given = target(c, host, ssh_config(c, ssh_config_flag), config.connect_timeout)
    if given is not None:
        if job is not None:
            yield Session(*slurm.job_session(shell, given, config.control_dir, str(job)))
        else:
            yield from on_host(shell, given, config)
        return
    if job is not None:
        raise TbError("--job needs the login host: fab -H LOGIN, --host LOGIN or tb.host")
    yield from recorded(shell, config, batch=not prompting_allowed())
    yield from merge.recorded(shell, state.control_dir(config.control_dir), batch=not prompting_allowed())


def on_host(shell: Shell, given: Target, config: Settings) -> Iterator[Session]:
    """The host's own session, and the sessions of Slurm jobs started from
    it as a login host (``tb.check``/``tb.exit`` without ``--job`` must not
    say "nothing" while a job's TensorBoard runs). The host's own session
    is left out when it has nothing at all and jobs do."""
    own = Session(Host.locate(shell, given, config.control_dir, user_master=config.user_master))
    jobs = [
        session for session in recorded(shell, config, batch=given.batch)
        if session.placement is not HERE and slurm.login_of(session.host.target) == given.label
    ]
    here = merge.find(shell, state.control_dir(config.control_dir), [given.label], batch=given.batch, single=True)
    if (not jobs and not here) or own.record() is not None or own.host.master().state is not MasterState.NONE:
        yield own
    yield from jobs
    yield from here


def recorded(shell: Shell, config: Settings, *, batch: bool) -> Iterator[Session]:
    """A session for every record in the control directory."""
    for paths, rec in record.all_records(state.control_dir(config.control_dir)):
        yield Session(Host(shell, rec.target.with_batch(batch), paths), slurm.placement_of(rec))
