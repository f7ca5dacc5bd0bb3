"""compare: what changed between setups, comparability, and the significance marks."""

from __future__ import annotations

import copy

import pytest

from fptrace.analysis import compare
from fptrace.errors import NotComparableError
from fptrace.recording.manifest import Manifest


def M(data: dict) -> Manifest:
    return Manifest.from_json(data)


HOST = {
    "kernel": {"release": "6.18.44-fc", "version": "#1 SMP PREEMPT_DYNAMIC"},
    "boot_cmdline": "console=ttyS0 quiet -- --init-arg",
    "kernel_config": {
        "fpu_options": {"CONFIG_PREEMPT_NONE": "y", "CONFIG_PREEMPT": "n", "CONFIG_HZ": "250"}
    },
    "cpu": {"model_name": "Xeon", "vendor": "GenuineIntel", "fpu_flags": ["avx", "avx512f"]},
    "xstate": {
        "enabled_features": 0x600E7,
        "format": "compacted",
        "kernel_context_size": 10688,
        "xsaves": True,
        "components": [
            {"index": 2, "name": "AVX", "size": 256, "offset": 576},
            {"index": 5, "name": "AVX512_opmask", "size": 64, "offset": 1088},
        ],
    },
}
MANIFEST = {
    "format": "fptrace-recording",
    "format_version": 1,
    "fptrace_version": "0.1.0",
    "target": {"mode": "command", "command": ["./work"]},
    "probes": {"attached": [{"name": "x86_fpu:x86_fpu_regs_deactivated"}]},
    "host": HOST,
}


def other_kernel() -> dict:
    """The fixture of the issue: another kernel, boot line, PREEMPT/HZ and a standard layout."""
    m = copy.deepcopy(MANIFEST)
    h = m["host"]
    h["kernel"]["release"] = "6.1.0-50-amd64"
    h["boot_cmdline"] = "console=ttyS0 quiet noxsaves clearcpuid=avx512f -- --init-arg"
    h["kernel_config"]["fpu_options"].update(
        {"CONFIG_PREEMPT_NONE": "n", "CONFIG_PREEMPT": "y", "CONFIG_HZ": "1000"}
    )
    h["xstate"]["format"] = "standard"
    h["xstate"]["xsaves"] = False
    h["xstate"]["kernel_context_size"] = 2696
    return m


def test_what_changed_lists_exactly_the_differences() -> None:
    changes = compare.what_changed(M(MANIFEST), M(other_kernel()))
    got = {(c.category, c.key, c.a, c.b) for c in changes}
    assert got == {
        ("kernel", "release", "6.18.44-fc", "6.1.0-50-amd64"),
        ("boot", "clearcpuid", None, "avx512f"),
        ("boot", "noxsaves", None, "(set)"),
        ("config", "CONFIG_HZ", "250", "1000"),
        ("config", "CONFIG_PREEMPT", "n", "y"),
        ("config", "CONFIG_PREEMPT_NONE", "y", "n"),
        ("xstate", "format", "compacted", "standard"),
        ("xstate", "kernel_context_size", 10688, 2696),
        ("xstate", "xsaves", True, False),
    }
    assert all(c.fpu_relevant for c in changes)
    assert compare.what_changed(M(MANIFEST), M(copy.deepcopy(MANIFEST))) == []


def test_full_config_diff_and_cpu_flags() -> None:
    b = copy.deepcopy(MANIFEST)
    b["host"]["cpu"]["fpu_flags"] = ["avx"]
    changes = compare.what_changed(
        M(MANIFEST),
        M(b),
        {"CONFIG_FOO": "y", "CONFIG_HZ": "250"},
        {"CONFIG_FOO": "m", "CONFIG_HZ": "250"},
    )
    got = {(c.category, c.key) for c in changes}
    assert got == {("cpu", "fpu_flags"), ("config", "CONFIG_FOO")}
    flags = next(c for c in changes if c.key == "fpu_flags")
    assert flags.a == ["avx512f"] and flags.b == []


def test_comparability_rules() -> None:
    assert compare.comparability(M(MANIFEST), M(other_kernel())) == []  # kernels may differ
    b = copy.deepcopy(MANIFEST)
    b["target"]["command"] = ["./other"]
    assert "different workloads" in compare.comparability(M(MANIFEST), M(b))[0]
    b = copy.deepcopy(MANIFEST)
    b["format_version"] = 0  # an older format (this fptrace refuses newer ones)
    assert "format versions differ" in compare.comparability(M(MANIFEST), M(b))[0]
    b = copy.deepcopy(MANIFEST)
    b["probes"]["attached"] = []
    assert "probes" in compare.comparability(M(MANIFEST), M(b))[0]
    b = copy.deepcopy(MANIFEST)
    b["kind"] = "bench"
    assert "bench" in compare.comparability(M(MANIFEST), M(b))[0]


