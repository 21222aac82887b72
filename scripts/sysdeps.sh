#!/usr/bin/env bash
# System packages capnas uses: bubblewrap (sandbox tier A), Java (pycocoevalcap's tokenizer and METEOR),
# tmux (console tests). Installs what is missing when run as root on Debian/Ubuntu; otherwise says what to do.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v java >/dev/null || need+=(default-jre-headless)
command -v tmux >/dev/null || need+=(tmux)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "capnas setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
else
  echo "capnas setup: missing system packages: ${need[*]}" >&2
  echo "  install them with: sudo apt-get install ${need[*]}" >&2
  echo "  (without bubblewrap the sandbox falls back to a weaker tier; without java metrics cannot run)" >&2
fi
