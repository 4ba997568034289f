"""The remote side: one POSIX sh script per action, built in one place.

Each script is fed to ``sh -s`` on the remote through our ssh master, so the
remote login shell never parses it. Every value that comes from a setting is
shell-quoted here, except the settings that *are* shell by design
(``activate``, ``tensorboard_cmd`` and ``python``). Scripts answer with one line
``tbr <word> [detail]`` that :meth:`Reply.parse` reads, after optional
``tbr-info KEY VALUE`` lines. This module holds only that shell text and
its reply protocol; what the replies mean to a session is ``session.py``'s,
and the Slurm logic around the job scripts is ``slurm.py``'s.

A TensorBoard of ours is recorded in ``<remote_dir>/<sid>/pid`` as
``PID STARTTIME UID BOOT_ID``; a pid alone is no identity (pids are reused),
so before we call a process ours we compare all four and refuse zombies.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from .errors import TbError

_SID = re.compile(r"[0-9a-f]{8,64}")
#: A Slurm job id (``123``, an array task ``123_4``), and a node name or
#: IPv4 address (RFC 1123 names, and "_"): the only words a Slurm script
#: takes from outside.
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,128}")

#: Exit statuses of our launcher before it execs TensorBoard.
NETNS_REFUSED = 96
ACTIVATION_FAILED = 97
COMMAND_NOT_FOUND = 98

LOG_MARK = "tensorboard-remote:"

#: The Python program that serves TensorBoard on the remote (see launcher.py).
LAUNCHER = Path(__file__).with_name("launcher.py").read_text()


def remote_path(path: str) -> str:
    """A shell word for a remote path; a leading ``~`` means the remote $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def run_dir(remote_dir: str, sid: str) -> str:
    if not _SID.fullmatch(sid):
        raise ValueError(f"bad session id {sid!r}")
    return f"{remote_path(remote_dir.rstrip('/') or '/')}/{sid}"


# Shell functions shared by every script. `ours PID START UID BOOT` succeeds
# only for a live, non-zombie process whose start time (field 22 of
# /proc/PID/stat), owner and boot id match what we recorded at spawn.
_PRELUDE = r"""
ours() {
  want=$2
  [ -n "$1" ] && [ -n "$2" ] || return 1
  [ "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)" = "$4" ] || return 1
  [ "$(stat -c %u "/proc/$1" 2>/dev/null)" = "$3" ] || return 1
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  r=${s##*)}
  set -- $r
  [ "$1" != Z ] && [ "$1" != X ] && [ "${20}" = "$want" ]
}
load() {
  p= st= u= b=
  [ -r "$d/pid" ] && read -r p st u b < "$d/pid"
}
# Where TensorBoard listens: its endpoint file, or, when it runs on another
# machine (a Slurm step), the line it printed into our log.
endp() {
  kind= where=
  if [ -s "$d/endpoint" ]; then read -r kind where < "$d/endpoint"
  else
    l=$(grep '^tensorboard-remote: endpoint ' "$d/log" 2>/dev/null | tail -n 1)
    [ -n "$l" ] && { set -- $l; kind=$3; where=$4; }
  fi
  [ -n "$kind" ]
}
info() {
  endp && echo "tbr-info endpoint $kind $where"
  iso=
  if [ -r "$d/isolation" ]; then read -r iso < "$d/isolation"
  else iso=$(sed -n 's/^tensorboard-remote: isolation //p' "$d/log" 2>/dev/null | tail -n 1)
  fi
  [ -n "$iso" ] && echo "tbr-info isolation $iso"
  return 0
}
"""

# A relative run directory is below the login directory (where ssh starts
# us); make it absolute so that a forward can name the socket in it.
_ABSOLUTE = 'case "$d" in /*) ;; *) d="$HOME/$d" ;; esac'


def _script(rundir: str, body: str) -> str:
    return f"d={rundir}\n{_ABSOLUTE}\n{_PRELUDE}\n{body.strip()}\n"


