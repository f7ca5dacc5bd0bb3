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

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` as text with every control character written as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def text(value: object, style: str = "") -> Text:
    """A rich ``Text`` of an untrusted value: no markup, no control sequences."""
    return Text(printable(value), style=style)


def print_table(console: Console, table: Table) -> None:
    """Print a table; into a pipe or a file, whole.

    On a terminal a table fits the window (a long name is cut with an ellipsis, a long
    cell folds).  Piped or redirected, the reader is a program or a file that keeps every
    character: each cell is printed on one line, whole, and the table as wide as that
    needs, never narrower than COLUMNS (`fptrace report -f text > file` used to cut pids to
    ``36…`` and saves to ``20,0…`` at 80 columns).
    """
    if console.is_terminal:
        console.print(table)
        return
    for column in table.columns:
        column.no_wrap, column.max_width = True, None
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    width = console.width
    console.width = max(width, natural)  # print() caps its own width at the console's
    try:
        console.print(table)
    finally:
        console.width = width
