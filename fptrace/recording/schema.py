"""The recording's contract: file names, format version, and the typed table schemas.

Documented for users in docs/recording-format.md; keep the two in step.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_NAME = "fptrace-recording"
FORMAT_VERSION = 3  # 2: tasks.cgroup_id; 3: counts.reason

MANIFEST = "manifest.json"
KERNEL_CONFIG = "kernel-config.gz"  # the traced kernel's full .config
CALIBRATION = "calibration.json"  # `fptrace bench`'s cost table, also in the manifest
EVENTS = "events.parquet"  # `record --events`: one row per event
REPORT = "report.html"  # where `fptrace report` writes by default
PARTS_DIR = ".parts"  # per-interval files while recording; merged away on a clean finish

COUNTS_SCHEMA = pa.schema(
    [
        ("interval", pa.int32()),  # drain interval index, 0-based
        ("task", pa.int64()),  # per-recording task id (pids are reused; this is not)
        ("pid", pa.int32()),  # thread id (kernel pid)
        ("tgid", pa.int32()),  # process id
        ("vso", pa.string()),  # opaque VSO id; null for events not about a buffer
        ("event", pa.string()),  # tracepoint name without "x86_fpu_", or an aux event
        ("xfeatures", pa.uint64()),  # XSTATE_BV in the buffer; aux events: their argument
        ("load_fpu", pa.int8()),  # TIF_NEED_FPU_LOAD of current at the event; null if unknown
        ("arg", pa.uint32()),  # aux events: e.g. the arch_prctl option; else 0
        ("count", pa.int64()),  # events in this interval
        ("first_ns", pa.int64()),  # first time this key was seen, ns since the recording began
        ("last_ns", pa.int64()),  # last time seen (up to one tick, 1/CONFIG_HZ, early)
        ("reason", pa.string()),  # switch-path saves: voluntary | involuntary; else null
    ]
)

TASKS_SCHEMA = pa.schema(
    [
        ("task", pa.int64()),  # per-recording task id (pids are reused; this is not)
        ("pid", pa.int32()),
        ("tgid", pa.int32()),
        ("ppid", pa.int32()),  # parent process id; 0 if unknown
        ("comm", pa.string()),
        ("cmdline", pa.string()),
        ("cgroup", pa.string()),  # cgroup v2 path, e.g. /system.slice/nginx.service
        ("switches", pa.int64()),  # voluntary + involuntary context switches while traced
        ("oncpu_ns", pa.int64()),  # on-CPU time while traced
        ("first_ns", pa.int64()),  # first seen, ns since the recording began
        ("exit_ns", pa.int64()),  # null while alive at the end
        ("execs", pa.int32()),
        ("forked", pa.bool_()),  # created during the recording
        ("cgroup_id", pa.uint64()),  # cgroup v2 id (its inode); null before format 2
    ]
)

# Columns a newer format added: a table of an older recording is read with them null.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {"tasks": ("cgroup_id",), "counts": ("reason",)}


def with_added_columns(table: pa.Table, name: str, schema: pa.Schema) -> pa.Table:
    """An older format's ``table`` with the columns added since (:data:`ADDED_COLUMNS`),
    null: a version-1 recording reads on, and says "unknown" where it has no value."""
    for col in ADDED_COLUMNS.get(name, ()):
        if col not in table.schema.names:
            table = table.append_column(
                schema.field(col), pa.nulls(len(table), schema.field(col).type)
            )
    return table


VSO_SCHEMA = pa.schema(
    [
        ("vso", pa.string()),
        ("task", pa.int64()),  # per-recording task id (pids are reused; this is not)
        ("pid", pa.int32()),
        ("tgid", pa.int32()),
        ("size", pa.int64()),  # fpstate->size (0 on kernels before 5.16)
        ("user_size", pa.int64()),  # fpstate->user_size: signal frame XSAVE area
        ("xfeatures", pa.uint64()),  # fpstate->xfeatures: features the buffer may hold
        ("user_xfeatures", pa.uint64()),
        ("xfd", pa.uint64()),
        ("xcomp_bv", pa.uint64()),  # XCOMP_BV of the buffer header (bit 63: compacted)
        ("layout_size", pa.int64()),  # size computed from xcomp_bv and CPUID; null if unknown
        ("is_valloc", pa.bool_()),
        ("is_guest", pa.bool_()),
        ("first_ns", pa.int64()),
        ("prev_vso", pa.string()),  # the task's previous VSO when this one replaced it
    ]
)


def accept_dictionaries(found: pa.Schema, schema: pa.Schema) -> pa.Schema:
    """``schema``, except that string columns may stay dictionary-encoded where ``found`` has
    them so (as Parquet stores them anyway): decoding millions of repeated ids only costs."""
    fields = []
    for f in schema:
        got = found.field(f.name).type
        keep = pa.types.is_dictionary(got) and got.value_type == f.type
        fields.append(pa.field(f.name, got) if keep else f)
    return pa.schema(fields)


TABLES: dict[str, pa.Schema] = {
    "counts": COUNTS_SCHEMA,
    "tasks": TASKS_SCHEMA,
    "vso": VSO_SCHEMA,
}

# Optional: benchmark results (`fptrace bench`), one row per measurement.
BENCH_SCHEMA = pa.schema(
    [
        ("bench", pa.string()),  # benchmark name (ctx-pipe, signal, calibrate, …)
        ("state", pa.string()),  # live-state level: init, sse, avx, avx512, amx
        ("metric", pa.string()),  # "op", or e.g. xsavec/xrstor for calibrate
        ("rep", pa.int32()),  # repetition (a separate process each)
        ("ns", pa.float64()),  # nanoseconds per operation
        ("ops", pa.int64()),  # operations timed in that process
        ("xinuse", pa.uint64()),  # XINUSE seen by the workload (what was live)
        ("pid_a", pa.int32()),  # the benchmark's task(s), for cross-checks with a trace
        ("pid_b", pa.int32()),
    ]
)
# Optional: one row per event (`fptrace record --events`).
EVENTS_SCHEMA = pa.schema(
    [
        ("ts_ns", pa.int64()),  # ns since the probes were attached
        ("cpu", pa.int16()),
        ("task", pa.int64()),  # the recording's task id, as in counts (pids are reused)
        ("pid", pa.int32()),
        ("tgid", pa.int32()),
        ("vso", pa.string()),
        ("event", pa.string()),
        ("xfeatures", pa.uint64()),  # XSTATE_BV; aux events: their argument
        ("load_fpu", pa.int8()),  # null where not read (see counts)
    ]
)
# One row per drain interval: when it really began and ended.  Under load a drain can come
# seconds late; rates and the timeline divide by these, never by the nominal --interval.
# Optional only so that recordings made before it existed still load.
INTERVALS_SCHEMA = pa.schema(
    [
        ("interval", pa.int32()),
        ("start_ns", pa.int64()),  # CLOCK_MONOTONIC, ns since attach: the previous drain's end
        ("end_ns", pa.int64()),  # when this drain's snapshot of the kernel counts completed
        ("due_ns", pa.int64()),  # when the drain was due (null: the final one, at stop)
        ("events", pa.int64()),  # events counted in it
        # Bounded state, measured at the drain: entries in the kernel's maps (tasks, count
        # keys, VSOs) and the recorder's own resident memory.
        ("map_tasks", pa.int64()),
        ("map_keys", pa.int64()),
        ("map_vsos", pa.int64()),
        ("recorder_rss_bytes", pa.int64()),
    ]
)
# Optional (`record --stacks`): stack samples of saves with state beyond SSE live, per task,
# XSTATE_BV, reason and (user, kernel) stack; at most --stacks=RATE per second per key and
# CPU, so `samples` are a sample of the saves, not all of them.
STACK_SAMPLES_SCHEMA = pa.schema(
    [
        ("task", pa.int64()),
        ("pid", pa.int32()),
        ("tgid", pa.int32()),
        ("xfeatures", pa.uint64()),  # XSTATE_BV of the saved buffer
        ("reason", pa.string()),  # voluntary | involuntary (null: not read)
        ("user_stack", pa.int64()),  # stacks.stack; null: none taken (a kernel thread…)
        ("kernel_stack", pa.int64()),
        ("samples", pa.int64()),
    ]
)
# The stacks, symbolized after the run: one row per frame, leaf first (depth 0).  Names
# only: no address is written (offsets are into the function, or into the module's file).
STACKS_SCHEMA = pa.schema(
    [
        ("stack", pa.int64()),
        ("depth", pa.int16()),
        ("function", pa.string()),  # "[unknown]" where the binary has no symbol for it
        ("module", pa.string()),  # file name of the binary; "[kernel]" for kernel frames
        ("offset", pa.int64()),
        ("build_id", pa.string()),
        ("kernel", pa.bool_()),
    ]
)
OPTIONAL_TABLES: dict[str, pa.Schema] = {
    "bench": BENCH_SCHEMA,
    "events": EVENTS_SCHEMA,
    "intervals": INTERVALS_SCHEMA,
    "stack_samples": STACK_SAMPLES_SCHEMA,
    "stacks": STACKS_SCHEMA,
}

#: Every table a recording may hold, by name.
ALL_TABLES = TABLES | OPTIONAL_TABLES
