"""Build the package's C workloads with the system gcc, once, into a cache directory.

Each build lives in a directory named by a hash of the source and flags, so a changed
source rebuilds, concurrent users never see a half-written file, and the binary keeps its
plain name (which the traces show as the task's comm).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from fptrace.cache import cache_dir
from fptrace.errors import EnvironmentProblem

# No -mavx*: the compiler must not emit vzeroupper (see fpstate.h).  Frame pointers: the
# kernel walks user stacks by them (record --stacks).
CFLAGS = ["-O2", "-Wall", "-Wextra", "-pthread", "-fno-omit-frame-pointer"]
HEADERS = ["fpstate.h"]
# The package's C workloads (NAME.c here), for `fptrace workload NAME` and the lab.
WORKLOADS = ("pingpong", "fpbench", "avxsites")


def workload_binary(name: str) -> Path:
    """Path of the built workload ``name`` (pingpong, …), compiling it if needed."""
    if name not in WORKLOADS:
        raise EnvironmentProblem(f"no workload {name!r}: choose from {', '.join(WORKLOADS)}")
    files = resources.files("fptrace.workloads")
    source = files.joinpath(f"{name}.c").read_text()
    headers = {h: files.joinpath(h).read_text() for h in HEADERS}
    digest = hashlib.sha256(
        (source + "".join(headers.values()) + " ".join(CFLAGS)).encode()
    ).hexdigest()[:12]
    out_dir = cache_dir() / "bin" / digest  # the file keeps its name: it becomes the comm
    binary = out_dir / name
    if binary.exists():
        return binary
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise EnvironmentProblem("no C compiler: install gcc to build fptrace's workloads")
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / f"{name}.c"
    src.write_text(source)
    for header, text in headers.items():
        (out_dir / header).write_text(text)
    tmp = out_dir / f".{name}.{os.getpid()}"
    proc = subprocess.run(
        [cc, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise EnvironmentProblem(f"building workload {name} failed: {proc.stderr.strip()[:300]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    return binary
