"""A small initramfs per kernel: static busybox, the modules 9p and overlayfs need, and /init.

/init mounts the host's root filesystem (9p, read-only) under a tmpfs overlay — the
virtme-ng way, so every host binary and file is at its host path in the guest — mounts the
writable lab share at the output directory's host path, and ``switch_root``s into the
combination's run script, whose path comes on the kernel command line (``fptrace.run=``).

We resolve module dependencies ourselves from each module's ``.modinfo`` (``depends=``), so
no ``depmod`` run over the whole modules tree is needed and only a few modules are kept.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
from pathlib import Path

#: What the guest needs as modules when the kernel does not have them built in: 9p and
#: overlayfs for the root, cpuid so that `fptrace record` reads the guest's CPUID leaf 0xD.
WANTED = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "cpuid")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
MOUNT_9P = "trans=virtio,version=9p2000.L,msize=262144"
#: The read-only roots are cached in the guest (page cache, attributes): loading numpy's and
#: pyarrow's shared libraries over uncached 9p was most of a warm guest's `record` start
#: (A/B here, 4 pairs each: 6.1 21.7 -> 18.8 s a combination, 5.10 33.8 -> 28.3 s).  A host
#: file changed while a guest runs may then go unseen by it; the writable lab share stays
#: uncached.
MOUNT_9P_RO = MOUNT_9P + ",ro,cache=loose"

INIT = f"""#!/bin/busybox sh
# fptrace lab initramfs: mount the host root read-only under a tmpfs overlay, then run the job.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{
    echo "fptrace-lab: FAILED: $*"
    echo o > /proc/sysrq-trigger
    sleep 30
}}
echo "fptrace-lab: initramfs up"
for m in $(cat /modules.order); do
    insmod "/modules/$m.ko" || echo "fptrace-lab: insmod $m failed"
done
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        fptrace.out=*) OUT="${{arg#fptrace.out=}}" ;;
        fptrace.run=*) RUN="${{arg#fptrace.run=}}" ;;
        fptrace.root=*) ROOT="${{arg#fptrace.root=}}" ;;
    esac
done
ROOT="${{ROOT:-hostroot}}"
[ -n "$OUT" ] && [ -n "$RUN" ] || fail "no fptrace.out= or fptrace.run= on the kernel command line"
mkdir -p /lower /rw /newroot
mount -t 9p -o {MOUNT_9P_RO} "$ROOT" /lower || fail "cannot mount the $ROOT root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \\
    || fail "cannot overlay the host root"
# The lab share first at /out: a debootstrapped root reads its list of host paths from it.
mkdir -p /out
mount -t 9p -o {MOUNT_9P} labout /out || fail "cannot mount the lab share"
if [ "$ROOT" != hostroot ]; then
    # A debootstrapped root: the host paths the job needs (listed next to the run script),
    # each read-only from the host under its own tmpfs-backed overlay, at its host path.
    mkdir -p /host
    mount -t 9p -o {MOUNT_9P_RO} hostroot /host || fail "cannot mount the host root over 9p"
    JOB="${{RUN#"$OUT"}}"
    n=0
    while read -r p; do
        n=$((n + 1))
        mkdir -p "/rw/b$n/u" "/rw/b$n/w" "/newroot$p"
        mount -t overlay -o "lowerdir=/host$p,upperdir=/rw/b$n/u,workdir=/rw/b$n/w" overlay \
            "/newroot$p" || fail "cannot bind $p"
    done < "/out${{JOB%/*}}/binds"
fi
# A fresh /run (the host's pid files and sockets mean nothing here), mounted before the lab
# share, which may live under it. /tmp stays the host's (through the overlay): a cache, a
# venv or the command may live there.
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
mkdir -p "/newroot$OUT"
mount --move /out "/newroot$OUT" || fail "cannot mount the lab share at $OUT"
for d in dev proc sys; do mount --move "/$d" "/newroot/$d"; done
exec switch_root /newroot /bin/sh "$RUN"
"""


def _module_name(path: Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


def read_module(path: Path) -> bytes:
    """A module's ELF bytes, whatever Debian compressed it with (.ko, .ko.xz, .ko.zst)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=True).stdout
    return data