def status_script(rundir: str) -> str:
    """Prints ``tbr running PID``, ``tbr dead PID`` or ``tbr none``; for a
    running one first ``tbr-info endpoint unix PATH`` / ``tcp PORT`` once it
    listens, and ``tbr-info isolation netns|off|shared``."""
    return _script(
        rundir,
        r"""
load
if [ -z "$p" ]; then echo "tbr none"
elif ours "$p" "$st" "$u" "$b"; then
  info
  echo "tbr running $p"
else echo "tbr dead $p"
fi
""",
    )


# Finds the Python that has TensorBoard from the tensorboard_cmd words in
# "$@": "python -m tensorboard.main ARGS" directly, or a console script's
# shebang (including pip's sh wrapper for long paths), else python3. Leaves
# any extra TensorBoard arguments in "$@".
_FIND_PYTHON = r"""
pyarg=
case "${1##*/}" in
  python*)
    py=$1; shift
    if [ "${1-}" = -m ]; then shift 2; fi ;;
  *)
    exe=$(command -v "$1"); shift
    first=; IFS= read -r first < "$exe"
    case "$first" in
      "#!/bin/sh"*) py=$(sed -n "s/^'''exec' \"\(.*\)\" \"\$0\" \"\$@\"\$/\1/p" "$exe" | head -n 1) ;;
      "#!"*python*)
        # As the kernel reads it: an interpreter and one optional argument.
        line=${first#??}; line=${line# }; py=${line%% *}
        case "$line" in *" "*) pyarg=${line#* } ;; esac ;;
      *) py= ;;
    esac
    [ -n "$py" ] || py=python3 ;;
esac
"""


# The first thing a process of ours does: record its identity (pid, start
# time, field 22 of /proc/PID/stat, uid, boot id) in "$d/pid", atomically.
_RECORD_SELF = (
    "s=$(cat /proc/$$/stat); r=${s##*)}; set -- $r\n"
    'echo "$$ ${20} $(id -u) $(cat /proc/sys/kernel/random/boot_id)" > "$d/pid.tmp"'
    ' && mv -f "$d/pid.tmp" "$d/pid"'
)


def _token_file(token: Optional[str]) -> str:
    """Shell that writes the URL token into a 0600 file for the launcher's
    guard (the script travels on stdin: the token is in no command line)."""
    return f"printf '%s\\n' '{token}' > \"$d/token\"\n" if token else ""


