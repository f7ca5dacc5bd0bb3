"""Load the compiled BPF program, attach the planned probes, and snapshot its maps.

Counts in the kernel are cumulative and live in two places: the per-CPU cache slots and
the shared ``counts`` map (see fptrace.bpf.c).  :meth:`BpfSession.snapshot` reads both in
the order collectors/counting.py explains, so that no count is ever seen twice.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fptrace.collectors import bpf_sys, counting
from fptrace.collectors.bpf_maps import Map
from fptrace.collectors.bpf_object import TRACEPOINT_PREFIX, BpfObject, get_object
from fptrace.collectors.counting import CountKey, CountVal
from fptrace.collectors.ring import EVENT_DTYPE, RingReader, layout_mismatch
from fptrace.collectors.session import Snapshot
from fptrace.collectors.tp_btf import load_tp_btf, open_tp_btf
from fptrace.errors import EnvironmentProblem
from fptrace.probes.kernel import find_tracefs
from fptrace.probes.plan import (
    CACHE_SLOTS,
    CALIBRATION_TP,
    DROP_COUNTERS,
    TASK_FROM_FPU_MACROS,
    TIF_CANDIDATE_BITS,
    ProbePlan,
)
from fptrace.recording.manifest import Probes

CALIBRATION_SAMPLES = 16  # load=1 events needed before the TIF bit is trusted
CALIBRATION_PROG = "tracepoint__x86_fpu__x86_fpu_regs_activated"


def bpf_source() -> str:
    return resources.files("fptrace.probes").joinpath("fptrace.bpf.c").read_text()


def _records(values: np.ndarray, skip: str = "") -> list[dict[str, Any]]:
    """A structured array's rows as dicts of plain ints (``skip``: a field left out)."""
    names = [n for n in values.dtype.names or () if n != skip and not n.startswith("pad")]
    columns = [values[n].tolist() for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


class BpfSession:
    """One loaded program.  Use as a context manager so probes are always detached.

    BCC is only the compiler here, and only when the compiled program is not cached yet
    (collectors/bpf_object.py): maps, programs and attachments are made with
    :mod:`~fptrace.collectors.bpf_sys` in both cases, so a cached run and a compiled run
    load the same bytes the same way.
    """

    keep_events = False  # --events come through the BPF ring (ring), not take_events
    load_method: str | None = None  # calibrated against the record's load_fpu (the default)
    removes_tasks = True  # ended tasks leave the kernel maps (take_counts, forget)

    def __init__(self, plan: ProbePlan, header_dir: Path | None) -> None:
        self.plan = plan
        if header_dir is not None:
            os.environ["BCC_KERNEL_SOURCE"] = str(header_dir)
        self.maps: dict[str, Map] = {}
        self._progs: dict[str, int] = {}  # function name -> program fd
        self._tp_btf: dict[str, int] = {}  # probe name -> loaded tp_btf program fd
        self._tp_btf_links: list[int] = []
        self._raw_links: dict[str, int] = {}  # probe name -> raw tracepoint link fd
        self._tp_links: dict[str, int] = {}  # "group:event" -> perf event fd (tracepoints)
        self.tp_btf_refused: str | None = None  # why the raw tracepoint build was taken
        bpf_sys.raise_memlock()
        try:
            try:
                self._load(plan.cflags())
            except EnvironmentProblem:
                if not self.obj.cached:
                    raise
                # A cached program this kernel refuses (a cache copied from elsewhere, a
                # header tree changed under the same path): compile afresh, once.
                self.close()
                self._load(plan.cflags(), use_cache=False)
            if "FPU_DIRECT" in plan.macros:
                self._load_direct()
            self._attach_tracepoints()
        except BaseException:
            self.close()
            raise
        self.ring: RingReader | None = None
        if "EVENTS" in plan.macros:
            problem = layout_mismatch(self.maps["batches"].Leaf)
            if problem is not None:  # a bug of fptrace's own: say it before reading garbage
                self.close()
                raise EnvironmentProblem(f"fptrace's event layout is inconsistent: {problem}")
            size = plan.macros["EVENT_PAGES"] * mmap.PAGESIZE
            self.ring = RingReader(self.maps["events"].fd, size)
        self._calibrating = plan.calibrate
        # Calibrated by an earlier run on this kernel build, or by this one (calibrate()).
        self.tif_bit_index: int | None = (
            None if plan.tif_bit is None else TIF_CANDIDATE_BITS.index(plan.tif_bit)
        )
        self.attached_as: dict[str, str] = {}  # probe name -> "tp_btf" | "raw_tracepoint"

    def _load(self, cflags: list[str], use_cache: bool = True) -> None:
        """Create the maps and load every program except the tp_btf ones."""
        self.obj = BpfObject(b"", [], {})  # nothing loaded yet (for the error path)
        try:
            self.obj = get_object(bpf_source(), cflags, use_cache)
        except ImportError as exc:
            raise EnvironmentProblem(
                "BCC's Python module is not importable and this kernel's compiled probes are "
                "not cached: install Debian's python3-bpfcc (make setup)"
            ) from exc
        except RuntimeError as exc:
            raise EnvironmentProblem(
                f"{exc}: run `fptrace doctor` (BCC printed the compiler's messages above)"
            ) from exc
        try:
            for spec in self.obj.maps:
                self.maps[spec.name] = Map(spec)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create BPF map {spec.name} ({exc.strerror}): run as root "
                "(`sudo fptrace record`)"
            ) from exc
        self.maps["self_tgid"][0] = ctypes.c_uint32(self.plan.self_tgid)
        self._fds = {name: m.fd for name, m in self.maps.items()}
        for name in self.obj.progs:
            if name == CALIBRATION_PROG and not self.plan.calibrate:
                continue  # compiled in for the cache's sake; this run knows the bit
            if name.startswith(TRACEPOINT_PREFIX):
                self._progs[name] = self._prog_load(name, bpf_sys.BPF_PROG_TYPE_TRACEPOINT)
            elif name.startswith("fpu__"):
                self._progs[name] = self._prog_load(name, bpf_sys.BPF_PROG_TYPE_RAW_TRACEPOINT)

    def _prog_load(self, name: str, prog_type: int) -> int:
        try:
            return bpf_sys.prog_load(
                prog_type, self.obj.progs[name].patched(self._fds), self.obj.license, name
            )
        except OSError as exc:
            raise EnvironmentProblem(
                f"the kernel refused BPF program {name} ({exc.strerror}): run `fptrace doctor`"
            ) from exc

    def _load_direct(self) -> None:
        """The tp_btf build, else (refused by the verifier, before any target or attach) the
        same without the task read through the fpu, else the raw tracepoint build."""
        macros = self.plan.macros
        try:
            self._load_tp_btf()
            return
        except OSError as exc:
            refused = exc
        if "TASK_FROM_FPU" in macros:
            self.close()
            self._load(self.plan.cflags(without=TASK_FROM_FPU_MACROS))
            try:
                self._load_tp_btf()
                self.tp_btf_refused = (
                    f"tp_btf with the task read through its fpu refused ({refused.strerror}): "
                    "a helper call per event instead"
                )
                return
            except OSError as exc:
                refused = exc
        self.tp_btf_refused = f"tp_btf refused ({refused.strerror}): raw tracepoints instead"
        self.close()
        self._load(self.plan.cflags(without=("FPU_DIRECT", *TASK_FROM_FPU_MACROS)))

    def _load_tp_btf(self) -> None:
        """Hand each btf__* function to the verifier as a tp_btf program."""
        for probe in self.plan.attached():
            if probe.kind != "raw_tracepoint":
                continue
            name = "btf__" + probe.fn_name.removeprefix("fpu__")
            insns = self.obj.progs[name].patched(self._fds)
            self._tp_btf[probe.name] = load_tp_btf(insns, probe.btf_id, self.obj.license, name)

    def _attach_tracepoints(self) -> None:
        """The classic tracepoints (BCC's TRACEPOINT_PROBE functions), attached at load."""
        tracefs = find_tracefs()
        for name, fd in self._progs.items():
            if not name.startswith(TRACEPOINT_PREFIX):
                continue
            group, event = name.removeprefix(TRACEPOINT_PREFIX).split("__", 1)
            try:
                if tracefs is None:
                    raise OSError(2, "tracefs is not mounted")
                tp_id = int((tracefs / "events" / group / event / "id").read_text())
                self._tp_links[f"{group}:{event}"] = bpf_sys.attach_tracepoint(fd, tp_id)
            except (OSError, ValueError) as exc:
                raise EnvironmentProblem(
                    f"cannot attach tracepoint {group}:{event}: {exc}: run `fptrace doctor`"
                ) from exc

    def __enter__(self) -> BpfSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach and unload everything (links first, then programs, then maps)."""
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.close()
            self.ring = None
        for attr in ("_tp_links", "_raw_links"):
            for fd in getattr(self, attr, {}).values():
                os.close(fd)
            setattr(self, attr, {})
        for fd in [*getattr(self, "_tp_btf_links", []), *getattr(self, "_tp_btf", {}).values()]:
            os.close(fd)
        self._tp_btf_links, self._tp_btf = [], {}
        for fd in getattr(self, "_progs", {}).values():
            os.close(fd)
        self._progs = {}
        for m in getattr(self, "maps", {}).values():
            m.close()
        self.maps = {}

    def add_targets(self, tgids: list[int]) -> None:
        table = self.maps["targets"]
        for tgid in tgids:
            table[table.Key(tgid)] = ctypes.c_uint8(1)

    def add_cgroups(self, ids: list[int]) -> None:
        """record --cgroup: trace the tasks in these cgroups (v2 ids) and below them."""
        table = self.maps["cgroup_targets"]
        for cgid in ids:
            table[table.Key(cgid)] = ctypes.c_uint8(1)

    def attach_fpu(self) -> None:
        """Attach the FPU events: tp_btf programs where loaded, else raw tracepoints."""
        for probe in self.plan.attached():
            if probe.kind != "raw_tracepoint":
                continue
            prog = self._tp_btf.get(probe.name)
            tp = probe.name.split(":", 1)[1]
            try:
                if prog is not None:
                    self._tp_btf_links.append(open_tp_btf(prog))
                    self.attached_as[probe.name] = "tp_btf"
                    continue
                fd = bpf_sys.raw_tracepoint_open(self._progs[probe.fn_name], tp)
            except OSError as exc:
                raise EnvironmentProblem(
                    f"cannot attach {tp} ({exc.strerror}): run `fptrace doctor`"
                ) from exc
            self._raw_links[probe.name] = fd
            self.attached_as[probe.name] = "raw_tracepoint"

    def detach_fpu(self) -> None:
        """Detach the FPU events: nothing is counted after this (the final snapshot).

        The calibration tracepoint too, where it was held to the end (PlanOptions).
        """
        held = self._tp_links.pop(CALIBRATION_TP, None)
        for fd in [*self._raw_links.values(), *self._tp_btf_links]:
            os.close(fd)
        if held is not None:
            os.close(held)
        self._raw_links, self._tp_btf_links = {}, []

    def partial_events(self) -> Any:
        """Events still in the per-CPU batches (call after detach_fpu)."""
        from fptrace.collectors.ring import partial_batches

        table = self.maps["batches"]
        leaves = table[table.Key(0)]
        return partial_batches([bytes(leaf) for leaf in leaves])

    def take_events(self) -> np.ndarray:
        """Nothing: this backend's events come through the ring (``ring``)."""
        return np.empty(0, EVENT_DTYPE)

    def describe_probes(self, probes: Probes) -> Probes:
        """The manifest's ``probes`` (the plan's summary) with what loading found: the
        kind each probe was attached as, a refused tp_btf build, and the compiled program's
        cache key (whether BCC's compiler ran)."""
        attached = tuple(
            # raw_tracepoint: not the calibration tracepoint (attached as planned)
            replace(p, kind=self.attached_as.get(p.name, p.kind))
            if p.kind == "raw_tracepoint"
            else p
            for p in probes.attached
        )
        notes = probes.notes + ((self.tp_btf_refused,) if self.tp_btf_refused else ())
        return replace(
            probes,
            attached=attached,
            notes=notes,
            program={"cached": self.obj.cached, "key": self.obj.key},
        )

    @property
    def calibrating(self) -> bool:
        return self._calibrating

    def calibrate(self) -> int | None:
        """Decide the TIF_NEED_FPU_LOAD bit once enough events came; detach the probe then."""
        if not self._calibrating:
            return self.tif_bit_index
        table = self.maps["tif_cal"]
        per_cpu = [list(table[table.Key(i)]) for i in range(4)]
        not_and1 = 0
        or0 = 0
        for v in per_cpu[0]:
            not_and1 |= v
        for v in per_cpu[1]:
            or0 |= v
        n1 = sum(per_cpu[2])
        if n1 < CALIBRATION_SAMPLES:
            return None
        and1 = ~not_and1 & (2**64 - 1)
        found = [i for i, bit in enumerate(TIF_CANDIDATE_BITS) if (and1 & ~or0) >> bit & 1]
        self.tif_bit_index = found[0] if len(found) == 1 else None
        self._calibrating = False
        link = None if self.plan.calibration_held else self._tp_links.pop(CALIBRATION_TP, None)
        if link is not None:  # None: held, or detach_fpu took it (a run too short to decide)
            os.close(link)
        return self.tif_bit_index

    @property
    def tif_bit(self) -> int | None:
        i = self.tif_bit_index
        return None if i is None else TIF_CANDIDATE_BITS[i]

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        # Tasks first: a task seen freed here had counted all its events already, so the
        # counts read next hold them all (else its last keys could reach the map after
        # the counts were read, and be missed when the task is removed).
        self._add_tasks(snap, *self.maps["tasks"].arrays())
        seq = self.maps["seq"]
        k, v = self.maps["counts"].arrays()  # first: see collectors/counting.py
        # `seq` brackets the cache read alone (one batch syscall): a slot rewritten while
        # it is copied is what it guards against, and the map read (100k+ keys under
        # churn) would widen the window until a busy CPU was left out at every drain.
        before = list(seq[seq.Key(0)])
        cached = self._read_cache()
        after = list(seq[seq.Key(0)])
        unstable = {cpu for cpu, (b, a) in enumerate(zip(before, after, strict=True)) if b != a}
        counts = counting.table(k, v)  # after the reads: the window between them stays short
        snap.counts, snap.deferred = counting.combine(counts, cached, unstable)
        if unstable:
            snap.held = counting.table_of((k, v) for c, k, v in cached if c in unstable).ids
        self._add_late_tasks(snap)
        snap.in_map = counts.ids
        keys, values = self.maps["vsos"].arrays()
        for key, row in zip(
            zip(keys["vso"].tolist(), keys["pid"].tolist(), strict=True),
            _records(values),
            strict=True,
        ):
            snap.vsos[key] = row
        drops = self.maps["drops"]
        for i, name in enumerate(DROP_COUNTERS):
            snap.drops[name] = sum(drops[drops.Key(i)])
        return snap

    @staticmethod
    def _add_tasks(snap: Snapshot, keys: np.ndarray, values: np.ndarray) -> None:
        comms = np.ascontiguousarray(values["comm"]).view("S16").reshape(-1).tolist()
        for pid, row, comm in zip(keys.tolist(), _records(values, skip="comm"), comms, strict=True):
            row["comm"] = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
            snap.tasks[pid] = row

    def _add_late_tasks(self, snap: Snapshot) -> None:
        """The tasks the counts name that the tasks read (before them) did not have: they
        began in between.  A task's entry is made before its first count, so it is there
        now; without it the drain's counts would name a task with no row (in the agent,
        a row in the next segment, and a cgroup label "unknown" now)."""
        pids = set(np.unique(snap.counts.keys["pid"]).tolist()) - snap.tasks.keys()
        if not pids:
            return
        table = self.maps["tasks"]
        found = [(pid, v) for pid in sorted(pids) if (v := table.lookup(pid)) is not None]
        if found:
            vt = np.dtype(table.Leaf)
            values = np.frombuffer(b"".join(bytes(v) for _, v in found), dtype=vt)
            self._add_tasks(snap, np.array([pid for pid, _ in found]), values)

    def _read_cache(self) -> list[tuple[int, CountKey, CountVal]]:
        """(cpu, key, value) of every cache slot that holds counts."""
        out = []
        cache = self.maps["cache"]
        try:  # one syscall for all CACHE_SLOTS x CPUs (5.6+), not one per slot
            slots = [leaves for _, leaves in cache.items_lookup_batch()]
        except OSError:
            slots = [cache[cache.Key(i)] for i in range(CACHE_SLOTS)]
        for per_cpu in slots:
            for cpu, s in enumerate(per_cpu):
                if not s.traced or not s.val.count:
                    continue
                k = s.key
                out.append(
                    (
                        cpu,
                        CountKey(
                            k.pid,
                            k.tgid,
                            k.vso,
                            k.xfeatures,
                            k.event,
                            k.load_bits,
                            k.arg,
                            k.reason,
                        ),
                        CountVal(s.val.count, s.val.first_ns, s.val.last_ns),
                    )
                )
        return out

    def take_counts(
        self, ids: np.ndarray, pids: np.ndarray
    ) -> tuple[counting.Gone, counting.CountTable]:
        """Remove the keys ``ids`` (of tasks that are gone) from the shared map, exactly.

        Returns per key the count the removal took and the count in per-CPU cache slots
        right after (:class:`~fptrace.collectors.counting.Gone`).  Each map element is
        removed and read in one step, then the cache is read: whatever the kernel still
        holds of a key afterwards is in a slot, or on its way from a slot into the map, and
        ``Deltas.take(gone=…)`` accounts for both.

        The snapshot can miss a key of the ended tasks ``pids`` altogether: one in the slot
        of a CPU it left out (that CPU was evicting), or one evicted from a slot into the
        map after the map was read and before the slot was (so in neither read; a task that
        lived less than a drain).  Such a key is still in a slot when the cache is read
        here, or in the map read once more after that (no slot holds it any more, so what
        that read takes is all of it); it is taken too, and its counts returned as the
        second table: what the snapshot missed.
        """
        counts = self.maps["counts"]
        found, values = counts.pop_array(self._map_keys(counting.key_fields(ids)))
        popped = np.where(found, values["count"], 0).astype(np.int64)
        left = np.zeros(len(ids), dtype=np.int64)
        pos = {i: n for n, i in enumerate(ids.tolist())}
        slots = counting.table_of((key, val) for _, key, val in self._read_cache())
        held = counting.member(slots.ids, pos)
        for i, n in zip(slots.ids[held].tolist(), slots.count[held].tolist(), strict=True):
            left[pos[i]] += n
        missed = slots.rows(~held & np.isin(slots.keys["pid"], pids))
        if len(pids):
            k, _ = counts.arrays()
            k = k[np.isin(k["pid"], pids)]
            known = pos.keys() | set(missed.ids.tolist())
            late = k[~counting.member(counting.key_ids(k), known)]
            if len(late):
                found, values = counts.pop_array(late)
                if found.any():
                    missed = counting.CountTable.concat(
                        missed, counting.table(late[found], values[found])
                    )
        # A key found in a slot stays there (all of it is "left"); one found in the map
        # was taken whole.
        in_slot = counting.member(missed.ids, slots.pos)
        n = missed.count
        gone = counting.Gone(
            np.concatenate([ids, missed.ids]),
            np.concatenate([popped, np.where(in_slot, 0, n)]),
            np.concatenate([left, np.where(in_slot, n, 0)]),
        )
        return gone, missed

    def _map_keys(self, keys: np.ndarray) -> np.ndarray:
        """:data:`counting.KEY_DTYPE` keys in the counts map's own key layout."""
        out = np.zeros(len(keys), dtype=np.dtype(self.maps["counts"].Key))
        for name in counting.KEY_FIELDS:
            out[name] = keys[name]
        return out

    def forget(
        self,
        tasks: dict[int, int],
        vsos: Iterable[tuple[int, int]],
        targets: Iterable[int],
    ) -> None:
        """Remove drained exited tasks from the kernel's maps (their rows are written;
        their counts were taken with :meth:`take_counts`).

        ``tasks``: pid -> start_ns; an entry is removed only if it is still that task (the
        pid may belong to a new one by now).
        """
        table = self.maps["tasks"]
        pids, infos = table.arrays()  # one batch read, not a lookup per task
        want = np.array([tasks.get(p, -1) for p in pids.tolist()], dtype=np.int64)
        same = (infos["exit_ns"] != 0) & (infos["start_ns"].astype(np.int64) == want)
        gone = pids[same].tolist()
        table.delete_many(gone)
        self.maps["vsos"].delete_many([(addr, pid, 0) for addr, pid in vsos])
        if "targets" in self.maps:  # not a pid a new traced task has taken meanwhile
            removed = set(gone)
            self.maps["targets"].delete_many([pid for pid in targets if pid in removed])
