"""`record --events`: the per-event stream, from the BPF ring (a reader thread) or the
ftrace backend's parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from fptrace.collectors.ring import EVENT_DTYPE as RING_DTYPE
from fptrace.collectors.ring import RingReader
from fptrace.collectors.session import Session

POLL_S = 0.005  # ring consumer period


class EventStream:
    """Empties the BPF ring in a thread (so it never fills), converts in bulk at each drain."""

    def __init__(self, ring: RingReader, pending: Callable[[], np.ndarray]) -> None:
        self.ring = ring
        self.pending = pending  # the events still in the per-CPU batches, not in the ring
        self.horizon = 0  # at the last take: no event older than this was still unread
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fptrace-ring", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Read every few ms, not in a tight loop: batches arrive every ~20 us at full rate, and
        # per-call overhead on tiny reads would cost more CPU than the events themselves.  The
        # ring holds far more than a pause's worth (256 MiB: ~4 s at 1.5 M events/s).
        while not self._stop.is_set():
            with self._lock:  # take() reads too: one reader at a time moves the position
                got = self.ring.read()
                if len(got):
                    self._chunks.append(got)
            time.sleep(POLL_S)

    def stop(self, partial: np.ndarray) -> None:
        """Stop the thread; take what is still in the ring, then the unfinished batches."""
        self._stop.set()
        self._thread.join()
        while len(got := self.ring.read()):
            self._chunks.append(got)
        self._chunks.append(partial)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def abort(self) -> None:
        """Stop the thread without reading (the session is going away)."""
        self._stop.set()
        self._thread.join()

    def take(self) -> np.ndarray:
        """Every event committed so far.  Sets ``horizon``: an event not taken yet is either
        in a CPU's unfinished batch (looked at first) or newer than that look, except a
        batch being committed at that very moment, which the next take will have."""
        if self.running:
            seen = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            waiting = self.pending()["ts"]
            self.horizon = min(seen, int(waiting.min())) if len(waiting) else seen
            with self._lock:
                if len(got := self.ring.read()):
                    self._chunks.append(got)
        with self._lock:
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=RING_DTYPE)


class ParsedEvents:
    """The ftrace backend's events: its parser keeps them; the same interface as EventStream."""

    running = False
    horizon = 0  # this backend removes no task: no ended task is kept for its events

    def __init__(self, session: Session) -> None:
        self.session = session
        self._tail: list[np.ndarray] = []

    def stop(self, partial: np.ndarray) -> None:
        self._tail.append(partial)

    def take(self) -> np.ndarray:
        parts = [self.session.take_events(), *self._tail]
        self._tail = []
        return np.concatenate(parts)
