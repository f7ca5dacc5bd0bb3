"""Debian kernels through a private apt configuration.

Everything apt writes (lists, status, the package cache) lives under the lab cache; the
configuration is passed in ``APT_CONFIG``, so the host's own apt state is never read for
packages nor written.  The host's ``apt.conf.d`` (proxies, mirrors' quirks) still applies,
which is what makes the configured mirror reachable from here.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fptrace.errors import EnvironmentProblem, UsageError
from fptrace.lab.specs import SUITES, KernelSpec

DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE_S = 24 * 3600
_MADISON = re.compile(r"^\s*(\S+)\s*\|\s*(\S+)\s*\|\s*(\S+)\s+(\S+?)/\S+\s+\S+\s+Packages")
_DEP = re.compile(r"([a-z0-9][a-z0-9.+-]*)(?:\s*\(=\s*([^)]+)\))?")


class AptError(EnvironmentProblem):
    """apt failed (network, mirror, missing package)."""


@dataclass(frozen=True)
class DebianKernel:
    """One Debian kernel build: its release (``uname -r``), package version and suite."""

    release: str  # e.g. 6.1.0-50-amd64, 7.2.13+deb14-amd64
    version: str  # Debian package version, e.g. 6.1.176-1
    suite: str

    @property
    def stem(self) -> str:
        """The release without its flavour: the ``-common`` headers package is named for it."""
        return self.release.rsplit("-", 1)[0]


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key of a Debian version; good enough to order one package's versions."""
    return tuple(int(x) for x in re.findall(r"\d+", version))


def host_mirror(paths: tuple[str, ...] = ("/etc/apt/sources.list.d", "/etc/apt")) -> str:
    """The Debian mirror the host uses (its apt sources), else deb.debian.org."""
    env = os.environ.get("FPTRACE_LAB_MIRROR")
    if env:
        return env.rstrip("/")
    for base in paths:
        d = Path(base)
        files = sorted(d.glob("*.sources")) + sorted(d.glob("*.list"))
        for f in files:
            try:
                text = f.read_text()
            except OSError:
                continue
            for m in re.finditer(
                r"(?:URIs:|^deb(?:\s+\[[^\]]*\])?)\s+(\S+/debian)/?\s", text, re.M
            ):
                return m.group(1)
    return DEFAULT_MIRROR


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.write_text(text)


