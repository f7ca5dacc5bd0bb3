"""The compiled BPF program as data: BCC compiles it once per kernel build and flags, then
fptrace loads it from a cache without BCC.

Why: BCC compiles its C at every start (clang parses the kernel headers its helpers include),
~0.5 s on this machine and ~11 s in an emulated `fptrace lab` guest, where importing libbcc
costs another ~4 s.  What the compiler produces is fixed for a given source, set of ``-D``
flags, kernel build and header tree: each function's bytecode, the maps it uses, their key
and value types.  A :class:`BpfObject` holds exactly that, with every map reference in the
bytecode (``ld_imm64`` with ``BPF_PSEUDO_MAP_FD``) turned into a relocation by map name, so
that :mod:`fptrace.collectors.bpf_sys` can create the maps and load the programs in any
later process.

The cache lives in ``<cache>/bpf/<key>.json`` (probes/headers.cache_dir).  A cached program
is bytecode that root will load into the kernel, so a file is used only when it and its
directory belong to root (or the caller) and nobody else can write them.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import struct
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fptrace.cache import cache_dir, cache_write_dir, trusted, write_atomic
from fptrace.collectors.bpf_maps import MapSpec
from fptrace.probes.plan import KFUNC_PREFIX

FORMAT = 1
KEEP = 64  # cached programs kept: kernels x option sets in use
LD_IMM64 = 0x18
PSEUDO_MAP_FD = 1
CALL = 0x85  # BPF_JMP | BPF_CALL
PSEUDO_KFUNC_CALL = 2
LIBBCC = Path("/usr/lib/x86_64-linux-gnu/libbcc.so.0")
# Function name prefixes -> how a program is loaded and attached.
TRACEPOINT_PREFIX = "tracepoint__"  # BCC's TRACEPOINT_PROBE: category__event


@dataclass
class ProgSpec:
    """One function's bytecode; ``relocs`` lists (instruction index, map name)."""

    name: str
    insns: bytes
    relocs: list[tuple[int, str]] = field(default_factory=list)

    def patched(self, fds: dict[str, int]) -> bytes:
        """The bytecode with this process's map fds in place of the relocations."""
        code = bytearray(self.insns)
        for index, name in self.relocs:
            struct.pack_into("<i", code, index * 8 + 4, fds[name])
        return bytes(code)


@dataclass
class BpfObject:
    license: bytes
    maps: list[MapSpec]
    progs: dict[str, ProgSpec]
    key: str = ""
    cached: bool = False  # loaded from the cache (no compiler ran)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "key": self.key,
                "license": self.license.decode(),
                "maps": [asdict(m) for m in self.maps],
                "progs": {
                    n: {"insns": base64.b64encode(p.insns).decode(), "relocs": p.relocs}
                    for n, p in self.progs.items()
                },
            }
        )

    @classmethod
    def from_json(cls, text: str) -> BpfObject:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"cached BPF object format {d.get('format')} is not {FORMAT}")
        progs = {
            n: ProgSpec(n, base64.b64decode(p["insns"]), [(int(i), str(m)) for i, m in p["relocs"]])
            for n, p in d["progs"].items()
        }
        return cls(d["license"].encode(), [MapSpec(**m) for m in d["maps"]], progs, d["key"])


def kfunc_ids(cflags: list[str]) -> set[int]:
    """The kfunc BTF ids the program calls as helper numbers (``-DKFUNC_<NAME>=<id>``)."""
    ids = set()
    for flag in cflags:
        name, _, value = flag.removeprefix("-D").partition("=")
        if flag.startswith("-D") and name.startswith(KFUNC_PREFIX) and value.isdigit():
            ids.add(int(value))
    return ids


def relocations(
    insns: bytes, fd_names: dict[int, str], kfuncs: Collection[int] = ()
) -> tuple[bytes, list[tuple[int, str]]]:
    """Map fds in ``insns`` -> (bytecode with those immediates zeroed, relocations).

    A call whose number is one of ``kfuncs`` (BTF ids, far above any helper number) becomes
    a kfunc call of vmlinux (``src_reg = BPF_PSEUDO_KFUNC_CALL``, ``off = 0``): BCC has no
    way to declare one, so the C calls the id like a helper.
    """
    code = bytearray(insns)
    relocs: list[tuple[int, str]] = []
    i = 0
    while i < len(code) // 8:
        op, regs = code[i * 8], code[i * 8 + 1]
        imm = struct.unpack_from("<i", code, i * 8 + 4)[0]
        if op == CALL and regs >> 4 == 0 and imm in kfuncs:
            code[i * 8 + 1] = (PSEUDO_KFUNC_CALL << 4) | (regs & 0x0F)
            struct.pack_into("<h", code, i * 8 + 2, 0)
        if op == LD_IMM64:
            src = regs >> 4
            if src == PSEUDO_MAP_FD:
                fd = struct.unpack_from("<i", code, i * 8 + 4)[0]
                if fd not in fd_names:
                    raise ValueError(f"instruction {i} refers to fd {fd}, which is no table")
                relocs.append((i, fd_names[fd]))
                struct.pack_into("<i", code, i * 8 + 4, 0)
            elif src:
                raise ValueError(f"instruction {i}: ld_imm64 pseudo source {src} is not supported")
            i += 2  # the second half of the 16-byte instruction
            continue
        i += 1
    return bytes(code), relocs


