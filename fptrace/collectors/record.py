"""`fptrace record`: wire probes, collectors and the recording writer together.

Order matters for correctness:
1. validate everything the user gave (root, targets, output) before touching the kernel;
2. fork the command *blocked* on a pipe, so that nothing it does precedes the probes;
3. load the program, seed the target map, attach the switch-path probes, release the command;
4. every interval: snapshot the cumulative maps, write the deltas as a part;
5. on exit of the command / Ctrl-C / SIGTERM / --duration: final snapshot, merge, manifest.
"""

from __future__ import annotations

import mmap
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fptrace import __version__
from fptrace.collectors.bpf_session import BpfSession
from fptrace.collectors.cgroups import cgroup_ids
from fptrace.collectors.child import BlockedChild
from fptrace.collectors.host import collect_host
from fptrace.collectors.options import (
    RecordOptions,
    Status,
    check_options,
    choose_backend,
    default_output,
    plan_options,
    save_tif_bit,
)
from fptrace.collectors.procfs import (
    descendants,
    process_running,
)
from fptrace.collectors.recorder import DrainListener, Recorder
from fptrace.collectors.ring import EVENT_DTYPE as RING_DTYPE
from fptrace.collectors.rotation import Rotation
from fptrace.collectors.session import Session, Snapshot
from fptrace.errors import EnvironmentProblem, OutputWriteError
from fptrace.probes.headers import choose_headers
from fptrace.probes.kernel import LiveKernel, find_tracefs
from fptrace.probes.plan import (
    ProbePlan,
    plan_probes,
)
from fptrace.recording.manifest import (
    Drains,
    Events,
    LoadFpu,
    Manifest,
    Probe,
    Probes,
    Segment,
    Target,
)
from fptrace.recording.writer import RecordingWriter


@dataclass
class RecordResult:
    path: Path
    exit_code: int  # the command's, or 0
    manifest: Manifest
    notes: list[str]


def probe_summary(plan: ProbePlan) -> Probes:
    def item(p: Any) -> Probe:
        return Probe(name=p.name, kind=p.kind, required=p.required, reason=p.reason)

    return Probes(
        attached=tuple(item(p) for p in plan.attached()),
        skipped=tuple(item(p) for p in plan.skipped()),
        notes=tuple(plan.notes),
    )


