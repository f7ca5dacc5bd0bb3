"""The private merged header tree BCC compiles against when the kernel has no headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fptrace import cache
from fptrace.probes import headers


def make_pair(root: Path, version: str) -> None:
    common = root / f"linux-headers-{version}-common"
    arch = root / f"linux-headers-{version}-amd64"
    (common / "include/linux").mkdir(parents=True)
    (common / "include/linux/shared.h").write_text("common")
    (common / "include/linux/only_common.h").write_text("common")
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/autoconf.h").write_text("arch")
    (arch / "include/linux").mkdir(parents=True)
    (arch / "include/linux/shared.h").write_text("arch")


def test_merged_tree_puts_arch_files_over_common_ones(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    make_pair(src, "6.1.0-9")
    make_pair(src, "6.1.0-56")  # newer: must win over -9 (numeric, not lexical order)
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path / "cache"))
    choice = headers.choose_headers("9.9.9-none", src)
    assert choice.path is not None and choice.path.name == "linux-headers-6.1.0-56-amd64"
    assert (choice.path / "include/linux/shared.h").read_text() == "arch"
    assert (choice.path / "include/linux/only_common.h").read_text() == "common"
    generated = choice.path / "include/generated"  # only arch has it: linked whole, one link
    assert generated.is_symlink() and (generated / "autoconf.h").read_text() == "arch"
    assert not (choice.path / "include/linux").is_symlink()  # both have it: merged
    assert "offsets come from BTF" in choice.note
    # Idempotent: a second call reuses the tree.
    assert headers.choose_headers("9.9.9-none", src).path == choice.path


def test_no_headers_at_all(tmp_path: Path) -> None:
    assert headers.choose_headers("9.9.9-none", tmp_path).path is None


@pytest.mark.parametrize("uid", [0, 1000])
def test_cache_dir_follows_privilege(monkeypatch, uid: int) -> None:
    monkeypatch.delenv("FPTRACE_CACHE", raising=False)
    monkeypatch.setattr(cache.os, "geteuid", lambda: uid)
    expect = "/var/cache/fptrace" if uid == 0 else "fptrace"
    assert str(cache.cache_dir()).endswith(expect)
