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
import functools
import json as _json
import sys
from typing import Any, Callable, Optional

from invoke import Collection, Exit, task

from . import listing, remote, slurm, state, targets
from .browse import browse
from .errors import TbError
from .host import Host, MasterState
from .local import LocalBoard
from .merge import MergedSession
from .merge import find as merge_find
from .merge import paths_of as merge_paths
from .merge import recorded as merge_recorded
from .merge import session_id as merge_id
from .merge import Wanted as merge_wanted
from .progress import Reporter
from .session import Session
from .settings import DEFAULTS, Settings, choice, merge_mapping, resolve, settings, yes_no
from .shell import Shell, require_multiplexing

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
    "python": "Remote command of the Python TensorBoard lives in, e.g. 'conda run -n tb python' or 'apptainer exec ~/tb.sif python3' (default: found from tensorboard-cmd; when set, tensorboard-cmd is not used).",
    "remote-dir": "Remote directory for run state: pid file and log (default ~/.tensorboard-remote).",
    "start-timeout": "Seconds to wait for TensorBoard to answer through the tunnel (default 60).",
    "serve": "unix (default: a private Unix socket, no TCP port on the remote) or tcp (the seed's way).",
    "url-token": "yes (default): a secret URL prefix guards the local port; no: plain URL.",
    "data-server": "auto (default), netns, off or shared: how TensorBoard's fast-loader data server is kept private.",
    "quiet": "Print only the URL (for scripts).",
    "hosts": "Start several hosts at once, comma-separated (each gets its own local port).",
    "open": "Open the URL in your browser when ready (config: tb.open).",
    "reconnect": "yes (default): a small watcher keeps the URL working after sleep, roaming or a lost connection, never prompting; no: only the ssh master, as before.",
    "user-master": "yes (default): ride your own live ssh master for the host (ControlMaster/ControlPersist in ssh_config), no second login; no: always our own.",
    "merge": "One TensorBoard here over a mirror of every host's logdir (--hosts a,b, or the merge setting: host -> logdir); runs are named HOST/RUN.",
    "run-on": "remote (default: TensorBoard on the host, behind the tunnel) or local (here, over a mirror of the host's logdir; nothing long-running on the host).",
    "mirror-dir": "Where merged views keep their mirrors (default ~/.cache/tensorboard-remote/mirror).",
    "mirror-patterns": "Comma-separated rsync-style patterns of what the mirror copies (default events.out.tfevents.*,plugins/**,projector_config.pbtxt).",
    "sync-every": "Seconds between sync rounds of a merged view, per host (default 5).",
    "rsync": "auto (default): rsync where both ends have it, else our own stream; no: always our own stream.",
    "follow": "With --job NAME: when the job ends, follow the next running job of yours with that name (same URL); tb.exit stops following.",
    "merge-partial": "yes (default): a host of the merged view that cannot be reached is left out and named; no: then nothing starts.",
    "slurm-via": "With --job: srun (default: a step of the job, no sshd on nodes needed) or ssh (through the login node to the node's sshd).",
}


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def explained(body: Callable) -> Callable:
    """The one edge between our errors and invoke: a :class:`TbError`
    becomes ``Exit`` with its one-line message and status 1. Every task
    first refuses a platform it cannot work on (native Windows)."""

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            require_multiplexing()
            return body(*args, **kwargs)
        except TbError as error:
            raise Exit(f"tensorboard-remote: {error}", 1) from None

    return run


def _shell(config: Settings, verbose: bool = False) -> Shell:
    return Shell(verbose=verbose, quick=config.command_timeout)


