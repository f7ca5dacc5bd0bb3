"""XSAVE layout arithmetic against the figures in ../shared/docs/kernel-fpu.md §6."""

from __future__ import annotations

from fptrace.collectors.host import xstate_facts
from fptrace.xstate import Component, Layout, bits, decode, unsized_vso_size

# AMD EPYC reference machine (kernel-fpu.md §6.2).
AMD = Layout(
    {
        2: Component(2, 256, 576, False, False),
        5: Component(5, 64, 1088, False, False),
        6: Component(6, 512, 1152, False, False),
        7: Component(7, 1024, 1664, False, False),
        9: Component(9, 8, 2688, False, False),
        11: Component(11, 16, 0, True, False),
        12: Component(12, 24, 0, True, False),
    }
)
# CPUID(0xD, i) read on this project's Intel machine with AMX (EAX, EBX, ECX, EDX).
INTEL_LEAF = {
    0: (0x600E7, 0x2B00, 0x2B00, 0),
    1: (0x1F, 0x29C0, 0, 0),
    2: (0x100, 0x240, 0, 0),
    5: (0x40, 0x440, 0, 0),
    6: (0x200, 0x480, 0, 0),
    7: (0x400, 0x680, 0, 0),
    17: (0x40, 0xAC0, 0x2, 0),
    18: (0x2000, 0xB00, 0x6, 0),
}
# qemu TCG -cpu max: standard format (kernel-lab.md): x87 SSE AVX MPX PKRU = 0x21f.
TCG = Layout(
    {
        2: Component(2, 256, 576, False, False),
        3: Component(3, 64, 960, False, False),
        4: Component(4, 64, 1024, False, False),
        9: Component(9, 8, 2688, False, False),
    }
)


def test_compacted_size_of_the_reference_task_buffer() -> None:
    assert AMD.buffer_size(0x80000000000008E7) == 2448  # fpstate->size on the AMD machine
    assert AMD.compacted_offsets(0x80000000000008E7)[11] == 2432


def test_cpuid_layout_with_amx_alignment_and_xfd() -> None:
    intel = Layout.from_cpuid(INTEL_LEAF)
    assert intel.components[17].align64 and intel.components[18].xfd
    assert intel.buffer_size(0x8000_0000_0002_00E7) == 2496  # default task buffer
    assert intel.buffer_size(0x8000_0000_0006_00E7) == 10688  # after AMX realloc = dmesg
    assert intel.standard_size(0x200E7) == 2816  # fpstate->user_size seen on that machine


def test_standard_format_under_tcg() -> None:
    assert TCG.buffer_size(0, xfeatures=0x21F) == 2696  # "context size is 2696 bytes"


def test_bytes_saved_matches_the_worked_example() -> None:
    assert AMD.bytes_saved(0xA2) == 1368  # SSE | opmask | Hi16_ZMM (kernel-fpu.md §6.4)
    assert AMD.bytes_saved(0) == 24  # header + MXCSR only, e.g. right after exec


def test_bits_and_names() -> None:
    assert bits(0x8000_0000_0000_00E6) == [1, 2, 5, 6, 7]
    assert decode(0x40002) == ["SSE", "AMX_TILEDATA"]
    assert Layout.from_json(AMD.to_json()) == AMD


def test_unsized_buffers_pre_516_and_ftrace() -> None:
    """Without fpstate->size: the kernel's whole standard buffer, not the live features."""
    std = {"format": "standard", "kernel_context_size": 2696}
    assert unsized_vso_size(std, TCG, 0, xfeatures=0x3) == 2696  # live x87|SSE only
    assert unsized_vso_size({"format": "standard", "standard_size_enabled": 2696}, None, 0) == 2696
    assert unsized_vso_size({"format": "fxsave"}, TCG, 0) == 512  # noxsave
    assert unsized_vso_size({"format": "compacted"}, AMD, 0x80000000000008E7) == 2448
    assert unsized_vso_size({}, None, 0) is None


def test_noxsave_boot_lines_mean_fxsave(monkeypatch) -> None:
    import fptrace.collectors.host as host

    monkeypatch.setattr(host, "read_cpuid_leaf_d", lambda cpu=0: None)
    facts, _ = xstate_facts(["x86/fpu: x87 FPU will use FXSAVE"])
    assert facts["format"] == "fxsave" and facts["kernel_context_size"] == 512
    facts, _ = xstate_facts(
        [
            "x86/fpu: Enabled xstate features 0x21f, context size is 2696 bytes, "
            "using 'standard' format."
        ]
    )
    assert facts["format"] == "standard" and facts["enabled_features"] == 0x21F