def test_significance_marks() -> None:
    same = compare.compare_samples("total", "m", [10, 11, 10.5, 10.2], [10.1, 10.9, 10.4, 10.3])
    assert same.change == "~" and same.significant is False
    up = compare.compare_samples("total", "m", [10, 11, 10.5, 10.2], [20, 21, 20.5, 20.2])
    assert up.significant and up.change.startswith("+9") and up.ci_low > 1
    single = compare.compare_samples("total", "m", [10], [12])
    assert single.change == "+20.0% (no repeats)" and single.p_value is None


def test_regression_gate() -> None:
    comp = compare.Comparison(
        ("a", "b"),
        [],
        [
            compare.compare_samples(
                "total", "bytes_per_save", [100, 101, 99, 100], [130, 131, 129, 130]
            )
        ],
        [],
        [],
        [],
    )
    assert comp.regression("bytes_per_save", 5) is not None
    assert comp.regression("bytes_per_save", 50) is None


def gate(a: list[float], b: list[float], pct: float) -> bool:
    rows = [compare.compare_samples("total", "m", a, b)]
    return compare.Comparison(("a", "b"), [], rows, [], [], []).regression("m", pct) is not None


def test_regression_gate_from_a_zero_baseline() -> None:
    """0 -> anything is an infinite rise: it must fire whatever the threshold."""
    assert gate([0, 0, 0, 0], [50, 51, 49, 50], 1000)  # repeated runs, significant
    assert gate([0], [0.5], 5)  # one run a side: no test of significance possible
    assert not gate([0, 0, 0, 0], [0, 0, 0, 0], 5)  # zero stays zero
    assert not gate([50, 51, 49, 50], [0, 0, 0, 0], 5)  # a fall to zero is no regression
    assert not gate([0, 0, 1, 0], [0, 1, 0, 0], 5)  # noise around zero is not significant


def test_regression_gate_one_run_a_side() -> None:
    assert gate([100], [120], 10) and not gate([100], [105], 10)


def test_incomparable_runs_are_refused_without_force() -> None:
    class Rec:
        def __init__(self, m):
            self.manifest, self.path = M(m), "x"

    b = copy.deepcopy(MANIFEST)
    b["target"]["command"] = ["./other"]
    with pytest.raises(NotComparableError, match="--force"):
        compare.build(("a", "b"), [Rec(MANIFEST)], [Rec(b)], {}, None)


def test_bench_results_compare_per_level(tmp_path) -> None:
    from fptrace.analysis.cost import DEFAULT
    from fptrace.recording.loader import load_recording
    from fptrace.recording.writer import RecordingWriter
    from tests.unit.recordings import manifest

    def bench_run(name: str, ns_avx512: float):
        w = RecordingWriter(tmp_path / name)
        w.append(
            "bench",
            [
                {
                    "bench": "signal",
                    "state": s,
                    "metric": "op",
                    "rep": i,
                    "ns": ns + i,
                    "ops": 100,
                    "xinuse": 0xA2,
                    "pid_a": 1,
                    "pid_b": 0,
                }
                for s, ns in (("sse", 1000.0), ("avx512", ns_avx512))
                for i in range(4)
            ],
        )
        w.finalize(Manifest.from_json(manifest(kind="bench", host=MANIFEST["host"])))
        return load_recording(tmp_path / name)

    a, b = bench_run("a", 1000.0), bench_run("b", 1500.0)
    empty = {a.path: compare.pd.DataFrame(), b.path: compare.pd.DataFrame()}
    comp = compare.build(("a", "b"), [a], [b], empty, lambda m: DEFAULT)
    rows = {(r.scope, r.metric): r for r in comp.bench_rows}
    assert rows[("signal", "avx512")].ratio == pytest.approx(1.5, rel=0.01)
    assert rows[("signal", "sse")].ratio == pytest.approx(1.0)
    assert comp.rows == []  # no traces: no trace metrics


def test_an_option_one_kernel_lacks_equals_one_not_set() -> None:
    a = {"CONFIG_X86_USER_SHADOW_STACK": "n", "CONFIG_OLD": "y", "CONFIG_GONE": "n"}
    b = {"CONFIG_X86_USER_SHADOW_STACK": "y", "CONFIG_NEW": "n", "CONFIG_ADDED": "m"}
    changes = compare.what_changed(M(MANIFEST), M(MANIFEST), a, b)
    got = {c.key: (c.a, c.b) for c in changes if c.category == "config"}
    assert got == {
        "CONFIG_X86_USER_SHADOW_STACK": ("n", "y"),
        "CONFIG_OLD": ("y", None),  # removed while on: a change
        "CONFIG_ADDED": (None, "m"),  # new and built: a change
    }  # CONFIG_GONE and CONFIG_NEW: absent on one side, off on the other
