"""Untrusted strings made safe for a terminal.

A traced process picks its own name (prctl PR_SET_NAME), and a recording can be edited by
whoever shares it, so a comm, a command line or a label may hold ESC sequences that would
clear a screen, move the cursor or retitle a window when printed.  Rich interprets markup
only in strings, not in ``Text`` — but it passes ESC through — so every such string is
shown through :func:`text`: each control character (C0, DEL, C1) becomes a visible
``\\xNN``, and the rest is kept as it was.
"""

from __future__ import annotations

import re

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` as text with every control character written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def text(value: object, style: str = "") -> Text:
    """A rich ``Text`` of an untrusted value: no markup, no control sequences."""
    return Text(printable(value), style=style)
