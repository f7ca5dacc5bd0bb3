"""The binary trace_pipe_raw decoder, on pages encoded here as kernel/trace/ring_buffer.c does."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from fptrace.collectors.ftrace_raw import (
    EventFormat,
    PageLayout,
    gather,
    record_string,
    walk_pages,
)

HEADER_PAGE = """\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;
"""

FPU_FORMAT = """name: x86_fpu_regs_deactivated
ID: 180
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:struct fpu * fpu;\toffset:8;\tsize:8;\tsigned:0;
\tfield:bool load_fpu;\toffset:16;\tsize:1;\tsigned:0;
\tfield:u64 xfeatures;\toffset:24;\tsize:8;\tsigned:0;
\tfield:u64 xcomp_bv;\toffset:32;\tsize:8;\tsigned:0;

print fmt: "x86/fpu: %p load: %d xfeatures: %llx xcomp_bv: %llx", REC->fpu
"""

FORK_FORMAT = """name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
"""

LAYOUT = PageLayout.parse(HEADER_PAGE)
FPU = EventFormat.parse(FPU_FORMAT)


class Page:
    """Builds one ring-buffer page the way the kernel writes it."""

    def __init__(self, ts: int) -> None:
        self.ts = ts
        self.data = bytearray()

    def record(self, payload: bytes, delta: int, big: bool = False) -> Page:
        payload = payload + b"\0" * (-len(payload) % 4)
        if len(payload) > 112 or big:  # type_len 0: the length word counts itself
            self.data += struct.pack("<II", delta << 5, len(payload) + 4) + payload
        else:
            self.data += struct.pack("<I", (delta << 5) | len(payload) // 4) + payload
        return self

    def extend(self, delta: int) -> Page:  # type 30: delta bits 27.. in the next word
        self.data += struct.pack("<II", ((delta & (2**27 - 1)) << 5) | 30, delta >> 27)
        return self

    def discarded(self, nbytes: int, delta: int = 1) -> Page:  # padding with a length
        self.data += struct.pack("<II", (delta << 5) | 29, nbytes + 4) + b"\0" * nbytes
        return self

    def end_padding(self) -> Page:  # padding with delta 0: the rest of the page
        self.data += struct.pack("<I", 29)
        return self

    def bytes(self, missed: bool = False) -> bytes:
        commit = len(self.data) | ((1 << 31) if missed else 0)
        body = struct.pack("<Qq", self.ts, commit) + bytes(self.data)
        return body + b"\0" * (LAYOUT.page_size - len(body))


def fpu_record(pid: int, fpu: int, xf: int, xc: int = 0x80000000000008E7, load: int = 0) -> bytes:
    return struct.pack("<HBBiQB7xQQ", FPU.id, 0, 0, pid, fpu, load, xf, xc)


def decode(*pages: bytes):
    buf = np.frombuffer(b"".join(pages), np.uint8)
    return buf, walk_pages(buf, LAYOUT)


def test_formats_parse_offsets_sizes_and_signs():
    assert (LAYOUT.data, LAYOUT.data_size, LAYOUT.page_size) == (16, 4080, 4096)
    assert FPU.id == 180 and FPU.name == "x86_fpu_regs_deactivated"
    assert FPU.fields["xfeatures"].offset == 24 and FPU.fields["common_pid"].signed
    fork = EventFormat.parse(FORK_FORMAT)
    assert fork.fields["child_comm"].data_loc and not fork.fields["child_pid"].data_loc
    assert fork.fields["child_comm"].text and not fork.fields["child_pid"].text
    exit_comm = "field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;"
    assert EventFormat.parse(f"name: x\nID: 1\n{exit_comm}").fields["comm"].text
    with pytest.raises(ValueError):
        EventFormat.parse("no format here")


def test_records_fields_and_timestamps_across_pages():
    p1 = Page(1_000).record(fpu_record(10, 0xFFFF8880_0000_1000, 0xE6), 5)
    p1.record(fpu_record(11, 0xFFFF8880_0000_2000, 0xA2, load=1), 7)
    p2 = Page(5_000).record(fpu_record(-5, 0xFFFF8880_0000_3000, 0x2), 0)
    buf, recs = decode(p1.bytes(), p2.bytes())
    assert len(recs) == 3
    assert recs.ts.tolist() == [1_005, 1_012, 5_000]
    assert recs.page.tolist() == [0, 0, 1]
    assert gather(buf, recs.offset, FPU.fields["common_pid"]).tolist() == [10, 11, -5]
    # The byte-wise path (an odd offset) gives the same as the word path.
    odd = dataclasses.replace(FPU.fields["xfeatures"], offset=25, size=7)
    assert gather(buf, recs.offset, odd).tolist() == [0, 0, 0]
    assert gather(buf, recs.offset, FPU.fields["fpu"]).tolist()[1] == 0xFFFF8880_0000_2000
    assert gather(buf, recs.offset, FPU.fields["xfeatures"]).tolist() == [0xE6, 0xA2, 0x2]
    assert gather(buf, recs.offset, FPU.fields["load_fpu"]).tolist() == [0, 1, 0]
    assert gather(buf, recs.offset, FPU.fields["xcomp_bv"])[0] == 0x80000000000008E7


def test_time_extend_discard_big_records_and_end_padding():
    big = struct.pack("<Hxxi", 7, 42) + b"x" * 150  # > 112 bytes: type_len 0
    page = Page(0).record(fpu_record(1, 0x1000, 1), 3)
    page.extend(3 << 27 | 9).record(fpu_record(2, 0x2000, 2), 0)  # a gap over 134 ms
    page.discarded(40).record(big, 4).record(fpu_record(3, 0x3000, 3), 1, big=True)
    page.end_padding()
    buf, recs = decode(page.bytes())
    assert len(recs) == 4  # the discarded record and the paddings are not records
    want_2 = 3 + (3 << 27 | 9)
    assert recs.ts.tolist() == [3, want_2, want_2 + 4, want_2 + 5]
    assert gather(buf, recs.offset, FPU.fields["common_type"]).tolist()[2] == 7
    assert gather(buf, recs.offset[[0, 1, 3]], FPU.fields["xfeatures"]).tolist() == [1, 2, 3]


def test_missed_events_flag_is_not_part_of_the_length():
    page = Page(100).record(fpu_record(1, 0x1000, 1), 1)
    _, recs = decode(page.bytes(missed=True))
    assert recs.ts.tolist() == [101]


def test_a_corrupt_length_ends_the_page_instead_of_looping():
    page = Page(0).record(fpu_record(1, 0x1000, 1), 1)
    page.data += struct.pack("<II", 0, 0)  # type_len 0 with a zero length word
    page.data += b"\xff" * 64
    _, recs = decode(page.bytes())
    assert len(recs) >= 1 and recs.ts[0] == 1


def test_empty_input_and_data_loc_strings():
    buf, recs = decode()
    assert len(recs) == 0
    fork = EventFormat.parse(FORK_FORMAT)
    # parent_comm at 24 (len 5), child_comm at 29 (len 6), as __data_loc (len << 16 | off)
    rec = struct.pack("<HBBiIiIi", 366, 0, 0, 7, 5 << 16 | 24, 7, 6 << 16 | 29, 8)
    rec += b"bash\0" + b"child\0"
    buf, recs = decode(Page(0).record(rec, 1).bytes())
    off = int(recs.offset[0])
    assert record_string(buf, off, fork.fields["child_comm"]) == "child"
    assert record_string(buf, off, fork.fields["parent_comm"]) == "bash"
    assert gather(buf, recs.offset, fork.fields["child_pid"]).tolist() == [8]
