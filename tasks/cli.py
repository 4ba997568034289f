"""The seed's interface: ``tensorboard-remote HOST start|check|exit [options]``.

Built on invoke's ``Program`` with the same ``tb`` collection the fabfile
uses, so there is one implementation: ``tensorboard-remote hostA start
--logdir runs`` runs exactly ``tb.start --host hostA --logdir runs``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional

from invoke import Collection, Program

from . import __version__, tb
from . import sandbox
from .errors import TbError
from .shell import require_multiplexing

ACTIONS = ("start", "check", "exit", "logs", "open")

HELP = """tensorboard-remote: watch TensorBoard on a remote host from your browser.

  start   open an ssh tunnel, start TensorBoard there, print the local URL
  check   say whether tunnel, TensorBoard and page are healthy (exit 1 if not)
  exit    close the tunnel and stop the TensorBoard that start started
  logs    show the remote TensorBoard log (--follow to keep watching)
  open    open the running TensorBoard in your browser
  list    one row per tunnel: host, URL, pid, logdir, uptime, health
  demo    try it on a throwaway sshd on 127.0.0.1 (demo --stop ends it)

With --job JOB (a Slurm job id or name) and the login node as HOST, start,
check, exit, logs and open act on TensorBoard on that job's node.

Options of an action: tensorboard-remote HOST ACTION --help
"""

USAGE = (
    "usage: tensorboard-remote HOST {start,check,exit,logs,open} [options]\n"
    "       tensorboard-remote list [--json]\n"
    "       tensorboard-remote demo [--stop]\n"
    "       tensorboard-remote --help | HOST ACTION --help"
)


def program() -> Program:
    return Program(
        namespace=Collection.from_module(tb),
        name="tensorboard-remote",
        binary="tensorboard-remote",
        version=__version__,
    )


def translate(argv: list[str]) -> list[str]:
    """``HOST ACTION [opts]`` to invoke's ``ACTION --host HOST [opts]``.

    Raises ``SystemExit(2)`` with the usage for a missing host or an unknown
    action.
    """
    binary, args = argv[0], argv[1:]
    if args[:1] in (["-h"], ["--help"]):
        sys.stdout.write(f"{HELP}\n{USAGE}\n")
        raise SystemExit(0)
    if args and args[0] in ("-V", "--version", "-l", "--list"):
        return [binary, *args]
    if args[:1] == ["list"]:
        return [binary, "list", *args[1:]]
    if len(args) < 2:
        sys.stderr.write(f"tensorboard-remote: a host and an action are required\n{USAGE}\n")
        raise SystemExit(2)
    host, action, rest = args[0], args[1], args[2:]
    if action not in ACTIONS:
        sys.stderr.write(
            f"tensorboard-remote: unknown action {action!r} (expected {', '.join(ACTIONS)})\n{USAGE}\n"
        )
        raise SystemExit(2)
    # HOST1,HOST2: several hosts (with --merge, one merged view over them).
    return [binary, action, "--hosts" if "," in host else "--host", host, *rest]


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    argv[0] = "tensorboard-remote"
    if argv[1:2] == ["demo"]:
        raise SystemExit(demo(argv[2:]))
    program().run(translate(argv))


def _demo_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorboard-remote" / "sandbox"


def demo(args: list[str]) -> int:
    """``tensorboard-remote demo [--stop]``: a local sandbox host and a real start."""
    try:
        require_multiplexing()
    except TbError as error:
        print(f"tensorboard-remote: {error}", file=sys.stderr)
        return 1
    directory = _demo_dir()
    box = sandbox.Sandbox(directory)
    prog = program()
    common = ["--host", sandbox.ALIAS, "--ssh-config", str(box.ssh_config)]
    if args == ["--stop"]:
        if box.ssh_config.exists() and box.pid():
            prog.run(["tensorboard-remote", "exit", *common], exit=False)
        box.stop()
        print(f"demo: stopped the sandbox sshd ({directory})")
        return 0
    if args:
        print("usage: tensorboard-remote demo [--stop]", file=sys.stderr)
        return 2
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(
            "demo: TensorBoard is not installed here; the sandbox runs it on this machine: "
            "pip install 'tensorboard-remote[sandbox]'",
            file=sys.stderr,
        )
        return 1
    if not box.pid():
        port = box.port if box.sshd_config.exists() else None
        try:
            box.create(port).start()
        except RuntimeError as error:
            print(f"demo: {error}", file=sys.stderr)
            return 1
    logdir = directory / "logdir"
    if not logdir.exists():
        sandbox.write_sample_logdir(logdir)
    print(f"demo: sandbox sshd for {box.user} on 127.0.0.1:{box.port} (ssh -F {box.ssh_config} {sandbox.ALIAS})")
    prog.run(
        [
            "tensorboard-remote",
            "start",
            *common,
            "--logdir",
            str(logdir),
            "--tensorboard-cmd",
            sandbox.local_tensorboard_cmd(),
            "--remote-dir",
            str(directory / "remote"),
        ]
    )
    cfg = shlex.quote(str(box.ssh_config))
    print(
        f"demo: check it:  tensorboard-remote {sandbox.ALIAS} check --ssh-config {cfg}\n"
        f"demo: stop it:   tensorboard-remote demo --stop"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
