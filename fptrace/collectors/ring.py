"""A bulk consumer for the BPF ring buffer of `record --events`.

BCC's ring buffer API calls a Python function per record, far too slow for hundreds of
thousands of context switches a second.  The BPF ring buffer can instead be mapped into
user space (kernel/bpf/ringbuf.c, as libbpf does): one read-write page holding the consumer
position, then a read-only page with the producer position followed by the data area,
mapped twice in a row so that a record that wraps around is contiguous.  Every record here
has the same size, so all committed records are decoded in one numpy view.
"""

from __future__ import annotations

import contextlib
import mmap
import struct

import numpy as np

from fptrace.probes.plan import EVENT_BATCH as BATCH

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8

# struct fp_event in fptrace.bpf.c (40 bytes); the ring carries batches of BATCH of them.
EVENT_DTYPE = np.dtype(
    [
        ("ts", "<u8"),
        ("vso", "<u8"),
        ("xfeatures", "<u8"),
        ("pid", "<u4"),
        ("tgid", "<u4"),
        ("event", "<u2"),
        ("load_bits", "<u2"),
        ("cpu", "<u2"),
        ("pad", "<u2"),
    ]
)
RECORD_DTYPE = np.dtype([("len", "<u4"), ("pg_off", "<u4"), ("e", EVENT_DTYPE, (BATCH,))])
RECORD = RECORD_DTYPE.itemsize  # 8 + BATCH x 40, a multiple of 8 as the ring needs
# A partial batch as it sits in the per-CPU array (struct fp_batch).
BATCH_DTYPE = np.dtype([("n", "<u4"), ("pad", "<u4"), ("e", EVENT_DTYPE, (BATCH,))])


class RingReader:
    """Consumes committed records from a BPF_MAP_TYPE_RINGBUF map, many at a time."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        if data_size & (data_size - 1) or data_size % page:
            raise ValueError("ring buffer size must be a power-of-two number of pages")
        self.size = data_size
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._data = mmap.mmap(
            map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._page = page

    def close(self) -> None:
        for m in (self._cons, self._data):
            # A view may still exist on an error path: the mapping goes when it is freed.
            with contextlib.suppress(BufferError):
                m.close()

    def _positions(self) -> tuple[int, int]:
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        prod = struct.unpack_from("<Q", self._data, 0)[0]
        return cons, prod

    def read(self) -> np.ndarray:
        """All events committed since the last call (possibly none)."""
        cons, prod = self._positions()
        avail = (prod - cons) // RECORD
        if avail <= 0:
            return np.empty(0, dtype=EVENT_DTYPE)
        start = self._page + (cons & (self.size - 1))
        # The data area is mapped twice: a run that wraps around is still contiguous.
        avail = min(avail, self.size // RECORD)
        raw = np.frombuffer(self._data, dtype=np.uint8, count=avail * RECORD, offset=start)
        raw = raw.reshape(avail, RECORD)
        lens = np.array(raw[:, :4]).view("<u4").ravel()
        busy = np.flatnonzero(lens & BUSY_BIT)
        n = int(busy[0]) if busy.size else avail  # stop at the first record not yet committed
        keep = (lens[:n] & DISCARD_BIT) == 0
        # Copy the payload bytes (a plain memory copy), then reinterpret them as events:
        # slicing the structured field instead copies element by element, ~200 ns each.
        # np.array (a copy), not ascontiguousarray: a single batch is already contiguous, and
        # a view would keep the mapping exported, so that it could not be closed.
        payload = np.array(raw[:n][keep, HEADER:] if not keep.all() else raw[:n, HEADER:])
        del raw
        out = payload.view(EVENT_DTYPE).reshape(-1)
        struct.pack_into("<Q", self._cons, 0, cons + n * RECORD)
        return out


def layout_mismatch(batch: type) -> str | None:
    """How the C ``struct fp_batch`` (the map's leaf type, as the compiled object describes
    it) differs from :data:`BATCH_DTYPE`, which decodes it; None when they agree.  The
    ring's records are read through the numpy types above: a field moved in the C alone
    would be read as garbage, not refused."""
    import ctypes

    if ctypes.sizeof(batch) != BATCH_DTYPE.itemsize:
        return (
            f"struct fp_batch is {ctypes.sizeof(batch)} bytes, ring.py reads {BATCH_DTYPE.itemsize}"
        )
    event = dict(batch._fields_)["e"]._type_  # type: ignore[attr-defined]
    for name in EVENT_DTYPE.names or ():
        dtype, offset = EVENT_DTYPE.fields[name][:2]  # type: ignore[index]
        got = getattr(event, name, None)
        if got is None or (got.offset, got.size) != (offset, dtype.itemsize):
            where = "absent" if got is None else f"at {got.offset} ({got.size} bytes)"
            return (
                f"struct fp_event.{name} is {where}, ring.py reads it at {offset} "
                f"({dtype.itemsize} bytes)"
            )
    return None


def partial_batches(per_cpu: list[bytes]) -> np.ndarray:
    """The events still waiting in each CPU's unfinished batch (read after detaching)."""
    parts = []
    for raw in per_cpu:
        b = np.frombuffer(raw, dtype=BATCH_DTYPE, count=1)[0]
        parts.append(b["e"][: int(b["n"]) % BATCH])
    return np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)
