"""Decoding ftrace's binary ring-buffer pages (``per_cpu/cpuN/trace_pipe_raw``) in bulk.

Why binary: the text of ``trace_pipe`` is formatted by the kernel and parsed back with a
regular expression, a few microseconds per event in Python — far below the ~2 M events/s a
pinned context-switch benchmark produces, so the kernel buffer overran.  The raw pages hold
the same records in the layout that ``events/header_page``, ``events/header_event`` and
each event's ``format`` file describe, and can be decoded many pages at a time.

A page (kernel/trace/ring_buffer.c): ``u64 timestamp``, ``local_t commit`` (bytes of data;
bits 31/30 flag missed events), then the data: 4-byte event headers ``type_len:5,
time_delta:27``.  type_len 1..28: a record of type_len × 4 bytes follows; 0: its length is
in the next word (which counts itself) and the record follows that; 29: padding (delta 0:
the rest of the page is empty; else a discarded record, length in the next word); 30: a
time extend (the next word holds delta bits 27..58); 31: an absolute time stamp.  A record
starts with the common trace_entry (``common_type``, ``common_pid``, …).

The walk over a page's chain of headers is sequential, but every page is independent, so
all pages of a read advance in lockstep: one numpy step per record *position*, at most
~100 per page, each over all pages at once.  Timestamps are the page's plus the deltas, in
the instance's trace clock (``mono``: CLOCK_MONOTONIC, like ``bpf_ktime_get_ns``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fptrace.probes.kernel import Field, format_fields

TYPE_DATA_MAX = 28
TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
MISSED_FLAGS = (1 << 31) | (1 << 30)
ABS_TS_MASK = (1 << 59) - 1  # an absolute stamp carries 59 bits; the page supplies the rest


@dataclass(frozen=True)
class EventFormat:
    """One tracepoint's binary record, from its tracefs ``format`` file."""

    name: str
    id: int
    fields: dict[str, Field]

    @classmethod
    def parse(cls, text: str) -> EventFormat:
        name = re.search(r"^name:\s*(\S+)", text, re.M)
        ident = re.search(r"^ID:\s*(\d+)", text, re.M)
        if name is None or ident is None:
            raise ValueError("not a tracefs format file (no name/ID line)")
        return cls(name[1], int(ident[1]), format_fields(text))

    @classmethod
    def read(cls, event_dir: Path) -> EventFormat:
        return cls.parse((event_dir / "format").read_text())


@dataclass(frozen=True)
class PageLayout:
    """Where the page header's fields are (``events/header_page``)."""

    timestamp: int = 0
    commit: int = 8
    commit_size: int = 8
    data: int = 16
    data_size: int = 4080

    @property
    def page_size(self) -> int:
        return self.data + self.data_size

    @classmethod
    def parse(cls, text: str) -> PageLayout:
        got = format_fields(text)
        try:
            return cls(
                got["timestamp"].offset,
                got["commit"].offset,
                got["commit"].size,
                got["data"].offset,
                got["data"].size,
            )
        except KeyError as exc:
            raise ValueError(f"header_page has no {exc.args[0]} field") from exc


@dataclass
class Records:
    """Data records found in a run of pages: where each one's payload starts, and when."""

    offset: np.ndarray  # int64: byte offset of the payload (trace_entry) in the buffer
    ts: np.ndarray  # uint64 ns, trace clock
    page: np.ndarray  # int64: index of the page it came from

    def __len__(self) -> int:
        return len(self.offset)


