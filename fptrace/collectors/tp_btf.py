"""Load and attach a compiled function as a tp_btf program (BTF-typed raw tracepoint).

Why: in a tp_btf program the tracepoint's arguments are BTF-typed kernel pointers, so the
verifier allows plain, fault-safe loads through them.  On the switch path that replaces two
``bpf_probe_read_kernel`` calls per event (docs/overhead.md: 0.867 -> 0.901 of untraced
throughput in one interleaved run).  BCC 0.26 compiles such code but cannot load it: its
loader resolves the attach BTF id only for fentry/fexit/LSM names.  fptrace loads every
program itself anyway (collectors/bpf_sys.py); a tp_btf one is ``BPF_PROG_LOAD`` with type
TRACING, expected attach type RAW_TP and attach_btf_id = the ``btf_trace_<event>`` typedef,
then ``BPF_RAW_TRACEPOINT_OPEN`` without a name.  Unlike fentry, this needs no trampoline,
and works on this project's machines where fentry is refused.
"""

from __future__ import annotations

from fptrace.collectors import bpf_sys


def load_tp_btf(insns: bytes, btf_id: int, license: bytes, name: str) -> int:
    """Load ``insns`` as a tp_btf program for BTF id ``btf_id``; returns the program fd.

    Raises OSError with the verifier's last line when the kernel refuses.
    """
    return bpf_sys.prog_load(
        bpf_sys.BPF_PROG_TYPE_TRACING, insns, license, name, bpf_sys.BPF_TRACE_RAW_TP, btf_id
    )


def open_tp_btf(prog_fd: int) -> int:
    """Attach a loaded tp_btf program (it knows its tracepoint); returns the link fd."""
    return bpf_sys.raw_tracepoint_open(prog_fd)
