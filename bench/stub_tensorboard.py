"""A stand-in TensorBoard that answers at once, run by the real launcher.

For the benchmark (and its tests): sessions whose "TensorBoard" costs no
import and no logdir scan, so that what is timed is ssh and our own steps.
Use it as the ``python`` setting, the command our launcher runs under::

    INVOKE_TB_PYTHON / FABRIC_TB_PYTHON / --python  =  python_setting()
    # "/path/to/venv/bin/python /path/to/bench/stub_tensorboard.py"

The remote launch script then runs ``PYTHON stub_tensorboard.py RUN/launch.py
ARGS --logdir X`` (under ``unshare -rn`` where it can). This file puts a
minimal ``tensorboard`` (the names launch.py imports: ``main_lib``,
``default``, ``program``, ``version``) into ``sys.modules`` and runs launch.py
as ``__main__``: the real launcher then serves, on its 0600 Unix socket (or
TCP) and behind its real token guard, a WSGI app whose ``/data/logdir`` is
``{"logdir": X}`` as TensorBoard's is; ``/`` is a one-line page, anything
else 404. absl and werkzeug are the real ones (TensorBoard's dependencies,
in the same venv).
"""

from __future__ import annotations

import argparse
import json
import runpy
import shlex
import sys
import types
from pathlib import Path


def python_setting(python: str = sys.executable) -> str:
    """The ``python`` setting that makes the launcher run this stub."""
    return f"{shlex.quote(python)} {shlex.quote(str(Path(__file__).resolve()))}"


def app(logdir: str):
    """The stub's WSGI app."""
    answers = {
        "/data/logdir": ("200 OK", "application/json", json.dumps({"logdir": logdir}).encode()),
        "/": ("200 OK", "text/html; charset=utf-8", b"<!doctype html><title>stub TensorBoard</title>\n"),
    }

    def serve(environ, start_response):
        status, kind, body = answers.get(environ.get("PATH_INFO", ""), ("404 Not Found", "text/plain", b"not found\n"))
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return serve


class TensorBoardServer:
    """What launch.py's server class derives from."""


class TensorBoardServerException(Exception):
    pass


class TensorBoard:
    """``program.TensorBoard`` as launch.py uses it: ``configure`` is absl's
    flags parser, ``main`` builds the server class and serves."""

    def __init__(self, plugins=None, server_class=None) -> None:
        self.server_class = server_class
        self.flags = None

    def configure(self, argv):
        from absl import flags

        # absl's app.run insists that its flags be parsed here (TensorBoard's
        # argparse_flags parser does it): absl has none of ours.
        flags.FLAGS(list(argv)[:1])
        parser = argparse.ArgumentParser(prog="stub_tensorboard")
        parser.add_argument("--logdir", required=True)
        # Other TensorBoard flags (--load_fast=false, a user's) are ignored.
        self.flags, _ = parser.parse_known_args(list(argv)[1:])
        return argv

    def main(self, argv=None) -> int:
        server = self.server_class(app(self.flags.logdir), self.flags)
        server.print_serving_message()
        server.serve_forever()
        return 0


def install() -> None:
    """Our ``tensorboard`` in ``sys.modules``, before launch.py imports it."""
    package = types.ModuleType("tensorboard")
    package.__path__ = []
    parts = {
        "main_lib": {"global_init": lambda: None},
        "default": {"get_plugins": lambda: []},
        "version": {"VERSION": "stub"},
        "program": {
            "TensorBoard": TensorBoard,
            "TensorBoardServer": TensorBoardServer,
            "TensorBoardServerException": TensorBoardServerException,
        },
    }
    sys.modules["tensorboard"] = package
    for name, names in parts.items():
        module = types.ModuleType(f"tensorboard.{name}")
        module.__dict__.update(names)
        sys.modules[module.__name__] = module
        setattr(package, name, module)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} LAUNCH.PY [ARGS...] (as the python setting: {python_setting()})")
    install()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
