"""No stage imports one that comes after it (docs/architecture.md): probes → collectors →
recording → analysis → reports.  Read from the source, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import fptrace

ROOT = Path(fptrace.__file__).parent
# What each stage may not import (the stages after it that consume what it makes).
FORBIDDEN = {
    "probes": ("collectors", "recording", "analysis", "reports"),
    "recording": ("analysis", "reports"),
    "analysis": ("reports",),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_stage_imports_a_later_one():
    bad = []
    for stage, later in FORBIDDEN.items():
        for path in sorted((ROOT / stage).glob("*.py")):
            for name in imported(path):
                if any(name.startswith(f"fptrace.{s}") for s in later):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


STAGES = ("probes", "collectors", "recording", "analysis", "reports", "lab", "workloads")


def test_the_cli_is_thin():
    """cli.py builds the parser from the command modules and runs one: it does no stage's
    work.  A command module shares only commands/common.py with the others, and no stage
    imports a command (the lab's guest and the demo run ``fptrace.cli.main`` as a program)."""
    stage_imports = [
        n for n in imported(ROOT / "cli.py") if n.split(".")[1:2] in [[s] for s in STAGES]
    ]
    assert stage_imports == []
    for path in sorted((ROOT / "commands").glob("*.py")):
        others = {n for n in imported(path) if n.startswith("fptrace.commands.")}
        assert others <= {"fptrace.commands.common"}, path
    for stage in STAGES:
        for path in sorted((ROOT / stage).glob("*.py")):
            bad = [n for n in imported(path) if n.startswith("fptrace.commands")]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
