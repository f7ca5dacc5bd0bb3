"""LiveKernel on a hand-made tracefs tree and BTF blob: what it reads, and when."""

from __future__ import annotations

from pathlib import Path

from fptrace.probes.kernel import LiveKernel
from tests.unit.test_btf import kernel_blob

FORMAT = """name: x86_fpu_regs_deactivated
ID: 42
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:struct fpu * fpu;\toffset:8;\tsize:8;\tsigned:0;
\tfield:bool load_fpu;\toffset:16;\tsize:1;\tsigned:0;
"""


def _tracefs(root: Path) -> Path:
    ev = root / "events"
    (ev / "x86_fpu" / "x86_fpu_regs_deactivated").mkdir(parents=True)
    (ev / "x86_fpu" / "x86_fpu_regs_deactivated" / "format").write_text(FORMAT)
    for i in range(50):
        (ev / "syscalls" / f"sys_enter_n{i}").mkdir(parents=True)
    # A format that cannot be read: only asking for its fields may notice.
    (ev / "syscalls" / "sys_enter_arch_prctl" / "format").mkdir(parents=True)
    return root


def test_formats_are_read_only_for_the_events_whose_fields_are_asked(tmp_path: Path) -> None:
    k = LiveKernel(_tracefs(tmp_path), btf_path=tmp_path / "none")
    syscalls = k.events("syscalls")
    assert syscalls is not None and len(syscalls) == 51
    assert "sys_enter_arch_prctl" in syscalls and "sys_enter_nope" not in syscalls
    assert syscalls["sys_enter_arch_prctl"] == set()  # unreadable: no fields, no error
    fpu = k.events("x86_fpu")
    assert dict(fpu) == {"x86_fpu_regs_deactivated": {"fpu", "load_fpu"}}
    assert k.events("nogroup") == {}


def test_btf_comes_as_remembered_facts_and_a_missing_blob_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    blob = tmp_path / "vmlinux"
    blob.write_bytes(kernel_blob())
    first = LiveKernel(tmp_path, btf_path=blob)
    assert first.btf is not None and first.btf.members("fpu")["fpstate"].offset == 16
    again = LiveKernel(tmp_path, btf_path=blob).btf
    assert again is not None and again.cached and again.members("fpu")["fpstate"].offset == 16
    assert not again.parsed
    missing = LiveKernel(tmp_path, btf_path=tmp_path / "none")
    assert missing.btf is None and "cannot read" in str(missing.btf_error)
    blob.write_bytes(bytes(40))  # another, malformed blob (bad magic): reported, not cached
    bad = LiveKernel(tmp_path, btf_path=blob)
    assert bad.btf is None and bad.btf_error


def test_tracefs_mounted_but_root_only_is_not_called_unmounted() -> None:
    """Non-root `doctor` said "tracefs not mounted" when it was mounted but unreadable."""
    from pathlib import Path

    from fptrace.probes.kernel import tracefs_mounts, tracefs_problem

    mounts = tracefs_mounts(
        "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n"
    )
    assert mounts == ["/sys/kernel/tracing"]
    said = tracefs_problem(None, mounts, 1000)
    assert said == "mounted at /sys/kernel/tracing but readable only by root (running as uid 1000)"
    assert tracefs_problem(None, [], 1000) == "not mounted"
    assert tracefs_problem(Path("/sys/kernel/tracing"), mounts, 0) == ""
