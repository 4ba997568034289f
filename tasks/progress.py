"""What ``tb.start`` shows while it works.

Each finished phase is a line with the seconds since the start. On a
terminal the phase under way shows as a spinner (rich, imported only then,
so scripts and ``tb.check`` never pay for it); with output to a pipe or a
file, plain lines only; ``--quiet`` prints nothing but the final URL.
While ssh may prompt (a login: password, one-time code, key passphrase,
host-key question, all on /dev/tty) no spinner is drawn: its redraws would
erase the prompt (see :meth:`Reporter.login`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator, Optional, TextIO

#: Said, on a terminal, where a login may prompt.
MAY_PROMPT = "ssh may ask for a password or a code"


class Reporter:
    def __init__(self, *, quiet: bool = False, plain: bool = False, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.began = time.monotonic()
        self._status: Any = None
        self._console: Any = None
        self._prompting = False
        # plain: several hosts at once share the terminal, so no spinner.
        if not quiet and not plain and self.stream.isatty():
            try:
                from rich.console import Console
            except ImportError:  # pragma: no cover - rich is a dependency
                Console = None
            if Console is not None:
                self._console = Console(file=self.stream, highlight=False)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    @property
    def spinning(self) -> bool:
        """Is a spinner drawn now?"""
        return self._status is not None

    def phase(self, text: str) -> None:
        """A phase begins: a spinner on a terminal, nothing elsewhere."""
        if self._console is None or self._prompting:
            return
        if self._status is None:
            self._status = self._console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

    @contextlib.contextmanager
    def login(self, text: str, *, prompts: bool) -> Iterator[None]:
        """A phase in which ssh logs in and, if ``prompts``, may ask the user
        something on the terminal. On a terminal the spinner stops for it and
        ``text`` is a plain line saying so, so every prompt stays visible and
        answerable; the next phase after it draws the spinner again. Without
        prompts (BatchMode) it is an ordinary phase."""
        if self._console is None or not prompts:
            self.phase(text)
            yield
            return
        self._pause()
        print(f"{text} ({MAY_PROMPT})", file=self.stream, flush=True)
        self._prompting = True
        try:
            yield
        finally:
            self._prompting = False

    def say(self, line: str) -> None:
        """A phase ended: one line with the elapsed time."""
        if self.quiet:
            return
        self._pause()
        print(f"{line}  [{self.elapsed():.2f}s]", file=self.stream, flush=True)

    __call__ = say

    def result(self, url: str, line: str) -> None:
        """The URL: the only output with --quiet."""
        if self.quiet:
            print(url, file=self.stream, flush=True)
        else:
            self.say(line)

    def close(self) -> None:
        self._pause()

    def _pause(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
