"""The ``tb`` collection: start, check and exit TensorBoard on a remote host.

Compose it into a fabfile or tasks.py::

    from invoke import Collection
    from tensorboard_remote import tb

    ns = Collection(train, tb)
    ns.configure({"tb": {"logdir": "~/runs"}})

Then ``fab -H hostA tb.start`` (or ``invoke tb.start --host hostA``).
This module imports only invoke: Fabric and Paramiko are never needed,
because every remote step rides one OpenSSH master.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json as _json
import os
import sys
import time
from typing import Any, Iterator, Optional

from invoke import Collection, Exit, task

from . import lifecycle, remote, state
from .browse import browse
from .progress import Reporter
from .settings import DEFAULTS, TbError, resolve, settings, yes_no
from .sshargv import Target, parse_host

_COMMON_HELP = {
    "host": "Host as [user@]host[:port] or an ssh_config alias (default: fab -H, then tb.host).",
    "control-dir": "Directory for control sockets and state (default ~/.ssh/controlmasters).",
    "ssh-config": "ssh_config file for OpenSSH, passed as ssh -F (default: fab -S, then OpenSSH's).",
    "verbose": "Print every ssh command as it runs.",
    "job": "A Slurm job (id or name) on the login host given as host: act on TensorBoard on its node.",
}

_START_HELP = {
    **_COMMON_HELP,
    "logdir": "TensorBoard --logdir on the remote, relative to the login directory (default ./logdir).",
    "remote-port": "Port TensorBoard listens on, on the remote's 127.0.0.1 (default 6008).",
    "local-port": "Port on this machine's 127.0.0.1 that leads to it (default 6006).",
    "tensorboard-cmd": "Remote command that runs TensorBoard (default 'tensorboard').",
    "activate": "Shell snippet run on the remote first, e.g. 'source ~/venvs/tb/bin/activate'.",
    "remote-dir": "Remote directory for run state: pid file and log (default ~/.tensorboard-remote).",
    "start-timeout": "Seconds to wait for TensorBoard to answer through the tunnel (default 60).",
    "serve": "unix (default: a private Unix socket, no TCP port on the remote) or tcp (the seed's way).",
    "url-token": "yes (default): a secret URL prefix guards the local port; no: plain URL.",
    "data-server": "auto (default), netns, off or shared: how TensorBoard's fast-loader data server is kept private.",
    "quiet": "Print only the URL (for scripts).",
    "hosts": "Start several hosts at once, comma-separated (each gets its own local port).",
    "open": "Open the URL in your browser when ready (config: tb.open).",
    "slurm-via": "With --job: srun (default: a step of the job, no sshd on nodes needed) or ssh (through the login node to the node's sshd).",
}


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _ssh_config(c: Any, flag: Optional[str]) -> Optional[str]:
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


def _target(c: Any, host: Optional[str], ssh_config: Optional[str], connect_timeout: int) -> Optional[Target]:
    """The host to act on: --host, else the Fabric connection's, else tb.host."""
    identities: tuple[str, ...] = ()
    if host is None and hasattr(c, "original_host"):
        # A Fabric Connection (fab -H): take the host exactly as typed and
        # let OpenSSH resolve it; add the identity given with fab -i.
        host = c.original_host
        identities = _given_identities(c.config)
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
        ssh_config=ssh_config,
        identities=tuple(os.path.abspath(os.path.expanduser(i)) for i in identities),
        connect_timeout=connect_timeout,
        batch=not sys.stdin.isatty(),
    )


def _given_identities(config: Any) -> tuple[str, ...]:
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


def _edge(error: TbError) -> Exit:
    return Exit(f"tensorboard-remote: {error}", 1)


