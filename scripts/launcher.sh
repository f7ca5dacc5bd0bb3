#!/usr/bin/env bash
# Install the `fptrace` launcher for the checkout at ROOT, without breaking a working one.
#
#   scripts/launcher.sh ROOT [LAUNCHER]     (LAUNCHER defaults to /usr/local/bin/fptrace)
#
# `make setup` in a second clone (a test clone in /tmp, say) used to point the launcher at
# that clone; once it was deleted, `fptrace` was broken everywhere.  Now the launcher is
# written when it is missing, or when the checkout it runs is gone; a launcher that runs
# another checkout that still exists is kept (FPTRACE_LAUNCHER=replace points it here).
set -euo pipefail
ROOT=$1
launcher=${2:-/usr/local/bin/fptrace}
say() { printf 'setup: %s\n' "$*"; }

want="#!/bin/sh
# fptrace launcher (installed by $ROOT/scripts/setup.sh)
exec \"$ROOT/.venv/bin/python\" -m fptrace \"\$@\""
install_it() {
    say "$1"
    printf '%s\n' "$want" > "$launcher.tmp.$$"
    chmod 755 "$launcher.tmp.$$"
    mv -f "$launcher.tmp.$$" "$launcher"
}

if [ ! -e "$launcher" ]; then
    install_it "installing launcher $launcher (runs $ROOT)"
elif [ "$(cat "$launcher")" = "$want" ]; then
    say "launcher $launcher runs $ROOT"
else
    python=$(sed -n 's/^exec "\(.*\)" -m fptrace .*/\1/p' "$launcher")
    if [ "${FPTRACE_LAUNCHER:-}" = replace ]; then
        install_it "pointing launcher $launcher here (FPTRACE_LAUNCHER=replace): runs $ROOT"
    elif [ -n "$python" ] && [ -x "$python" ]; then
        say "keeping launcher $launcher: it runs ${python%/.venv/bin/python}" \
            "(FPTRACE_LAUNCHER=replace make setup points it at $ROOT)"
    else
        install_it "replacing launcher $launcher: the checkout it ran is gone; runs $ROOT now"
    fi
fi
