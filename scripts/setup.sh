#!/usr/bin/env bash
# Idempotent setup for fptrace on Debian 12 (root): system packages, a private header tree
# for BCC, a .venv that sees Debian's BCC, the package with its dependencies, and the
# `fptrace` launcher on root's PATH.  Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "needs root for apt-get and the launcher: run 'sudo make setup'" >&2
    exit 1
fi

apt_pkgs=(bpfcc-tools python3-bpfcc bpftool linux-perf linux-headers-amd64 python3-venv gcc make sudo
          bpftrace  # the tests' independent per-thread count (tests/oracle.py)
          chromium chromium-driver
          prometheus default-jre-headless  # the agent's tests: a real Prometheus, Spark's JVM
          qemu-system-x86 busybox-static zstd xz-utils debootstrap)  # the last line: fptrace lab
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    say "creating $VENV from /usr/bin/python3 (with system site-packages, for BCC)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c 'import fptrace, pandas, pyarrow, psutil, plotly, rich, jinja2, duckdb, prometheus_client, elftools, pyspark, pytest, ruff, selenium, google.protobuf, perfetto.protos.perfetto.trace.perfetto_trace_pb2' 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.fptrace-installed" ]; then
    say "installing fptrace and its Python dependencies into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
    touch "$VENV/.fptrace-installed"
fi

# BCC needs kernel headers; build the merged tree now so the first record is fast.
"$VENV/bin/python" - <<'PY'
import os
from fptrace.probes.headers import choose_headers
choice = choose_headers(os.uname().release)
print("setup: BCC headers:", choice.path or "NONE (install linux-headers-amd64)")
PY

bash "$ROOT/scripts/launcher.sh" "$ROOT"
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
say "done"
