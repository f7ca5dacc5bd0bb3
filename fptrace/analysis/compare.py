"""`fptrace compare`: what changed between two setups, and which differences are real.

Pure functions over manifests and per-run metric tables.  A *side* is one setup (a kernel,
a boot line, a config…) with one or more runs; numbers are compared per metric as the ratio
of the sides' medians with a bootstrap 95 % interval, and — with at least two runs a side —
a Mann-Whitney p-value; a difference that is not significant is shown as "~" (benchstat).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fptrace.analysis.stats import ALPHA, bootstrap, mann_whitney_p, resample
from fptrace.recording.manifest import Manifest
from fptrace.xstate import LEVEL_IDS

# Boot parameters that change FPU/xstate behaviour (kernel-fpu.md §7.1), called out first.
FPU_BOOT_PARAMS = (
    "noxsave",
    "noxsaveopt",
    "noxsaves",
    "nofxsr",
    "no387",
    "clearcpuid",
    "setcpuid",
    "nopku",
    "nousershstk",
    "strict_sas_size",
    "eagerfpu",
    "mitigations",
    "preempt",
    "nohz_full",
    "isolcpus",
)
# Metrics of a run, with how to read them; "higher" is worse for all of them.
METRICS: dict[str, str] = {
    "saves_per_s": "saves per second",
    "restores_per_s": "restores per second",
    "saves_per_switch": "saves per context switch",
    "restores_skipped_share": "share of saves whose restore was skipped",
    "bytes_per_save": "bytes per save (estimate)",
    "sse_save_share": "share of saves with SSE live",
    "avx_save_share": "share of saves with AVX live",
    "avx512_save_share": "share of saves with AVX-512 live",
    "amx_save_share": "share of saves with AMX live",
    "apx_save_share": "share of saves with APX live",
    "est_cpu_ns_per_s": "est. save/restore CPU ns per second",
    "est_oncpu_share": "est. share of on-CPU time",
    "vso_size_median": "median VSO size (bytes)",
    "signal_frame_bytes_per_s": "signal frame bytes per second",
}


@dataclass(frozen=True)
class Change:
    """One difference between the two sides' setups."""

    category: str  # kernel, boot, config, cpu, xstate, fptrace, probes
    key: str
    a: Any
    b: Any
    fpu_relevant: bool = False