@task(help=_START_HELP, auto_shortflags=False)
@explained
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
    python=None,
    remote_dir=None,
    start_timeout=None,
    serve=None,
    url_token=None,
    data_server=None,
    verbose=False,
    quiet=False,
    open=False,
    hosts=None,
    job=None,
    slurm_via=None,
    reconnect=None,
    user_master=None,
    merge=False,
    run_on=None,
    mirror_dir=None,
    mirror_patterns=None,
    sync_every=None,
    rsync=None,
    merge_partial=None,
    follow=False,
):
    """Open the tunnel, start TensorBoard on the remote, print the local URL."""
    config = settings(
        c.config,
        logdir=logdir,
        remote_port=remote_port,
        local_port=local_port,
        control_dir=control_dir,
        tensorboard_cmd=tensorboard_cmd,
        activate=activate,
        python=python,
        remote_dir=remote_dir,
        start_timeout=start_timeout,
        serve=serve,
        url_token=url_token,
        data_server=data_server,
        slurm_via=slurm_via,
        reconnect=reconnect,
        user_master=user_master,
        run_on=run_on,
        mirror_dir=mirror_dir,
        mirror_patterns=mirror_patterns,
        sync_every=sync_every,
        rsync=rsync,
        merge_partial=merge_partial,
        follow=True if follow else None,
    )
    ssh_config_path = targets.ssh_config(c, ssh_config)
    if job is not None and hosts:
        raise TbError("--job and --hosts do not go together: one login host per job")
    if config.follow and job is not None:
        slurm.followable(str(job), config)
    if job is not None and (merge or config.run_on == "local"):
        raise TbError("--job does not go with --merge or --run-on local yet: a job's TensorBoard runs in the job")
    shell = _shell(config, verbose)
    try:
        if merge or config.run_on == "local":
            urls = [_start_merged(c, host, hosts, bool(merge), ssh_config_path, config, shell, quiet)]
        elif hosts:
            urls = _start_many(c, hosts, ssh_config_path, config, shell, quiet)
        else:
            urls = [_start_one(c, host, ssh_config_path, config, shell, quiet, job)]
    except KeyboardInterrupt:
        # Whatever was started is recorded: the next tb.start or tb.exit
        # picks up from here.
        raise Exit("tensorboard-remote: interrupted; run tb.start to finish or tb.exit to clean up", 130) from None
    # --open is a switch; without it, tb.open (config or env) decides.
    if yes_no(resolve(c.config, "open", True if open else None), "open"):
        for url in urls:
            browse(url, _say if not quiet else _warn)


def _start_one(c: Any, host: Optional[str], ssh_config: Optional[str], config: Settings, shell: Shell, quiet: bool, job: Optional[str]) -> str:
    target = targets.target(c, host, ssh_config, config.connect_timeout)
    if target is None:
        raise TbError("no host given: use fab -H HOST, --host HOST or the tb.host setting")
    report = Reporter(quiet=quiet)
    try:
        return targets.begin(shell, target, config, report, job).url
    finally:
        report.close()


def _start_merged(c: Any, host: Optional[str], hosts: Optional[str], merged: bool, ssh_config: Optional[str], config: Settings, shell: Shell, quiet: bool) -> str:
    """A merged view (or one host with ``run_on`` local): TensorBoard here over a mirror."""
    mapping = merge_mapping(c.config)
    if merged:
        if not hosts and (host or getattr(c, "host", None)):
            # One host named (--host, fab -H, HOST start): not the mapping's view.
            raise TbError(
                "--merge takes its hosts from --hosts a,b (or HOST1,HOST2 start --merge, or the merge setting), "
                "not from one --host/-H; for one host's runs served from a mirror here, use --run-on local"
            )
        names = _names(hosts) if hosts else list(mapping)
        if not names:
            raise TbError("--merge needs the hosts: --hosts a,b or the merge setting (host -> logdir)")
        # LOGIN/JOB: a Slurm job's logdir, read through its login node.
        found = [targets.target(c, name.partition("/")[0], ssh_config, config.connect_timeout) for name in names]
        jobs = [slurm.check_job(name.partition("/")[2]) if "/" in name else None for name in names]
    else:
        if hosts:
            raise TbError("--run-on local is for one host; for several, add --merge (one TensorBoard over all)")
        one = targets.target(c, host, ssh_config, config.connect_timeout)
        if one is None:
            raise TbError("no host given: use fab -H HOST, --host HOST or the tb.host setting")
        found, names, jobs = [one], [one.label], [None]
    wanted = [
        merge_wanted(t, mapping.get(name, mapping.get(t.label, config.logdir)), job)
        for t, name, job in zip(found, names, jobs, strict=True) if t is not None
    ]
    if len({(w.target.label, w.job) for w in wanted}) != len(wanted):
        raise TbError("a host is named twice in the merged view")
    single = not merged
    directory = state.control_dir(config.control_dir)
    session = MergedSession(shell, merge_paths(directory, merge_id(wanted, single)), batch=not targets.prompting_allowed())
    report = Reporter(quiet=quiet, plain=len(wanted) > 1)
    try:
        url, failures = session.start(config, wanted, single, report)
    finally:
        report.close()
    if failures:
        if len(failures) == 1:
            raise TbError(f"{failures[0]}; the {session.label} started without it: {url}")
        gone = ", ".join(line.split(":", 1)[0] for line in failures)
        raise TbError("\n".join(failures) + f"\nthe {session.label} started without {gone}: {url}")
    return url


def _asked(c: Any, name: str, ssh_config: Optional[str], config: Settings) -> str:
    """A merged view's host as its record names it: the target's label, and /JOB for a job."""
    host, _, job = name.partition("/")
    label = targets.target(c, host, ssh_config, config.connect_timeout).label
    return f"{label}/{slurm.check_job(job)}" if job else label


