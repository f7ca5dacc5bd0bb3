"""The BTF reader on a hand-built blob (format: Documentation/bpf/btf.rst)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fptrace.probes.btf import BTF, BTFError
from fptrace.probes.btf_facts import BTFFacts, btf_key


class Blob:
    """Builds a tiny BTF blob: ints, pointers, typedefs, structs (with bitfields), funcs."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types = b""
        self.next_id = 1

    def s(self, text: str) -> int:
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def _add(self, data: bytes) -> int:
        self.types += data
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int) -> int:
        return self._add(
            struct.pack("<III", self.s(name), 1 << 24, size) + struct.pack("<I", size * 8)
        )

    def ptr(self, to: int) -> int:
        return self._add(struct.pack("<III", 0, 2 << 24, to))

    def typedef(self, name: str, to: int) -> int:
        return self._add(struct.pack("<III", self.s(name), 8 << 24, to))

    def func(self, name: str) -> int:
        return self._add(struct.pack("<III", self.s(name), 12 << 24, 0))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int, int]]) -> int:
        kind_flag = any(bf for *_, bf in members)
        info = (4 << 24) | len(members) | (kind_flag << 31)
        data = struct.pack("<III", self.s(name) if name else 0, info, size)
        for mname, mtype, bit_off, bf in members:
            off = (bf << 24 | bit_off) if kind_flag else bit_off
            data += struct.pack("<III", self.s(mname) if mname else 0, mtype, off)
        return self._add(data)

    def build(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + self.types + self.strings


def kernel_blob() -> bytes:
    b = Blob()
    u32 = b.int_("unsigned int", 4)
    u64 = b.int_("long long unsigned int", 8)
    u64t = b.typedef("u64", u64)
    fps = b.struct(
        "fpstate",
        4160,
        [
            ("size", u32, 0, 0),
            ("user_size", u32, 32, 0),
            ("xfeatures", u64t, 64, 0),
            ("is_valloc", u32, 256, 1),
            ("is_guest", u32, 257, 1),
        ],
    )
    inner = b.struct("", 16, [("nvcsw", u64, 0, 0), ("nivcsw", u64, 64, 0)])
    b.struct("fpu", 4224, [("last_cpu", u32, 0, 0), ("fpstate", b.ptr(fps), 128, 0)])
    b.struct("task_struct", 3264, [("pid", u32, 10112, 0), ("", inner, 12288, 0)])
    b.func("bpf_jiffies64")
    return b.build()


@pytest.fixture
def btf() -> BTF:
    return BTF(kernel_blob())


def test_struct_members_offsets_sizes_and_bitfields(btf: BTF) -> None:
    fps = btf.members("fpstate")
    assert fps is not None
    assert (fps["user_size"].offset, fps["user_size"].size) == (4, 4)
    assert (fps["xfeatures"].offset, fps["xfeatures"].size) == (8, 8)  # through the typedef
    assert fps["is_guest"].bit_offset == 257 and fps["is_guest"].bitfield_size == 1
    assert btf.members("fpu")["fpstate"].offset == 16


def test_sizes_anonymous_members_and_lookups(btf: BTF) -> None:
    assert btf.struct_size("task_struct") == 3264
    task = btf.members("task_struct")
    assert task["pid"].offset == 1264
    assert task["nivcsw"].offset == 1536 + 8  # flattened from the anonymous struct
    assert btf.has_func("bpf_jiffies64") and not btf.has_func("nope")
    assert btf.members("missing") is None and btf.struct_size("missing") is None


def test_bad_blob_is_refused() -> None:
    with pytest.raises(BTFError):
        BTF(b"\x00" * 40)
    with pytest.raises(BTFError):
        BTF(b"\x9f\xeb")
    with pytest.raises(BTFError):
        BTF.load("/nonexistent/vmlinux")


QUESTIONS = [
    ("members", "fpstate"),
    ("members", "task_struct"),
    ("members", "missing"),
    ("struct_size", "task_struct"),
    ("typedef_id", "u64"),
    ("has_func", "bpf_jiffies64"),
]


def _answers(facts: object) -> list[object]:
    return [getattr(facts, q)(n) for q, n in QUESTIONS]


def test_btf_facts_answer_like_btf_and_spare_the_next_run_the_parse(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    blob = kernel_blob()
    first = BTFFacts(blob)
    assert not first.cached
    assert _answers(first) == _answers(BTF(blob)) and first.parsed

    def no_parse(_blob: bytes) -> BTF:
        raise AssertionError("the second run parsed the BTF")

    second = BTFFacts(blob, parse=no_parse)
    assert second.cached and _answers(second) == _answers(BTF(blob)) and not second.parsed
    # A question the file lacks is parsed for, and then remembered.
    third = BTFFacts(blob)
    assert third.struct_size("fpstate") == 4160 and third.parsed
    assert BTFFacts(blob, parse=no_parse).struct_size("fpstate") == 4160


def test_btf_facts_belong_to_one_blob_and_to_trusted_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    blob = kernel_blob()
    BTFFacts(blob).members("fpu")
    other = blob[:-1] + b"x"  # another kernel build: other strings
    assert not BTFFacts(other).cached
    (entry,) = (tmp_path / "btf").iterdir()
    entry.chmod(0o666)  # anyone could have changed the offsets
    assert not BTFFacts(blob).cached


def test_a_guest_spills_its_facts_and_the_host_adopts_them(tmp_path, monkeypatch):
    from fptrace.cache import adopt

    host, spill = tmp_path / "host", tmp_path / "job" / "cache"
    monkeypatch.setenv("FPTRACE_CACHE", str(host))
    monkeypatch.setenv("FPTRACE_CACHE_SPILL", str(spill))
    blob = kernel_blob()
    BTFFacts(blob).members("fpu")
    assert not (host / "btf").exists() and len(list((spill / "btf").iterdir())) == 1
    (spill / "stray").write_text("x")  # not a cache entry: left where it is
    assert adopt(spill) == [Path("btf") / f"{btf_key(blob)}.json"]
    monkeypatch.delenv("FPTRACE_CACHE_SPILL")
    assert BTFFacts(blob).cached and not (host / "stray").exists()
