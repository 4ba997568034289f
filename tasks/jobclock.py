"""A Slurm job's clock: how long it has left, in squeue's words and ours.

``squeue -o %L`` says ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS`` or ``SS``
(days and hours only when needed), ``UNLIMITED`` for a job with no time
limit, ``NOT_SET``/``INVALID`` otherwise. A lookup records what squeue said
and when; later the time left is that minus the time since, until the next
lookup says better (a requeue, ``scontrol update TimeLimit``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Optional

_LEFT = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(?:(\d+):)?(\d+)")


def seconds(left: str) -> Optional[float]:
    """squeue's time left in seconds; None when there is no limit or no answer."""
    text = left.strip()
    found = _LEFT.fullmatch(text)
    if not found:
        return None
    days, a, b, c = found.groups()
    parts = [int(x) for x in (a, b) if x is not None] + [int(c)]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, secs = parts
    return float(int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs)


def clock_text(left: float) -> str:
    """``3:59:12``, or ``1-02:03:04`` past a day (squeue's own form)."""
    total = int(max(0, left))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}" if days else text


def _now(now: Optional[float]) -> float:
    return time.time() if now is None else now


@dataclass(frozen=True)
class Clock:
    """A job's time left, as of a lookup."""

    left: str  # squeue's words: "3:59:12", "UNLIMITED", "-" (not asked)
    seen: float  # when squeue said it (wall clock)

    def remaining(self, now: Optional[float] = None) -> Optional[float]:
        left = seconds(self.left)
        if left is None:
            return None
        return max(0.0, left - (_now(now) - self.seen))

    @property
    def unlimited(self) -> bool:
        return self.left.strip().upper() == "UNLIMITED"

    def words(self, now: Optional[float] = None) -> str:
        """``3:59:12 left``, ``no time limit (UNLIMITED)`` or ``time left unknown``."""
        if self.unlimited:
            return "no time limit (UNLIMITED)"
        left = self.remaining(now)
        if left is None:
            return "time left unknown"
        return f"{clock_text(left)} left"

    def warning(self, before: float, job: str, now: Optional[float] = None) -> Optional[str]:
        """A warning when less than ``before`` seconds remain (None: not yet)."""
        left = self.remaining(now)
        if left is None or left >= before:
            return None
        ends = time.strftime("%H:%M", time.localtime(_now(now) + left))
        return f"warning: job {job} reaches its time limit in {clock_text(left)} (at {ends}): TensorBoard ends with it"

    def as_json(self, now: Optional[float] = None) -> dict:
        left = self.remaining(now)
        return {"left": self.words(now), "left_seconds": None if left is None else round(left), "unlimited": self.unlimited}
