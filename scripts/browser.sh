#!/usr/bin/env bash
# Headless Chromium for the report's browser test (tests/test_report_browser.py), and Playwright's Python package
# to drive it. Playwright's own `playwright install chromium` downloads a browser build from a CDN that is not
# reachable from these machines; Debian's `chromium` package is, and Playwright drives it by path
# (`executable_path`, found on PATH by the test). Idempotent: installs only what is missing.
#
#   bash scripts/browser.sh            # as root on Debian/Ubuntu; VENV=path/to/venv to pick another venv
#
# Timing on a fresh Debian 12 machine: apt-get install chromium about 80 s (about 120 packages, 103 MB for
# chromium itself); pip install playwright about 5 s.
set -euo pipefail
VENV=${VENV:-.venv}
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "capnas setup: installing chromium (headless browser for the report test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "capnas setup: no chromium; install it with: sudo apt-get install chromium" >&2
    echo "  (without it the report's browser test skips)" >&2
  fi
fi
if [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" -c "import playwright" 2>/dev/null || "$VENV/bin/python" -m pip install -q "playwright>=1.40"
else
  echo "capnas setup: no venv at $VENV yet; after 'make setup' run: $VENV/bin/pip install playwright" >&2
fi