def launcher(
    rundir: Optional[str],
    logdir: str,
    tensorboard_cmd: str,
    activate: str,
    *,
    python: str = "",
    serve: str = "unix",
    port: int = 0,
    data_server: str = "auto",
    token_file: bool = True,
    bind: str = "127.0.0.1",
) -> str:
    """The detached script that becomes TensorBoard (it ends in ``exec``).

    ``rundir`` None: ``$d`` is already set (a Slurm step's private directory).
    ``python`` (a shell fragment, as ``tensorboard_cmd``): the command our
    launcher runs under; empty: the Python found from ``tensorboard_cmd``.
    """
    lines = [f"d={rundir}", _ABSOLUTE] if rundir is not None else []
    lines += [
        # Record our identity first: pid, start time, uid, boot id.
        _RECORD_SELF,
        # A private TMPDIR: /tmp/.tensorboard-info is shared by every user.
        'TMPDIR="$d"; export TMPDIR',
        "cd || exit 1",
        f'echo "{LOG_MARK} starting TensorBoard ($(date))"',
    ]
    if activate.strip():
        lines += [
            activate,
            "rc=$?",
            'if [ "$rc" -ne 0 ]; then',
            f'  echo "{LOG_MARK} the activation snippet failed with exit status $rc:"'
            f" {shlex.quote(activate)}",
            f"  exit {ACTIVATION_FAILED}",
            "fi",
        ]
    # The command whose first word must be on PATH: the Python's, when it
    # is given, else TensorBoard's (which then names the Python).
    lines += [
        f"set -- {python or tensorboard_cmd}",
        'if ! command -v "$1" >/dev/null 2>&1; then',
        f'  echo "{LOG_MARK} $1: command not found on PATH=$PATH"',
        f"  exit {COMMAND_NOT_FOUND}",
        "fi",
    ]
    if python:
        lines += ["set --", f"echo {shlex.quote(f'{LOG_MARK} python {python}')}"]
        interpreter = python
    else:
        lines += [_FIND_PYTHON.strip(), f'echo "{LOG_MARK} python $py${{pyarg:+ $pyarg}}"']
        interpreter = '"$py" ${pyarg:+"$pyarg"}'
    lines += ["wrap="]
    if data_server in ("auto", "netns"):
        lines += [
            "if unshare -rn true >/dev/null 2>&1; then",
            '  wrap="unshare -rn"; TBR_NETNS=1; export TBR_NETNS',
            '  echo netns > "$d/isolation"; echo "tensorboard-remote: isolation netns"',
            "else",
        ]
        if data_server == "netns":
            lines += [
                f'  echo "{LOG_MARK} unshare -rn is not permitted here, and data_server=netns requires it"',
                f"  exit {NETNS_REFUSED}",
            ]
        else:
            lines += [
                f'  echo "{LOG_MARK} unshare -rn is not permitted here: data server off (--load_fast=false)"',
                '  set -- "$@" --load_fast=false',
                '  echo off > "$d/isolation"; echo "tensorboard-remote: isolation off"',
            ]
        lines += ["fi"]
    elif data_server == "off":
        lines += ['set -- "$@" --load_fast=false', 'echo off > "$d/isolation"', f'echo "{LOG_MARK} isolation off"']
    else:
        lines += ['echo shared > "$d/isolation"', f'echo "{LOG_MARK} isolation shared"']
    if token_file:
        lines += ['TBR_TOKEN_FILE="$d/token"; export TBR_TOKEN_FILE']
    if serve == "unix":
        lines += [_SHORT_SOCKET.strip()]
    lines += [
        f'TBR_DIR="$d"; TBR_SERVE={shlex.quote(serve)}; TBR_PORT={int(port)}; TBR_HOST={shlex.quote(bind)}',
        "export TBR_DIR TBR_SERVE TBR_PORT TBR_HOST",
        f'exec $wrap {interpreter} "$d/launch.py" "$@" --logdir ' + shlex.quote(logdir),
    ]
    return "\n".join(lines) + "\n"


#: sun_path holds 108 bytes on Linux, the final NUL included.
SOCKET_PATH_MAX = 107

# The socket goes in the run directory, unless that path is too long for a
# Unix socket (a deep home or remote_dir): then in a private directory of
# its own under /tmp (0700, named in "$d/sockdir" for the stop script).
_SHORT_SOCKET = f"""
TBR_SOCK="$d/tb.sock"
if [ "$(printf %s "$TBR_SOCK" | wc -c)" -gt {SOCKET_PATH_MAX} ]; then
  sd=$(mktemp -d /tmp/tbr.XXXXXX) || {{ echo "{LOG_MARK} $TBR_SOCK is too long for a Unix socket and /tmp has no room for a shorter one"; exit 1; }}
  chmod 700 "$sd"; echo "$sd" > "$d/sockdir"
  echo "{LOG_MARK} $TBR_SOCK is over {SOCKET_PATH_MAX} bytes, too long for a Unix socket: serving on $sd/tb.sock"
  TBR_SOCK="$sd/tb.sock"
fi
export TBR_SOCK
"""

# Removes the short socket directory of a run, if it made one.
_DROP_SOCKDIR = r"""
if [ -r "$d/sockdir" ]; then
  read -r sd < "$d/sockdir"
  case $sd in /tmp/tbr.??????) rm -rf "$sd" ;; esac
  rm -f "$d/sockdir"
fi
"""


