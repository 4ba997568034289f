"""The seed's interface: ``tensorboard-remote HOST start|check|exit [options]``.

Built on invoke's ``Program`` with the same ``tb`` collection the fabfile
uses, so there is one implementation: ``tensorboard-remote hostA start
--logdir runs`` runs exactly ``tb.start --host hostA --logdir runs``.
"""

from __future__ import annotations

import sys
from typing import Optional

from invoke import Collection, Program

from . import __version__, tb

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
    return [binary, action, "--host", host, *rest]


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    argv[0] = "tensorboard-remote"
    if argv[1:2] == ["demo"]:
        from .sandbox import demo

        raise SystemExit(demo(argv[2:]))
    program().run(translate(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
