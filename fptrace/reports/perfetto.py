"""A Perfetto trace (protobuf) of a recording's events, written without the protobuf runtime.

Only a handful of messages are needed, so they are encoded by hand from the published
protos (protos/perfetto/trace/trace_packet.proto, track_event/*.proto; field numbers in
the constants below): one track per CPU and one per task (thread track under its process),
an instant per save/restore carrying XSTATE_BV, the live components and the estimated bytes,
and per process counter tracks of saves/s and bytes/s.  The tests parse the file back with
Perfetto's own published schema (``perfetto_trace_pb2`` from the ``perfetto`` package).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from fptrace.analysis.measures import SAVE_SIGN
from fptrace.errors import UsageError
from fptrace.recording.loader import Recording
from fptrace.reports.protowire import vbytes, vdouble, vint
from fptrace.xstate import Layout, decode

# Field numbers (perfetto.protos.*).
TRACE_PACKET = 1  # Trace.packet
PKT_TIMESTAMP, PKT_SEQ_ID, PKT_TRACK_EVENT, PKT_SEQ_FLAGS, PKT_TRACK_DESC = 8, 10, 11, 13, 60
TE_DEBUG, TE_TYPE, TE_TRACK_UUID, TE_CATEGORIES, TE_NAME = 4, 9, 11, 22, 23
TE_DOUBLE_COUNTER = 44
TYPE_INSTANT, TYPE_COUNTER = 3, 4
TD_UUID, TD_NAME, TD_PROCESS, TD_THREAD, TD_PARENT, TD_COUNTER = 1, 2, 3, 4, 5, 8
PD_PID, PD_NAME = 1, 6
THD_PID, THD_TID, THD_NAME = 1, 2, 5
DA_UINT, DA_STRING, DA_NAME = 3, 6, 10
SEQ_INCREMENTAL_STATE_CLEARED = 1
SEQ_ID = 0x5EED


def packet(ts: int | None, body: bytes, first: bool = False) -> bytes:
    inner = (vint(PKT_TIMESTAMP, ts) if ts is not None else b"") + vint(PKT_SEQ_ID, SEQ_ID)
    if first:
        inner += vint(PKT_SEQ_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED)
    return vbytes(TRACE_PACKET, inner + body)


def track(
    uuid: int,
    *,
    name: str = "",
    parent: int = 0,
    process: bytes = b"",
    thread: bytes = b"",
    counter: bool = False,
) -> bytes:
    desc = vint(TD_UUID, uuid)
    if name:
        desc += vbytes(TD_NAME, name)
    if parent:
        desc += vint(TD_PARENT, parent)
    if process:
        desc += vbytes(TD_PROCESS, process)
    if thread:
        desc += vbytes(TD_THREAD, thread)
    if counter:
        desc += vbytes(TD_COUNTER, b"")
    return vbytes(PKT_TRACK_DESC, desc)


def annotation(name: str, value: int | str) -> bytes:
    body = vbytes(DA_NAME, name)
    body += vint(DA_UINT, value) if isinstance(value, int) else vbytes(DA_STRING, value)
    return vbytes(TE_DEBUG, body)


def instant(track_uuid: int, name: str, annotations: Iterable[bytes]) -> bytes:
    ev = vint(TE_TYPE, TYPE_INSTANT) + vint(TE_TRACK_UUID, track_uuid)
    ev += vbytes(TE_CATEGORIES, "x86_fpu") + vbytes(TE_NAME, name) + b"".join(annotations)
    return vbytes(PKT_TRACK_EVENT, ev)


def counter(track_uuid: int, value: float) -> bytes:
    ev = vint(TE_TYPE, TYPE_COUNTER) + vint(TE_TRACK_UUID, track_uuid)
    return vbytes(PKT_TRACK_EVENT, ev + vdouble(TE_DOUBLE_COUNTER, value))


def write_perfetto(rec: Recording, out: IO[bytes]) -> str:
    if not rec.has_events:
        raise UsageError(
            f"{rec.path} has no events: record with `fptrace record --events` for a timeline"
        )
    layout: Layout | None = rec.layout
    tasks = rec.tasks
    comm = dict(zip(tasks["pid"].astype(int), tasks["comm"].astype(str), strict=False))
    tgid_of = dict(zip(tasks["pid"].astype(int), tasks["tgid"].astype(int), strict=False))
    out.write(packet(None, track(1, name="fptrace"), first=True))
    proc_uuid: dict[int, int] = {}
    thread_uuid: dict[int, int] = {}
    cpu_uuid: dict[int, int] = {}
    counters: dict[tuple[int, str], int] = {}
    next_uuid = [100]

    def new_uuid() -> int:
        next_uuid[0] += 1
        return next_uuid[0]

    def process_track(tgid: int) -> int:
        if tgid not in proc_uuid:
            proc_uuid[tgid] = u = new_uuid()
            desc = vint(PD_PID, tgid) + vbytes(PD_NAME, comm.get(tgid, str(tgid)))
            out.write(packet(None, track(u, process=desc)))
            for what in ("saves/s", "bytes/s"):
                counters[(tgid, what)] = c = new_uuid()
                out.write(packet(None, track(c, name=f"FPU {what}", parent=u, counter=True)))
        return proc_uuid[tgid]

    def thread_track(pid: int, tgid: int) -> int:
        if pid not in thread_uuid:
            parent = process_track(tgid)
            thread_uuid[pid] = u = new_uuid()
            desc = vint(THD_PID, tgid) + vint(THD_TID, pid)
            desc += vbytes(THD_NAME, comm.get(pid, str(pid)))
            out.write(packet(None, track(u, parent=parent, thread=desc)))
        return thread_uuid[pid]

    def cpu_track(cpu: int) -> int:
        if cpu not in cpu_uuid:
            cpu_uuid[cpu] = u = new_uuid()
            out.write(packet(None, track(u, name=f"CPU {cpu} FPU")))
        return cpu_uuid[cpu]

    interval_ns = max(int(rec.manifest.interval_s * 1e9), 1)
    per_slot: dict[tuple[int, int], list[float]] = {}
    bytes_cache: dict[int, int] = {}
    table = rec.events_table().sort_by("ts_ns")  # Perfetto wants time order per sequence
    for r in table.to_pylist():
        bv = int(r["xfeatures"])
        pid, tgid = int(r["pid"]), int(r["tgid"] or tgid_of.get(int(r["pid"]), r["pid"]))
        notes = [annotation("xstate_bv", bv), annotation("cpu", int(r["cpu"]))]
        nbytes = 0
        if r["vso"] is not None:
            notes.append(annotation("vso", r["vso"]))
            notes.append(annotation("live", ", ".join(decode(bv)) or "init"))
            if layout is not None:
                nbytes = bytes_cache.setdefault(bv, layout.bytes_saved(bv))
                notes.append(annotation("bytes", nbytes))
        ts = int(r["ts_ns"])
        for t in (thread_track(pid, tgid), cpu_track(int(r["cpu"]))):
            out.write(packet(ts, instant(t, r["event"], notes)))
        sign = SAVE_SIGN.get(r["event"], 0)  # a save: analysis/measures.py
        if sign:
            process_track(tgid)  # its counters (a pid seen under another tgid has none yet)
            slot = per_slot.setdefault((tgid, ts // interval_ns), [0.0, 0.0])
            slot[0] += sign
            slot[1] += sign * nbytes
    scale = 1e9 / interval_ns
    for (tgid, at), (n_saves, n_bytes) in sorted(per_slot.items(), key=lambda kv: kv[0][1]):
        ts = at * interval_ns
        out.write(packet(ts, counter(counters[(tgid, "saves/s")], n_saves * scale)))
        out.write(packet(ts, counter(counters[(tgid, "bytes/s")], n_bytes * scale)))
    return "events"
