"""The compiled-program cache without a kernel: relocations, the file format, who is trusted."""

from __future__ import annotations

import ctypes
import struct

import pytest

from fptrace.collectors import bpf_object
from fptrace.collectors.bpf_maps import MapSpec, decode_type
from fptrace.collectors.bpf_object import BpfObject, ProgSpec, cache_key, relocations


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, src << 4 | dst, off, imm)


def ld_map(dst: int, fd: int) -> bytes:
    """ld_imm64 dst, map fd (two instruction slots)."""
    return insn(0x18, dst, 1, imm=fd) + insn(0, imm=0)


CODE = (
    insn(0xB7, 1, imm=7)  # r1 = 7
    + ld_map(1, 5)
    + insn(0x18, 2, 0, imm=123)  # a plain 64-bit constant: no map
    + insn(0, imm=0)
    + ld_map(3, 9)
    + insn(0x95)  # exit
)


def test_map_fds_become_relocations_and_are_patched_back() -> None:
    code, relocs = relocations(CODE, {5: "counts", 9: "tasks"})
    assert relocs == [(1, "counts"), (5, "tasks")]
    assert struct.unpack_from("<i", code, 1 * 8 + 4)[0] == 0  # no stale fd in the cache
    assert struct.unpack_from("<i", code, 3 * 8 + 4)[0] == 123  # the constant is kept
    patched = ProgSpec("p", code, relocs).patched({"counts": 40, "tasks": 41})
    assert struct.unpack_from("<i", patched, 1 * 8 + 4)[0] == 40
    assert struct.unpack_from("<i", patched, 5 * 8 + 4)[0] == 41
    assert patched[:8] == CODE[:8] and patched[-8:] == CODE[-8:]


def test_unknown_map_fds_and_pseudo_sources_are_refused() -> None:
    with pytest.raises(ValueError, match="fd 5"):
        relocations(ld_map(1, 5), {})
    with pytest.raises(ValueError, match="pseudo source 2"):
        relocations(insn(0x18, 1, 2, imm=5) + insn(0), {5: "x"})


def test_calls_to_a_kfunc_id_become_kfunc_calls() -> None:
    """BCC cannot declare a kfunc: the C calls its BTF id like a helper number, and only
    calls to the ids the -DKFUNC_* flags name become BPF_PSEUDO_KFUNC_CALL."""
    from fptrace.collectors.bpf_object import kfunc_ids

    flags = ["-DTASK_FROM_FPU=1", "-DKFUNC_BPF_RDONLY_CAST=64911", "-DTASK_STRUCT_BTF_ID=114"]
    assert kfunc_ids(flags) == {64911}
    code = insn(0x85, imm=14) + insn(0x85, imm=64911) + insn(0xB7, 2, imm=64911) + insn(0x95)
    out, relocs = relocations(code, {}, kfunc_ids(flags))
    assert relocs == []
    assert out[0:8] == code[0:8]  # a helper call (get_current_pid_tgid) is left alone
    assert out[8:16] == insn(0x85, src=2, imm=64911)  # vmlinux kfunc: src 2, off 0
    assert out[16:] == code[16:]  # the same number as a constant is no call
    assert relocations(code, {})[0] == code  # without the flags nothing changes


FP_KEY = [
    "fp_key",
    [
        ["pid", "unsigned int"],
        ["tgid", "unsigned int"],
        ["vso", "unsigned long long"],
        ["xfeatures", "unsigned long long"],
        ["event", "unsigned short"],
        ["load_bits", "unsigned short"],
        ["arg", "unsigned int"],
    ],
    "struct",
]
U64 = "unsigned long long"
FP_VAL = ["fp_val", [["count", U64], ["first_ns", U64], ["last_ns", U64]], "struct"]