@task(help=_START_HELP, auto_shortflags=False, optional=["open"])
def start(
    c,
    host=None,
    logdir=None,
    remote_port=None,
    local_port=None,
    control_dir=None,
    ssh_config=None,
    tensorboard_cmd=None,
    activate=None,
    remote_dir=None,
    start_timeout=None,
    serve=None,
    url_token=None,
    data_server=None,
    verbose=False,
    quiet=False,
    open=None,
    hosts=None,
    job=None,
    slurm_via=None,
):
    """Open the tunnel, start TensorBoard on the remote, print the local URL."""
    try:
        config = settings(
            c.config,
            logdir=logdir,
            remote_port=remote_port,
            local_port=local_port,
            control_dir=control_dir,
            tensorboard_cmd=tensorboard_cmd,
            activate=activate,
            remote_dir=remote_dir,
            start_timeout=start_timeout,
            serve=serve,
            url_token=url_token,
            data_server=data_server,
            slurm_via=slurm_via,
        )
        ssh_config_path = _ssh_config(c, ssh_config)
        if job is not None and hosts:
            raise TbError("--job and --hosts do not go together: one login host per job")
        shell = lifecycle.Shell(c, verbose=verbose, quick=config.command_timeout)
        if hosts:
            urls = _start_many(c, hosts, ssh_config_path, config, shell, quiet)
        else:
            target = _target(c, host, ssh_config_path, config.connect_timeout)
            if target is None:
                raise TbError("no host given: use fab -H HOST, --host HOST or the tb.host setting")
            report = Reporter(quiet=quiet)
            try:
                if job is not None:
                    urls = [lifecycle.start_job(shell, target, config, report, str(job))["url"]]
                else:
                    urls = [lifecycle.start(shell, target, config, report)["url"]]
            finally:
                report.close()
        if yes_no(resolve(c.config, "open", open), "open"):
            for url in urls:
                browse(url, _say if not quiet else _warn)
    except TbError as error:
        raise _edge(error) from None
    except KeyboardInterrupt:
        # Whatever was started is recorded: the next tb.start or tb.exit
        # picks up from here.
        raise Exit("tensorboard-remote: interrupted; run tb.start to finish or tb.exit to clean up", 130) from None


def _start_many(c: Any, hosts: str, ssh_config: Optional[str], config: Any, shell: Any, quiet: bool) -> list[str]:
    """Start several hosts at once: one thread, master and local port each."""
    names = [name.strip() for name in str(hosts).split(",") if name.strip()]
    if not names:
        raise TbError("--hosts needs a comma-separated list of hosts")
    targets = [_target(c, name, ssh_config, config.connect_timeout) for name in names]
    # Each host takes the first free port from the configured one upwards.
    config = dataclasses.replace(config, local_port_explicit=False)
    report = Reporter(quiet=quiet, plain=True)
    failures: list[str] = []
    urls: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
        futures = {pool.submit(lifecycle.start, shell, target, config, report): target for target in targets}
        for future in concurrent.futures.as_completed(futures):
            try:
                urls.append(future.result()["url"])
            except TbError as error:
                failures.append(f"{futures[future].label}: {error}")
    if failures:
        raise TbError(f"{len(failures)} of {len(targets)} hosts failed:\n" + "\n".join(failures))
    return urls


def _targets(
    c: Any, host: Optional[str], config: Any, ssh_config: Optional[str], shell: Any, job: Optional[str] = None
) -> Iterator[tuple[Target, state.Paths]]:
    """The given host (with --job: that job's session on it), or every
    session with state in the control directory."""
    target = _target(c, host, _ssh_config(c, ssh_config), config.connect_timeout)
    if target is not None:
        if job is not None:
            yield lifecycle.job_session(shell, target, config.control_dir, str(job))
        else:
            yield target, lifecycle.locate(shell, target, config.control_dir)
        return
    if job is not None:
        raise TbError("--job needs the login host: fab -H LOGIN, --host LOGIN or tb.host")
    for paths, data in state.all_states(state.control_dir(config.control_dir)):
        yield Target.from_dict(data["target"], batch=not sys.stdin.isatty()), paths


@task(help=_COMMON_HELP, auto_shortflags=False)
def check(c, host=None, control_dir=None, ssh_config=None, verbose=False, job=None):
    """Say whether tunnel, remote TensorBoard and page are healthy; exit 1 if not."""
    try:
        config = settings(c.config, control_dir=control_dir)
        shell = lifecycle.Shell(c, verbose=verbose, quick=config.command_timeout)
        results = []
        for target, paths in _targets(c, host, config, ssh_config, shell, job):
            health = lifecycle.check(shell, target, paths)
            _say(health.line)
            results.append(health.ok)
        if not results:
            raise TbError("no tunnel of ours is open on this machine")
        if not all(results):
            raise Exit(code=1)
    except TbError as error:
        raise _edge(error) from None


@task(name="exit", help=_COMMON_HELP, auto_shortflags=False)
def exit_(c, host=None, control_dir=None, ssh_config=None, verbose=False, job=None):
    """Close the tunnel and stop only the TensorBoard that tb.start started."""
    try:
        config = settings(c.config, control_dir=control_dir)
        shell = lifecycle.Shell(c, verbose=verbose, quick=config.command_timeout)
        found = False
        for target, paths in _targets(c, host, config, ssh_config, shell, job):
            found = True
            lifecycle.stop(shell, target, paths, _say)
        if not found:
            _say("nothing to stop: no tunnel of ours is open on this machine")
    except TbError as error:
        raise _edge(error) from None


