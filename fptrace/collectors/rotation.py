"""`fptrace agent`'s rotations: a long run cut into complete recordings, probes attached.

At a rotation the recorder has just drained: the current recording is finished (its
manifest says it is segment N of the agent's run, with the losses and drains of its own
span) and the next one opens in the partition of its start time
(recording/partitions.py).  The kernel's counts are cumulative and the recorder writes
deltas, so a count belongs to exactly one segment: summing the segments gives the run.

The merge of a segment's parts into its tables runs in a niced child process
(recording/finish.py), not in the agent: an hour of parts takes ~0.5 s of CPU to merge,
which would hold up the drains; the rotation itself stays a few milliseconds of the
agent's CPU.  The agent waits for its finishers when it stops, and finishes at start what
a previous run handed off and never finished.  A segment that cannot be finished (a full
disk) keeps its parts, which the loader reads as an unfinished recording; the agent goes on
tracing either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fptrace.collectors.recorder import Recorder
from fptrace.recording.manifest import Manifest, Segment
from fptrace.recording.outdir import invoking_user
from fptrace.recording.partitions import segment_path
from fptrace.recording.writer import RecordingWriter

WriteError = Callable[[Exception], None]


@dataclass
class Rotation:
    """When and where the next segment starts, and what the current one carries over."""

    root: Path
    host: str
    every_s: float
    config_text: str | None = None  # the kernel config, written into every segment
    on_write_error: WriteError | None = None
    on_rotate: Callable[[Path], None] | None = None  # a finished segment (retention, metrics)
    index: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    agent_started_at: str = ""
    previous: str | None = None
    drops_base: dict[str, int] = field(default_factory=dict)
    next_at: float = 0.0  # time.monotonic() of the next rotation
    rotation_cpu_s: list[float] = field(default_factory=list)  # tracer CPU per rotation
    current: Path | None = None  # the segment being written
    opening: Manifest | None = None  # its manifest as opened (probes, host, target)
    finishers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    finish_failures: int = 0

    def __post_init__(self) -> None:
        self.agent_started_at = self.agent_started_at or self.started_at.isoformat()
        self.next_at = time.monotonic() + self.every_s

    def first_writer(self) -> RecordingWriter:
        return self._writer(self.started_at)

    def _writer(self, started: datetime) -> RecordingWriter:
        path = segment_path(self.root, self.host, started)
        self.current = path
        made = [p for p in (path.parent.parent, path.parent) if not p.exists()]
        writer = RecordingWriter(path)
        owner = invoking_user()
        if owner is not None:  # the partitions, like the recordings, are the user's
            for p in made:
                os.lchown(p, *owner)
        writer.on_write_error = self.on_write_error
        if self.config_text is not None:
            try:
                writer.write_kernel_config(self.config_text)
            except Exception as exc:  # a full disk: the segment goes on without it
                if self.on_write_error is None:
                    raise
                self.on_write_error(exc)
        return writer

    def finish_in_background(self, paths: list[Path]) -> None:
        """Merge handed-off segments in a niced child process (recording/finish.py)."""
        self.reap()
        self.finishers.append(
            subprocess.Popen(  # nice(1), not preexec_fn: the agent has threads
                ["nice", "-n", "19", sys.executable, "-m", "fptrace.recording.finish"]
                + [str(p) for p in paths],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        )

    def reap(self, wait: bool = False) -> None:
        """Collect finished finishers (all of them, with ``wait``)."""
        left = []
        for p in self.finishers:
            code = p.wait() if wait else p.poll()
            if code is None:
                left.append(p)
            elif code != 0:
                self.finish_failures += 1
        self.finishers = left

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def mark(self, manifest: Manifest, recorder: Recorder) -> Manifest:
        """``manifest`` (closed by closing_manifest) as this segment's: its own losses."""
        drops = {k: max(v - self.drops_base.get(k, 0), 0) for k, v in manifest.drops.items()}
        return manifest.with_(
            started_at=self.started_at.isoformat(),
            drops=drops,
            segment=Segment(
                index=self.index,
                agent_started_at=self.agent_started_at,
                previous=self.previous,
                parts_dropped=recorder.writer.parts_dropped,
            ),
        )

    def rotate(self, recorder: Recorder, closed: Manifest, opening: Manifest) -> Manifest | None:
        """Finish the current segment with ``closed`` (its manifest), open the next one and
        give it to ``recorder``; returns the new segment's manifest (``opening`` with its
        start), or None if there was no room for a new one (the current one goes on, and
        the next rotation tries again)."""
        cpu0 = time.process_time()
        old = recorder.writer
        self.next_at += self.every_s
        while self.next_at <= time.monotonic():  # a late rotation does not make up for it
            self.next_at += self.every_s
        started = datetime.now(UTC)
        current = self.current
        try:  # the next segment first: where there is no room for it, the current one goes on
            writer = self._writer(started)
        except Exception as exc:
            self.current = current
            if self.on_write_error is None:
                raise
            self.on_write_error(exc)
            return None
        finished = self.mark(closed, recorder)
        try:
            old.hand_off(finished)
            self.finish_in_background([old.path])
        except Exception as exc:  # a full disk: the parts stay, readable as they are
            old.close()
            if self.on_write_error is None:
                raise
            self.on_write_error(exc)
        self.drops_base = dict(closed.drops)
        self.previous = old.path.name
        self.index += 1
        self.started_at = started
        recorder.rotate(writer)
        opening = opening.with_(
            started_at=self.started_at.isoformat(),
            attach_monotonic_ns=recorder.t0,
            segment=Segment(self.index, self.agent_started_at, self.previous),
        )
        self.opening = opening
        writer.write_manifest(opening)  # on a full disk: on_write_error, and on
        self.rotation_cpu_s.append(time.process_time() - cpu0)
        if self.on_rotate is not None:
            self.on_rotate(old.path)
        return opening
