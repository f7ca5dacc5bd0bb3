"""XSAVE layout arithmetic: component names, offsets and buffer sizes.

Pure functions over a :class:`Layout` read from CPUID leaf 0xD (or a recording's
manifest), following ../shared/docs/kernel-fpu.md §6: the compacted format packs the
components set in XCOMP_BV in ascending order (aligning those with the align64 bit), the
standard format puts each at its CPUID offset.  Shared by the recorder (to check the
kernel's ``fpstate->size``) and by the analysis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LEGACY_SIZE = 512  # FXSAVE area: x87 + SSE
HEADER_SIZE = 64  # XSAVE header: XSTATE_BV, XCOMP_BV, reserved
COMPACTED_BIT = 1 << 63

# Names as the kernel prints them (arch/x86/kernel/fpu/xstate.c: xfeature_names[]), short.
COMPONENT_NAMES: dict[int, str] = {
    0: "x87",
    1: "SSE",
    2: "AVX",
    3: "MPX_BNDREGS",
    4: "MPX_BNDCSR",
    5: "AVX512_opmask",
    6: "AVX512_ZMM_Hi256",
    7: "AVX512_Hi16_ZMM",
    8: "PT",
    9: "PKRU",
    10: "PASID",
    11: "CET_U",
    12: "CET_S",
    13: "HDC",
    14: "UINTR",
    15: "LBR",
    16: "HWP",
    17: "AMX_TILECFG",
    18: "AMX_TILEDATA",
    19: "APX",
}
AVX512_MASK = (1 << 5) | (1 << 6) | (1 << 7)
AMX_MASK = (1 << 17) | (1 << 18)
# The vector levels users speak of, by the xstate components that make them live.
VECTOR_LEVELS: dict[str, int] = {
    "SSE": 1 << 1,
    "AVX": 1 << 2,
    "AVX-512": AVX512_MASK,
    "AMX": AMX_MASK,
    "APX": 1 << 19,
}


# Each level's identifier in JSON and column names (avx512_share, avx512_save_share…).
LEVEL_IDS = {"SSE": "sse", "AVX": "avx", "AVX-512": "avx512", "AMX": "amx", "APX": "apx"}


def levels_of(enabled: int) -> list[str]:
    """The vector levels a CPU (its enabled xfeatures, XCR0) has, widest last."""
    return [name for name, mask in VECTOR_LEVELS.items() if enabled & mask]


def component_name(index: int) -> str:
    return COMPONENT_NAMES.get(index, f"xfeature{index}")


def bits(mask: int) -> list[int]:
    """Indices of the set bits of ``mask`` (bit 63, the compacted flag, excluded)."""
    mask &= ~COMPACTED_BIT
    return [i for i in range(63) if mask >> i & 1]


def decode(mask: int) -> list[str]:
    """XSTATE_BV / xfeatures mask -> component names, lowest bit first."""
    return [component_name(i) for i in bits(mask)]


@dataclass(frozen=True)
class Component:
    """CPUID(0xD, i) for one state component i >= 2."""

    index: int
    size: int
    offset: int  # standard-format offset (0 for supervisor components)
    supervisor: bool
    align64: bool
    xfd: bool = False

    @property
    def name(self) -> str:
        return component_name(self.index)


@dataclass(frozen=True)
class Layout:
    """The CPU's XSAVE components (index >= 2; 0 and 1 live in the legacy area)."""

    components: dict[int, Component]

    def compacted_offsets(self, xcomp_bv: int) -> dict[int, int]:
        offs = LEGACY_SIZE + HEADER_SIZE
        out: dict[int, int] = {}
        for i in bits(xcomp_bv):
            if i < 2:
                continue
            comp = self.components.get(i)
            if comp is None:
                raise KeyError(f"component {i} is set in {xcomp_bv:#x} but unknown to the CPU")
            if comp.align64:
                offs = (offs + 63) & ~63
            out[i] = offs
            offs += comp.size
        return out

    def buffer_size(self, xcomp_bv: int, xfeatures: int | None = None) -> int:
        """Size of an XSAVE buffer: compacted if bit 63 of ``xcomp_bv``, else standard.

        In the standard format (``xcomp_bv`` == 0) the enabled features (``xfeatures``)
        decide which components the buffer must hold.
        """
        if xcomp_bv & COMPACTED_BIT:
            offs = self.compacted_offsets(xcomp_bv)
            if not offs:
                return LEGACY_SIZE + HEADER_SIZE
            last = max(offs, key=offs.__getitem__)
            return offs[last] + self.components[last].size
        return self.standard_size(xfeatures if xfeatures is not None else xcomp_bv)

    def standard_size(self, features: int) -> int:
        """Standard-format size for ``features``: the furthest end of any component."""
        end = LEGACY_SIZE + HEADER_SIZE
        for i in bits(features):
            comp = self.components.get(i)
            if i >= 2 and comp is not None and not comp.supervisor:
                end = max(end, comp.offset + comp.size)
        return end

    def bytes_saved(self, xstate_bv: int) -> int:
        """Estimated bytes an XSAVE(S) writes for a buffer with this XSTATE_BV (§6.4).

        Header words + MXCSR + live legacy parts + every live extended component; an
        upper bound under XSAVES/XSAVEOPT's modified optimisation.
        """
        total = 16 + 8  # XSTATE_BV + XCOMP_BV, MXCSR/MXCSR_MASK
        if xstate_bv & 1:
            total += 152
        if xstate_bv & 2:
            total += 256
        for i in bits(xstate_bv):
            if i >= 2 and i in self.components:
                total += self.components[i].size
        return total

    def to_json(self) -> list[dict[str, object]]:
        return [
            {
                "index": c.index,
                "name": c.name,
                "size": c.size,
                "offset": c.offset,
                "supervisor": c.supervisor,
                "align64": c.align64,
                "xfd": c.xfd,
            }
            for c in sorted(self.components.values(), key=lambda c: c.index)
        ]

    @classmethod
    def from_json(cls, items: list[dict[str, object]]) -> Layout:
        comps = {}
        for item in items:
            idx = int(item["index"])  # type: ignore[call-overload]
            comps[idx] = Component(
                idx,
                int(item["size"]),  # type: ignore[call-overload]
                int(item.get("offset") or 0),  # type: ignore[call-overload]
                bool(item.get("supervisor", False)),
                bool(item.get("align64", False)),
                bool(item.get("xfd", False)),
            )
        return cls(comps)

    @classmethod
    def from_cpuid(cls, leaf_d: dict[int, tuple[int, int, int, int]]) -> Layout:
        """From CPUID(0xD, i) = (eax, ebx, ecx, edx) for i = 0..N."""
        eax0, _ebx0, _ecx0, edx0 = leaf_d.get(0, (0, 0, 0, 0))
        ecx1, edx1 = leaf_d.get(1, (0, 0, 0, 0))[2:4]
        supported = eax0 | edx0 << 32 | ecx1 | edx1 << 32
        comps = {}
        for i in bits(supported):
            if i < 2 or i not in leaf_d:
                continue
            eax, ebx, ecx, _ = leaf_d[i]
            if eax == 0:
                continue
            comps[i] = Component(i, eax, ebx, bool(ecx & 1), bool(ecx & 2), bool(ecx & 4))
        return cls(comps)


def unsized_vso_size(
    facts: Mapping[str, Any], layout: Layout | None, xcomp_bv: int, xfeatures: int = 0
) -> int | None:
    """Size of a buffer the kernel reports no size for (before 5.16, and the ftrace backend).

    Compacted (bit 63 of ``xcomp_bv``): the components in XCOMP_BV.  Standard format
    (``xcomp_bv`` 0): every feature the kernel enabled has its slot, so the size is the
    kernel's context size (CPUID(0xD,0).EBX for XCR0) — not the live ``xfeatures``.  FXSAVE
    (``noxsave``, no XSAVE): 512 bytes.  ``facts`` is the manifest's ``host.xstate``.
    """
    if facts.get("format") == "fxsave":
        return LEGACY_SIZE
    if xcomp_bv & COMPACTED_BIT:
        if layout is None:
            return None
        try:
            return layout.buffer_size(xcomp_bv)
        except KeyError:
            return None
    for key in ("kernel_context_size", "standard_size_enabled"):
        if facts.get("format") == "standard" and facts.get(key):
            return int(facts[key])
    if layout is not None and xfeatures:
        return layout.standard_size(xfeatures)
    return None
