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
from fptrace.reports.protowire import packed, vbytes, vint


def _int(number: int, value: int) -> bytes:
    return vint(number, value) if value else b""  # proto3: a zero is left out


class _Strings:
    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        return self.index.setdefault(s, len(self.index))


def profilevbytes(view: StackView) -> bytes:
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
        label = vbytes(3, _int(1, strings("state")) + _int(2, strings(state))) + vbytes(
            3, _int(1, strings("reason")) + _int(2, strings(reason))
        )
        samples += vbytes(2, packed(1, ids[::-1]) + packed(2, [n]) + label)
    sample_type = vbytes(1, _int(1, strings("samples")) + _int(2, strings("count")))
    body = sample_type + samples
    for fid in functions.values():
        line = vbytes(4, _int(1, fid))
        body += vbytes(4, _int(1, fid) + line)  # Location {id, line {function_id}}
    for (name, file), fid in functions.items():
        body += vbytes(
            5,
            _int(1, fid) + _int(2, strings(name)) + _int(3, strings(name)) + _int(4, strings(file)),
        )
    for s in strings.index:  # string_table, index 0 is ""
        body += vbytes(6, s.encode())
    body += _int(14, strings.index["samples"])  # default_sample_type
    return body


def write_pprof(view: StackView, out: IO[bytes]) -> None:
    out.write(gzip.compress(profilevbytes(view)))
