"""``tb.list``: one row per recorded session, as a table or JSON."""

from __future__ import annotations

import time
from typing import Any



def row(session: Any) -> dict[str, Any]:
    """A session's row: where, its URL and TensorBoard, and its health (a
    merged view's row says each host's health and last sync)."""
    if hasattr(session, "row"):
        return session.row()
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
        "job": health.job,
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


def _health(r: dict[str, Any]) -> str:
    word = "ok" if r["healthy"] else r["status"]
    if r.get("kind") != "merge" or not r.get("hosts"):
        return word
    if r["health"] in ("ok", "stale"):
        word = r["health"]
    each = []
    for label, seen in r["hosts"].items():
        age = "never" if seen.get("age") is None else f"{seen['age']:.0f}s ago"
        skipped = f", {len(seen['skipped'])} not synced" if seen.get("skipped") else ""
        each.append(f"{label}={seen.get('health')} ({age}, {seen.get('method')}{skipped})")
    return f"{word}: " + " ".join(each)


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
            _health(r),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True)) + "  " + line[5]
        for line in lines
    )