def walk_pages(buf: np.ndarray, layout: PageLayout) -> Records:
    """Every data record in ``buf`` (whole pages, uint8), pages in order, records in order."""
    size = layout.page_size
    npages = len(buf) // size
    if npages == 0:
        empty = np.empty(0, np.int64)
        return Records(empty, np.empty(0, np.uint64), empty)
    pages = buf[: npages * size].reshape(npages, size)
    stamp = np.ascontiguousarray(pages[:, layout.timestamp : layout.timestamp + 8])
    ts = stamp.view("<u8").ravel().copy()
    commit = _uint(pages, layout.commit, layout.commit_size) & ~np.uint64(MISSED_FLAGS)
    length = np.minimum(commit.astype(np.int64), layout.data_size)
    data = np.ascontiguousarray(pages[:, layout.data : layout.data + layout.data_size])
    nwords = layout.data_size // 4
    # One spare word per page so that reading "the next word" never runs off the end.
    words = np.zeros((npages, nwords + 1), np.uint32)
    words[:, :nwords] = data[:, : nwords * 4].view("<u4")
    flat = words.ravel()
    base_word = np.arange(npages, dtype=np.int64) * (nwords + 1)
    pos = np.zeros(npages, np.int64)  # byte offset into each page's data
    out_page, out_off, out_ts = [], [], []
    live = np.flatnonzero(pos < length)
    while live.size:
        w_at = base_word[live] + pos[live] // 4
        head = flat[w_at]
        kind = head & 31
        delta = (head >> 5).astype(np.uint64)
        nxt = flat[w_at + 1].astype(np.int64)
        step = np.full(live.size, 8, np.int64)  # time extend / time stamp
        is_small = (kind >= 1) & (kind <= TYPE_DATA_MAX)
        is_big = kind == 0
        is_data = is_small | is_big
        step[is_small] = 4 + kind[is_small].astype(np.int64) * 4
        step[is_big] = 4 + nxt[is_big]
        pad = kind == TYPE_PADDING
        step[pad] = np.where(delta[pad] == 0, length[live[pad]], 4 + nxt[pad])
        cur = ts[live]
        cur += np.where(is_data, delta, 0)
        ext = kind == TYPE_TIME_EXTEND
        cur[ext] += (nxt[ext].astype(np.uint64) << np.uint64(TS_SHIFT)) | delta[ext]
        stp = kind == TYPE_TIME_STAMP
        if stp.any():
            absolute = (nxt[stp].astype(np.uint64) << np.uint64(TS_SHIFT)) | delta[stp]
            cur[stp] = (cur[stp] & ~np.uint64(ABS_TS_MASK)) | (absolute & np.uint64(ABS_TS_MASK))
        ts[live] = cur
        if is_data.any():
            d = live[is_data]
            payload = pos[d] + np.where(is_big[is_data], 8, 4)
            out_page.append(d)
            out_off.append(d * size + layout.data + payload)
            out_ts.append(cur[is_data])
        # A corrupt length (0 or past the end) ends the page instead of looping forever.
        step = np.where(step <= 0, length[live], step)
        pos[live] += step
        live = live[pos[live] < length[live]]
    if not out_off:
        empty = np.empty(0, np.int64)
        return Records(empty, np.empty(0, np.uint64), empty)
    off = np.concatenate(out_off)
    order = np.argsort(off, kind="stable")  # an offset orders both pages and their records
    return Records(off[order], np.concatenate(out_ts)[order], np.concatenate(out_page)[order])


def _uint(rows: np.ndarray, offset: int, size: int) -> np.ndarray:
    """A little-endian unsigned field at ``offset`` of every row, as uint64."""
    raw = np.zeros((len(rows), 8), np.uint8)
    raw[:, :size] = rows[:, offset : offset + size]
    return raw.view("<u8").ravel()


def gather(buf: np.ndarray, offsets: np.ndarray, f: Field) -> np.ndarray:
    """Field ``f`` of the records at ``offsets`` (payload starts), as int64 or uint64."""
    if f.size in (4, 8) and f.offset % 4 == 0 and len(buf) % 4 == 0:
        # Records are 4-byte aligned in a page (RB_ALIGNMENT): read whole words.
        words = buf.view("<u4")
        at = (offsets + f.offset) // 4
        val = words[at].astype(np.uint64)
        if f.size == 8:
            val |= words[at + 1].astype(np.uint64) << np.uint64(32)
        elif f.signed:
            return val.astype(np.uint32).view(np.int32).astype(np.int64)
        return val.view(np.int64) if f.signed else val
    raw = np.zeros((len(offsets), 8), np.uint8)
    idx = offsets[:, None] + f.offset + np.arange(f.size)
    raw[:, : f.size] = buf[idx]
    if f.signed and f.size < 8:  # sign-extend
        neg = raw[:, f.size - 1] >= 0x80
        raw[neg, f.size :] = 0xFF
    return raw.view("<i8" if f.signed else "<u8").ravel()


def record_string(buf: np.ndarray, offset: int, f: Field) -> str:
    """A char[] or ``__data_loc char[]`` field of one record, NUL-terminated."""
    if f.data_loc:
        loc = int(gather(buf, np.array([offset]), Field(f.offset, 4, False, False))[0])
        start, n = offset + (loc & 0xFFFF), loc >> 16
    else:
        start, n = offset + f.offset, f.size
    raw = bytes(buf[start : start + n])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
