#!/usr/bin/env bash
# Makes sure Debian's chromium is installed (the e2e browser test drives it headless). Idempotent.
set -euo pipefail
if command -v chromium >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "ensure-chromium: chromium is required (as root: apt-get install chromium)" >&2
  exit 1
fi
command -v chromium >/dev/null