def _heredoc(path: str, body: str, delimiter: str) -> str:
    if delimiter in body:
        raise TbError(f"a setting (activate, tensorboard_cmd or python) contains the reserved word {delimiter}")
    if not body.endswith("\n"):
        body += "\n"
    return f"cat > {path} <<'{delimiter}'\n{body}{delimiter}\n"


def _node_script(body: str, token: Optional[str]) -> str:
    """What a Slurm step runs (``sh -s``, fed by srun from our run dir): a
    private directory on the node, our launcher and token file in it, then the
    launcher body. Nothing needs a file system shared with the login node."""
    secret = _token_file(token)
    return (
        "umask 077\n"
        'd=$(mktemp -d "${TMPDIR:-/tmp}/tensorboard-remote.XXXXXX") || '
        f'{{ echo "{LOG_MARK} cannot create a private directory on $(hostname)"; exit 1; }}\n'
        # The launcher removes it when TensorBoard ends.
        "TBR_REMOVE_DIR=1; export TBR_REMOVE_DIR\n"
        # Which step this is, for tb.exit to signal it through Slurm.
        f'echo "{LOG_MARK} step ${{SLURM_JOB_ID}}.${{SLURM_STEP_ID}}"\n'
        + secret
        + _heredoc('"$d/launch.py"', LAUNCHER, "TBR_PY_EOF")
        + body
    )


@dataclass(frozen=True)
class Step:
    """Run TensorBoard as a step of a running Slurm job, on one of its nodes.

    ``bind`` is the node's address as Slurm knows it (NodeAddr): TensorBoard
    listens there so that the login node can reach it. Validated here: the
    srun script uses these words.
    """

    job: str
    node: str
    bind: str

    def __post_init__(self) -> None:
        if not JOB_ID.fullmatch(self.job):
            raise ValueError(f"bad job id {self.job!r}")
        for value in (self.node, self.bind):
            if not NODE.fullmatch(value):
                raise ValueError(f"bad node name or address {value!r}")


def _srun_script(rundir: str, step: Step) -> str:
    """Runs on the login node, detached: records its identity, then becomes
    ``srun``, which holds the job step (and so TensorBoard) for as long as it
    runs. Under ``proctrack/cgroup`` a step's processes die with the step, so
    the step must stay in the foreground: here, srun itself is what we keep."""
    srun = [
        "srun", "--overlap", f"--jobid={step.job}", "--nodes=1", "--ntasks=1",
        f"--nodelist={step.node}", "--job-name=tensorboard-remote",
        # bash where the node has it, as elsewhere: activation snippets
        # often say "source".
        "/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash -s; exec sh -s",
    ]
    return "\n".join([
        f"d={rundir}",
        _ABSOLUTE,
        _RECORD_SELF,
        f'echo "{LOG_MARK} starting a step of job {step.job} on {step.node} ($(date))"',
        f'exec {shlex.join(srun)} < "$d/node.sh"',
    ]) + "\n"


