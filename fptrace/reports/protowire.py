"""The protobuf wire format, for the two exports that write protobuf without generated code
(perfetto.py: a Perfetto trace; pprof.py: a pprof profile): varints, field keys, and the
three field kinds they use."""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s as their two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def vint(field: int, value: int) -> bytes:
    """A varint field (int64, uint64, enum, bool)."""
    return key(field, 0) + varint(value)


def vbytes(field: int, value: bytes | str) -> bytes:
    """A length-delimited field (string, bytes, an embedded message)."""
    data = value.encode() if isinstance(value, str) else value
    return key(field, 2) + varint(len(data)) + data


def vdouble(field: int, value: float) -> bytes:
    return key(field, 1) + struct.pack("<d", value)


def packed(field: int, values: list[int]) -> bytes:
    """A packed repeated varint field (nothing for no values)."""
    return vbytes(field, b"".join(varint(v) for v in values)) if values else b""
