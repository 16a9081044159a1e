#!/usr/bin/env bash
# Makes Debian's headless Chromium available for the HTML report tests (tests/support/browser.py).
# Already installed (or BURSTPILOT_CHROMIUM names a binary): nothing to do. Otherwise, as root, apt-get installs
# the `chromium` package (no daemon, no downloads outside the Debian archive). Prints the binary's path.
set -euo pipefail
log() { printf '%s install-browser: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
for c in "${BURSTPILOT_CHROMIUM:-}" chromium chromium-browser; do
  [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && { command -v "$c"; exit 0; }
done
if [ "$(id -u)" != 0 ]; then
  log "chromium is not installed and this is not root: run 'sudo apt-get install chromium' once"; exit 1
fi
t0=$SECONDS
log "installing Debian's chromium package"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
fi
log "chromium installed in $((SECONDS - t0)) s"
command -v chromium
