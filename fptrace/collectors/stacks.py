"""`record --stacks`: the kernel's stack samples of saves with AVX/AVX-512/AMX state live,
as the stack_samples and stacks tables.

At each drain the processes that have new samples get their memory maps read (they may be
gone by the end); after the run the kernel's ``stack_counts`` and ``stack_traces`` are read
once and every stack is symbolized (collectors/symbols.py).  User stacks are walked by the
kernel with frame pointers: code built without them (most distribution libraries) shows
its leaf function and may lose callers above it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from fptrace.collectors.symbols import (
    UNKNOWN,
    BuildIds,
    Frame,
    KernelSymbols,
    MapEntry,
    file_frame,
    read_maps,
    user_frame,
)
from fptrace.probes.plan import REASON_NAMES

MAX_DEPTH = 127  # PERF_MAX_STACK_DEPTH: the stack maps' values
# struct bpf_stack_build_id: the user stacks map's frames (uapi/linux/bpf.h)
BUILD_ID_FRAME = np.dtype(
    {
        "names": ["status", "build_id", "offset_or_ip"],
        "formats": ["<i4", ("u1", 20), "<u8"],
        "offsets": [0, 4, 24],
        "itemsize": 32,
    }
)
BUILD_ID_EMPTY, BUILD_ID_VALID, BUILD_ID_IP = 0, 1, 2


class StackCollector:
    def __init__(self, maps: dict[str, Any]) -> None:
        self.counts = maps["stack_counts"]
        self.user = maps["user_stacks"]
        self.kernel = maps["kernel_stacks"]
        self.maps_of: dict[int, list[MapEntry]] = {}
        self.build_ids = BuildIds()
        self.task_of: dict[int, int] = {}  # pid -> task id, named while the task was known

    def drain(self, task_of: Callable[[int], int] | None = None) -> None:
        """Read the memory maps of processes with stack samples not seen before: their
        binaries name the build-ids, and frames the kernel could only give as an address.
        Name the samples' tasks while the recorder still knows them (``task_of``)."""
        keys, _ = self.counts.arrays()
        if task_of is not None:
            for pid in set(keys["pid"].tolist()) - self.task_of.keys():
                self.task_of[pid] = task_of(pid)
        for tgid in set(keys["tgid"].tolist()) - self.maps_of.keys():
            self.maps_of[tgid] = read_maps(tgid)
            for m in self.maps_of[tgid]:
                self.build_ids.add(m.path)

    def _kernel_addresses(self, stack_id: int) -> list[int]:
        value = self.kernel.lookup(stack_id)
        if value is None:
            return []
        ips = np.frombuffer(bytes(value), dtype=np.uint64, count=MAX_DEPTH)
        n = int(np.argmin(ips != 0)) if (ips == 0).any() else MAX_DEPTH
        return [int(a) for a in ips[:n]]

    def _user_frames(self, stack_id: int, tgid: int, candidates: list[str]) -> tuple[Frame, ...]:
        value = self.user.lookup(stack_id)
        if value is None:
            return ()
        out = []
        for f in np.frombuffer(bytes(value), dtype=BUILD_ID_FRAME, count=MAX_DEPTH):
            status = int(f["status"])
            if status == BUILD_ID_EMPTY:
                break
            if status == BUILD_ID_VALID:
                bid = bytes(f["build_id"]).hex()
                path = self.build_ids.find(bid, candidates)
                out.append(
                    file_frame(path, int(f["offset_or_ip"]))
                    if path
                    else Frame(UNKNOWN, f"build-id {bid}", int(f["offset_or_ip"]), bid)
                )
            else:  # the kernel could not read the build-id: an address, for the maps
                out.append(user_frame(int(f["offset_or_ip"]), self.maps_of.get(tgid, [])))
        return tuple(out)

    def tables(
        self, task_of: Callable[[int], int], commands: list[str] | None = None
    ) -> tuple[list[dict], list[dict]]:
        """(stack_samples rows, stacks rows); ``task_of`` names a pid's task; ``commands``
        are the traced programs' names or paths (argv[0]), where build-ids are looked for
        before the library directories."""
        self.drain()
        candidates = [p for p in (_which(c) for c in commands or []) if p]
        keys, values = self.counts.arrays()
        ksyms: KernelSymbols | None = None
        ids: dict[tuple[Frame, ...], int] = {}
        frames_of: dict[tuple[int, int, bool], int | None] = {}

        def stack(stack_id: int, tgid: int, kernel: bool) -> int | None:
            nonlocal ksyms
            if stack_id < 0:
                return None
            memo = (stack_id, 0 if kernel else tgid, kernel)
            if memo in frames_of:
                return frames_of[memo]
            if kernel:
                ksyms = ksyms or KernelSymbols()
                frames = tuple(ksyms.frame(a) for a in self._kernel_addresses(stack_id))
            else:
                frames = self._user_frames(stack_id, tgid, candidates)
            sid = ids.setdefault(frames, len(ids)) if frames else None
            frames_of[memo] = sid
            return sid

        samples = []
        for k, n in zip(keys.tolist(), values.tolist(), strict=True):
            pid, tgid, xf, ustack, kstack, reason = k[0], k[1], k[2], k[3], k[4], k[5]
            samples.append(
                {
                    "task": self.task_of.get(pid) or task_of(pid),
                    "pid": pid,
                    "tgid": tgid,
                    "xfeatures": xf,
                    "reason": REASON_NAMES.get(reason),
                    "user_stack": stack(ustack, tgid, False),
                    "kernel_stack": stack(kstack, tgid, True),
                    "samples": int(n),
                }
            )
        stacks = [
            {
                "stack": sid,
                "depth": depth,
                "function": f.function,
                "module": f.module,
                "offset": f.offset if f.offset is not None and 0 <= f.offset < 1 << 63 else None,
                "build_id": f.build_id,
                "kernel": f.module == "[kernel]",
            }
            for frames, sid in ids.items()
            for depth, f in enumerate(frames)
        ]
        return samples, stacks


def _which(command: str) -> str | None:
    if os.sep in command:
        return command if os.path.isfile(command) else None
    return shutil.which(command)
