"""Opening the URL in the user's browser, never on a headless machine."""

from __future__ import annotations

import os
import sys
from typing import Callable


def graphical() -> bool:
    """Is there a browser a person could see? BROWSER, a display, or macOS/Windows."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def browse(url: str, say: Callable[[str], None]) -> bool:
    """Open ``url`` with :mod:`webbrowser`; say so, or say why not."""
    if not graphical():
        say(f"no browser here (no DISPLAY, WAYLAND_DISPLAY or BROWSER): open {url} yourself")
        return False
    import webbrowser

    try:
        opened = webbrowser.open(url, new=2)
    except webbrowser.Error as error:
        say(f"could not open a browser ({error}): open {url} yourself")
        return False
    if not opened:
        say(f"could not open a browser: open {url} yourself")
        return False
    say(f"opened {url} in your browser")
    return True
