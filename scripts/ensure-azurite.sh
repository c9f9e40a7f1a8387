#!/usr/bin/env bash
# Puts Microsoft's Azure Storage emulator, Azurite (a pinned npm release), into .cache/azurite. The result
# storage tests start its blob service on a free port. Idempotent. On a machine without npm, Debian's
# nodejs and npm are installed first (apt-get as root).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.37.0
DEST=.cache/azurite
installed() {
  [ -x "$DEST/node_modules/.bin/azurite-blob" ] &&
    [ "$(node -p "require('./$DEST/node_modules/azurite/package.json').version" 2>/dev/null)" = "$VERSION" ]
}
if installed; then
  exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "ensure-azurite: node and npm are required (as root: apt-get install nodejs npm)" >&2
    exit 1
  fi
fi
mkdir -p "$DEST"
npm install --silent --no-audit --no-fund --prefix "$DEST" "azurite@$VERSION" >/dev/null
installed
