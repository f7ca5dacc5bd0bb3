"""Load the BPF program with BCC, attach the planned probes, and snapshot its maps.

Counts in the kernel are cumulative and live in two places: the per-CPU cache slots and
the shared ``counts`` map (see fptrace.bpf.c).  :meth:`BpfSession.snapshot` reads both and
retries when a per-CPU eviction sequence number moved meanwhile, so that no count is seen
twice or missed.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fptrace.collectors.ring import RingReader
from fptrace.collectors.tp_btf import load_tp_btf, open_tp_btf
from fptrace.errors import EnvironmentProblem
from fptrace.probes.plan import DROP_COUNTERS, TIF_CANDIDATE_BITS, ProbePlan

CountKey = tuple[int, int, int, int, int, int, int]  # pid, tgid, vso, xfeatures, event, bits, arg
CountVal = tuple[int, int, int]  # count, first_ns, last_ns (kernel monotonic; last: see .c)

CALIBRATION_SAMPLES = 16  # load=1 events needed before the TIF bit is trusted


def bpf_source() -> str:
    return resources.files("fptrace.probes").joinpath("fptrace.bpf.c").read_text()


def import_bcc() -> Any:
    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EnvironmentProblem(
            "BCC's Python module is not importable: install Debian's python3-bpfcc "
            "(make setup) and run fptrace from its .venv or the fptrace launcher"
        ) from exc
    return bcc


@dataclass
class Snapshot:
    """Cumulative in-kernel state at one moment."""

    counts: dict[CountKey, CountVal] = field(default_factory=dict)
    vsos: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    retries: int = 0


def _struct_dict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name, *_ in obj._fields_}


class BpfSession:
    """One loaded program.  Use as a context manager so probes are always detached."""

    def __init__(self, plan: ProbePlan, header_dir: Path | None) -> None:
        self.plan = plan
        if header_dir is not None:
            os.environ["BCC_KERNEL_SOURCE"] = str(header_dir)
        self._tp_btf: dict[str, int] = {}  # probe name -> loaded tp_btf program fd
        self._tp_btf_links: list[int] = []
        self.tp_btf_refused: str | None = None  # why the raw tracepoint build was taken
        self.bpf = self._compile(plan.cflags())
        if "FPU_DIRECT" in plan.macros:
            try:
                self._load_tp_btf()
            except OSError as exc:  # before any target or attach: rebuild as raw tracepoints
                self.tp_btf_refused = f"tp_btf refused ({exc.strerror}): raw tracepoints instead"
                self._close_tp_btf()
                self.bpf.cleanup()
                self.bpf = self._compile([f for f in plan.cflags() if "FPU_DIRECT" not in f])
        self.ring: RingReader | None = None
        if "EVENTS" in plan.macros:
            size = plan.macros["EVENT_PAGES"] * mmap.PAGESIZE
            self.ring = RingReader(self.bpf["events"].map_fd, size)
        self._calibrating = "CALIBRATE_TIF" in plan.macros
        self.tif_bit_index: int | None = None
        for note in plan.notes:  # calibrated by an earlier run on this kernel build
            if note.startswith("TIF_NEED_FPU_LOAD is bit "):
                self.tif_bit_index = TIF_CANDIDATE_BITS.index(int(note.split()[3]))
        self._attached_raw: list[str] = []
        self.attached_as: dict[str, str] = {}  # probe name -> "tp_btf" | "raw_tracepoint"

    @staticmethod
    def _compile(cflags: list[str]) -> Any:
        bcc = import_bcc()
        try:
            # Classic tracepoints (TRACEPOINT_PROBE) attach here; the FPU ones in attach_fpu().
            return bcc.BPF(text=bpf_source().encode(), cflags=cflags, debug=0)
        except Exception as exc:  # BCC raises bare Exception for compile/load errors
            raise EnvironmentProblem(
                f"BCC could not compile or load the probes ({str(exc).splitlines()[0]}): "
                "run `fptrace doctor` (BCC printed the compiler's messages above)"
            ) from exc

    def _load_tp_btf(self) -> None:
        """Hand BCC's bytecode of each btf__* function to the verifier as a tp_btf program."""
        lib = import_bcc().lib
        module = self.bpf.module
        for probe in self.plan.attached():
            if probe.kind != "raw_tracepoint":
                continue
            name = "btf__" + probe.fn_name.removeprefix("fpu__")
            start = lib.bpf_function_start(module, name.encode())
            size = lib.bpf_function_size(module, name.encode())
            insns = ctypes.string_at(start, size)
            lic = lib.bpf_module_license(module)
            self._tp_btf[probe.name] = load_tp_btf(insns, probe.btf_id, lic, name)

    def _close_tp_btf(self) -> None:
        for fd in [*self._tp_btf_links, *self._tp_btf.values()]:
            os.close(fd)
        self._tp_btf_links, self._tp_btf = [], {}

    def __enter__(self) -> BpfSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_tp_btf", None) or getattr(self, "_tp_btf_links", None):
            self._close_tp_btf()
        ring = getattr(self, "ring", None)
        if ring is not None:
            ring.close()
            self.ring = None
        bpf = getattr(self, "bpf", None)
        if bpf is not None:
            bpf.cleanup()
            self.bpf = None

    def add_targets(self, tgids: list[int]) -> None:
        table = self.bpf["targets"]
        for tgid in tgids:
            table[table.Key(tgid)] = ctypes.c_uint8(1)

    def attach_fpu(self) -> None:
        """Attach the FPU events: tp_btf programs where loaded, else BCC's raw tracepoints."""
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
                self.bpf.attach_raw_tracepoint(tp=tp.encode(), fn_name=probe.fn_name.encode())
            except Exception as exc:
                raise EnvironmentProblem(
                    f"cannot attach {tp}: {exc}: run `fptrace doctor`"
                ) from exc
            self._attached_raw.append(tp)
            self.attached_as[probe.name] = "raw_tracepoint"

    def detach_fpu(self) -> None:
        """Detach the FPU events: nothing is counted after this (the final snapshot)."""
        for tp in self._attached_raw:
            self.bpf.detach_raw_tracepoint(tp=tp.encode())
        self._attached_raw = []
        for fd in self._tp_btf_links:
            os.close(fd)
        self._tp_btf_links = []

    def partial_events(self) -> Any:
        """Events still in the per-CPU batches (call after detach_fpu)."""
        from fptrace.collectors.ring import partial_batches

        table = self.bpf["batches"]
        leaves = table[table.Key(0)]
        return partial_batches([bytes(leaf) for leaf in leaves])

    @property
    def calibrating(self) -> bool:
        return self._calibrating

    def calibrate(self) -> int | None:
        """Decide the TIF_NEED_FPU_LOAD bit once enough events came; detach the probe then."""
        if not self._calibrating:
            return self.tif_bit_index
        table = self.bpf["tif_cal"]
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
        self.bpf.detach_tracepoint(b"x86_fpu:x86_fpu_regs_activated")
        return self.tif_bit_index

    @property
    def tif_bit(self) -> int | None:
        i = self.tif_bit_index
        return None if i is None else TIF_CANDIDATE_BITS[i]

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        seq = self.bpf["seq"]
        for attempt in range(8):
            before = list(seq[seq.Key(0)])
            cached = self._read_cache()
            counts = self._read_counts()
            after = list(seq[seq.Key(0)])
            if before == after:
                break
            snap.retries = attempt + 1
        for key, (count, first, last) in cached:
            old = counts.get(key)
            if old is None:
                counts[key] = (count, first, last)
            else:
                counts[key] = (old[0] + count, min(old[1], first), max(old[2], last))
        snap.counts = counts
        for k, v in self.bpf["vsos"].items():
            snap.vsos[(k.vso, k.pid)] = _struct_dict(v)
        for k, v in self.bpf["tasks"].items():
            info = _struct_dict(v)
            info["comm"] = bytes(v.comm).split(b"\0", 1)[0].decode("utf-8", "replace")
            snap.tasks[k.value] = info
        drops = self.bpf["drops"]
        for i, name in enumerate(DROP_COUNTERS):
            snap.drops[name] = sum(drops[drops.Key(i)])
        return snap

    def _read_cache(self) -> list[tuple[CountKey, CountVal]]:
        out = []
        cache = self.bpf["cache"]
        for i in range(64):
            for s in cache[cache.Key(i)]:
                if not s.traced or not s.val.count:
                    continue
                k = s.key
                out.append(
                    (
                        (k.pid, k.tgid, k.vso, k.xfeatures, k.event, k.load_bits, k.arg),
                        (s.val.count, s.val.first_ns, s.val.last_ns),
                    )
                )
        return out

    def _read_counts(self) -> dict[CountKey, CountVal]:
        table = self.bpf["counts"]
        try:
            items = list(table.items_lookup_batch())
        except Exception:  # kernels before 5.6 have no batch ops
            items = list(table.items())
        out: dict[CountKey, CountVal] = {}
        for k, v in items:
            key = (k.pid, k.tgid, k.vso, k.xfeatures, k.event, k.load_bits, k.arg)
            out[key] = (v.count, v.first_ns, v.last_ns)
        return out