class PrivateApt:
    """apt-get/apt-cache with lists, status and archives under ``root``."""

    def __init__(self, root: Path, mirror: str | None = None) -> None:
        self.root = root
        self.mirror = (mirror or host_mirror()).rstrip("/")
        self.security = self.mirror + "-security"
        self.conf = root / "apt.conf"

    def sources(self) -> str:
        lines = []
        for suite in sorted({s for group in SUITES.values() for s in group}):
            uri = self.security if suite.endswith("-security") else self.mirror
            lines.append(f"deb [signed-by={KEYRING}] {uri} {suite} main")
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        r = self.root
        for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "prefs.d"):
            (r / d).mkdir(parents=True, exist_ok=True)
        # Only what changed is written: apt rebuilds its 110 MB binary cache (5 s here) when
        # the status file or the sources are newer than it, at every apt-cache call.
        if not (r / "state/status").exists():
            (r / "state/status").touch()
        _write_if_changed(r / "sources.list", self.sources())
        _write_if_changed(
            self.conf,
            "\n".join(
                [
                    f'Dir::State "{r}/state";',
                    f'Dir::State::status "{r}/state/status";',
                    f'Dir::Cache "{r}/cache";',
                    f'Dir::Etc::sourcelist "{r}/sources.list";',
                    f'Dir::Etc::sourceparts "{r}/sources.list.d";',
                    f'Dir::Etc::preferences "{r}/preferences";',
                    f'Dir::Etc::preferencesparts "{r}/prefs.d";',
                    'APT::Architecture "amd64";',
                    'APT::Architectures { "amd64"; };',
                    'Acquire::Languages "none";',
                    'APT::Sandbox::User "root";' if os.geteuid() == 0 else "",
                    "",
                ]
            ),
        )

    def _run(self, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, APT_CONFIG=str(self.conf), LC_ALL="C")
        # Command-line options win over the host's apt.conf.d (which may disable the binary
        # caches, making every apt-cache call rebuild them: 2.7 s instead of 0.1 s).
        args = [
            args[0],
            f"-oDir::Cache::pkgcache={self.root}/cache/pkgcache.bin",
            f"-oDir::Cache::srcpkgcache={self.root}/cache/srcpkgcache.bin",
            *args[1:],
        ]
        try:
            return subprocess.run(
                args, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=600
            )
        except FileNotFoundError as exc:
            raise AptError(f"{args[0]} is not installed: `fptrace lab` needs Debian's apt") from exc
        except subprocess.TimeoutExpired as exc:
            raise AptError(f"{' '.join(args[:2])} took over 10 minutes: is the mirror up?") from exc

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def lists_age(self) -> float | None:
        stamp = self.root / "state/updated"
        return time.time() - stamp.stat().st_mtime if stamp.exists() else None

    def update(self, force: bool = False) -> str:
        """Refresh the package lists when older than a day (or ``force``); return a note."""
        with self._lock():
            self.write_config()
            age = self.lists_age()
            if not force and age is not None and age < LISTS_MAX_AGE_S:
                return ""
            proc = self._run(["apt-get", "update", "-q"])
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "Err"))]
            fetched = any("Packages" in ln for ln in proc.stdout.splitlines())
            if proc.returncode != 0 and not fetched and age is None:
                raise AptError(
                    f"cannot read the Debian mirror {self.mirror}: "
                    f"{errors[0] if errors else proc.stderr.strip()[:200]} "
                    "(set FPTRACE_LAB_MIRROR to a reachable mirror)"
                )
            (self.root / "state/updated").touch()
            if proc.returncode != 0:
                missing = sorted(set(re.findall(r" (\S+) Release", " ".join(errors))))
                return f"apt: some suites are not on {self.mirror}: {', '.join(missing) or errors}"
            return ""

    def madison(self, package: str) -> list[tuple[str, str]]:
        """(version, suite) of every version of ``package`` on the mirror."""
        proc = self._run(["apt-cache", "madison", package])
        out = []
        for line in proc.stdout.splitlines():
            m = _MADISON.match(line)
            if m and m.group(1) == package:
                out.append((m.group(2), m.group(4)))
        return out

    def depends(self, package: str, version: str) -> list[tuple[str, str | None]]:
        """The plain (non-alternative) Depends of one package version."""
        proc = self._run(["apt-cache", "show", f"{package}={version}"])
        if proc.returncode != 0:
            raise AptError(f"apt has no {package}={version}: {proc.stderr.strip()[:200]}")
        for line in proc.stdout.splitlines():
            if line.startswith("Depends:"):
                deps = []
                for part in line.split(":", 1)[1].split(","):
                    if "|" in part:
                        continue
                    m = _DEP.search(part.strip())
                    if m:
                        deps.append((m.group(1), m.group(2)))
                return deps
        return []

    def resolve(self, spec: KernelSpec) -> DebianKernel:
        """The newest Debian kernel matching ``spec`` (a suite or a version prefix)."""
        versions = self.madison("linux-image-amd64")
        if spec.suite is not None:
            suites = SUITES[spec.suite]
            cands = [(v, s) for v, s in versions if s in suites]
            if not cands:
                raise UsageError(
                    f"kernel {spec.text}: the mirror {self.mirror} has no suite "
                    f"{' or '.join(suites)} with a kernel (try `fptrace lab list`)"
                )
        else:
            prefix = spec.version or ""
            cands = [(v, s) for v, s in versions if re.match(re.escape(prefix) + r"([.+~-]|$)", v)]
            if not cands:
                have = ", ".join(sorted({v for v, _ in versions}, key=version_key))
                raise UsageError(
                    f"kernel {spec.text}: no Debian kernel {prefix} on {self.mirror} "
                    f"(available: {have or 'none — run `fptrace lab list --refresh`'})"
                )
        version, suite = max(cands, key=lambda c: version_key(c[0]))
        for name, _ in self.depends("linux-image-amd64", version):
            if name.startswith("linux-image-") and name != "linux-image-amd64":
                return DebianKernel(name.removeprefix("linux-image-"), version, suite)
        raise AptError(f"linux-image-amd64={version} names no kernel image package")

    def packages(self, k: DebianKernel) -> list[tuple[str, str]]:
        """(package, version) to fetch: the image (and the parts 7.x splits it into), headers."""
        image = f"linux-image-{k.release}"
        out = [(image, k.version)]
        for name, ver in self.depends(image, k.version):
            if name.endswith(k.release) and name.startswith(
                ("linux-binary-", "linux-modules-", "linux-base-")
            ):
                out.append((name, ver or k.version))
        headers = f"linux-headers-{k.release}"
        out.append((headers, k.version))
        for name, ver in self.depends(headers, k.version):
            if name == f"linux-headers-{k.stem}-common":
                out.append((name, ver or k.version))
        return out

    def download(self, pkgs: list[tuple[str, str]], dest: Path) -> list[Path]:
        """Fetch .deb files into ``dest`` (apt-get download: no dependency solving, no root)."""
        dest.mkdir(parents=True, exist_ok=True)
        proc = self._run(["apt-get", "download", "-q", *(f"{n}={v}" for n, v in pkgs)], cwd=dest)
        if proc.returncode != 0:
            raise AptError(f"apt-get download failed: {proc.stderr.strip().splitlines()[-1:]}")
        return sorted(dest.glob("*.deb"))