def _names(hosts: str) -> list[str]:
    names = [name.strip() for name in str(hosts).split(",") if name.strip()]
    if not names:
        raise TbError("--hosts needs a comma-separated list of hosts")
    return names


def _start_many(c: Any, hosts: str, ssh_config: Optional[str], config: Settings, shell: Shell, quiet: bool) -> list[str]:
    """Start several hosts at once: one thread, master and local port each."""
    names = _names(hosts)
    found = [targets.target(c, name, ssh_config, config.connect_timeout) for name in names]
    # Each host takes the first free port from the configured one upwards.
    config = dataclasses.replace(config, local_port_explicit=False)
    report = Reporter(quiet=quiet, plain=True)

    def start_host(target: Any) -> str:
        return targets.begin(shell, target, config, report).url

    failures: list[str] = []
    urls: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(found), 16)) as pool:
        futures = {pool.submit(start_host, target): target for target in found}
        for future in concurrent.futures.as_completed(futures):
            try:
                urls.append(future.result())
            except TbError as error:
                failures.append(f"{futures[future].label}: {error}")
    if failures:
        raise TbError(f"{len(failures)} of {len(found)} hosts failed:\n" + "\n".join(failures))
    return urls


_WHICH_HELP = {
    **_COMMON_HELP,
    "hosts": "With --merge: the merged view over these hosts (comma-separated).",
    "merge": "Act on merged views (with --hosts: the one over those hosts; alone: every merged view).",
    "run-on": "Only the host's session with TensorBoard there (remote) or its view here over a mirror (local); default both.",
}


@task(help=_WHICH_HELP, auto_shortflags=False)
@explained
def check(c, host=None, control_dir=None, ssh_config=None, verbose=False, job=None, hosts=None, merge=False, run_on=None):
    """Say whether tunnel, remote TensorBoard and page are healthy; exit 1 if not."""
    config = settings(c.config, control_dir=control_dir)
    results = []
    for session in _placed(_which(c, host, hosts, merge, config, ssh_config, _shell(config, verbose), job), run_on, host):
        health = session.check(warn_before=config.job_warn)
        _say(health.line)
        results.append(health.ok)
    if not results:
        raise TbError("no tunnel of ours is open on this machine")
    if not all(results):
        raise Exit(code=1)


def _which(c: Any, host: Optional[str], hosts: Optional[str], merged: bool, config: Settings, ssh_config: Optional[str], shell: Shell, job: Optional[str]):
    """The sessions a check or exit acts on: with --merge, merged views (over
    --hosts, or all); else as for any session (merged views included when no
    host is given, and a host's --run-on local view with --host)."""
    if merged or hosts:
        if not merged:
            raise TbError("--hosts on check and exit names a merged view: add --merge")
        directory = state.control_dir(config.control_dir)
        batch = not targets.prompting_allowed()
        if hosts:
            labels = [_asked(c, name, ssh_config, config) for name in _names(hosts)]
            found = merge_find(shell, directory, labels, batch=batch, single=False)
            if not found:
                raise TbError(f"no merged view over {', '.join(labels)} is recorded here (tb.list shows what is)")
            return found
        return list(merge_recorded(shell, directory, batch=batch))
    return list(targets.sessions(c, host, config, ssh_config, shell, job))


def _placed(sessions: list, run_on: Optional[str], host: Optional[str]) -> list:
    """``--run-on`` on check and exit: only the sessions placed so (a host's
    ``--run-on local`` view is a single-host merged view)."""
    if run_on is None:
        return sessions
    run_on = choice(run_on, "--run-on", ("remote", "local"))  # as the run_on setting is checked
    kept = [s for s in sessions if isinstance(s, MergedSession) == (run_on == "local")]
    if run_on == "local":
        kept = [s for s in kept if getattr(s.record(), "single", True)]
    if not kept:
        whose = f" of {host}" if host else ""
        raise TbError(f"no --run-on {run_on} session{whose} is recorded here (tb.list shows what is)")
    return kept


def _merged_views_left(c: Any, host: Optional[str], config: Settings, ssh_config: Optional[str]) -> None:
    """After ``tb.exit -H gpu1``: merged views over gpu1 and others still run; say so."""
    given = targets.target(c, host, targets.ssh_config(c, ssh_config), config.connect_timeout)
    if given is None:
        return
    for session in merge_recorded(Shell(), state.control_dir(config.control_dir), batch=True):
        rec = session.record()
        if rec is not None and not rec.single and any(m.target.label == given.label for m in rec.members):
            asked = ",".join(m.asked or m.label for m in rec.members)
            _say(f"{rec.label} still runs: tb.exit --hosts {asked} --merge stops it")


