#!/usr/bin/env bash
# Makes sure Debian's PostgreSQL server is installed (the local Prefect server and the e2e tests run on
# it). Idempotent. Debian keeps the server binaries under /usr/lib/postgresql/<version>/bin, off PATH.
set -euo pipefail
installed() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null
}
if installed; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "ensure-postgres: PostgreSQL is required (as root: apt-get install postgresql)" >&2
  exit 1
fi
installed
