"""fptrace's cache directory: built workloads, header trees, compiled probes, kernel facts.

Everything here can be rebuilt; it is kept because rebuilding costs start-up time (most of
all in an emulated `fptrace lab` guest).  Some of it decides what root loads into the kernel
(compiled BPF, BTF-derived offsets), so such entries are read only from files that nobody
but root or the caller can write (:func:`trusted`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def cache_dir() -> Path:
    """``FPTRACE_CACHE``; else /var/cache/fptrace for root, ~/.cache/fptrace for a user."""
    base = os.environ.get("FPTRACE_CACHE")
    if base:
        return Path(base)
    if os.geteuid() == 0:
        return Path("/var/cache/fptrace")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fptrace"


def cache_write_dir() -> Path:
    """Where new entries go: :func:`cache_dir`, or ``FPTRACE_CACHE_SPILL`` when set.

    An `fptrace lab` guest reads the host's cache through its read-only root and spills what
    it adds (a compiled program, BTF facts, the TIF bit) into its job directory; the host
    moves those files into its cache after the guest ends (lab/runner.py).
    """
    spill = os.environ.get("FPTRACE_CACHE_SPILL")
    return Path(spill) if spill else cache_dir()


def trusted(path: Path) -> bool:
    """The file and its directory belong to root or us, and nobody else can write them."""
    me = os.geteuid()
    for p in (path, path.parent):
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid not in (0, me) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def write_atomic(dest: Path, text: str) -> bool:
    """Write ``dest`` whole or not at all (mode 0644); False when the cache is not writable."""
    try:
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # 0755 whatever the umask
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except OSError:
        return False
    return True


def adopt(spill: Path) -> list[Path]:
    """Move the entries a guest spilled (see :func:`cache_write_dir`) into :func:`cache_dir`.

    Only regular files at the places fptrace writes (``bpf/``, ``btf/``, ``tif-bit-*``).
    """
    moved: list[Path] = []
    if not spill.is_dir():
        return moved
    for src in sorted(spill.rglob("*")):
        rel = src.relative_to(spill)
        wanted = (len(rel.parts) == 2 and rel.parts[0] in ("bpf", "btf")) or (
            len(rel.parts) == 1 and rel.name.startswith("tif-bit-")
        )
        if src.is_symlink() or not src.is_file() or not wanted or rel.name.startswith("."):
            continue
        if write_atomic(cache_dir() / rel, src.read_text()):
            moved.append(rel)
    return moved
