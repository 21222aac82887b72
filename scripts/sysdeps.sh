#!/usr/bin/env bash
# System packages capnas uses: bubblewrap (sandbox tier A), Java (pycocoevalcap's tokenizer and METEOR),
# tmux (console tests), libgomp1 (the embedded LLM's llama.cpp), chromium (the report's headless-browser test; `scripts/browser.sh` also installs
# Playwright into the venv). Installs what is missing when run as root on Debian/Ubuntu; otherwise says what to do.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v java >/dev/null || need+=(default-jre-headless)
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
# The embedded LLM's server (xllamacpp's prebuilt llama.cpp) links the system's OpenMP runtime.
[[ "$(/sbin/ldconfig -p 2>/dev/null || true)" == *"libgomp.so.1 "* ]] || need+=(libgomp1)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "capnas setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
else
  echo "capnas setup: missing system packages: ${need[*]}" >&2
  echo "  install them with: sudo apt-get install ${need[*]}" >&2
  echo "  (without bubblewrap the sandbox falls back to a weaker tier; without java metrics cannot run;"  >&2
  echo "   without chromium the report's browser test skips)" >&2
fi
