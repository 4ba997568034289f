"""A stand-in for the ssh runner, the way invocations tests against
``MockContext(run={regex: Result})``: each call's argv (joined, with the
script on stdin after a newline) is matched against the patterns in order,
and the first match's :class:`Outcome` is the answer. A call that matches
nothing fails the test, so every ssh call a decision makes is declared."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Callable, Optional, Union

from tensorboard_remote.errors import CommandTimeout
from tensorboard_remote.shell import Outcome, Shell

Answer = Union[Outcome, Callable[[list[str], Optional[str]], Outcome], BaseException]


class FakeShell(Shell):
    def __init__(self, run: dict[str, Answer]) -> None:
        super().__init__(quick=1.0)
        self.patterns = [(re.compile(pattern, re.S), answer) for pattern, answer in run.items()]
        self.calls: list[str] = []

    def run(self, argv, *, timeout, stdin=None, log: Optional[Path] = None, what="ssh", group=False) -> Outcome:
        text = shlex.join(argv) + ("\n" + stdin if stdin else "")
        self.calls.append(text)
        for pattern, answer in self.patterns:
            if pattern.search(text):
                if isinstance(answer, BaseException):
                    raise answer
                return answer(argv, stdin) if callable(answer) else answer
        raise AssertionError(f"unexpected command: {text[:300]}")

    def ran(self, pattern: str) -> list[str]:
        """The calls that match ``pattern``."""
        return [call for call in self.calls if re.search(pattern, call, re.S)]


def hangs(what: str = "ssh") -> CommandTimeout:
    return CommandTimeout(f"{what} did not finish within 1s")


def reply(*lines: str) -> Outcome:
    """A remote script's output."""
    return Outcome(0, "".join(line + "\n" for line in lines), "")
