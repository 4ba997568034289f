"""Settings: our defaults, how a task resolves each one, and input validation.

Every setting can come from a task flag, an environment variable
(``INVOKE_TB_<KEY>`` / ``FABRIC_TB_<KEY>``), a config file (``invoke.yaml`` /
``fabric.yaml`` under ``tb:``) or our collection defaults, in invoke's own
order. Tasks take ``None`` for "flag not given" and call :func:`resolve`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import TbError
from .mirror import Patterns


class _EnvNumber(int):
    """An int default that lets invoke's env loader hand us any string.

    Invoke casts ``INVOKE_TB_LOCAL_PORT=...`` to the default's type; for a
    plain int, ``abc`` or ``1.5`` would crash with a traceback before our task
    runs. This returns such a string unchanged, for :func:`settings` to
    validate with a one-line message.
    """

    def __new__(cls, value: Any = 0) -> Any:
        try:
            return super().__new__(cls, value)
        except (TypeError, ValueError):
            return value


#: The collection's defaults (``ns.configure({"tb": DEFAULTS})``).
DEFAULTS: dict[str, Any] = {
    # Host to use when no Fabric host (-H) and no --host is given.
    "host": None,
    # TensorBoard's --logdir, relative to the remote login directory.
    "logdir": "./logdir",
    # Port TensorBoard listens on, on the remote's 127.0.0.1.
    "remote_port": _EnvNumber(6008),
    # Port on this machine's 127.0.0.1 that leads to it.
    "local_port": _EnvNumber(6006),
    # Where control sockets and per-host state live (created 0700).
    "control_dir": "~/.ssh/controlmasters",
    # ssh_config file for OpenSSH (ssh -F); None means OpenSSH's default.
    "ssh_config": None,
    # Remote command that runs TensorBoard (a shell fragment: a full path or
    # "python -m tensorboard.main" work too).
    "tensorboard_cmd": "tensorboard",
    # Optional shell snippet run on the remote before TensorBoard, e.g.
    # "source ~/venvs/tb/bin/activate" or "module load tensorflow".
    "activate": "",
    # Remote command that runs the Python TensorBoard lives in, possibly with
    # words before it ("conda run -n tb python", "apptainer exec tb.sif
    # python3"): our launcher runs under it. Empty: found from
    # tensorboard_cmd (its shebang, or "python -m tensorboard.main").
    "python": "",
    # Remote directory for our run directories (pid file, log).
    "remote_dir": "~/.tensorboard-remote",
    # How TensorBoard serves on the remote: "unix" (a 0600 Unix socket in our
    # 0700 run directory: no TCP port at all) or "tcp" (127.0.0.1:remote_port,
    # as the seed script did).
    "serve": "unix",
    # "yes": a random secret URL prefix (in a 0600 file; the launcher's guard
    # trades it for a per-session cookie) guards the local port against other
    # local users and DNS rebinding.
    "url_token": "yes",
    # TensorBoard's fast loader runs a data server on a loopback TCP port that
    # any user of the remote can read: "auto" keeps it in a private network
    # namespace (unshare -rn) where the host allows, else turns it off;
    # "netns" requires the namespace; "off" uses --load_fast=false (slower on
    # large logdirs); "shared" leaves it as TensorBoard does.
    "data_server": "auto",
    # How tb.start --job reaches a Slurm job's node from the login host:
    # "srun" (srun --overlap --jobid from the login node: no sshd on nodes
    # needed, TensorBoard lives and dies with the job; it listens on the
    # node's address behind the URL token) or "ssh" (ssh to the node through
    # the login node, where the site allows it, e.g. pam_slurm_adopt: a
    # private Unix socket there, as on any host).
    "slurm_via": "srun",
    # "yes": tb.start opens the URL in your browser (webbrowser; BROWSER is
    # honoured), never on a machine without a display.
    "open": "no",
    # Seconds to wait for TensorBoard to answer through the tunnel.
    "start_timeout": _EnvNumber(60),
    # Seconds for any ssh step that should be quick (through the master).
    "command_timeout": _EnvNumber(10),
    # Seconds for the TCP connect of a new ssh connection.
    "connect_timeout": _EnvNumber(10),
    # Seconds between ssh keepalives; the master ends after 3 unanswered.
    "keepalive": _EnvNumber(15),
    # "yes": a small watcher process per session owns the local port and
    # reconnects by itself after sleep, roaming or a lost master (never
    # prompting); "no": nothing resident but the ssh master, which then
    # holds the port itself, and tb.start reconnects.
    "reconnect": "yes",
    # "yes": when ``ssh -G HOST`` names a ControlPath whose master is up
    # (ControlMaster auto + ControlPersist in your ssh_config), the session
    # rides it: no second login, no second two-factor prompt; "no": always
    # our own master.
    "user_master": "yes",
    # A merged view (tb.start --merge): a mapping of host to its logdir, e.g.
    # {"gpu1": "~/runs", "gpu2": "/scratch/me/runs"}; tb.start --merge with
    # no --hosts starts these (a host not in it takes tb.logdir). A mapping
    # (invoke cannot merge a file's mapping into None); in the environment,
    # INVOKE_TB_MERGE=host=logdir,host2=logdir2.
    "merge": {},
    # Where TensorBoard runs for a single host: "remote" (on the host, behind
    # the tunnel) or "local" (here, over a mirror of the host's logdir: no
    # TensorBoard and no long-running process of ours on the host).
    "run_on": "remote",
    # The local mirrors of merged views (and --run-on local): one folder per
    # session and host. Kept by tb.exit unless --remove-mirror.
    "mirror_dir": os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "tensorboard-remote", "mirror"),
    # What the mirror copies: rsync-style patterns (comma-separated or a
    # list). Event files and plugin data; never checkpoints.
    "mirror_patterns": "events.out.tfevents.*,plugins/**,projector_config.pbtxt",
    # Seconds between sync rounds of each host.
    "sync_every": _EnvNumber(5),
    # "yes": a host of a merged view that cannot be reached is left out (and
    # named), the others start; "no": then nothing starts.
    "merge_partial": "yes",
    # "auto": rsync where both ends have it, else our own stream (a Python 3
    # on the host); "no": always our own stream.
    "rsync": "auto",
}


@dataclass(frozen=True)
class Settings:
    logdir: str
    remote_port: int
    local_port: int
    control_dir: str
    ssh_config: Optional[str]
    tensorboard_cmd: str
    activate: str
    remote_dir: str
    serve: str
    url_token: bool
    data_server: str
    start_timeout: float
    command_timeout: float
    connect_timeout: int
    keepalive: int
    slurm_via: str = "srun"
    python: str = ""
    reconnect: bool = True
    user_master: bool = True
    run_on: str = "remote"
    mirror_dir: str = "~/.cache/tensorboard-remote/mirror"
    mirror_patterns: str = "events.out.tfevents.*,plugins/**,projector_config.pbtxt"
    sync_every: float = 5.0
    rsync: str = "auto"
    merge_partial: bool = True
    # True when local_port came from the user (flag, env or config), not our
    # default: then a busy port is an error instead of "take the next one".
    local_port_explicit: bool = True


def configured(config: Any) -> Mapping[str, Any]:
    """The ``tb`` section of an invoke/fabric config, or an empty mapping."""
    try:
        section = config.get("tb")
    except AttributeError:
        section = None
    return section or {}


def resolve(config: Any, key: str, flag: Any = None) -> Any:
    """One setting: the flag if given, else config, else our own default.

    Invoke merges collection configuration shallowly, so a composing project
    that configures ``{"tb": {"local_port": 1}}`` drops our other ``tb`` keys,
    and invoke then also ignores ``INVOKE_TB_<KEY>`` for them (it loads env
    vars only for keys it knows). So fall back per key: to that env var,
    then to :data:`DEFAULTS`.
    """
    if flag is not None:
        return flag
    section = configured(config)
    value = section.get(key)
    if value is None and key not in section:
        prefix = getattr(config, "_env_prefix", None) or "INVOKE_"
        value = os.environ.get(f"{prefix}TB_{key.upper()}")
    if value is None:
        return DEFAULTS[key]
    return value


def port(value: Any, name: str, *, allow_zero: bool = False) -> int:
    """Validate a TCP port (1..65535, or 0 for "any free one" where allowed)."""
    lowest = 0 if allow_zero else 1
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text) or not lowest <= int(text) <= 65535:
        raise TbError(f"{name} must be an integer from {lowest} to 65535, got {value!r}")
    return int(text)


def seconds(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TbError(f"{name} must be a number of seconds, got {value!r}") from None
    if not number > 0:
        raise TbError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        value = str(value)
    if not value and not allow_empty:
        raise TbError(f"{name} must not be empty")
    if "\0" in value:
        raise TbError(f"{name} must not contain a NUL byte")
    return value


def choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    text_value = str(value).strip().lower()
    if text_value not in allowed:
        raise TbError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return text_value


def yes_no(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text_value = str(value).strip().lower()
    if text_value in ("yes", "true", "on", "1"):
        return True
    if text_value in ("no", "false", "off", "0"):
        return False
    raise TbError(f"{name} must be yes or no, got {value!r}")


def settings(config: Any, **flags: Any) -> Settings:
    """Resolve and validate every setting a task needs."""

    def get(key: str) -> Any:
        return resolve(config, key, flags.get(key))

    ssh_config = get("ssh_config")
    serve = choice(get("serve"), "serve", ("unix", "tcp"))
    data_server = choice(get("data_server"), "data_server", ("auto", "netns", "off", "shared"))
    if serve == "tcp" and data_server == "netns":
        raise TbError("data_server=netns needs serve=unix (TCP would be unreachable from sshd)")
    # The seed's 6006 is a preference; any other port, or one given by flag
    # or environment, is what the user asked for exactly.
    prefix = getattr(config, "_env_prefix", None) or "INVOKE_"
    local_port_explicit = (
        flags.get("local_port") is not None
        or f"{prefix}TB_LOCAL_PORT" in os.environ
        or str(get("local_port")).strip() != str(DEFAULTS["local_port"])
    )
    for key in ("activate", "tensorboard_cmd", "python"):
        # Words our remote scripts reserve as heredoc delimiters.
        if any(word in str(get(key) or "") for word in ("TBR_SH_EOF", "TBR_PY_EOF", "TBR_KILL_EOF", "TBR_NODE_EOF")):
            raise TbError(f"{key} contains a word reserved by tensorboard-remote (TBR_..._EOF)")
    return Settings(
        logdir=text(get("logdir"), "logdir"),
        remote_port=port(get("remote_port"), "remote_port", allow_zero=True),
        local_port=port(get("local_port"), "local_port"),
        control_dir=text(get("control_dir"), "control_dir"),
        ssh_config=text(ssh_config, "ssh_config") if ssh_config else None,
        tensorboard_cmd=text(get("tensorboard_cmd"), "tensorboard_cmd"),
        activate=text(get("activate"), "activate", allow_empty=True),
        remote_dir=text(get("remote_dir"), "remote_dir"),
        serve=serve,
        url_token=yes_no(get("url_token"), "url_token"),
        data_server=data_server,
        start_timeout=seconds(get("start_timeout"), "start_timeout"),
        command_timeout=seconds(get("command_timeout"), "command_timeout"),
        connect_timeout=int(seconds(get("connect_timeout"), "connect_timeout")) or 1,
        keepalive=int(seconds(get("keepalive"), "keepalive")) or 1,
        slurm_via=choice(get("slurm_via"), "slurm_via", ("srun", "ssh")),
        python=text(get("python"), "python", allow_empty=True).strip(),
        reconnect=yes_no(get("reconnect"), "reconnect"),
        user_master=yes_no(get("user_master"), "user_master"),
        run_on=choice(get("run_on"), "run_on", ("remote", "local")),
        mirror_dir=text(get("mirror_dir"), "mirror_dir"),
        mirror_patterns=",".join(_patterns(get("mirror_patterns"))),
        sync_every=seconds(get("sync_every"), "sync_every"),
        rsync=choice(get("rsync"), "rsync", ("auto", "no")),
        merge_partial=yes_no(get("merge_partial"), "merge_partial"),
        local_port_explicit=local_port_explicit,
    )


def _patterns(value: Any) -> tuple[str, ...]:
    return Patterns.parse(value).globs


def merge_mapping(config: Any, value: Any = None) -> dict[str, str]:
    """The ``merge`` setting as host -> logdir: a mapping (config files), or
    ``host=logdir,host2=logdir2`` (an environment variable)."""
    value = resolve(config, "merge", value)
    if not value:
        prefix = getattr(config, "_env_prefix", None) or "INVOKE_"
        value = os.environ.get(f"{prefix}TB_MERGE")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        pairs = {}
        for item in value.split(","):
            host, sep, logdir = item.strip().partition("=")
            if not sep or not host.strip() or not logdir.strip():
                raise TbError(f"merge must map hosts to logdirs (host=logdir,...), got {item!r}")
            pairs[host.strip()] = logdir.strip()
        return pairs
    try:
        items = dict(value).items()
    except (TypeError, ValueError):
        raise TbError(f"merge must be a mapping of host to logdir, got {value!r}") from None
    mapping = {}
    for host, logdir in items:
        if isinstance(logdir, dict) or logdir is None:
            logdir = (logdir or {}).get("logdir")
        mapping[str(host)] = text(logdir, f"merge logdir of {host}")
    return mapping
