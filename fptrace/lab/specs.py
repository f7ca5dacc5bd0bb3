"""Kernel specs (``debian:bookworm``, ``debian:6.12``, ``/boot/vmlinuz-…``) and combinations.

A *combination* is one kernel booted with one set of extra boot options; its name is what the
recording directory is called, so it must be stable, readable and safe as a file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fptrace.errors import UsageError

#: Suites a ``debian:`` spec may name, and the archive suites searched for each.
SUITES: dict[str, tuple[str, ...]] = {
    "bullseye": ("bullseye", "bullseye-security"),
    "bookworm": ("bookworm", "bookworm-security"),
    "trixie": ("trixie", "trixie-security"),
    "forky": ("forky",),
    "sid": ("sid",),
    "unstable": ("sid",),
}
_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_SAFE = re.compile(r"[^A-Za-z0-9.+_-]+")


@dataclass(frozen=True)
class KernelSpec:
    """What the user asked for: a Debian suite, a Debian version prefix, or a vmlinuz path."""

    text: str
    suite: str | None = None  # debian:<suite>
    version: str | None = None  # debian:<version prefix>, e.g. 6.12 or 5.10.262
    vmlinuz: Path | None = None  # the user's own kernel
    modules: Path | None = None  # its modules directory (lib/modules/<release>), if any

    @property
    def is_debian(self) -> bool:
        return self.vmlinuz is None


def parse_spec(text: str) -> KernelSpec:
    """Parse ``--kernel``; raise UsageError with the accepted forms on anything else."""
    forms = (
        "use debian:SUITE (bullseye, bookworm, trixie, sid), debian:VERSION (5.10, 6.1, 6.12, 7), "
        "or PATH/TO/vmlinuz[:MODULES_DIR]"
    )
    if text.startswith("debian:"):
        rest = text.split(":", 1)[1].strip().lower()
        if rest in SUITES:
            return KernelSpec(text, suite=rest)
        if _VERSION.match(rest):
            return KernelSpec(text, version=rest)
        raise UsageError(f"unknown kernel spec {text!r}: {forms}")
    path_text, _, modules = text.partition(":")
    path = Path(path_text).expanduser()
    if not path_text or ("/" not in path_text and not path.exists()):
        raise UsageError(f"unknown kernel spec {text!r}: {forms}")
    if not path.is_file():
        raise UsageError(f"kernel {text!r}: {path} is not a file ({forms})")
    mod = Path(modules).expanduser() if modules else None
    if mod is not None and not mod.is_dir():
        raise UsageError(f"kernel {text!r}: modules directory {mod} does not exist")
    return KernelSpec(text, vmlinuz=path.resolve(), modules=mod.resolve() if mod else None)


def slug(text: str) -> str:
    """File-name-safe boot options: ``clearcpuid=avx noxsave`` → ``clearcpuid-avx_noxsave``."""
    return _SAFE.sub("_", text.strip().replace("=", "-")).strip("_")[:60] or "default"


def combination_name(release: str, append: str) -> str:
    """``6.1.0-50-amd64`` or ``6.1.0-50-amd64+noxsave``."""
    return release if not append.strip() else f"{release}+{slug(append)}"
