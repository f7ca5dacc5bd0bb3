"""The lab's kernel cache: what it takes to boot one kernel and to run BCC on it.

Per kernel, ``<cache>/lab/kernels/<release>/`` keeps only what boots and what BCC needs:
``vmlinuz``, ``config``, ``initramfs.img`` (a few modules inside), the kernel's own Debian
headers (``usr/src/…`` plus ``headers/``, the merged tree BCC reads), and ``kernel.json``.
The downloaded packages and the rest of the modules tree (hundreds of MB) are deleted once
these are built.  A directory appears under its final name only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fptrace.cache import cache_dir
from fptrace.errors import EnvironmentProblem, UsageError
from fptrace.lab.apt import DebianKernel, PrivateApt, version_key
from fptrace.lab.initramfs import WANTED, initramfs_for, resolve_modules, save_modules
from fptrace.lab.specs import KernelSpec
from fptrace.probes.headers import merge_tree

#: Free space a kernel needs while it is being prepared (packages + extracted tree).
PREPARE_FREE_BYTES = 1_500_000_000

Progress = Callable[[str], None]


def lab_dir() -> Path:
    return Path(os.environ.get("FPTRACE_LAB_CACHE") or cache_dir() / "lab")


@dataclass(frozen=True)
class CachedKernel:
    """A kernel ready to boot."""

    release: str
    path: Path
    info: dict[str, Any]

    @property
    def vmlinuz(self) -> Path:
        return self.path / "vmlinuz"

    def initrd(self) -> Path:
        return initramfs_for(self.path)

    @property
    def headers(self) -> Path | None:
        h = self.path / "headers"
        return h if (h / "include").is_dir() else None


def bzimage_release(path: Path) -> str | None:
    """The release string a bzImage carries (setup header ``kernel_version``, boot protocol)."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
    except OSError:
        return None
    if head[0x202:0x206] != b"HdrS":
        return None
    (ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = ptr + 0x200
    text = head[start : head.find(b"\0", start)].decode(errors="replace")
    return text.split()[0] if text else None


def disk_free(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _need_space(path: Path, what: str) -> None:
    free = disk_free(path)
    if free < PREPARE_FREE_BYTES:
        raise EnvironmentProblem(
            f"not enough disk for {what}: {free / 1e9:.2f} GB free in {path}, "
            f"{PREPARE_FREE_BYTES / 1e9:.1f} GB needed (free space, `fptrace lab clean`, or set "
            "FPTRACE_LAB_CACHE to a bigger disk)"
        )


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def load_cached(path: Path) -> CachedKernel | None:
    try:
        info = json.loads((path / "kernel.json").read_text())
    except (OSError, ValueError):
        return None
    if not (path / "vmlinuz").is_file() or info.get("wanted") != list(WANTED):
        return None  # incomplete, or prepared for another module set: prepare again
    return CachedKernel(info["release"], path, info)


def list_cached() -> list[CachedKernel]:
    base = lab_dir() / "kernels"
    if not base.is_dir():
        return []
    out = [k for d in sorted(base.iterdir()) if (k := load_cached(d)) is not None]
    return sorted(out, key=lambda k: k.info.get("sort", [0]))


def _modules_dir(root: Path, release: str) -> Path | None:
    for cand in (root / "lib/modules" / release, root / "usr/lib/modules" / release):
        if cand.is_dir():
            return cand
    return None


def _finish(tmp: Path, final: Path, info: dict[str, Any]) -> CachedKernel:
    info["disk_bytes"] = dir_size(tmp)
    (tmp / "kernel.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    # The headers tree is symlinks into usr/src: rebuild it at the final path.
    if (final / "usr/src").is_dir():
        _merge_headers(final, info["release"])
    cached = load_cached(final)
    assert cached is not None
    return cached


def _merge_headers(kdir: Path, release: str) -> None:
    src = kdir / "usr/src"
    arch = src / f"linux-headers-{release}"
    commons = [p for p in src.glob("linux-headers-*-common") if p.is_dir()]
    if arch.is_dir() and commons:
        merge_tree(arch, commons[0], kdir / "headers")


def _sweep_stale(base: Path) -> None:
    """Remove ``.tmp-*-PID`` directories of preparations whose process is gone (killed)."""
    for d in base.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def prepare_debian(apt: PrivateApt, k: DebianKernel, progress: Progress) -> CachedKernel:
    """Fetch, extract and trim one Debian kernel into the cache (once)."""
    base = lab_dir() / "kernels"
    final = base / k.release
    cached = load_cached(final)
    if cached is not None and cached.info.get("version") == k.version:
        return cached
    _need_space(base, f"kernel {k.release}")
    _sweep_stale(base)
    started = time.monotonic()
    tmp = base / f".tmp-{k.release}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        pkgs = apt.packages(k)
        progress(f"{k.release}: downloading {', '.join(n for n, _ in pkgs)}")
        debs = apt.download(pkgs, tmp / "debs")
        root = tmp / "root"
        for deb in debs:
            proc = subprocess.run(
                ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise EnvironmentProblem(f"cannot extract {deb.name}: {proc.stderr.strip()}")
        moddir = _modules_dir(root, k.release)
        # Up to 6.x: boot/vmlinuz-R, boot/config-R; from 7.x: usr/lib/modules/R/{vmlinuz,config}
        for name, dest in (("vmlinuz", "vmlinuz"), ("config", "config")):
            for cand in (root / "boot" / f"{name}-{k.release}", (moddir or root) / name):
                if cand.is_file():
                    shutil.move(cand, tmp / dest)
                    break
        if not (tmp / "vmlinuz").is_file():
            raise EnvironmentProblem(f"{k.release}: the packages hold no vmlinuz")
        modules = resolve_modules(moddir) if moddir else []
        progress(f"{k.release}: guest modules {', '.join(n for n, _ in modules) or '(none)'}")
        save_modules(tmp / "modules", modules)
        if (root / "usr/src").is_dir():
            shutil.move(root / "usr/src", tmp / "usr/src")
        shutil.rmtree(root)
        shutil.rmtree(tmp / "debs")
        info = {
            "release": k.release,
            "version": k.version,
            "suite": k.suite,
            "source": "debian",
            "modules": [n for n, _ in modules],
            "wanted": list(WANTED),
            "sort": list(version_key(k.version)),
            "prepared_s": round(time.monotonic() - started, 1),
        }
        return _finish(tmp, final, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def prepare_path(spec: KernelSpec, progress: Progress) -> CachedKernel:
    """A user's own vmlinuz (+ modules directory): build its initramfs once, keyed by content."""
    assert spec.vmlinuz is not None
    release = bzimage_release(spec.vmlinuz)
    if release is None:
        raise UsageError(f"kernel {spec.text}: {spec.vmlinuz} is not an x86 bzImage")
    digest = hashlib.sha256(spec.vmlinuz.read_bytes()).hexdigest()[:12]
    final = lab_dir() / "kernels" / f"{release}-{digest}"
    cached = load_cached(final)
    if cached is not None:
        return cached
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copy(spec.vmlinuz, tmp / "vmlinuz")
        config = spec.vmlinuz.with_name(f"config-{release}")
        if config.is_file():
            shutil.copy(config, tmp / "config")
        modules = resolve_modules(spec.modules) if spec.modules else []
        progress(f"{release}: guest modules {', '.join(n for n, _ in modules) or '(none)'}")
        save_modules(tmp / "modules", modules)
        info = {
            "release": release,
            "version": release,
            "suite": None,
            "source": str(spec.vmlinuz),
            "modules": [n for n, _ in modules],
            "wanted": list(WANTED),
            "sort": [],
        }
        return _finish(tmp, final, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean(everything: bool = False) -> int:
    """Remove cached kernels (and with ``everything`` the apt lists); return bytes freed."""
    base = lab_dir()
    targets = [base] if everything else [base / "kernels", base / "apt/cache"]
    freed = 0
    for t in targets:
        if t.exists():
            freed += dir_size(t)
            shutil.rmtree(t)
    return freed
