"""Addresses to function names, for `record --stacks`: ELF symbol tables for user frames,
/proc/kallsyms for kernel frames.  No address is ever written out: a frame is a function
name, its module (file name) and build-id, and the offset into the function (or, with no
symbol for it, into the module's file).

User frames are resolved against the process's memory maps as read while it lived (a drain
reads /proc/PID/maps of every process with new stacks, since it may be gone at the end):
the file offset of the address, then the ELF load segment that holds it, then the function
symbol (``.symtab`` where the binary has one, else ``.dynsym``) whose range holds it.  A
stripped binary's internal functions have no symbol: such a frame is ``[unknown]`` in its
module, which still says whose code it is.  Each binary is read once per run (cached by
path, size and modification time).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

UNKNOWN = "[unknown]"


@dataclass(frozen=True)
class Frame:
    function: str
    module: str  # file name of the binary ("[kernel]" for kernel frames, "" if unknown)
    offset: int | None  # into the function; into the module's file when function is unknown
    build_id: str | None = None


@dataclass(frozen=True)
class MapEntry:
    start: int
    end: int
    offset: int
    path: str


def read_maps(tgid: int) -> list[MapEntry]:
    """The file-backed executable mappings of a live process (empty if it is gone)."""
    try:
        text = Path(f"/proc/{tgid}/maps").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        lo, _, hi = parts[0].partition("-")
        out.append(MapEntry(int(lo, 16), int(hi, 16), int(parts[2], 16), parts[5]))
    return sorted(out, key=lambda m: m.start)


class ElfSymbols:
    """One binary's function symbols and load segments."""

    def __init__(self, path: str) -> None:
        from elftools.elf.elffile import ELFFile  # pyelftools: only --stacks needs it
        from elftools.elf.sections import NoteSection

        self.build_id: str | None = None
        self.loads: list[tuple[int, int, int]] = []  # (p_offset, p_vaddr, p_filesz)
        syms: dict[int, tuple[int, str]] = {}
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD":
                    self.loads.append((seg["p_offset"], seg["p_vaddr"], seg["p_filesz"]))
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if sec is None or not hasattr(sec, "iter_symbols"):
                    continue
                for s in sec.iter_symbols():
                    if s["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and s["st_value"]:
                        syms.setdefault(s["st_value"], (s["st_size"], s.name))
            note = elf.get_section_by_name(".note.gnu.build-id")
            if isinstance(note, NoteSection):
                for n in note.iter_notes():
                    if n["n_type"] == "NT_GNU_BUILD_ID":
                        self.build_id = str(n["n_desc"])
        self.starts = sorted(syms)
        self.syms = [syms[a] for a in self.starts]

    def vaddr(self, file_offset: int) -> int | None:
        for off, vaddr, size in self.loads:
            if off <= file_offset < off + size:
                return file_offset - off + vaddr
        return None

    def function(self, vaddr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0:
            return None
        size, name = self.syms[i]
        start = self.starts[i]
        if size and vaddr >= start + size:
            return None  # past the nearest symbol's end: an internal, unnamed function
        return name, vaddr - start


@cache
def _elf(path: str, size: int, mtime: int) -> ElfSymbols | None:
    try:
        return ElfSymbols(path)
    except Exception:  # not an ELF file, unreadable, truncated: frames stay unknown
        return None


def elf_symbols(path: str) -> ElfSymbols | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _elf(path, st.st_size, st.st_mtime_ns)


def file_frame(path: str, file_offset: int) -> Frame:
    """The frame at ``file_offset`` into the binary ``path``."""
    module = os.path.basename(path)
    elf = elf_symbols(path)
    if elf is None:
        return Frame(UNKNOWN, module, file_offset)
    vaddr = elf.vaddr(file_offset)
    hit = elf.function(vaddr) if vaddr is not None else None
    if hit is None:
        return Frame(UNKNOWN, module, file_offset, elf.build_id)
    return Frame(hit[0], module, hit[1], elf.build_id)


def build_id_of(path: str) -> str | None:
    """The GNU build-id of an ELF file, from its PT_NOTE segments only (the library scan
    reads thousands of files: no symbol table is parsed here)."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:  # 64-bit little-endian
                return None
            phoff, phentsize, phnum = (
                struct.unpack_from("<Q", head, 32)[0],
                *struct.unpack_from("<HH", head, 54),
            )
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
                    "<IIQQQQ", table, i * phentsize
                )
                if p_type != 4:  # PT_NOTE
                    continue
                f.seek(p_offset)
                notes = f.read(min(p_filesz, 1 << 16))
                at = 0
                while at + 12 <= len(notes):
                    namesz, descsz, ntype = struct.unpack_from("<III", notes, at)
                    name_at = at + 12
                    desc_at = name_at + ((namesz + 3) & ~3)
                    if ntype == 3 and notes[name_at : name_at + namesz].rstrip(b"\0") == b"GNU":
                        return notes[desc_at : desc_at + descsz].hex()
                    at = desc_at + ((descsz + 3) & ~3)
    except (OSError, struct.error):
        return None
    return None


# Where binaries live, for build-ids no running process showed (the process ended before a
# drain): the traced commands and the shared libraries of this system.
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/lib64")


class BuildIds:
    """build-id -> a file with it: from the memory maps of processes seen alive, the
    binaries named in the tasks' command lines, and at last the library directories."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self.seen: set[str] = set()
        self.scanned = False

    def add(self, path: str) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        bid = build_id_of(path)
        if bid:
            self.paths.setdefault(bid, path)

    def find(self, build_id: str, candidates: list[str]) -> str | None:
        if build_id in self.paths:
            return self.paths[build_id]
        for path in candidates:
            self.add(path)
        if build_id not in self.paths and not self.scanned:
            self.scanned = True
            for d in LIBRARY_DIRS:
                try:
                    names = os.listdir(d)
                except OSError:
                    continue
                for name in names:
                    if ".so" in name:
                        full = os.path.join(d, name)
                        if os.path.isfile(full):
                            self.add(full)
        return self.paths.get(build_id)


def user_frame(addr: int, maps: list[MapEntry]) -> Frame:
    i = bisect.bisect_right([m.start for m in maps], addr) - 1
    if i < 0 or addr >= maps[i].end:
        return Frame(UNKNOWN, "", None)
    m = maps[i]
    return file_frame(m.path, addr - m.start + m.offset)


class KernelSymbols:
    """/proc/kallsyms, text symbols only (root sees the addresses; others see zeros)."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        starts: list[int] = []
        names: list[str] = []
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in ("t", "T", "W", "w"):
                        starts.append(int(parts[0], 16))
                        names.append(parts[2])
        except OSError:
            pass
        order = sorted(range(len(starts)), key=starts.__getitem__)
        self.starts = [starts[i] for i in order]
        self.names = [names[i] for i in order]

    def frame(self, addr: int) -> Frame:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or not self.starts[i]:
            return Frame(UNKNOWN, "[kernel]", None)
        return Frame(self.names[i], "[kernel]", addr - self.starts[i])