def _boot_params(cmdline: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in (cmdline or "").split():
        if token == "--":
            break  # what follows goes to init, not the kernel
        key, _, value = token.partition("=")
        if key.startswith("fptrace."):
            continue  # `fptrace lab` plumbing (where its job is), not a kernel setting
        out[key] = value
    return out


def _get(m: Manifest, *path: str) -> Any:
    return m.value(".".join(path))


def _config_differs(a: dict[str, str], b: dict[str, str], key: str) -> bool:
    """Kconfig's meaning: an option a kernel does not have is the same as one not set, so
    an option new in one release and off there is no change (6.1 -> 6.12: ~570 such)."""
    return a.get(key, "n") != b.get(key, "n")


def what_changed(
    a: Manifest,
    b: Manifest,
    config_a: dict[str, str] | None = None,
    config_b: dict[str, str] | None = None,
) -> list[Change]:
    """Setup differences, FPU-relevant ones first within each category."""
    changes: list[Change] = []
    for key in ("release", "version"):
        va, vb = _get(a, "host", "kernel", key), _get(b, "host", "kernel", key)
        if va != vb:
            changes.append(Change("kernel", key, va, vb, key == "release"))
    pa, pb = _boot_params(_get(a, "host", "boot_cmdline")), _get(b, "host", "boot_cmdline")
    pb = _boot_params(pb)
    for key in sorted(set(pa) | set(pb), key=lambda k: (k not in FPU_BOOT_PARAMS, k)):
        if pa.get(key) != pb.get(key):
            changes.append(
                Change("boot", key, _param(pa, key), _param(pb, key), key in FPU_BOOT_PARAMS)
            )
    fa = _get(a, "host", "kernel_config", "fpu_options") or {}
    fb = _get(b, "host", "kernel_config", "fpu_options") or {}
    for key in sorted(set(fa) | set(fb)):
        if _config_differs(fa, fb, key):
            changes.append(Change("config", key, fa.get(key), fb.get(key), True))
    if config_a is not None and config_b is not None:
        for key in sorted(set(config_a) | set(config_b)):
            if key in fa or key in fb:
                continue
            if _config_differs(config_a, config_b, key):
                changes.append(Change("config", key, config_a.get(key), config_b.get(key)))
    for key in ("model_name", "vendor", "family", "model", "stepping", "microcode"):
        va, vb = _get(a, "host", "cpu", key), _get(b, "host", "cpu", key)
        if va != vb:
            changes.append(Change("cpu", key, va, vb, key == "model_name"))
    fla = set(_get(a, "host", "cpu", "fpu_flags") or [])
    flb = set(_get(b, "host", "cpu", "fpu_flags") or [])
    if fla != flb:
        changes.append(
            Change("cpu", "fpu_flags", sorted(fla - flb), sorted(flb - fla), True)
        )  # a: only on A, b: only on B
    for key in ("enabled_features", "format", "kernel_context_size", "xsaves", "xsavec"):
        va, vb = _get(a, "host", "xstate", key), _get(b, "host", "xstate", key)
        if va != vb:
            changes.append(Change("xstate", key, va, vb, True))
    ca = {c["index"]: c for c in _get(a, "host", "xstate", "components") or []}
    cb = {c["index"]: c for c in _get(b, "host", "xstate", "components") or []}
    for idx in sorted(set(ca) | set(cb)):
        sa = (ca[idx]["size"], ca[idx].get("offset")) if idx in ca else None
        sb = (cb[idx]["size"], cb[idx].get("offset")) if idx in cb else None
        if sa != sb:
            name = (ca.get(idx) or cb.get(idx) or {}).get("name", idx)
            changes.append(Change("xstate", f"component {idx} {name} (size, offset)", sa, sb, True))
    if a.fptrace_version != b.fptrace_version:
        changes.append(Change("fptrace", "version", a.fptrace_version, b.fptrace_version))
    pra, prb = a.probes.names(), b.probes.names()
    if pra != prb:
        changes.append(Change("probes", "attached", sorted(pra - prb), sorted(prb - pra)))
    return changes


def _param(params: dict[str, str], key: str) -> str | None:
    if key not in params:
        return None
    return params[key] or "(set)"


# Smallest change reported as a difference (1 %): repeated runs of one setup differ by less.
MIN_EFFECT = 0.01

# Probes the compared figures depend on: their presence must match.
METRIC_PROBES = (
    "x86_fpu:x86_fpu_regs_deactivated",
    "x86_fpu:x86_fpu_regs_activated",
    "x86_fpu:x86_fpu_dropped",
    "signal:signal_deliver",
)


def comparability(a: Manifest, b: Manifest) -> list[str]:
    """Reasons the two setups' numbers cannot be compared (empty: comparable)."""
    problems = []
    if a.format_version != b.format_version:
        problems.append(
            f"recording format versions differ ({a.format_version} vs {b.format_version})"
        )
    if a.kind != b.kind:
        problems.append(f"one side is a {a.kind}, the other a {b.kind}")
    if a.kind == "recording" and b.kind == "recording":
        ta, tb = a.target, b.target
        if ta.mode != tb.mode:
            problems.append(f"target modes differ ({ta.mode} vs {tb.mode})")
        elif ta.command != tb.command:
            problems.append(
                f"different workloads ({' '.join(ta.command or [])!r} vs "
                f"{' '.join(tb.command or [])!r})"
            )
        pra = a.probes.names() & set(METRIC_PROBES)
        prb = b.probes.names() & set(METRIC_PROBES)
        if pra != prb:
            problems.append(
                "the probes the figures depend on differ: " + ", ".join(sorted(pra ^ prb))
            )
    return problems


def run_metrics(headline: dict[str, Any], tasks: pd.DataFrame, vso: pd.DataFrame) -> dict:
    """One run's comparable figures (rates per second, shares)."""
    dur = float(headline.get("duration_s") or 0.0)
    switches = float(tasks["switches"].sum()) if not tasks.empty else 0.0
    saves = float(headline.get("saves", 0))
    return {
        "saves_per_s": saves / dur if dur else None,
        "restores_per_s": headline.get("restores", 0) / dur if dur else None,
        "saves_per_switch": saves / switches if switches else None,
        "restores_skipped_share": headline.get("restores_skipped", 0) / saves if saves else None,
        "bytes_per_save": headline.get("bytes_per_save") if saves else None,
        # Shares of saves with each level live; None (n/a) where the CPU lacks the level.
        **{
            f"{LEVEL_IDS[level]}_save_share": share if saves else None
            for level, share in (headline.get("level_shares") or {}).items()
        },
        "est_cpu_ns_per_s": headline.get("est_cpu_ns", 0) / dur if dur else None,
        "est_oncpu_share": headline.get("est_oncpu_share") if saves else None,
        "vso_size_median": float(vso["size"].median()) if not vso.empty else None,
        "signal_frame_bytes_per_s": headline.get("signal_frame_bytes", 0) / dur if dur else None,
    }


def ratio_ci(a: list[float], b: list[float], n: int = 2000, seed: int = 0) -> tuple:
    """Ratio of medians b/a with a bootstrap 95 % interval (None where a's median is 0)."""
    ma, mb = statistics.median(a), statistics.median(b)
    if ma == 0:
        return None, None, None
    if len(a) < 2 and len(b) < 2:
        return mb / ma, None, None

    def ratio(rng: random.Random) -> float | None:
        sa = statistics.median(resample(rng, a))
        sb = statistics.median(resample(rng, b))
        return sb / sa if sa else None

    ci = bootstrap(ratio, n, seed)
    return (mb / ma, None, None) if ci is None else (mb / ma, *ci)


@dataclass
class Row:
    """One compared figure."""

    scope: str  # "total", a task group, or a benchmark
    metric: str
    a_median: float | None
    b_median: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool | None:
        """p < 0.05 and a change of at least MIN_EFFECT: below that, runs of the same setup
        differ anyway (exit and exec saves move bytes/save by ~0.03 %), so it reads as ~."""
        if self.p_value is None:
            return None
        big = self.ratio is not None and abs(self.ratio - 1) >= MIN_EFFECT
        return self.p_value < ALPHA and (big or self.from_zero)

    @property
    def from_zero(self) -> bool:
        """Zero before, more than zero now: a rise no ratio can express (no ratio is taken)."""
        return self.a_median == 0 and self.b_median is not None and self.b_median > 0

    def rose_by_more_than(self, pct: float) -> bool:
        """Whether the figure rose by more than ``pct`` percent; from zero, any rise does."""
        if self.significant is False:
            return False
        if self.ratio is None:
            return self.from_zero
        return (self.ratio - 1) * 100 > pct

    @property
    def change(self) -> str:
        """What the tables show: '~' for a difference that is not significant."""
        if self.ratio is None:
            return "n/a" if self.a_median == 0 and self.b_median else ""
        if self.significant is False:
            return "~"
        text = f"{(self.ratio - 1) * 100:+.1f}%"
        return text if self.significant else f"{text} (no repeats)"


def compare_samples(
    scope: str, metric: str, a_in: list[float | None], b_in: list[float | None]
) -> Row:
    """One metric compared; missing (None) and NaN samples are left out."""
    a = [x for x in a_in if x is not None and x == x]
    b = [x for x in b_in if x is not None and x == x]
    if not a or not b:
        return Row(scope, metric, None, None, None, None, None, None, len(a), len(b))
    ratio, lo, hi = ratio_ci(a, b)
    p = mann_whitney_p(a, b) if len(a) >= 2 and len(b) >= 2 else None
    return Row(
        scope,
        metric,
        statistics.median(a),
        statistics.median(b),
        ratio,
        lo,
        hi,
        p,
        len(a),
        len(b),
    )


def compare_runs(
    a: list[dict[str, Any]], b: list[dict[str, Any]], scope: str = "total"
) -> list[Row]:
    return [
        compare_samples(scope, m, [r.get(m) for r in a], [r.get(m) for r in b]) for m in METRICS
    ]


def compare_bench(a: list[pd.DataFrame], b: list[pd.DataFrame]) -> list[Row]:
    """Per (benchmark, metric, level): all repetitions of all runs of each side."""
    da, db = pd.concat(a), pd.concat(b)
    rows = []
    keys = ["bench", "metric", "state"]
    for key, ga in da.groupby(keys, sort=False):
        gb = db
        for k, v in zip(keys, key, strict=True):
            gb = gb[gb[k] == v]
        if gb.empty:
            continue
        bench, metric, state = key
        label = bench if metric == "op" else f"{bench} {metric}"
        rows.append(
            compare_samples(
                label, state, ga["ns"].astype(float).tolist(), gb["ns"].astype(float).tolist()
            )
        )
    return rows


@dataclass
class Comparison:
    labels: tuple[str, str]
    changes: list[Change]
    rows: list[Row]
    group_rows: list[Row]
    bench_rows: list[Row]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    runs: tuple[list[str], list[str]] = ((), ())  # type: ignore[assignment]

    def regression(self, metric: str, pct: float) -> Row | None:
        """The total row of ``metric`` if it increased by more than ``pct`` percent."""
        for r in self.rows:
            if r.scope == "total" and r.metric == metric and r.rose_by_more_than(pct):
                return r
        return None


# ---- building a comparison from loaded runs ----

GROUP_METRICS = ("saves_per_s", "bytes_per_save", "avx512_save_share", "est_cpu_ns_per_s")


def side_metrics(recs: list[Any], collapsed: dict[Any, pd.DataFrame], model_for: Any):
    """Per run: the total figures, and per task group (tasks with the same comm, and tasks
    in the same cgroup)."""
    from fptrace.analysis import report

    totals: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        c = collapsed[rec.path]
        if c.empty:  # a bench result without a trace: no trace metrics
            totals.append(dict.fromkeys(METRICS))
            continue
        model = model_for(rec.manifest)
        tasks = report.task_table(c, rec.tasks, rec.vso, rec.layout, model, rec.duration_s)
        h = report.headline(c, tasks, rec.vso, rec.manifest, rec.duration_s, model)
        totals.append(run_metrics(h, tasks, rec.vso))
        if tasks.empty:
            continue
        # task groups: by name, and by cgroup (a container, a service) as "cgroup /path"
        named = [(str(comm), g) for comm, g in tasks.groupby("comm")]
        if "cgroup" in tasks.columns and tasks["cgroup"].notna().any():
            named += [(f"cgroup {cg}", g) for cg, g in tasks.groupby("cgroup")]
        for name, g in named:
            ids = set(g["task"])
            cg, vg = c[c["task"].isin(ids)], rec.vso[rec.vso["task"].isin(ids)]
            hg = report.headline(cg, g, vg, rec.manifest, rec.duration_s, model)
            groups.setdefault(name, []).append(run_metrics(hg, g, vg))
    return totals, groups


def build(
    labels: tuple[str, str],
    a: list[Any],
    b: list[Any],
    collapsed: dict[Any, pd.DataFrame],
    model_for: Any,
    configs: tuple[dict[str, str] | None, dict[str, str] | None] = (None, None),
    force: bool = False,
) -> Comparison:
    """Compare side ``b`` with baseline ``a`` (each a list of loaded recordings)."""
    from fptrace.errors import NotComparableError

    ma, mb = a[0].manifest, b[0].manifest
    problems = comparability(ma, mb)
    warnings = []
    for side, recs in (("A", a), ("B", b)):
        for other in recs[1:]:
            differ = [
                ch.key
                for ch in what_changed(recs[0].manifest, other.manifest)
                if ch.category in ("kernel", "boot", "config", "cpu", "xstate")
            ]
            if differ:
                warnings.append(
                    f"side {side}: {other.path} differs from {recs[0].path} in "
                    + ", ".join(differ[:5])
                )
    if problems and not force:
        raise NotComparableError(
            f"not comparable: {problems[0]} (add --force to compare anyway, with a warning)"
        )
    warnings = [f"compared anyway (--force): {p}" for p in problems] + warnings
    totals_a, groups_a = side_metrics(a, collapsed, model_for)
    totals_b, groups_b = side_metrics(b, collapsed, model_for)
    group_rows = []
    for name in sorted(set(groups_a) & set(groups_b)):
        for m in GROUP_METRICS:
            group_rows.append(
                compare_samples(
                    name, m, [r.get(m) for r in groups_a[name]], [r.get(m) for r in groups_b[name]]
                )
            )
    bench_a = [r.bench for r in a if r.bench is not None and not r.bench.empty]
    bench_b = [r.bench for r in b if r.bench is not None and not r.bench.empty]
    bench_rows = compare_bench(bench_a, bench_b) if bench_a and bench_b else []
    traced = any(not collapsed[r.path].empty for r in a + b)
    rows = compare_runs(totals_a, totals_b) if traced else []
    return Comparison(
        labels=labels,
        changes=what_changed(ma, mb, *configs),
        rows=rows,
        group_rows=group_rows,
        bench_rows=bench_rows,
        problems=problems,
        warnings=warnings,
        runs=([str(r.path) for r in a], [str(r.path) for r in b]),
    )
