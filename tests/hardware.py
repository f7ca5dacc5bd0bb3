"""What this CPU has, read independently of fptrace: CPUID and XGETBV from a tiny C probe.

The integration lane's known answers depend on the processor: a pingpong can only keep
AVX-512 state live on a CPU with AVX-512, and every buffer size comes from CPUID leaf 0xD.
The expected values must not come from the code under test (``fptrace.xstate``,
``fptrace.collectors.host.cpu_flags``), so this module asks the CPU itself: a small C
program (cpuid_probe.c), compiled once per session, runs CPUID and XGETBV and prints the raw
registers; the arithmetic below follows the SDM (vol. 1 ch. 13) and ../shared/docs/kernel-fpu.md §6.

``FPTRACE_TEST_LEVEL=avx`` (or ``sse``) caps the widest level the tests use, so a machine
with AVX-512 can run the suite as a CPU without it would (the AVX-512 checks then skip with
a ``hardware:`` reason, as they do on such a CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# XSAVE state components (SDM vol. 1 §13.1).
X87, SSE, AVX, OPMASK, ZMM_HI256, HI16_ZMM, PKRU = 0, 1, 2, 5, 6, 7, 9
XTILECFG, XTILEDATA = 17, 18

#: Vector levels from narrowest to widest, and the components each one puts in use
#: (the pingpong workload's --mode of the same name).
LEVELS = ("sse", "avx", "avx512")
LEVEL_BITS: dict[str, int] = {
    "sse": 1 << SSE,
    "avx": (1 << SSE) | (1 << AVX),
    "avx512": (1 << SSE) | (1 << AVX) | (1 << OPMASK) | (1 << ZMM_HI256) | (1 << HI16_ZMM),
    "amx": (1 << XTILECFG) | (1 << XTILEDATA),
}
LEVEL_NAMES = {"sse": "SSE", "avx": "AVX", "avx512": "AVX-512", "amx": "AMX"}
AVX512_MASK = (1 << OPMASK) | (1 << ZMM_HI256) | (1 << HI16_ZMM)
#: The one component that tells a level apart from the level below it.
LEVEL_MARK: dict[str, int] = {"sse": 1 << SSE, "avx": 1 << AVX, "avx512": 1 << ZMM_HI256}

PROBE_C = Path(__file__).with_name("cpuid_probe.c")


@dataclass(frozen=True)
class Cpu:
    """Raw CPUID/XGETBV answers and what the tests derive from them."""

    ecx1: int  # CPUID(1).ECX
    ebx7: int  # CPUID(7,0).EBX
    edx7: int  # CPUID(7,0).EDX
    xcr0: int  # XGETBV(0): the components the kernel enabled
    leaf_d: dict[int, tuple[int, int, int, int]]

    def _enabled(self, mask: int) -> bool:
        return self.xcr0 & mask == mask

    @property
    def has_avx(self) -> bool:
        return bool(self.ecx1 >> 28 & 1) and self._enabled(LEVEL_BITS["avx"])

    @property
    def has_avx512(self) -> bool:
        return bool(self.ebx7 >> 16 & 1) and self._enabled(LEVEL_BITS["avx512"])

    @property
    def has_amx(self) -> bool:  # AMX-TILE and the tile components enabled
        return bool(self.edx7 >> 24 & 1) and self._enabled(LEVEL_BITS["amx"])

    def hardware_has(self, level: str) -> bool:
        """Whether the processor has ``level``, whatever FPTRACE_TEST_LEVEL says."""
        if level == "amx":
            return self.has_amx
        return LEVELS.index(level) <= LEVELS.index(self.hardware_level())

    def hardware_level(self) -> str:
        if self.has_avx512:
            return "avx512"
        return "avx" if self.has_avx else "sse"

    def has(self, level: str) -> bool:
        """Whether the tests may use ``level`` here (the CPU has it, within FPTRACE_TEST_LEVEL)."""
        if level == "amx":  # beyond every capped level
            return self.has_amx and cap() is None
        return LEVELS.index(level) <= LEVELS.index(widest_level())

    def component_size(self, i: int) -> int:
        return self.leaf_d[i][0]

    def compacted_size(self, xcomp_bv: int) -> int:
        """Size of a compacted buffer holding the components of ``xcomp_bv`` (kernel-fpu §6.3)."""
        offs = 512 + 64
        for i in range(2, 63):
            if xcomp_bv >> i & 1:
                if self.leaf_d[i][2] & 2:  # align64
                    offs = (offs + 63) & ~63
                offs += self.component_size(i)
        return offs

    def standard_size(self, features: int) -> int:
        """Size of a standard-format buffer: the furthest end of any user component."""
        end = 512 + 64
        for i in range(2, 63):
            if features >> i & 1 and not self.leaf_d[i][2] & 1:
                end = max(end, self.leaf_d[i][1] + self.component_size(i))
        return end

    def bytes_written(self, xstate_bv: int) -> int:
        """Bytes an XSAVEC writes for this XSTATE_BV (SDM §13.10, kernel-fpu §6.4)."""
        n = 16 + 8  # XSTATE_BV + XCOMP_BV, MXCSR + MXCSR_MASK
        n += 152 if xstate_bv >> X87 & 1 else 0
        n += 256 if xstate_bv >> SSE & 1 else 0
        return n + sum(self.component_size(i) for i in range(2, 63) if xstate_bv >> i & 1)


def cap() -> str | None:
    level = os.environ.get("FPTRACE_TEST_LEVEL") or None
    if level is not None and level not in LEVELS:
        raise ValueError(f"FPTRACE_TEST_LEVEL={level!r}: use one of {', '.join(LEVELS)}")
    return level


def build_probe(directory: Path) -> Path:
    """Compile cpuid_probe.c into ``directory`` (also run inside lab guests, at that path)."""
    exe = directory / "cpuid_probe"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(PROBE_C)], check=True)
    return exe


def parse_probe(line: str) -> Cpu:
    """The probe's JSON line -> a Cpu."""
    raw = json.loads(line)
    leaf_d = {int(k): tuple(v) for k, v in raw["leaf_d"].items()}
    return Cpu(raw["ecx1"], raw["ebx7"], raw["edx7"], raw["xcr0"], leaf_d)  # type: ignore[arg-type]


@cache
def cpu() -> Cpu:
    """This CPU, probed once per test session."""
    with tempfile.TemporaryDirectory(prefix="fptrace-cpuid-") as tmp:
        exe = build_probe(Path(tmp))
        return parse_probe(subprocess.run([str(exe)], capture_output=True, check=True).stdout)


def widest_level() -> str:
    """The widest vector level this CPU has (AVX-512 > AVX > SSE), within FPTRACE_TEST_LEVEL."""
    have = cpu().hardware_level()
    want = cap()
    if want is None:
        return have
    return want if LEVELS.index(want) <= LEVELS.index(have) else have
