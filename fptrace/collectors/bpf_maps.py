"""BPF maps that fptrace creates and reads itself: the part of BCC's ``Table`` it uses.

Key and value types are ctypes structures decoded from the type descriptions BCC's
compiler emits for each table (the same JSON BCC's own ``_decode_table_type`` reads), so the
C structs in fptrace.bpf.c stay the one definition of every layout.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fptrace.collectors import bpf_sys

#: BCC's description names -> ctypes (bcc/__init__.py str2ctype).
CTYPES: dict[str, Any] = {
    "_Bool": ctypes.c_bool,
    "char": ctypes.c_char,
    "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "__int128": ctypes.c_int64 * 2,
    "unsigned __int128": ctypes.c_uint64 * 2,
}


def decode_type(desc: Any) -> Any:
    """A ctypes type for one of BCC's table type descriptions.

    A description is a C type name, or ``[name, [fields], "struct"|"union"|"struct_packed"]``
    where a field is ``[name, type]``, ``[name, type, [n]]`` (array), ``[name, type, bits]``
    (bitfield) or a nested description.
    """
    if isinstance(desc, str):
        try:
            return CTYPES[desc]
        except KeyError:
            raise ValueError(f"unknown C type {desc!r} in a BPF table description") from None
    name, members, *kind = desc
    kind = kind[0] if kind else "struct"
    fields: list[tuple[Any, ...]] = []
    anon: list[str] = []
    for m in members:
        if len(m) == 3 and isinstance(m[2], str):  # a nested struct or union
            field = m[0] or f"__anon{len(anon)}"
            if not m[0]:
                anon.append(field)
            fields.append((field, decode_type(m)))
        elif len(m) == 3 and isinstance(m[2], list):
            fields.append((m[0], decode_type(m[1]) * m[2][0]))
        elif len(m) == 3:
            fields.append((m[0], decode_type(m[1]), m[2]))
        elif len(m) == 2:
            fields.append((m[0], decode_type(m[1])))
        else:
            raise ValueError(f"cannot decode BPF table field {m!r}")
    base = ctypes.Union if kind == "union" else ctypes.Structure
    body: dict[str, Any] = {"_fields_": fields, "_anonymous_": anon}
    if kind == "struct_packed":
        body["_pack_"] = 1
    return type(str(name) or "anon", (base,), body)


@cache
def possible_cpus() -> int:
    """CPUs a per-CPU map has a value for (the kernel's num_possible_cpus)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


@dataclass(frozen=True)
class MapSpec:
    """One table as BCC's compiler declared it: enough to create it again, anywhere."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: Any
    leaf_desc: Any


class Map:
    """A created map: lookups and updates by ctypes key; per-CPU values come as a list."""

    def __init__(self, spec: MapSpec) -> None:
        self.spec = spec
        self.Key = decode_type(spec.key_desc)
        self.Leaf = decode_type(spec.leaf_desc)
        ringbuf = spec.type == bpf_sys.BPF_MAP_TYPE_RINGBUF
        key_size = 0 if ringbuf else spec.key_size
        value_size = 0 if ringbuf else spec.value_size
        self.percpu = spec.type in bpf_sys.PERCPU_MAP_TYPES
        self._stride = (spec.value_size + 7) & ~7 if self.percpu else spec.value_size
        self._ncpu = possible_cpus() if self.percpu else 1
        self.fd = bpf_sys.map_create(
            spec.type, key_size, value_size, spec.max_entries, spec.flags, spec.name
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _key(self, key: Any) -> ctypes.Array[ctypes.c_char]:
        raw = bytes(
            key if isinstance(key, ctypes._SimpleCData | ctypes.Structure) else self.Key(key)
        )
        return ctypes.create_string_buffer(raw, self.spec.key_size)

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(self._stride * self._ncpu)

    def _leaves(self, buf: ctypes.Array[ctypes.c_char], at: int = 0) -> Any:
        if not self.percpu:
            return self.Leaf.from_buffer_copy(buf, at)
        leaves = [self.Leaf.from_buffer_copy(buf, at + i * self._stride) for i in range(self._ncpu)]
        if issubclass(self.Leaf, ctypes._SimpleCData):  # as BCC: per-CPU counters are ints
            return [leaf.value for leaf in leaves]
        return leaves

    def lookup(self, key: Any) -> Any:
        """The value at ``key`` (a list, one per CPU, for per-CPU maps); None if absent."""
        buf = self._value_buffer()
        if not bpf_sys.map_lookup(self.fd, self._key(key), buf):
            return None
        return self._leaves(buf)

    def __getitem__(self, key: Any) -> Any:
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.percpu:
            raise TypeError(f"{self.spec.name}: per-CPU maps are written by the kernel only")
        raw = ctypes.create_string_buffer(bytes(value), self.spec.value_size)
        bpf_sys.map_update(self.fd, self._key(key), raw)

    def delete(self, key: Any) -> bool:
        """Remove ``key``; False if it was not there."""
        return bpf_sys.map_delete(self.fd, self._key(key))

    def pop(self, key: Any) -> Any:
        """Remove ``key`` and return the value it had at that instant (None if absent).

        Atomic where the kernel can (5.14+); before, a lookup then a delete.
        """
        buf = self._value_buffer()
        k = self._key(key)
        try:
            if not bpf_sys.map_pop(self.fd, k, buf):
                return None
        except OSError:
            value = self.lookup(key)
            self.delete(key)
            return value
        return self._leaves(buf)

    def pop_array(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``pop`` for many keys (a structured array of this map's key type): whether each
        was there, and the values (a structured array of the value type; zeros where not).
        """
        vt = np.dtype(self.Leaf)
        if not len(keys):
            return np.zeros(0, bool), np.zeros(0, vt)
        packed = np.ascontiguousarray(keys, dtype=np.dtype(self.Key)).tobytes()
        try:
            found, raw = bpf_sys.map_pop_many(
                self.fd, packed, self.spec.key_size, self.spec.value_size
            )
        except OSError:  # before 5.14: no atomic pop for hash maps
            ks = self.spec.key_size
            got = [self.pop(self.Key.from_buffer_copy(packed, i * ks)) for i in range(len(keys))]
            found = [g is not None for g in got]
            raw = b"".join(bytes(g) if g is not None else bytes(vt.itemsize) for g in got)
        return np.array(found, dtype=bool), np.frombuffer(raw, dtype=vt).copy()

    def delete_many(self, keys: Sequence[tuple[Any, ...] | int]) -> None:
        """Remove ``keys`` (tuples in the key struct's field order, or ints for an integer
        key; absent ones are skipped), in batches where the kernel has them."""
        if not keys:
            return
        ks = self.spec.key_size
        packed = np.array(keys, dtype=np.dtype(self.Key)).tobytes()
        buf = ctypes.create_string_buffer(packed, ks * len(keys))
        done = 0
        while done < len(keys):
            rest = (ctypes.c_char * (ks * (len(keys) - done))).from_buffer(buf, ks * done)
            try:
                n = bpf_sys.map_delete_batch(self.fd, rest, len(keys) - done)
            except OSError:  # before 5.6
                n = 0
            done += n
            if done < len(keys):  # not there, or no batch op: this one alone
                bpf_sys.map_delete(self.fd, (ctypes.c_char * ks).from_buffer(buf, ks * done))
                done += 1

    def keys(self) -> Iterator[Any]:
        prev: ctypes.Array[ctypes.c_char] | None = None
        while True:
            out = ctypes.create_string_buffer(self.spec.key_size)
            if not bpf_sys.map_next_key(self.fd, prev, out):
                return
            yield self.Key.from_buffer_copy(out)
            prev = out

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value), one lookup each (an element deleted meanwhile is skipped)."""
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every key and value as numpy structured arrays: no Python object per element,
        which is what keeps a drain of 100k+ elements cheap.  Plain (not per-CPU) maps."""
        if self.percpu:
            raise TypeError(f"{self.spec.name}: per-CPU maps have one value per CPU")
        kt, vt = np.dtype(self.Key), np.dtype(self.Leaf)
        n = self.spec.max_entries
        ks, vs = self.spec.key_size, self.spec.value_size
        keys = ctypes.create_string_buffer(ks * n)
        values = ctypes.create_string_buffer(vs * n)
        try:
            total = bpf_sys.map_lookup_batch(self.fd, keys, values, ks, vs, n)
        except OSError:  # before 5.6: one lookup each
            pairs = list(self.items())
            k = np.frombuffer(b"".join(bytes(a) for a, _ in pairs), dtype=kt)
            v = np.frombuffer(b"".join(bytes(b) for _, b in pairs), dtype=vt)
            return k, v
        return (
            np.frombuffer(memoryview(keys), dtype=kt, count=total).copy(),
            np.frombuffer(memoryview(values), dtype=vt, count=total).copy(),
        )

    def items_lookup_batch(self) -> list[tuple[Any, Any]]:
        """Every (key, value) in a few ``BPF_MAP_LOOKUP_BATCH`` calls (5.6+; else OSError)."""
        n = self.spec.max_entries
        ks, vs = self.spec.key_size, self._stride * self._ncpu
        keys = ctypes.create_string_buffer(ks * n)
        values = ctypes.create_string_buffer(vs * n)
        total = bpf_sys.map_lookup_batch(self.fd, keys, values, ks, vs, n)
        return [
            (self.Key.from_buffer_copy(keys, i * ks), self._leaves(values, i * vs))
            for i in range(total)
        ]