def _one_session(c: Any, host: Optional[str], control_dir: Optional[str], ssh_config: Optional[str], job: Optional[str] = None):
    """The session for ``host``, or the only one recorded here."""
    config = settings(c.config, control_dir=control_dir)
    shell = lifecycle.Shell(c, quick=config.command_timeout)
    found = []
    for target, paths in _targets(c, host, config, ssh_config, shell, job):
        data = state.load(paths)
        if not data:
            raise TbError(f"{target.label}: no tunnel (start one with tb.start)")
        found.append((target, paths, data))
    if not found:
        raise TbError("no tunnel of ours is open on this machine: start one with tb.start")
    if len(found) > 1:
        names = ", ".join(target.label for target, _, _ in found)
        raise TbError(f"several tunnels are open ({names}): say which with --host")
    return shell, found[0]


_LOGS_HELP = {
    **{k: v for k, v in _COMMON_HELP.items() if k != "verbose"},
    "lines": "How many lines of the remote TensorBoard log to show (default 40).",
    "follow": "Keep printing new lines until Ctrl-C.",
}


@task(help=_LOGS_HELP, auto_shortflags=False)
def logs(c, host=None, control_dir=None, ssh_config=None, lines=40, follow=False, job=None):
    """Show the tail of the remote TensorBoard log (--follow to keep watching)."""
    try:
        shell, (target, paths, data) = _one_session(c, host, control_dir, ssh_config, job)
        rundir = remote.run_dir(data["remote_dir"], data["sid"])
        via = paths if lifecycle.master_state(shell, target, paths)[0] == "up" else None
        script = remote.log_script(rundir, int(lines), follow=bool(follow))
        code = lifecycle.stream_remote(shell, target, via, script, follow=bool(follow))
        if code not in (0, 130):
            raise TbError(f"could not read the log on {target.label} (ssh exit status {code})")
    except TbError as error:
        raise _edge(error) from None
    except KeyboardInterrupt:
        pass


_OPEN_HELP = {k: v for k, v in _COMMON_HELP.items() if k != "verbose"}


@task(name="open", help=_OPEN_HELP, auto_shortflags=False)
def open_(c, host=None, control_dir=None, ssh_config=None, job=None):
    """Open the running TensorBoard in your browser."""
    try:
        _, (_, _, data) = _one_session(c, host, control_dir, ssh_config, job)
        if not data.get("local_port"):
            raise TbError("the tunnel is not complete yet: run tb.start")
        if not browse(lifecycle.url_for(data), _say):
            raise Exit(code=1)
    except TbError as error:
        raise _edge(error) from None


_LIST_HELP = {
    "control-dir": _COMMON_HELP["control-dir"],
    "json": "Print JSON (one object per tunnel) instead of a table.",
}


def _uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


@task(name="list", help=_LIST_HELP, auto_shortflags=False)
def list_(c, control_dir=None, json=False):
    """One row per tunnel of ours: host, URL, remote pid, logdir, uptime, health."""
    try:
        config = settings(c.config, control_dir=control_dir)
        shell = lifecycle.Shell(c, quick=config.command_timeout)
        found = state.all_states(state.control_dir(config.control_dir))

        def row(item):
            paths, data = item
            target = Target.from_dict(data["target"], batch=True)
            health = lifecycle.check(shell, target, paths)
            return {
                "host": target.label,
                "url": lifecycle.url_for(data) if data.get("local_port") else None,
                "remote_pid": data.get("remote_pid"),
                "logdir": data.get("logdir"),
                "uptime_seconds": round(time.time() - data.get("started_at", time.time())),
                "healthy": health.ok,
                "status": health.line.split(": ", 1)[-1],
            }

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(found), 16))) as pool:
            rows = list(pool.map(row, found))
    except TbError as error:
        raise _edge(error) from None
    if json:
        print(_json.dumps(rows, indent=2))
        return
    if not rows:
        print("no tunnels of ours are open on this machine")
        return
    table = [("HOST", "URL", "PID", "LOGDIR", "UPTIME", "HEALTH")] + [
        (
            r["host"],
            r["url"] or "-",
            str(r["remote_pid"] or "-"),
            r["logdir"] or "-",
            _uptime(r["uptime_seconds"]),
            "ok" if r["healthy"] else r["status"],
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True)) + "  " + line[5])


ns = Collection("tb", start, check, exit_, logs, open_, list_)
ns.configure({"tb": dict(DEFAULTS)})
