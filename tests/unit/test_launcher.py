"""The `fptrace` launcher (scripts/launcher.sh, run by `make setup`) survives a second clone.

`make setup` in a test clone used to point /usr/local/bin/fptrace at that clone; once the
clone was deleted, `fptrace` was broken everywhere.  Here a launcher in a temporary place
plays /usr/local/bin/fptrace, and stub checkouts play the clones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "launcher.sh"


def checkout(path: Path) -> Path:
    python = path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho python of " + str(path) + "\n")
    python.chmod(0o755)
    return path


def setup(root: Path, launcher: Path, **env: str) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPT), str(root), str(launcher)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, **env),
    )
    return proc.stdout


def runs(launcher: Path) -> str:
    return subprocess.run([str(launcher)], capture_output=True, text=True, check=True).stdout


def test_a_second_clone_does_not_take_the_launcher(tmp_path: Path) -> None:
    main, clone = checkout(tmp_path / "main"), checkout(tmp_path / "clone")
    launcher = tmp_path / "bin" / "fptrace"
    launcher.parent.mkdir()
    assert "installing launcher" in setup(main, launcher)
    assert runs(launcher) == f"python of {main}\n"
    said = setup(clone, launcher)
    assert f"keeping launcher {launcher}: it runs {main}" in said
    assert runs(launcher) == f"python of {main}\n"
    shutil.rmtree(clone)  # the test clone goes: fptrace still works
    assert runs(launcher) == f"python of {main}\n"


def test_a_launcher_whose_checkout_is_gone_is_replaced(tmp_path: Path) -> None:
    gone, clone = checkout(tmp_path / "gone"), checkout(tmp_path / "clone")
    launcher = tmp_path / "fptrace"
    setup(gone, launcher)
    shutil.rmtree(gone)
    assert "the checkout it ran is gone" in setup(clone, launcher)
    assert runs(launcher) == f"python of {clone}\n"
    other = checkout(tmp_path / "other")
    assert "FPTRACE_LAUNCHER=replace" in setup(other, launcher, FPTRACE_LAUNCHER="replace")
    assert runs(launcher) == f"python of {other}\n"
