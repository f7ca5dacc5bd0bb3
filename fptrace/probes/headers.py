"""Kernel headers for BCC's compiler when the running kernel has none.

BCC needs *some* kernel headers to compile even a tracepoint program.  Our BPF C takes no
struct layout from them (every offset is a BTF-derived macro), so the headers of another
kernel (Debian's ``linux-headers-amd64``) are fine.  Debian splits them into ``-common`` and
``-amd64`` trees; BCC wants one, so we build a tree of symlinks (the arch files over the
common ones) in a cache directory and point ``BCC_KERNEL_SOURCE`` at it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from fptrace.cache import cache_dir

SRC_ROOT = Path("/usr/src")


@dataclass(frozen=True)
class HeaderChoice:
    """Where BCC will find headers, and whether that needed a message to the user."""

    path: Path | None
    note: str  # one line for the user; "" when the running kernel's own headers are used


def own_headers(release: str) -> Path | None:
    build = Path(f"/lib/modules/{release}/build")
    return build if (build / "include").is_dir() else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def find_debian_pair(src_root: Path = SRC_ROOT) -> tuple[Path, Path] | None:
    """The newest ``linux-headers-X-<flavour>`` tree that has its ``-common`` sibling."""
    if not src_root.is_dir():
        return None
    pairs = []
    for arch in src_root.glob("linux-headers-*"):
        if arch.name.endswith("-common") or not (arch / "include").is_dir():
            continue
        stem = arch.name.rsplit("-", 1)[0]
        common = src_root / f"{stem}-common"
        if (common / "include").is_dir():
            pairs.append((arch, common))
    if not pairs:
        return None
    return max(pairs, key=lambda p: _version_key(p[0].name))


def merge_tree(arch: Path, common: Path, dest: Path) -> None:
    """A tree at ``dest`` where ``arch``'s entries shadow ``common``'s, built of symlinks.

    Directories that only one side has are linked whole (one symlink instead of thousands:
    65 MB of 4 KiB symlink blocks less for Debian's 6.1 headers).
    """
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _overlay(common, arch, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _overlay(common: Path, arch: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = set(os.listdir(common)) if _real_dir(common) else set()
    names |= set(os.listdir(arch)) if _real_dir(arch) else set()
    for name in sorted(names):
        a, c = arch / name, common / name
        if _real_dir(a) and _real_dir(c):
            _overlay(c, a, out / name)
        else:
            src = a if os.path.lexists(a) else c
            (out / name).symlink_to(os.path.realpath(src))


def choose_headers(release: str, src_root: Path = SRC_ROOT) -> HeaderChoice:
    """Headers for BCC: the running kernel's own, else a merged Debian tree (built once).

    ``FPTRACE_KERNEL_HEADERS`` names a tree to use instead (`fptrace lab` points it at the
    guest kernel's own Debian headers, which live on the host's disk).
    """
    forced = os.environ.get("FPTRACE_KERNEL_HEADERS")
    if forced and (Path(forced) / "include").is_dir():
        return HeaderChoice(Path(forced), "")
    own = own_headers(release)
    if own is not None:
        return HeaderChoice(own, "")
    pair = find_debian_pair(src_root)
    if pair is None:
        return HeaderChoice(None, "")
    arch, common = pair
    dest = cache_dir() / "headers" / arch.name
    if not (dest / "include").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        merge_tree(arch, common, dest)
    return HeaderChoice(
        dest,
        f"no headers for kernel {release}: BCC compiles with {arch.name} (offsets come from BTF)",
    )