def start_script(
    rundir: str,
    logdir: str,
    tensorboard_cmd: str,
    activate: str,
    *,
    python: str = "",
    serve: str = "unix",
    port: int = 0,
    data_server: str = "auto",
    token: Optional[str] = None,
    wait: float = 0.0,
    step: Optional[Step] = None,
) -> str:
    """Start TensorBoard detached unless ours is already running, then wait
    up to ``wait`` seconds for it to listen.

    Prints ``tbr running PID`` (reused) or ``tbr started PID`` after
    ``tbr-info endpoint ...`` once it listens; ``tbr died PID`` if it exited
    first; or ``tbr error <what> [detail]``. The URL token, if any, travels inside this
    script (ssh's stdin) into a 0600 file for the launcher: never on a command line.
    """
    if token is not None and not _TOKEN.fullmatch(token):
        raise ValueError("bad URL token")
    if step is not None:
        # On a compute node: TCP on the node's address, behind the token.
        body = launcher(
            None, logdir, tensorboard_cmd, activate, python=python, serve="tcp", port=port,
            data_server=data_server, token_file=token is not None, bind=step.bind,
        )
        files = (
            'command -v srun >/dev/null 2>&1 || { echo "tbr error no-srun"; exit 0; }\n'
            # A step of ours in this job that this run directory does not
            # know (started from another login node, or its record lost):
            # never start a second TensorBoard beside it.
            f"ex=$(squeue -h -s -j {shlex.quote(step.job)} -o '%i %j' 2>/dev/null"
            " | while read -r sid sname; do [ \"$sname\" = tensorboard-remote ] && { echo \"$sid\"; break; }; done)\n"
            '[ -n "$ex" ] && { echo "tbr error step-exists $ex"; exit 0; }\n'
            + _heredoc('"$d/node.sh"', _node_script(body, token), "TBR_NODE_EOF")
            + _heredoc('"$d/launch.sh"', _srun_script(rundir, step), "TBR_SH_EOF")
        )
    else:
        body = launcher(
            rundir, logdir, tensorboard_cmd, activate, python=python,
            serve=serve, port=port, data_server=data_server, token_file=token is not None,
        )
        secret = _token_file(token)
        files = (
            secret
            + _heredoc('"$d/launch.py"', LAUNCHER, "TBR_PY_EOF")
            + _heredoc('"$d/launch.sh"', body, "TBR_SH_EOF")
        )
    # The logdir as TensorBoard will see it (from the login directory; a
    # job step's node is left alone: its file system may differ).
    logdir_check = "" if step is not None else (
        f'( cd && [ -e {remote_path(logdir)} ] ) || echo "tbr-info logdir-missing $HOME"\n'
    )
    port_check = ""
    if serve == "tcp" and port and step is None:
        hexport = f"{int(port):04X}"
        port_check = (
            "# A listener already on the port is not ours: never disturb it.\n"
            "if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \\\n"
            f"   | grep -q '^ *[0-9]*: [0-9A-F]*:{hexport} [0-9A-F]*:[0-9A-F]* 0A '; then\n"
            f'  echo "tbr error port-in-use {int(port)}"; exit 0\n'
            "fi\n"
        )
    return _script(
        rundir,
        "load\n"
        'if ours "$p" "$st" "$u" "$b"; then word=running; else\n'
        "word=started\n"
        "umask 077\n"
        'mkdir -p "$d" && chmod 700 "$d" || { echo "tbr error rundir $d"; exit 0; }\n'
        'rm -f "$d/pid" "$d/pid.tmp" "$d/endpoint" "$d/isolation" "$d/tb.sock"\n'
        + _DROP_SOCKDIR.lstrip()
        # A fresh log: an old run's endpoint line must not be read as this one's.
        + '[ -f "$d/log" ] && mv -f "$d/log" "$d/log.1"\n'
        + port_check
        + 'command -v setsid >/dev/null 2>&1 || { echo "tbr error no-setsid"; exit 0; }\n'
        + files
        + r"""
if command -v bash >/dev/null 2>&1; then sh_=bash; else sh_=sh; fi
setsid -f "$sh_" "$d/launch.sh" </dev/null >>"$d/log" 2>&1
i=0
while [ ! -s "$d/pid" ]; do
  i=$((i+1)); [ "$i" -gt 500 ] && { echo "tbr error no-pid"; exit 0; }
  sleep 0.01
done
load
fi
# Wait here, on the remote (no round trip per poll), until TensorBoard
# listens or dies, for at most the given time.
i=0
while ! endp; do
  ours "$p" "$st" "$u" "$b" || { echo "tbr died $p"; exit 0; }
  i=$((i+1)); [ "$i" -gt """
        + str(max(0, int(wait / 0.02)))
        + r""" ] && break
  sleep 0.02
done
info
"""
        + logdir_check
        + r"""echo "tbr $word $p"
""",
    )


#: The Python that stops our TensorBoard through a pidfd (see pidfd_kill.py).
PIDFD_KILL = Path(__file__).with_name("pidfd_kill.py").read_text()


