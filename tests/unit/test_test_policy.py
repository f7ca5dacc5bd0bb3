"""The suite's own rules: which skips CI accepts, and the tests' independent CPUID arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hardware import LEVEL_BITS, Cpu

ROOT = Path(__file__).resolve().parents[2]

# CPUID(0xD, i) read on the reference machine (AMD EPYC with AVX-512, XCR0 0xe7, XSS CET_U
# and CET_S; kernel-fpu.md §6.2): (size, standard offset, flags, 0).  Sub-leaf 0's EBX, the
# standard size for XCR0, was 2432; sub-leaf 1's EBX, the compacted size for XCR0|XSS, 2472.
REFERENCE_LEAF_D = {
    2: (256, 576, 0, 0),
    5: (64, 832, 0, 0),
    6: (512, 896, 0, 0),
    7: (1024, 1408, 0, 0),
    11: (16, 0, 1, 0),
    12: (24, 0, 1, 0),
}


def reference_cpu(xcr0: int = 0xE7, ebx7: int = 1 << 16) -> Cpu:
    leaf_d = {i: REFERENCE_LEAF_D.get(i, (0, 0, 0, 0)) for i in range(63)}
    return Cpu(ecx1=(1 << 27) | (1 << 28), ebx7=ebx7, edx7=0, xcr0=xcr0, leaf_d=leaf_d)


def test_sizes_match_the_kernels_figures_on_the_reference_machine():
    cpu = reference_cpu()
    # The kernel's task fpstate there: xcomp_bv 0x80000000000008e7 -> fpstate->size 2448.
    assert cpu.compacted_size((1 << 63) | 0x8E7) == 2448
    assert cpu.compacted_size((1 << 63) | 0x18E7) == 2472  # "context size is 2472 bytes"
    assert cpu.standard_size(0xE7) == 2432  # CPUID(0xD,0).EBX; supervisor parts not in it
    # kernel-fpu.md §6.4's example: XSTATE_BV 0xa2 -> 16 + 8 + 256 + 64 + 1024 = 1368 bytes.
    assert cpu.bytes_written(0xA2) == 1368


def test_levels_from_cpuid_and_xcr0(monkeypatch):
    monkeypatch.delenv("FPTRACE_TEST_LEVEL", raising=False)
    assert reference_cpu().hardware_level() == "avx512"
    # AVX-512F in CPUID but the kernel did not enable the ZMM components: not usable.
    assert reference_cpu(xcr0=0x7).hardware_level() == "avx"
    assert reference_cpu(ebx7=0).hardware_level() == "avx"
    assert reference_cpu(xcr0=0x3).hardware_level() == "sse"
    assert LEVEL_BITS["avx512"] == 0xE6 and LEVEL_BITS["avx"] == 0x6


def run_policy(tmp_path: Path, reason: str) -> subprocess.CompletedProcess[str]:
    """A one-test suite that skips with ``reason``, under this repo's conftest, in CI mode."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_one.py").write_text(
        textwrap.dedent(f"""
        import pytest

        def test_x():
            pytest.skip({reason!r})
        """)
    )
    env = dict(os.environ, FPTRACE_NO_SKIP="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("reason", "accepted"),
    [
        ("hardware: CPU lacks AVX-512", True),
        ("BCC is missing (hardware: none)", False),  # "hardware:" inside is not enough
        ("perf is not installed", False),
    ],
)
def test_ci_accepts_only_skips_whose_reason_starts_with_hardware(tmp_path, reason, accepted):
    proc = run_policy(tmp_path, reason)
    assert (proc.returncode == 0) is accepted, proc.stdout
    named = "hardware checks not run on this CPU: test_x (hardware: CPU lacks AVX-512)"
    assert (named in proc.stdout) is accepted, proc.stdout
