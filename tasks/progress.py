"""What ``tb.start`` shows while it works.

Each finished phase is a line with the seconds since the start. On a
terminal the phase under way shows as a spinner (rich, imported only then,
so scripts and ``tb.check`` never pay for it); with output to a pipe or a
file, plain lines only; ``--quiet`` prints nothing but the final URL.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


class Reporter:
    def __init__(self, *, quiet: bool = False, plain: bool = False, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.began = time.monotonic()
        self._status: Any = None
        self._console: Any = None
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

    def phase(self, text: str) -> None:
        """A phase begins: a spinner on a terminal, nothing elsewhere."""
        if self._console is None:
            return
        if self._status is None:
            self._status = self._console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

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