def stop_script(rundir: str, grace: float = 3.0, *, pidfd: bool = True) -> str:
    """Stop our TensorBoard (identity re-checked) and remove the run dir.

    Prints ``tbr stopped PID``, ``tbr gone PID`` (recorded but not ours or
    not alive any more: never signalled), ``tbr none`` or ``tbr error ...``,
    after ``tbr-info via pidfd|kill``. Signals go through a pidfd where the
    remote has python3 on Linux >= 5.3; else ``kill`` right after the check.
    """
    ticks = max(1, int(grace * 100))
    pidfd_part = ""
    if pidfd:
        pidfd_part = (
            # A system python3 first: "python3" on PATH may be a slow shim
            # (pyenv's costs about 0.1 s).
            "  for py in /usr/bin/python3 /usr/local/bin/python3 /bin/python3 python3; do\n"
            '    command -v "$py" >/dev/null 2>&1 && break; py=\n'
            "  done\n"
            '  if [ -n "$py" ]; then\n'
            f'    "$py" - "$p" "$st" "$u" "$b" {grace:g} <<\'TBR_KILL_EOF\'\n'
            f"{PIDFD_KILL.strip()}\n"
            "TBR_KILL_EOF\n"
            "    rc=$?\n"
            "  fi\n"
        )
    return _script(
        rundir,
        f"""
load
stepped=
if [ -n "$p" ] && ours "$p" "$st" "$u" "$b"; then
  # A Slurm step of ours (see Step): ask Slurm to send SIGTERM to the
  # step's TensorBoard, which then removes its private directory on the
  # node, and our srun ends with the step. (SIGTERM to srun itself makes
  # it kill the step with SIGKILL, with no clean-up.)
  js=$(sed -n 's/^{LOG_MARK} step \\([0-9_]*\\.[0-9]*\\)$/\\1/p' "$d/log" 2>/dev/null | tail -n 1)
  if [ -n "$js" ] && command -v scancel >/dev/null 2>&1 && scancel --signal=TERM "$js" 2>/dev/null; then
    i=0
    while ours "$p" "$st" "$u" "$b" && [ "$i" -lt {2 * ticks} ]; do i=$((i+1)); sleep 0.01; done
    ours "$p" "$st" "$u" "$b" || stepped=1
  fi
fi
if [ -n "$stepped" ]; then
  echo "tbr-info via scancel"; echo "tbr stopped $p"
elif [ -z "$p" ]; then
  echo "tbr none"
elif ours "$p" "$st" "$u" "$b"; then
  rc=3
{pidfd_part}  case $rc in
    0) echo "tbr-info via pidfd"; echo "tbr stopped $p" ;;
    2) echo "tbr gone $p" ;;
    4) echo "tbr error unkillable $p"; exit 0 ;;
    *)
      echo "tbr-info via kill"
      kill -TERM "$p" 2>/dev/null
      i=0
      while ours "$p" "$st" "$u" "$b"; do
        i=$((i+1))
        [ "$i" -eq {ticks} ] && kill -KILL "$p" 2>/dev/null
        [ "$i" -gt {2 * ticks} ] && {{ echo "tbr error unkillable $p"; exit 0; }}
        sleep 0.01
      done
      echo "tbr stopped $p" ;;
  esac
else
  echo "tbr gone $p"
fi
{_DROP_SOCKDIR.strip()}
rm -rf "$d"
""",
    )


def log_script(rundir: str, lines: int = 20, *, follow: bool = False) -> str:
    """The tail of TensorBoard's log on the remote (``follow``: and onwards)."""
    if follow:
        return _script(rundir, f'exec tail -n {int(lines)} -f "$d/log"')
    return _script(rundir, f'tail -n {int(lines)} "$d/log" 2>/dev/null || true')


