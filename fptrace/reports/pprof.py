"""`fptrace export -f pprof`: record --stacks samples as a gzipped pprof profile
(github.com/google/pprof, proto/profile.proto), for `go tool pprof`, speedscope and the
continuous profilers that read it.

Written with a small protobuf encoder of its own (the profile has a handful of message
types): one sample per flame-graph path, its value the samples, its locations leaf first;
one function per distinct frame name, its file the module.  The live level and the reason
are the two outermost frames, as in the folded export, and also sample labels
(``state``, ``reason``) for pprof's tagfocus.
"""

from __future__ import annotations

import gzip
from typing import IO

from fptrace.analysis.stacks import StackView


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(value) if value else b""


def _bytes(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _packed(number: int, values: list[int]) -> bytes:
    return _bytes(number, b"".join(_varint(v) for v in values)) if values else b""


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        return self.index.setdefault(s, len(self.index))


def profile_bytes(view: StackView) -> bytes:
    """The serialized (not yet gzipped) Profile message."""
    strings = _Strings()
    functions: dict[tuple[str, str], int] = {}  # (name, file) -> function id = location id
    samples = b""
    for path, n in view.paths:
        state, reason = path[0].split(", ", 1) if ", " in path[0] else (path[0], "")
        ids = []
        for frame in path:
            file = "[kernel]" if frame.endswith("_[k]") else ""
            ids.append(functions.setdefault((frame, file), len(functions) + 1))
        label = _bytes(3, _int(1, strings("state")) + _int(2, strings(state))) + _bytes(
            3, _int(1, strings("reason")) + _int(2, strings(reason))
        )
        samples += _bytes(2, _packed(1, ids[::-1]) + _packed(2, [n]) + label)
    sample_type = _bytes(1, _int(1, strings("samples")) + _int(2, strings("count")))
    body = sample_type + samples
    for fid in functions.values():
        line = _bytes(4, _int(1, fid))
        body += _bytes(4, _int(1, fid) + line)  # Location {id, line {function_id}}
    for (name, file), fid in functions.items():
        body += _bytes(
            5,
            _int(1, fid) + _int(2, strings(name)) + _int(3, strings(name)) + _int(4, strings(file)),
        )
    for s in strings.index:  # string_table, index 0 is ""
        body += _bytes(6, s.encode())
    body += _int(14, strings.index["samples"])  # default_sample_type
    return body


def write_pprof(view: StackView, out: IO[bytes]) -> None:
    out.write(gzip.compress(profile_bytes(view)))