def modinfo_depends(elf: bytes) -> list[str]:
    """``depends=`` of a module's .modinfo section (a NUL-separated key=value list)."""
    i = elf.find(b"\0depends=")
    if i < 0:
        return []
    value = elf[i + 9 : elf.index(b"\0", i + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def builtin_modules(moddir: Path) -> set[str]:
    try:
        text = (moddir / "modules.builtin").read_text()
    except OSError:
        return set()
    return {_module_name(Path(line.strip())) for line in text.splitlines() if line.strip()}


def resolve_modules(moddir: Path, wanted: tuple[str, ...] = WANTED) -> list[tuple[str, bytes]]:
    """(name, ELF) of the wanted modules and their dependencies, dependencies first."""
    files = {_module_name(p): p for p in moddir.rglob("*.ko*")}
    builtin = builtin_modules(moddir)
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in builtin:
            return
        done.add(name)
        path = files.get(name)
        if path is None:
            return  # neither a module nor listed as built in: hope the kernel has it
        elf = read_module(path)
        for dep in modinfo_depends(elf):
            visit(dep)
        order.append((name, elf))

    for name in wanted:
        visit(name)
    return order


def _cpio_entry(
    out: io.BytesIO,
    name: str,
    mode: int,
    data: bytes = b"",
    ino: int = 0,
    rdev: tuple[int, int] = (0, 0),
) -> None:
    """One ``newc`` cpio header + name + data, each padded to 4 bytes."""
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(namez), 0]
    out.write(b"070701" + b"".join(f"{f:08x}".encode() for f in fields))
    out.write(namez + b"\0" * (-(110 + len(namez)) % 4))
    out.write(data + b"\0" * (-len(data) % 4))


def busybox() -> Path:
    for p in BUSYBOX_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise FileNotFoundError("busybox")


def save_modules(moddir: Path, modules: list[tuple[str, bytes]]) -> None:
    """Keep the (decompressed) modules with the kernel: the initramfs is rebuilt from them."""
    moddir.mkdir(parents=True, exist_ok=True)
    for name, elf in modules:
        (moddir / f"{name}.ko").write_bytes(elf)
    (moddir / "modules.order").write_text("".join(f"{n}\n" for n, _ in modules))


def load_modules(moddir: Path) -> list[tuple[str, bytes]]:
    try:
        names = (moddir / "modules.order").read_text().split()
    except OSError:
        return []
    return [(n, (moddir / f"{n}.ko").read_bytes()) for n in names]


def initramfs_for(kdir: Path) -> Path:
    """The kernel's initramfs for this fptrace's /init, built on first use (about 0.3 s)."""
    bb = busybox()
    modules = load_modules(kdir / "modules")
    digest = hashlib.sha256(INIT.encode() + str(bb.stat().st_size).encode())
    for name, _ in modules:
        digest.update(name.encode())
    dest = kdir / f"initramfs-{digest.hexdigest()[:10]}.img"
    if not dest.is_file():
        for old in kdir.glob("initramfs-*.img"):
            old.unlink()
        build_initramfs(dest, modules, bb)
    return dest


def build_initramfs(dest: Path, modules: list[tuple[str, bytes]], busybox_path: Path) -> int:
    """Write a gzip'd newc archive to ``dest``; return its size in bytes."""
    out = io.BytesIO()
    ino = 1
    for d in ("bin", "dev", "proc", "sys", "modules", "lower", "rw", "newroot", "out"):
        _cpio_entry(out, d, 0o040755, ino=ino)
        ino += 1
    # The kernel opens /dev/console for init before /init can mount devtmpfs.
    _cpio_entry(out, "dev/console", 0o020600, ino=ino, rdev=(5, 1))
    ino += 1
    entries = [
        ("init", 0o100755, INIT.encode()),
        ("bin/busybox", 0o100755, busybox_path.read_bytes()),
        ("modules.order", 0o100644, "".join(f"{n}\n" for n, _ in modules).encode()),
    ]
    entries += [(f"modules/{n}.ko", 0o100644, elf) for n, elf in modules]
    for name, mode, data in entries:
        _cpio_entry(out, name, mode, data, ino=ino)
        ino += 1
    _cpio_entry(out, "TRAILER!!!", 0)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(out.getvalue())
    shutil.move(tmp, dest)
    return dest.stat().st_size
