#!/usr/bin/env bash
# Makes sure Debian's Prometheus server is installed (the Prometheus blocker tests start their own on a
# free port with their own rules). Idempotent. The package's own service is not wanted: a policy-rc.d
# (put back as it was afterwards) forbids its postinst to start it, so nothing is left on :9090.
set -euo pipefail
installed() {
  [ -x /usr/bin/prometheus ]
}
if installed; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  # 101: "action forbidden by policy" for invoke-rc.d, so the package's postinst starts no service
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ]; then
    saved=$(mktemp)
    cp -p "$policy" "$saved"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  restore() {
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus >/dev/null
else
  echo "ensure-prometheus: Prometheus is required (as root: apt-get install prometheus)" >&2
  exit 1
fi
installed