def test_bcc_type_descriptions_decode_to_the_c_layouts() -> None:
    slot = decode_type(
        ["slot", [["key", *FP_KEY[1:]], ["val", *FP_VAL[1:]], ["traced", "unsigned long long"]],
         "struct"]
    )  # fmt: skip
    # struct slot in fptrace.bpf.c: 32-byte key, 24-byte value, a u64.
    assert ctypes.sizeof(slot) == 64 and slot.val.offset == 32 and slot.traced.offset == 56
    task = decode_type(["task_info", [["tgid", "unsigned int"], ["comm", "char", [16]]], "struct"])
    assert ctypes.sizeof(task) == 20 and task.comm.size == 16
    bits = decode_type(["b", [["a", "unsigned int", 3], ["b", "unsigned int", 5]], "struct"])
    v = bits.from_buffer_copy(struct.pack("<I", 0b10101_011))
    assert (v.a, v.b) == (3, 0b10101)
    packed = decode_type(["p", [["c", "char"], ["x", "unsigned int"]], "struct_packed"])
    assert ctypes.sizeof(packed) == 5
    union = decode_type(["u", [["a", "unsigned int"], ["b", "unsigned long long"]], "union"])
    assert ctypes.sizeof(union) == 8
    with pytest.raises(ValueError, match="unknown C type"):
        decode_type("float128")


def _object(key: str = "k") -> BpfObject:
    code, relocs = relocations(CODE, {5: "counts", 9: "tasks"})
    maps = [MapSpec("counts", 1, 32, 24, 1024, 0, FP_KEY, FP_VAL)]
    return BpfObject(b"GPL", maps, {"fpu__x": ProgSpec("fpu__x", code, relocs)}, key)


def test_an_object_survives_the_cache_file_format() -> None:
    obj = _object()
    back = BpfObject.from_json(obj.to_json())
    assert back == obj and not back.cached


def test_cached_objects_are_found_by_key_and_only_in_trusted_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    key = cache_key("int x;", ["-DA=1"])
    assert bpf_object.load_cached(key) is None
    path = bpf_object.store(_object(key))
    assert path == tmp_path / "bpf" / f"{key}.json"
    got = bpf_object.load_cached(key)
    assert got is not None and got.cached and got.progs == _object(key).progs
    path.chmod(0o664)  # group-writable: somebody else could put bytecode there
    assert bpf_object.load_cached(key) is None
    path.chmod(0o644)
    path.write_text(path.read_text().replace(key, "0" * 32))  # an entry for another key
    assert bpf_object.load_cached(key) is None
    path.write_text("{not json")
    assert bpf_object.load_cached(key) is None


def test_the_key_follows_source_flags_and_kernel(monkeypatch) -> None:
    base = cache_key("int x;", ["-DA=1", "-DB=2"])
    assert base == cache_key("int x;", ["-DB=2", "-DA=1"])  # order of flags does not matter
    assert base != cache_key("int y;", ["-DA=1", "-DB=2"])
    assert base != cache_key("int x;", ["-DA=1"])
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/elsewhere")
    assert base != cache_key("int x;", ["-DA=1", "-DB=2"])


def test_get_object_compiles_once_then_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    compiled: list[list[str]] = []

    def fake_compile(source: str, cflags: list[str], key: str = "") -> BpfObject:
        compiled.append(cflags)
        return _object(key)

    monkeypatch.setattr(bpf_object, "compile_object", fake_compile)
    first = bpf_object.get_object("int x;", ["-DA=1"])
    second = bpf_object.get_object("int x;", ["-DA=1"])
    assert compiled == [["-DA=1"]] and not first.cached and second.cached
    bpf_object.get_object("int x;", ["-DA=2"])
    assert len(compiled) == 2


def test_the_cache_keeps_the_newest_entries_only(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    monkeypatch.setattr(bpf_object, "KEEP", 3)
    keys = [cache_key("int x;", [f"-DN={i}"]) for i in range(5)]
    for i, key in enumerate(keys):
        path = bpf_object.store(_object(key))
        os.utime(path, (1000 + i, 1000 + i))  # written one after another
    left = {p.stem for p in (tmp_path / "bpf").iterdir()}
    assert left == set(keys[2:])
