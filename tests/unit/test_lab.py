"""The lab's pure parts: specs, apt resolution (fake apt), modules, the initramfs, verdicts."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path
from typing import ClassVar

import pytest

from fptrace.errors import EnvironmentProblem, OutputExistsError, UsageError
from fptrace.lab import kernels, runner
from fptrace.lab.apt import DebianKernel, PrivateApt, host_mirror
from fptrace.lab.initramfs import build_initramfs, modinfo_depends, resolve_modules
from fptrace.lab.qemu import BootResult
from fptrace.lab.specs import combination_name, parse_spec

# --- specs ------------------------------------------------------------------------------


def test_parse_debian_specs() -> None:
    assert parse_spec("debian:bookworm").suite == "bookworm"
    assert parse_spec("debian:6.12").version == "6.12"
    assert parse_spec("debian:7").version == "7"
    assert parse_spec("debian:Sid").suite == "sid"


@pytest.mark.parametrize("bad", ["debian:", "debian:woody", "debian:6.x", "bookworm", ""])
def test_unknown_spec_is_a_usage_error_naming_the_forms(bad: str) -> None:
    with pytest.raises(UsageError, match="debian:SUITE"):
        parse_spec(bad)


def test_path_spec_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a file"):
        parse_spec(str(tmp_path / "vmlinuz"))
    (tmp_path / "vmlinuz").write_bytes(b"x")
    spec = parse_spec(f"{tmp_path}/vmlinuz:{tmp_path}")
    assert spec.vmlinuz == (tmp_path / "vmlinuz").resolve() and spec.modules == tmp_path


def test_combination_names_are_file_names() -> None:
    assert combination_name("6.1.0-56-amd64", "") == "6.1.0-56-amd64"
    assert combination_name("6.1.0-56-amd64", " noxsave ") == "6.1.0-56-amd64+noxsave"
    name = combination_name("7.2.13+deb14-amd64", "clearcpuid=avx512f nopku /x")
    assert name == "7.2.13+deb14-amd64+clearcpuid-avx512f_nopku_x" and "/" not in name


# --- apt ----------------------------------------------------------------------------------


class FakeApt(PrivateApt):
    """madison/depends from tables, as `apt-cache` would print them parsed."""

    MADISON: ClassVar[list[tuple[str, str]]] = [
        ("7.2.13-1", "sid"),
        ("6.12.118-1", "trixie-security"),
        ("6.12.117-1", "trixie"),
        ("6.1.176-1", "bookworm"),
        ("6.1.192-2", "bookworm-security"),
        ("5.10.262-1", "bullseye-security"),
    ]
    DEPENDS: ClassVar[dict[tuple[str, str], list[tuple[str, str | None]]]] = {
        ("linux-image-amd64", "7.2.13-1"): [
            ("linux-base-amd64", "7.2.13-1"),
            ("linux-image-7.2.13+deb14-amd64", "7.2.13-1"),
        ],
        ("linux-image-amd64", "6.1.192-2"): [("linux-image-6.1.0-56-amd64", "6.1.192-2")],
        ("linux-image-amd64", "5.10.262-1"): [("linux-image-5.10.0-46-amd64", "5.10.262-1")],
        ("linux-image-amd64", "6.12.118-1"): [("linux-image-6.12.118+deb13-amd64", None)],
        ("linux-image-7.2.13+deb14-amd64", "7.2.13-1"): [
            ("linux-base-7.2.13+deb14-amd64", "7.2.13-1"),
            ("linux-binary-7.2.13+deb14-amd64", "7.2.13-1"),
            ("linux-modules-7.2.13+deb14-amd64", "7.2.13-1"),
        ],
        ("linux-headers-7.2.13+deb14-amd64", "7.2.13-1"): [
            ("gcc-16-for-host", None),
            ("linux-headers-7.2.13+deb14-common", "7.2.13-1"),
            ("linux-kbuild-7.2.13+deb14", "7.2.13-1"),
        ],
    }

    def madison(self, package: str) -> list[tuple[str, str]]:
        return list(self.MADISON) if package == "linux-image-amd64" else []

    def depends(self, package: str, version: str) -> list[tuple[str, str | None]]:
        return self.DEPENDS.get((package, version), [])


@pytest.fixture
def apt(tmp_path: Path) -> FakeApt:
    return FakeApt(tmp_path, mirror="http://mirror.example/debian")


def test_resolve_suite_takes_the_newest_including_security(apt: FakeApt) -> None:
    k = apt.resolve(parse_spec("debian:bookworm"))
    assert k == DebianKernel("6.1.0-56-amd64", "6.1.192-2", "bookworm-security")
    assert apt.resolve(parse_spec("debian:bullseye")).release == "5.10.0-46-amd64"


def test_resolve_version_prefix_respects_dots(apt: FakeApt) -> None:
    assert apt.resolve(parse_spec("debian:6.1")).release == "6.1.0-56-amd64"  # not 6.12
    assert apt.resolve(parse_spec("debian:6.12")).release == "6.12.118+deb13-amd64"
    assert apt.resolve(parse_spec("debian:7")).release == "7.2.13+deb14-amd64"


def test_missing_suite_or_version_names_the_mirror(apt: FakeApt) -> None:
    with pytest.raises(UsageError, match=r"mirror\.example.*no suite forky"):
        apt.resolve(parse_spec("debian:forky"))
    with pytest.raises(UsageError, match=r"no Debian kernel 4\.19 .*available: 5\.10\.262-1"):
        apt.resolve(parse_spec("debian:4.19"))


def test_7x_packages_split_image_and_headers_common(apt: FakeApt) -> None:
    k = apt.resolve(parse_spec("debian:sid"))
    names = [n for n, _ in apt.packages(k)]
    assert names == [
        "linux-image-7.2.13+deb14-amd64",
        "linux-base-7.2.13+deb14-amd64",
        "linux-binary-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64",
        "linux-headers-7.2.13+deb14-amd64",
        "linux-headers-7.2.13+deb14-common",
    ]


def test_private_config_keeps_apt_state_under_the_cache(tmp_path: Path) -> None:
    a = PrivateApt(tmp_path / "apt", mirror="http://m/debian")
    a.write_config()
    conf = a.conf.read_text()
    for key in ("Dir::State ", "Dir::State::status", "Dir::Cache ", "Dir::Etc::sourcelist"):
        line = next(ln for ln in conf.splitlines() if ln.startswith(key))
        assert str(tmp_path / "apt") in line
    assert "http://m/debian-security bullseye-security main" in a.sources()


def test_config_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    """apt rebuilds its binary cache (5 s) whenever status or sources look newer than it."""
    import os

    a = PrivateApt(tmp_path / "apt", mirror="http://m/debian")
    a.write_config()
    files = [a.root / "state/status", a.root / "sources.list", a.conf]
    for f in files:
        os.utime(f, (1000, 1000))
    a.write_config()
    assert [f.stat().st_mtime for f in files] == [1000] * 3
    PrivateApt(tmp_path / "apt", mirror="http://other/debian").write_config()
    assert (a.root / "sources.list").stat().st_mtime != 1000  # a new mirror is written


def test_host_mirror_from_deb822(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FPTRACE_LAB_MIRROR", raising=False)
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.local/debian\nSuites: bookworm\n"
    )
    assert host_mirror((str(tmp_path),)) == "http://mirror.local/debian"
    assert host_mirror((str(tmp_path / "none"),)) == "http://deb.debian.org/debian"


# --- modules and the initramfs ---------------------------------------------------------------


def _ko(depends: str) -> bytes:
    return b"\x7fELF....\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0"


def test_modules_resolved_dependencies_first_skipping_builtins(tmp_path: Path) -> None:
    md = tmp_path / "lib/modules/6.1"
    (md / "kernel/fs").mkdir(parents=True)
    (md / "kernel/fs/9p.ko.xz").write_bytes(lzma.compress(_ko("9pnet,netfs")))
    (md / "kernel/fs/9pnet.ko").write_bytes(_ko(""))
    (md / "kernel/fs/9pnet_virtio.ko.gz").write_bytes(gzip.compress(_ko("9pnet,virtio")))
    (md / "kernel/fs/netfs.ko").write_bytes(_ko(""))
    (md / "kernel/fs/overlay.ko").write_bytes(_ko(""))
    (md / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    got = [n for n, _ in resolve_modules(md, ("9pnet_virtio", "9p", "overlay", "cpuid"))]
    assert got == ["9pnet", "9pnet_virtio", "netfs", "9p", "overlay"]
    assert modinfo_depends(lzma.decompress((md / "kernel/fs/9p.ko.xz").read_bytes())) == [
        "9pnet",
        "netfs",
    ]


def _cpio_names(data: bytes) -> dict[str, tuple[int, int, int]]:
    out, pos = {}, 0
    while True:
        hdr = data[pos : pos + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (f[1], filesize, f[9] << 8 | f[10])
        pos += filesize + (-filesize % 4)


def test_initramfs_is_a_newc_archive_with_init_console_and_modules(tmp_path: Path) -> None:
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF" + b"b" * 1001)
    build_initramfs(tmp_path / "i.img", [("9p", b"elf9p"), ("overlay", b"ov")], bb)
    names = _cpio_names(gzip.decompress((tmp_path / "i.img").read_bytes()))
    assert names["init"][0] == 0o100755 and names["bin/busybox"][1] == 1005
    assert names["dev/console"] == (0o020600, 0, 5 << 8 | 1)  # before devtmpfs is mounted
    assert names["modules/9p.ko"][1] == 5 and "modules.order" in names


def test_bzimage_release_from_the_setup_header(tmp_path: Path) -> None:
    img = bytearray(0x4000)
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x20E, 0x1000)
    version = b"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0"
    img[0x1200 : 0x1200 + len(version)] = version
    (tmp_path / "vmlinuz").write_bytes(bytes(img))
    assert kernels.bzimage_release(tmp_path / "vmlinuz") == "6.1.0-56-amd64"
    (tmp_path / "other").write_bytes(b"\0" * 0x1000)
    assert kernels.bzimage_release(tmp_path / "other") is None


def test_not_enough_disk_names_the_cache_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "disk_free", lambda p: 200_000_000)
    with pytest.raises(EnvironmentProblem, match=r"not enough disk .*0\.20 GB free.*lab clean"):
        kernels._need_space(tmp_path, "kernel 6.1.0-56-amd64")


# --- the runner's verdicts ----------------------------------------------------------------


def _boot(tmp_path: Path, rc: int | None, console: str = "x") -> BootResult:
    log = tmp_path / "console.log"
    log.write_text(console)
    return BootResult(rc, 12.0, log)


# What the guest's `fptrace record` leaves (the least a manifest has).
GUEST_MANIFEST = '{"format": "fptrace-recording", "format_version": 1, "status": "complete"}'


def _job(out: Path, name: str, result: dict | None, recording: bool) -> None:
    (out / ".lab" / name).mkdir(parents=True)
    if result is not None:
        import json

        (out / ".lab" / name / "result.json").write_text(json.dumps(result))
    if recording:
        (out / name).mkdir()
        (out / name / "manifest.json").write_text(GUEST_MANIFEST)


@pytest.mark.parametrize(
    ("rc", "result", "recording", "status"),
    [
        (0, {"returncode": 0}, True, "ok"),
        (0, {"returncode": 3}, True, "workload-failed"),
        (0, {"returncode": 69}, False, "record-failed"),
        (0, None, False, "no-result"),
        (None, None, False, "timeout"),
    ],
)
def test_verdicts(
    tmp_path: Path, rc: int | None, result: dict | None, recording: bool, status: str
) -> None:
    _job(tmp_path, "k", result, recording)
    boot = _boot(tmp_path, rc, "Kernel panic - not syncing: VFS\n")
    res = runner._interpret("k", parse_spec("debian:6.1"), "", tmp_path, boot)
    assert res.status == status
    assert (res.recording is not None) == recording
    if status != "ok":
        assert "Kernel panic" in res.message and str(boot.console) in res.message


def test_output_checks(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="spaces"):
        runner._check_output(tmp_path / "a b", False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(OutputExistsError, match="not empty"):
        runner._check_output(tmp_path / "full", False)
    runner._check_output(tmp_path / "full", True)


def test_job_script_and_env(tmp_path: Path) -> None:
    k = kernels.CachedKernel("6.1.0-56-amd64", tmp_path / "k", {})
    opts = runner.LabOptions(["debian:6.1"], tmp_path, ["fptrace", "workload", "pingpong"])
    script = runner.write_job(tmp_path, "6.1.0-56-amd64", k, opts)
    text = script.read_text()
    assert "fptrace.lab.guest" in text and "sysrq-trigger" in text
    import json

    job = json.loads((script.parent / "job.json").read_text())
    assert job["cmd"][1:4] == ["-m", "fptrace", "workload"]  # this fptrace, not PATH's
    assert job["env"]["FPTRACE_KERNEL_CONFIG"].endswith("k/config")
    assert job["recording"] == str(tmp_path / "6.1.0-56-amd64")


def test_clean_frees_kernels_and_keeps_lists_unless_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FPTRACE_LAB_CACHE", str(tmp_path))
    for d in ("kernels/6.1", "apt/cache", "apt/state/lists"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "f").write_bytes(b"x" * 1000)
    assert kernels.clean() == 2000
    assert not (tmp_path / "kernels").exists() and (tmp_path / "apt/state/lists/f").exists()
    assert kernels.clean(everything=True) == 1000 and not tmp_path.exists()


def test_console_summary_leads_with_the_panic(tmp_path: Path) -> None:
    lines = ["boot"] * 5 + ["[ 2.4] Kernel panic - not syncing: Attempted to kill init!"]
    lines += [f"[ 2.5] R{i}: 0000" for i in range(20)]
    boot = _boot(tmp_path, 0, "\n".join(lines) + "\n")
    got = boot.console_summary()
    assert got[0].endswith("Attempted to kill init!") and got[-1] == "[ 2.5] R19: 0000"
    assert len(got) == 7


def test_interrupted_lab_keeps_what_was_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the second guest: lab.json still lists the first, whose recording stays."""
    import json

    class Kernel(kernels.CachedKernel):
        def initrd(self) -> Path:
            return tmp_path / "initrd"

    ks = [Kernel(r, tmp_path / r, {}) for r in ("6.1.0-56-amd64", "6.12.118+deb13-amd64")]
    monkeypatch.setattr(runner, "qemu_binary", lambda: "/bin/true")
    monkeypatch.setattr(runner, "qemu_version", lambda: "7.2")
    monkeypatch.setattr(runner, "qemu_argv", lambda *a: ["qemu"])

    def resolve(specs: list, refresh: bool, progress: object) -> list:
        return [(s, k, "") for s, k in zip(specs, ks, strict=True)]

    monkeypatch.setattr(runner, "_resolve", resolve)
    out = tmp_path / "lab"

    def fake_guest(argv: list[str], console: Path, timeout: float) -> BootResult:
        if "6.12" in str(console):
            raise KeyboardInterrupt
        name = console.parent.name
        (console.parent / "result.json").write_text(json.dumps({"returncode": 0}))
        (out / name).mkdir()
        (out / name / "manifest.json").write_text(GUEST_MANIFEST)
        return _boot(tmp_path, 0)

    monkeypatch.setattr(runner, "run_guest", fake_guest)
    opts = runner.LabOptions(["debian:6.1", "debian:6.12"], out, ["true"], accel="tcg")
    with pytest.raises(KeyboardInterrupt):
        runner.lab_record(opts, lambda line: None)
    (first,) = json.loads((out / "lab.json").read_text())["combinations"]
    assert first["name"] == "6.1.0-56-amd64" and first["status"] == "ok"
    lab_meta = json.loads((out / "6.1.0-56-amd64" / "manifest.json").read_text())["lab"]
    assert lab_meta["kernel_spec"] == "debian:6.1" and lab_meta["accel"] == "tcg"


def test_stale_preparations_of_dead_processes_are_swept(tmp_path: Path) -> None:
    import os

    (tmp_path / ".tmp-6.1.0-56-amd64-999999999").mkdir()  # no such pid: a killed run
    (tmp_path / f".tmp-6.12.118+deb13-amd64-{os.getpid()}").mkdir()  # alive: in progress
    kernels._sweep_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".tmp-6.12.118+deb13-amd64-{os.getpid()}"]


def test_read_only_roots_are_cached_in_the_guest_and_the_lab_share_is_not() -> None:
    from fptrace.lab.initramfs import INIT

    mounts = {ln.split()[-1] if "||" not in ln else ln.split("||")[0].split()[-1]: ln
              for ln in INIT.splitlines() if "mount -t 9p" in ln}  # fmt: skip
    assert "cache=loose" in mounts["/lower"] and "ro," in mounts["/lower"]
    assert "cache=loose" in mounts["/host"]
    assert "cache=" not in mounts["/out"]  # what the guest writes must reach the host