class _Stop:
    """Signal state: first SIGINT/SIGTERM asks to stop (or is forwarded to the command)."""

    def __init__(self, child: BlockedChild | None) -> None:
        self.child = child
        self.requested = False
        self.count = 0

    def __call__(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.child is not None and self.child.status is None and self.count == 1:
            if signum == signal.SIGTERM:
                self.child.signal(signum)  # SIGINT from a terminal reaches the child itself
            return
        self.requested = True


def record(
    opts: RecordOptions,
    status: Status | None = None,
    note: Status | None = None,
    on_drain: DrainListener | None = None,
    rotation: Rotation | None = None,
) -> RecordResult:
    """Run a recording to completion.  Raises FptraceError subclasses for the user.

    ``on_drain`` sees every interval as it is written (`fptrace top`'s live view);
    ``rotation`` cuts the run into a recording per period (`fptrace agent`)."""
    check_options(opts)
    t_start = time.monotonic()
    out = opts.output or default_output()
    notes: list[str] = []

    def say(msg: str) -> None:
        notes.append(msg)
        if note is not None:
            note(msg)

    # Everything that can refuse the run comes before the output directory exists.
    tracefs = find_tracefs(mount=True)
    if tracefs is None:
        raise EnvironmentProblem(
            "tracefs is not mounted and cannot be: mount -t tracefs nodev /sys/kernel/tracing"
        )
    env = LiveKernel(tracefs)
    plan = plan_probes(env, plan_options(opts))
    backend = choose_backend(opts, plan, say)
    facts = collect_host()
    if rotation is not None:
        rotation.config_text = facts.config_text
        writer = rotation.first_writer()
    else:
        writer = RecordingWriter(out, force=opts.force)
        if facts.config_text is not None:
            writer.write_kernel_config(facts.config_text)
    layout = facts.layout
    headers = choose_headers(env.release) if backend == "bcc" else None
    if headers is not None and headers.note:
        say(headers.note)

    child = BlockedChild(opts.command, opts.keep_root) if opts.command else None
    started_at = datetime.now(UTC)
    manifest = Manifest(
        fptrace_version=__version__,
        status="recording",
        started_at=started_at.isoformat(),
        command_line=tuple(opts.argv),
        interval_s=opts.interval,
        target=Target(
            mode=opts.mode,
            command=tuple(opts.command) or None,
            pids=tuple(opts.pids) or None,
            follow_children=opts.follows_processes,
            cgroups=tuple(opts.cgroups) or None,
        ),
        probes=probe_summary(plan),
        host=facts.host,
        backend=backend,
    )
    stop = _Stop(child)
    recorder: Recorder | None = None
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        session: Session
        if backend == "bcc":
            session = BpfSession(plan, headers.path if headers else None)
        else:
            from fptrace.collectors.ftrace import FtraceSession  # only this backend needs it

            traced = FtraceSession(
                tracefs, layout, os.getpid(), events=opts.events, xstate=facts.host.xstate
            )
            for name in traced.cleaned:
                say(f"removed tracing instance {name} left by a killed fptrace")
            session = traced
        with session:
            if opts.cgroups:
                session.add_cgroups(cgroup_ids(opts.cgroups))
            if opts.follows_processes:  # -a and --cgroup have no target map
                session.add_targets([child.pid] if child is not None else opts.pids)
                if child is None:  # -p: seeded first, so what they fork from now on is
                    # followed in the kernel; then what they had forked already
                    session.add_targets(sorted(descendants(opts.pids)))
            session.attach_fpu()
            manifest = manifest.with_(probes=session.describe_probes(manifest.probes))
            recorder = Recorder(writer, session, layout, facts.host.xstate, on_drain)
            try:
                exit_code, manifest = _record_session(
                    opts, session, recorder, writer, plan, manifest, child, stop, status, t_start,
                    note, rotation,
                )  # fmt: skip
            finally:
                if recorder.events is not None and recorder.events.running:
                    recorder.events.abort()  # before the session (and its ring) goes away
    except BaseException:
        # A fatal error (disk full…) while the command runs: do not leave it running untraced
        # behind the user's back; what was recorded so far stays in .parts/.
        if child is not None and not child.released:
            child.abandon()  # it exits without running the command
        elif child is not None and child.status is None:
            child.signal(signal.SIGTERM)
            child.wait()
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        writer.close()
        if rotation is not None and recorder is not None:
            recorder.writer.close()
    return RecordResult(
        recorder.writer.path if recorder else writer.path, exit_code, manifest, notes
    )


def _record_session(
    opts: RecordOptions,
    session: Session,
    recorder: Recorder,
    writer: RecordingWriter,
    plan: ProbePlan,
    manifest: Manifest,
    child: BlockedChild | None,
    stop: _Stop,
    status: Status | None,
    t_start: float,
    note: Status | None = None,
    rotation: Rotation | None = None,
) -> tuple[int, Manifest]:
    """From attached probes to a finished recording: the command's exit code, the manifest."""
    manifest = manifest.with_(
        attach_monotonic_ns=recorder.t0, startup_s=round(time.monotonic() - t_start, 3)
    )
    rotate: Callable[[], None] | None = None
    if rotation is not None:
        manifest = manifest.with_(segment=Segment(0, rotation.agent_started_at))
        opening = rotation.opening = manifest

        def rotate() -> None:
            nonlocal manifest
            closed = closing_manifest(manifest, recorder, session, plan, opts.interval)
            manifest = rotation.rotate(recorder, closed, opening) or manifest

    writer.write_manifest(manifest)
    if note is not None:  # scripts wait on this line (or on the manifest) to know it is live
        note(attached_line(manifest, writer.path, opts))
    if child is not None:
        child.release()
    exit_code = _loop(opts, recorder, child, stop, status, rotation, rotate)
    time.sleep(0.05)  # let the last switches of exiting tasks land
    session.detach_fpu()  # the final snapshot and the events then cover the same span
    if recorder.events is not None:
        partial = session.partial_events() if session.ring is not None else np.empty(0, RING_DTYPE)
        recorder.events.stop(partial)
    recorder.drain()  # calibrates too, if the run was too short to have done it
    if recorder.stacks is not None:
        try:
            samples, stacks = recorder.stacks.tables(recorder.tasks, opts.command[:1])
            recorder.writer.append("stack_samples", samples)
            recorder.writer.append("stacks", stacks)
        except (OSError, ValueError, pa.ArrowException) as exc:  # the counts are kept
            if note is not None:
                note(f"stacks left out: {exc}")
    if session.tif_bit is not None:
        save_tif_bit(session.tif_bit)
    manifest = closing_manifest(manifest, recorder, session, plan, opts.interval)
    manifest = manifest.with_(
        target=replace(manifest.target, exit_code=exit_code if child is not None else None)
    )
    if rotation is not None:
        manifest = rotation.mark(manifest, recorder)
    try:
        recorder.writer.finalize(manifest)
    except (OSError, OutputWriteError) as exc:
        if rotation is None or rotation.on_write_error is None:
            raise
        rotation.on_write_error(exc)  # the agent's last segment keeps its parts
    return exit_code, manifest


def closing_manifest(
    manifest: Manifest, recorder: Recorder, session: Session, plan: ProbePlan, interval_s: float
) -> Manifest:
    """The manifest of a recording that ends at the recorder's last drain (the run's end, or
    a rotation): its span, drains, events, losses and how load_fpu was read."""
    snap = recorder.last or Snapshot()
    drops = dict(snap.drops)
    events = Events(counted=recorder.total_events)
    if recorder.events is not None:
        events = Events(
            counted=recorder.total_events,
            recorded=recorder.events_written,
            # The BPF ring's size; the ftrace backend has none (its buffer is ftrace's own).
            ring_bytes=plan.macros.get("EVENT_PAGES", 0) * mmap.PAGESIZE
            if session.ring is not None
            else 0,
            lost=drops.get("ring_full", 0) + drops.get("ftrace_overrun", 0),
        )
    return manifest.with_(
        status="complete",
        ended_at=datetime.now(UTC).isoformat(),
        duration_s=round((recorder.drained_at - recorder.t0) / 1e9, 3),
        intervals=recorder.interval,
        drains=drain_lateness(recorder.lateness_ns, interval_s),
        events=events,
        drops=drops,
        load_fpu=LoadFpu(
            tif_bit=session.tif_bit,
            method=session.load_method
            or (
                "calibrated against the regs_activated record's load_fpu"
                if session.tif_bit is not None
                else "unknown: load_fpu is null"
            ),
        ),
    )


def drain_lateness(late_ns: list[int], interval_s: float) -> Drains:
    """How late the recorder's drains came: a busy machine delays them (it is a process too)."""
    if not late_ns:
        return Drains()
    ordered = sorted(late_ns)
    return Drains(
        scheduled=len(ordered),
        late_median_s=round(ordered[len(ordered) // 2] / 1e9, 4),
        late_max_s=round(ordered[-1] / 1e9, 4),
        later_than_interval=sum(n > interval_s * 1e9 for n in ordered),
    )


def attached_line(manifest: Manifest, path: Path, opts: RecordOptions) -> str:
    """The one line that says tracing is live: what, since when, where, and how it ends."""
    kinds: dict[str, int] = {}
    for item in manifest.probes.attached:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    how = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    ends = (
        "until the command exits"
        if opts.command
        else f"for {opts.duration:g} s"
        if opts.duration is not None
        else "until the traced processes exit"
        if opts.pids
        else "until Ctrl-C or SIGTERM"
    )
    return (
        f"attached {sum(kinds.values())} probes ({how}) {manifest.startup_s} s after start; "
        f"recording to {path} {ends}"
    )


def _loop(
    opts: RecordOptions,
    recorder: Recorder,
    child: BlockedChild | None,
    stop: _Stop,
    status: Status | None,
    rotation: Rotation | None = None,
    rotate: Callable[[], None] | None = None,
) -> int:
    t_begin = time.monotonic()
    next_drain = t_begin + opts.interval
    while True:
        now = time.monotonic()
        if stop.requested:
            break
        if opts.duration is not None and now - t_begin >= opts.duration:
            break
        if child is not None and child.poll() is not None:
            break
        if opts.pids and not any(process_running(p) for p in opts.pids):
            break
        if recorder.session.calibrating:
            recorder.session.calibrate()  # detach the calibration probe as soon as it is done
        if now >= next_drain:
            events = recorder.drain(due_ns=int(next_drain * 1e9))  # the same clock
            # A late drain is not made up for with a burst of short ones: missed ticks are
            # skipped (intervals.parquet has the real spans).
            next_drain += opts.interval
            while next_drain <= time.monotonic():
                next_drain += opts.interval
            if rotation is not None and rotate is not None and rotation.due(time.monotonic()):
                rotate()  # right after a drain: the new segment starts where it ended
            if status is not None:
                snap = recorder.last or Snapshot()
                drops = sum(snap.drops.values())
                status(
                    f"{now - t_begin:7.1f}s  {events / opts.interval:10,.0f} events/s  "
                    f"{len(snap.tasks):5d} tasks  {drops} drops"
                )
        tick = 0.01 if recorder.session.calibrating else 0.1
        time.sleep(min(tick, max(next_drain - time.monotonic(), 0.001)))
    if child is None:
        return 0
    return _stop_child(child, stop)


def _stop_child(child: BlockedChild, stop: _Stop) -> int:
    """The command's exit code, ending it first if it is still running.

    A second SIGINT/SIGTERM to fptrace means "stop at once": the command is killed rather
    than asked, and one that ignores SIGTERM (after --duration, say) is killed as soon as
    another signal arrives, so fptrace never hangs with its probes attached.
    """
    if child.poll() is None:
        if stop.count >= 2:
            child.signal(signal.SIGKILL)
        else:
            child.signal(signal.SIGTERM)
        seen = stop.count
        while child.poll() is None:
            if stop.count > seen:
                child.signal(signal.SIGKILL)
            time.sleep(0.02)
    return child.exit_code
