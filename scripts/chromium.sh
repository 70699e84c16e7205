#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser/), installed with
# apt-get when /usr/bin/chromium is absent. Playwright drives it through
# `executable_path`; we never download a browser (`playwright install`), so the
# browser under test is the distribution's, patched and updated by apt.
#
#   scripts/chromium.sh     install when absent; prints the binary's path as
#                           its last line of stdout (progress goes to stderr)
#
# Environment:
#   PARLEY_CHROMIUM   the binary to use or install (default /usr/bin/chromium)
#
# Runs apt-get as root, or through `sudo -n` otherwise (never prompts). Waits
# up to five minutes for the dpkg lock, as services.sh may be installing
# PostgreSQL at the same moment.
set -euo pipefail

CHROMIUM="${PARLEY_CHROMIUM:-/usr/bin/chromium}"

log() { echo "chromium: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -x "$CHROMIUM" ]; then
    echo "$CHROMIUM"
    exit 0
fi
[ "$CHROMIUM" = /usr/bin/chromium ] \
    || die "PARLEY_CHROMIUM=$CHROMIUM does not exist (only /usr/bin/chromium is installed here)"
command -v apt-get >/dev/null 2>&1 || die "/usr/bin/chromium is absent and apt-get is not available"

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    die "/usr/bin/chromium is absent; install it with: sudo apt-get install chromium"
fi

log "installing Debian's chromium with apt-get"
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
"${apt[@]}" update -qq >&2 || die "apt-get update failed"
# The fonts make screenshots legible: a bare container has none, and the
# page would render as boxes.
"${apt[@]}" install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 \
    || die "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is missing"
log "$("$CHROMIUM" --version 2>/dev/null || echo installed)"
echo "$CHROMIUM"
