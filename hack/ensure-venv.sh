#!/usr/bin/env bash
# Creates (once) and refreshes the virtual environment kept outside the repo, so torch is downloaded once.
set -euo pipefail
venv=${1:?usage: ensure-venv.sh VENV_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "error: $python not found; install Python 3.11+ (or set PYTHON=/path/to/python3)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment in $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools
fi
stamp="$venv/.datasweep-deps-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing datasweep's dependencies into $venv (torch is large: the first time takes minutes)"
  "$venv/bin/pip" install -q -e "$repo[train,dev]"
  rm -f "$venv"/.datasweep-deps-*
  touch "$stamp"
fi
# The package itself always points at this checkout (CI clones elsewhere).
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$repo" >/dev/null
