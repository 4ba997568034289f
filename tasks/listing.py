"""``tb.list``: one row per recorded session, as a table or JSON."""

from __future__ import annotations

import time
from typing import Any

from .session import Session


def row(session: Session) -> dict[str, Any]:
    """A session's row: where, its URL and TensorBoard, and its health."""
    rec = session.record()
    health = session.check()
    now = time.time()
    return {
        "host": session.label,
        "url": rec.url if rec else None,
        "remote_pid": rec.remote_pid if rec else None,
        "logdir": rec.logdir if rec else None,
        "uptime_seconds": round(now - (rec.started_at if rec else now)),
        "healthy": health.ok,
        "status": health.detail,
        "health": health.status.value,
        "watcher": health.watcher,
    }


def uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns; the health column last, as long as it needs."""
    if not rows:
        return "no tunnels of ours are open on this machine"
    lines = [("HOST", "URL", "PID", "LOGDIR", "UPTIME", "HEALTH")] + [
        (
            r["host"],
            r["url"] or "-",
            str(r["remote_pid"] or "-"),
            r["logdir"] or "-",
            uptime(r["uptime_seconds"]),
            "ok" if r["healthy"] else r["status"],
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True)) + "  " + line[5]
        for line in lines
    )
