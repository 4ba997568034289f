"""Another platform, as far as Python code can tell, for tests/test_platforms.py.

With this directory on PYTHONPATH and ``TBR_SIMULATE`` set, Python loads
this file before any of ours (or invoke's, Fabric's), and:

- ``windows``: ``sys.platform`` is ``"win32"`` and the modules Windows'
  Python lacks (``fcntl``, ``termios``, ``tty``, ``pty``, ``pwd``, ``grp``,
  ``resource``) cannot be imported. What invoke imports on win32 and Linux
  lacks stands in as Windows behaves with output to a pipe: ``msvcrt``
  (no key pressed) and ``ctypes.windll`` (every console call fails, as it
  does without a console).
- ``macos``: ``sys.platform`` is ``"darwin"`` (so a Unix socket path has
  macOS's budget) and there is no ``/proc`` to read. ``ps`` still works,
  as it does on macOS.

The standard modules that pick their implementation by ``sys.platform`` at
import are imported first, as what they are here: they stand for that
platform's own working versions, which cannot run on Linux.
"""

import os
import sys

_SIMULATED = os.environ.get("TBR_SIMULATE")

if _SIMULATED:
    import asyncio  # noqa: F401
    import ctypes
    import getpass  # noqa: F401
    import multiprocessing  # noqa: F401
    import platform  # noqa: F401
    import selectors  # noqa: F401
    import shutil  # noqa: F401
    import subprocess  # noqa: F401
    import tempfile  # noqa: F401
    import types
    import urllib.request  # noqa: F401
    import webbrowser  # noqa: F401

if _SIMULATED == "windows":
    for _name in ("fcntl", "termios", "tty", "pty", "pwd", "grp", "resource"):
        sys.modules[_name] = None  # "import fcntl" raises ImportError

    _msvcrt = types.ModuleType("msvcrt")
    _msvcrt.kbhit = lambda: False
    sys.modules["msvcrt"] = _msvcrt

    class _NoConsole:
        def __getattr__(self, name):
            return lambda *args: 0  # a failed Win32 call

    ctypes.windll = types.SimpleNamespace(kernel32=_NoConsole())
    sys.platform = "win32"

elif _SIMULATED == "macos":
    import builtins
    import io

    def _refuse_proc(path):
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory (macOS has no /proc)", os.fsdecode(path))

    def _wrap(real):
        def opener(path, *args, **kwargs):
            _refuse_proc(path)
            return real(path, *args, **kwargs)

        return opener

    builtins.open = io.open = _wrap(io.open)
    os.open = _wrap(os.open)
    os.listdir = _wrap(os.listdir)
    os.scandir = _wrap(os.scandir)
    sys.platform = "darwin"