def cache_key(source: str, cflags: list[str]) -> str:
    """What the compiler's output depends on: source, flags, kernel build, headers, BCC."""
    u = os.uname()
    try:
        bcc = f"{LIBBCC.resolve().name}:{LIBBCC.stat().st_size}"
    except OSError:
        bcc = "none"
    parts = [
        f"format={FORMAT}",
        f"kernel={u.release} {u.version} {u.machine}",
        f"headers={os.environ.get('BCC_KERNEL_SOURCE', '')}",
        f"bcc={bcc}",
        *sorted(cflags),
        source,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def load_cached(key: str) -> BpfObject | None:
    path = cache_dir() / "bpf" / f"{key}.json"
    if not path.is_file() or not trusted(path):
        return None
    try:
        obj = BpfObject.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged or older entry: compile again, and overwrite it
    if obj.key != key:
        return None
    obj.cached = True
    return obj


def store(obj: BpfObject) -> Path | None:
    """Write ``obj`` to the cache (atomically); None when the cache is not writable."""
    dest = cache_write_dir() / "bpf" / f"{obj.key}.json"
    if not write_atomic(dest, obj.to_json()):
        return None
    prune(dest.parent, KEEP)
    return dest


def prune(directory: Path, keep: int) -> None:
    """Drop all but the ``keep`` most recently written entries (~40 KB each)."""
    entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)


def compile_object(source: str, cflags: list[str], key: str = "") -> BpfObject:
    """Compile with libbcc and take the result apart; raises RuntimeError if clang failed.

    Only the compiler part of BCC runs: the maps it creates to compile are closed again
    with the module, and no program is loaded or attached here.
    """
    from bcc.libbcc import lib  # type: ignore[import-not-found]

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    for fn in (lib.bpf_table_key_size_id, lib.bpf_table_leaf_size_id):
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.bpf_table_fd_id.restype = ctypes.c_int
    lib.bpf_table_fd_id.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    flags = (ctypes.c_char_p * len(cflags))(*(f.encode() for f in cflags))
    kfuncs = kfunc_ids(cflags)
    module = lib.bpf_module_create_c_from_string(source.encode(), 0, flags, len(cflags), True, None)
    if not module:
        raise RuntimeError("BCC could not compile the probes")
    try:
        maps: list[MapSpec] = []
        fd_names: dict[int, str] = {}
        for i in range(lib.bpf_num_tables(module)):
            name = lib.bpf_table_name(module, i).decode()
            fd_names[lib.bpf_table_fd_id(module, i)] = name
            maps.append(
                MapSpec(
                    name=name,
                    type=lib.bpf_table_type_id(module, i),
                    key_size=lib.bpf_table_key_size_id(module, i),
                    value_size=lib.bpf_table_leaf_size_id(module, i),
                    max_entries=lib.bpf_table_max_entries_id(module, i),
                    flags=lib.bpf_table_flags_id(module, i),
                    key_desc=_desc(lib.bpf_table_key_desc(module, name.encode())),
                    leaf_desc=_desc(lib.bpf_table_leaf_desc(module, name.encode())),
                )
            )
        progs: dict[str, ProgSpec] = {}
        for i in range(lib.bpf_num_functions(module)):
            fname = lib.bpf_function_name(module, i)
            start = lib.bpf_function_start(module, fname)
            size = lib.bpf_function_size(module, fname)
            insns, relocs = relocations(ctypes.string_at(start, size), fd_names, kfuncs)
            progs[fname.decode()] = ProgSpec(fname.decode(), insns, relocs)
        license = lib.bpf_module_license(module) or b"GPL"
    finally:
        lib.bpf_module_destroy(module)
    return BpfObject(license, maps, progs, key)


def _desc(raw: bytes | None) -> Any:
    return json.loads(raw.decode()) if raw else "int"


def get_object(source: str, cflags: list[str], use_cache: bool = True) -> BpfObject:
    """The compiled program for these flags on this kernel: from the cache, else compiled
    (and cached for the next run, replacing any entry of the same key)."""
    key = cache_key(source, cflags)
    obj = load_cached(key) if use_cache else None
    if obj is None:
        obj = compile_object(source, cflags, key)
        store(obj)
    return obj