_EXIT_HELP = {**_WHICH_HELP, "remove-mirror": "Also remove a merged view's local mirror (kept by default, to read offline)."}


@task(name="exit", help=_EXIT_HELP, auto_shortflags=False)
@explained
def exit_(c, host=None, control_dir=None, ssh_config=None, verbose=False, job=None, hosts=None, merge=False, remove_mirror=False, run_on=None):
    """Close the tunnel and stop only the TensorBoard that tb.start started."""
    config = settings(c.config, control_dir=control_dir)
    found = False
    for session in _placed(_which(c, host, hosts, merge, config, ssh_config, _shell(config, verbose), job), run_on, host):
        found = True
        if isinstance(session, MergedSession):
            session.stop(_say, remove_mirror=bool(remove_mirror))
        else:
            session.stop(_say)
    if not (merge or hosts):
        _merged_views_left(c, host, config, ssh_config)
    if not found:
        _say("nothing to stop: no tunnel of ours is open on this machine")


def _one_session(c: Any, host: Optional[str], control_dir: Optional[str], ssh_config: Optional[str], job: Optional[str] = None):
    """The session for ``host``, or the only one recorded here, with its record."""
    config = settings(c.config, control_dir=control_dir)
    found = []
    for session in targets.sessions(c, host, config, ssh_config, _shell(config), job):
        rec = session.record()
        if rec is None:
            raise TbError(f"{session.label}: no tunnel (start one with tb.start)")
        found.append((session, rec))
    if not found:
        raise TbError("no tunnel of ours is open on this machine: start one with tb.start")
    if len(found) > 1:
        names = ", ".join(session.label for session, _ in found)
        jobs = " or --job" if any(rec.job for _, rec in found) else ""
        raise TbError(f"several tunnels are open ({names}): say which with --host{jobs}")
    return found[0]


_LOGS_HELP = {
    **{k: v for k, v in _COMMON_HELP.items() if k != "verbose"},
    "lines": "How many lines of the remote TensorBoard log to show (default 40).",
    "follow": "Keep printing new lines until Ctrl-C.",
}


@task(help=_LOGS_HELP, auto_shortflags=False)
@explained
def logs(c, host=None, control_dir=None, ssh_config=None, lines=40, follow=False, job=None):
    """Show the tail of the remote TensorBoard log (--follow to keep watching)."""
    try:
        session, rec = _one_session(c, host, control_dir, ssh_config, job)
        if isinstance(session, MergedSession):
            # A merged view's TensorBoard runs here: its log is a local file.
            print(LocalBoard(rec.rundir).log_tail(int(lines)))
            return
        up = session.host.follow(rec.borrowed).state is MasterState.UP
        script = remote.log_script(rec.rundir, int(lines), follow=bool(follow))
        code = session.host.stream(script, follow=bool(follow), through_master=up)
        if code not in (0, 130):
            raise TbError(f"could not read the log on {session.label} (ssh exit status {code})")
    except KeyboardInterrupt:
        pass


_OPEN_HELP = {k: v for k, v in _COMMON_HELP.items() if k != "verbose"}


@task(name="open", help=_OPEN_HELP, auto_shortflags=False)
@explained
def open_(c, host=None, control_dir=None, ssh_config=None, job=None):
    """Open the running TensorBoard in your browser."""
    _, rec = _one_session(c, host, control_dir, ssh_config, job)
    if not rec.url:
        raise TbError("the tunnel is not complete yet: run tb.start")
    if not browse(rec.url, _say):
        raise Exit(code=1)


_LIST_HELP = {
    "control-dir": _COMMON_HELP["control-dir"],
    "json": "Print JSON (one object per tunnel) instead of a table.",
}


@task(name="list", help=_LIST_HELP, auto_shortflags=False)
@explained
def list_(c, control_dir=None, json=False):
    """One row per tunnel of ours: host, URL, remote pid, logdir, uptime, health."""
    config = settings(c.config, control_dir=control_dir)
    shell = _shell(config)
    found = list(targets.recorded(shell, config, batch=True))
    found += list(merge_recorded(shell, state.control_dir(config.control_dir), batch=True))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(found), 16))) as pool:
        rows = list(pool.map(listing.row, found))
    print(_json.dumps(rows, indent=2) if json else listing.table(rows))


ns = Collection("tb", start, check, exit_, logs, open_, list_)
ns.configure({"tb": dict(DEFAULTS)})
