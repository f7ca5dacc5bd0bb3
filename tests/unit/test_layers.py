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


def test_the_two_cli_modules_do_not_import_each_other():
    assert not any(n.startswith("fptrace.cli") for n in imported(ROOT / "cli_lab.py"))
