"""A minimal reader of the kernel's BTF (``/sys/kernel/btf/vmlinux``).

Why our own reader: struct offsets must come from the running kernel, never from the
(mismatched) headers BCC compiles against, and ``bpftool btf dump`` prints ~300k lines that
take seconds to parse.  BTF itself is a flat, documented binary format
(Documentation/bpf/btf.rst): a header, an array of variable-length type records, and a
string section.  We index structs/unions and functions by name and resolve member offsets
on demand, which is all the probes need.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

BTF_MAGIC = 0xEB9F

# Kinds (include/uapi/linux/btf.h).
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

# Bytes that follow the 12-byte common header, per kind: (fixed, per vlen item).
_EXTRA = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


class BTFError(Exception):
    """The BTF blob is missing or malformed."""


@dataclass(frozen=True)
class Member:
    """One struct member: byte offset, byte size, and bit position for bitfields."""

    name: str
    offset: int  # bytes from the start of the struct (bitfields: the containing byte)
    size: int  # bytes of the member's type (bitfields: 0)
    bit_offset: int  # bits from the start of the struct
    bitfield_size: int  # 0 unless a bitfield


class BTF:
    """Indexed BTF types.  Construct with :meth:`load` or :meth:`from_bytes`."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError(f"bad BTF magic 0x{magic:x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_start = hdr_len + type_off
        self._strings_start = hdr_len + str_off
        self._strings_end = self._strings_start + str_len
        # offsets[type_id] = byte position of that type record; type 0 is void.
        self._offsets: list[int] = [0]
        self._by_name: dict[tuple[int, str], int] = {}
        self._index(self._types_start, self._types_start + type_len)

    @classmethod
    def load(cls, path: str | Path = "/sys/kernel/btf/vmlinux") -> BTF:
        try:
            return cls(Path(path).read_bytes())
        except OSError as exc:
            raise BTFError(f"cannot read {path}: {exc.strerror}") from exc

    def _index(self, pos: int, end: int) -> None:
        data = self._data
        unpack = struct.unpack_from
        offsets = self._offsets
        named = {KIND_STRUCT, KIND_UNION, KIND_FUNC, KIND_ENUM, KIND_ENUM64, KIND_TYPEDEF}
        while pos < end:
            name_off, info, _ = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            offsets.append(pos)
            if kind in named and name_off:
                key = (KIND_STRUCT if kind == KIND_UNION else kind, self._str(name_off))
                self._by_name.setdefault(key, len(offsets) - 1)
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen

    def _str(self, off: int) -> str:
        start = self._strings_start + off
        stop = self._data.index(b"\0", start, self._strings_end)
        return self._data[start:stop].decode()

    def _header(self, type_id: int) -> tuple[int, int, int, int, int]:
        pos = self._offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return pos, name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type | (info >> 31) << 32

    def has_func(self, name: str) -> bool:
        return (KIND_FUNC, name) in self._by_name

    def func_id(self, name: str) -> int | None:
        """The type id of function ``name``: what a kfunc call names (``BPF_PSEUDO_KFUNC_CALL``)."""
        return self._by_name.get((KIND_FUNC, name))

    def struct_id(self, name: str) -> int | None:
        """The type id of ``struct name`` (e.g. what ``bpf_rdonly_cast`` casts to)."""
        return self._by_name.get((KIND_STRUCT, name))

    def typedef_id(self, name: str) -> int | None:
        """The type id of typedef ``name`` (e.g. ``btf_trace_<event>``, what tp_btf attaches by)."""
        return self._by_name.get((KIND_TYPEDEF, name))

    def sizeof(self, type_id: int) -> int:
        """Byte size of a type, following typedefs, qualifiers and arrays."""
        for _ in range(32):
            pos, _name, kind, _vlen, sot = self._header(type_id)
            sot &= 0xFFFFFFFF
            if kind in _MODIFIERS:
                type_id = sot
                continue
            if kind == KIND_PTR:
                return 8
            if kind == KIND_ARRAY:
                elem, _idx, nelems = struct.unpack_from("<III", self._data, pos + 12)
                return nelems * self.sizeof(elem)
            return sot
        raise BTFError(f"type chain too deep at id {type_id}")

    def struct_size(self, name: str) -> int | None:
        type_id = self._by_name.get((KIND_STRUCT, name))
        return None if type_id is None else self.sizeof(type_id)

    def members(self, name: str) -> dict[str, Member] | None:
        """Members of struct/union ``name`` (anonymous unions/structs flattened)."""
        type_id = self._by_name.get((KIND_STRUCT, name))
        return None if type_id is None else self._members_of(type_id, 0)

    def _members_of(self, type_id: int, base_bits: int) -> dict[str, Member]:
        pos, _name, _kind, vlen, sot = self._header(type_id)
        kind_flag = sot >> 32
        out: dict[str, Member] = {}
        for i in range(vlen):
            m_name_off, m_type, m_off = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            bits, bf_size = (m_off & 0xFFFFFF, m_off >> 24) if kind_flag else (m_off, 0)
            bits += base_bits
            m_name = self._str(m_name_off) if m_name_off else ""
            if not m_name:
                inner = self._resolve(m_type)
                if self._header(inner)[2] in (KIND_STRUCT, KIND_UNION):
                    for k, v in self._members_of(inner, bits).items():
                        out.setdefault(k, v)
                continue
            size = 0 if bf_size else self.sizeof(m_type)
            out[m_name] = Member(m_name, bits // 8, size, bits, bf_size)
        return out

    def _resolve(self, type_id: int) -> int:
        while self._header(type_id)[2] in _MODIFIERS:
            type_id = self._header(type_id)[4] & 0xFFFFFFFF
        return type_id
