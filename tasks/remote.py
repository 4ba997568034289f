"""The remote side: one POSIX sh script per action, built in one place.

Each script is fed to ``sh -s`` on the remote through our ssh master, so the
remote login shell never parses it. Every value that comes from a setting is
shell-quoted here, except the two settings that *are* shell by design
(``activate`` and ``tensorboard_cmd``). Scripts answer with one line
``tbr <word> [detail]`` that :func:`parse_reply` reads.

A TensorBoard of ours is recorded in ``<remote_dir>/<sid>/pid`` as
``PID STARTTIME UID BOOT_ID``; a pid alone is no identity (pids are reused),
so before we call a process ours we compare all four and refuse zombies.
"""

from __future__ import annotations

import re
import shlex
from typing import Optional

_SID = re.compile(r"[0-9a-f]{8,64}")

#: Exit statuses of our launcher before it execs TensorBoard.
ACTIVATION_FAILED = 97
COMMAND_NOT_FOUND = 98

LOG_MARK = "tensorboard-remote:"


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
"""


def _script(rundir: str, body: str) -> str:
    return f"d={rundir}\n{_PRELUDE}\n{body.strip()}\n"


def status_script(rundir: str) -> str:
    """Prints ``tbr running PID``, ``tbr dead PID`` or ``tbr none``."""
    return _script(
        rundir,
        r"""
load
if [ -z "$p" ]; then echo "tbr none"
elif ours "$p" "$st" "$u" "$b"; then echo "tbr running $p"
else echo "tbr dead $p"
fi
""",
    )


def launcher(rundir: str, logdir: str, port: int, tensorboard_cmd: str, activate: str) -> str:
    """The detached script that becomes TensorBoard (it ends in ``exec``)."""
    lines = [
        f"d={rundir}",
        # Record our identity first: pid, start time, uid, boot id.
        "s=$(cat /proc/$$/stat); r=${s##*)}; set -- $r",
        'echo "$$ ${20} $(id -u) $(cat /proc/sys/kernel/random/boot_id)" > "$d/pid.tmp"'
        ' && mv -f "$d/pid.tmp" "$d/pid"',
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
    lines += [
        f"set -- {tensorboard_cmd}",
        'if ! command -v "$1" >/dev/null 2>&1; then',
        f'  echo "{LOG_MARK} $1: command not found on PATH=$PATH"',
        f"  exit {COMMAND_NOT_FOUND}",
        "fi",
        f'exec "$@" --logdir {shlex.quote(logdir)} --port {int(port)} --host 127.0.0.1',
    ]
    return "\n".join(lines) + "\n"


def start_script(
    rundir: str, logdir: str, port: int, tensorboard_cmd: str, activate: str
) -> str:
    """Start TensorBoard detached unless ours is already running.

    Prints ``tbr running PID`` (reused), ``tbr started PID``, or
    ``tbr error <what> [detail]``.
    """
    body = launcher(rundir, logdir, port, tensorboard_cmd, activate)
    delimiter = "TBR_LAUNCHER_EOF"
    if delimiter in body:
        raise ValueError("the launcher may not contain its own heredoc delimiter")
    hexport = f"{int(port):04X}"
    return _script(
        rundir,
        f"""
load
if ours "$p" "$st" "$u" "$b"; then echo "tbr running $p"; exit 0; fi
umask 077
mkdir -p "$d" && chmod 700 "$d" || {{ echo "tbr error rundir $d"; exit 0; }}
rm -f "$d/pid" "$d/pid.tmp"
# A listener already on the port is not ours: never disturb it.
if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \\
   | grep -q '^ *[0-9]*: [0-9A-F]*:{hexport} [0-9A-F]*:[0-9A-F]* 0A '; then
  echo "tbr error port-in-use {int(port)}"; exit 0
fi
command -v setsid >/dev/null 2>&1 || {{ echo "tbr error no-setsid"; exit 0; }}
cat > "$d/launch.sh" <<'{delimiter}'
{body}{delimiter}
if command -v bash >/dev/null 2>&1; then sh_=bash; else sh_=sh; fi
setsid -f "$sh_" "$d/launch.sh" </dev/null >>"$d/log" 2>&1
i=0
while [ ! -s "$d/pid" ]; do
  i=$((i+1)); [ "$i" -gt 500 ] && {{ echo "tbr error no-pid"; exit 0; }}
  sleep 0.01
done
load
echo "tbr started $p"
""",
    )


def stop_script(rundir: str, grace: float = 3.0) -> str:
    """Stop our TensorBoard (identity re-checked) and remove the run dir.

    Prints ``tbr stopped PID``, ``tbr gone PID`` (recorded but not ours or
    not alive any more: never signalled), ``tbr none`` or ``tbr error ...``.
    """
    ticks = max(1, int(grace * 100))
    return _script(
        rundir,
        f"""
load
if [ -z "$p" ]; then
  echo "tbr none"
elif ours "$p" "$st" "$u" "$b"; then
  kill -TERM "$p" 2>/dev/null
  i=0
  while ours "$p" "$st" "$u" "$b"; do
    i=$((i+1))
    [ "$i" -eq {ticks} ] && kill -KILL "$p" 2>/dev/null
    [ "$i" -gt {2 * ticks} ] && {{ echo "tbr error unkillable $p"; exit 0; }}
    sleep 0.01
  done
  echo "tbr stopped $p"
else
  echo "tbr gone $p"
fi
rm -rf "$d"
""",
    )


def log_script(rundir: str, lines: int = 20) -> str:
    """The tail of TensorBoard's log on the remote."""
    return _script(rundir, f'tail -n {int(lines)} "$d/log" 2>/dev/null || true')


def parse_reply(stdout: str) -> Optional[tuple[str, str]]:
    """The last ``tbr WORD DETAIL`` line of a script's output."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("tbr "):
            parts = line.split(" ", 2)
            return parts[1], (parts[2] if len(parts) > 2 else "")
    return None
