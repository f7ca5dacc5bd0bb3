"""One module per command (as memray's ``commands/``): each has ``add_parser(sub)``, its
options and ``--help``, and ``run(args, console, argv) -> int``, which calls the stages
and prints.  The modules import the stages inside ``run``, so that ``fptrace --help`` and a
plain ``record`` import only what they use.
"""

from __future__ import annotations

# In the order `fptrace --help` lists them.
COMMANDS = (
    "record", "top", "agent", "fleet", "doctor", "report", "export", "compare", "bench", "workload",
    "lab",
)  # fmt: skip
