"""What the recorder needs of a backend: a snapshot of cumulative state, and its lifecycle.

Two backends implement it: the BPF one (``bpf_session.BpfSession``: kernel maps, a per-CPU
cache, ended tasks removed from the maps) and the ftrace one (``ftrace.FtraceSession``: a
private tracefs instance parsed in user space, nothing to remove).  The recorder
(collectors/recorder.py) sees only this protocol: no ``backend ==``, no ``getattr``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np

from fptrace.collectors import counting
from fptrace.collectors.ring import RingReader
from fptrace.recording.manifest import Probes


@dataclass
class Snapshot:
    """Cumulative in-kernel state at one moment."""

    counts: counting.CountTable = field(default_factory=counting.empty)
    vsos: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    deferred: int = 0  # cached counts left to a later snapshot (a CPU evicted meanwhile)
    in_map: np.ndarray | None = None  # ids of the keys in the shared map (not the cache)
    held: np.ndarray | None = None  # ids in the slots of the CPUs whose counts were left out


class Session(Protocol):
    """A loaded, attachable backend (use as a context manager: probes always detached)."""

    @property
    def ring(self) -> RingReader | None:
        """--events through a BPF ring, or None."""

    @property
    def keep_events(self) -> bool:
        """--events parsed in user space (take_events), not through a ring."""

    @property
    def calibrating(self) -> bool:
        """The TIF_NEED_FPU_LOAD bit is still being found."""

    @property
    def tif_bit_index(self) -> int | None:
        """Which of TIF_CANDIDATE_BITS the events' load_bits carry, if known."""

    @property
    def load_method(self) -> str | None:
        """How load_fpu is known, for the manifest (None: calibrated, the default)."""

    @property
    def removes_tasks(self) -> bool:
        """Ended tasks are removed from kernel state (take_counts, forget)."""

    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def add_targets(self, tgids: list[int]) -> None: ...
    def add_cgroups(self, ids: list[int]) -> None: ...
    def attach_fpu(self) -> None: ...
    def detach_fpu(self) -> None: ...
    def calibrate(self) -> int | None: ...
    @property
    def tif_bit(self) -> int | None: ...
    def snapshot(self) -> Snapshot: ...
    def partial_events(self) -> np.ndarray: ...
    def take_events(self) -> np.ndarray: ...
    def take_counts(
        self, ids: np.ndarray, pids: np.ndarray
    ) -> tuple[counting.Gone, counting.CountTable]: ...
    def forget(
        self, tasks: dict[int, int], vsos: Iterable[tuple[int, int]], targets: Iterable[int]
    ) -> None: ...
    def describe_probes(self, probes: Probes) -> Probes: ...