class Word(Enum):
    """The word of a script's ``tbr WORD [DETAIL]`` reply."""

    RUNNING = "running"  # ours is running (status, start: reused)
    STARTED = "started"  # start: a new one, now listening
    DIED = "died"  # start: it exited before it listened
    DEAD = "dead"  # status: recorded, but not ours or not alive
    NONE = "none"  # nothing recorded
    STOPPED = "stopped"  # stop: signalled and gone
    GONE = "gone"  # stop: recorded but already gone; never signalled
    ERROR = "error"  # DETAIL says what
    JOBS = "jobs"  # job lookup: the tbr-job lines are complete


@dataclass(frozen=True)
class Reply:
    """A script's answer: its word, the detail after it (a pid, or what
    went wrong) and its ``tbr-info`` lines."""

    word: Word
    detail: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, stdout: str) -> Optional["Reply"]:
        """The reply in a script's output; None if it printed none (the
        script never ran: ssh failed)."""
        reply = parse_reply(stdout)
        if reply is None:
            return None
        word, detail = reply
        try:
            kind = Word(word)
        except ValueError:
            kind, detail = Word.ERROR, f"unexpected-reply {word} {detail}".strip()
        return cls(kind, detail, parse_info(stdout))


def parse_reply(stdout: str) -> Optional[tuple[str, str]]:
    """The last ``tbr WORD DETAIL`` line of a script's output."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("tbr "):
            parts = line.split(" ", 2)
            return parts[1], (parts[2] if len(parts) > 2 else "")
    return None


def parse_info(stdout: str) -> dict[str, str]:
    """``tbr-info KEY VALUE`` lines of a script's output."""
    info = {}
    for line in stdout.splitlines():
        if line.startswith("tbr-info "):
            parts = line.split(" ", 2)
            info[parts[1]] = parts[2] if len(parts) > 2 else ""
    return info


# ---------------------------------------------------------------- Slurm


def job_script(spec: str, *, by_id: bool) -> str:
    """Look a job up with ``squeue`` (all states) on the login node.

    Prints ``tbr-info user NAME`` (who we are there), one ``tbr-job ID STATE
    OWNER NODE ADDR LEFT`` line per matching job (NODE and ADDR: the first node of
    a running job and its NodeAddr, else ``-``; LEFT: squeue's time left,
    ``D-HH:MM:SS`` or ``UNLIMITED``), then ``tbr jobs``; or
    ``tbr error no-squeue`` / ``tbr error squeue MESSAGE``. A job name
    matches only the user's own jobs; a job id matches anyone's, so that a
    wrong id can be told apart from a job of someone else.
    """
    fmt = shlex.quote("%i|%T|%u|%N|%L")
    if by_id:
        query = f"squeue -h -t all -j {shlex.quote(spec)} -o {fmt}"
    else:
        query = f'squeue -h -t all -n {shlex.quote(spec)} -u "$me" -o {fmt}'
    return f"""
command -v squeue >/dev/null 2>&1 || {{ echo "tbr error no-squeue"; exit 0; }}
me=$(id -un)
echo "tbr-info user $me"
e=$(mktemp 2>/dev/null || echo /dev/null)
out=$({query} 2>"$e") || {{
  msg=$(tail -n 1 "$e" 2>/dev/null); [ "$e" = /dev/null ] || rm -f "$e"
  case $msg in
    *"Invalid job id"*) echo "tbr jobs" ;;
    *) echo "tbr error squeue $msg" ;;
  esac
  exit 0
}}
[ "$e" = /dev/null ] || rm -f "$e"
printf '%s\n' "$out" | while IFS='|' read -r id st owner nodes left; do
  [ -n "$id" ] || continue
  n= a=
  if [ "$st" = RUNNING ] && [ -n "$nodes" ]; then
    n=$(scontrol show hostnames "$nodes" 2>/dev/null | head -n 1)
    [ -n "$n" ] && a=$(scontrol show node "$n" 2>/dev/null | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p' | head -n 1)
  fi
  echo "tbr-job $id $st $owner ${{n:--}} ${{a:--}} ${{left:--}}"
done
echo "tbr jobs"
"""
