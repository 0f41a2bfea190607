#!/usr/bin/env bash
# Creates (or checks) the Python virtual environment the ONNX import tests use: .venv in
# the repository root with the pinned packages of scripts/python-requirements.txt.
# Idempotent: when .venv already holds exactly those versions nothing is installed.
# Prints the interpreter's path last; the tests find it through QATC_PYTHON:
#
#   export QATC_PYTHON="$(scripts/python-env.sh | tail -n 1)"
#   cargo test -p qir-onnx
#
# The interpreter that creates the environment is $PYTHON, else python3.11, else python3;
# it must be CPython 3.11 or newer (the pinned wheels exist for it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/scripts/python-requirements.txt"
venv="$root/.venv"
py="$venv/bin/python"

want="$(grep -E '^[A-Za-z0-9_.-]+==' "$req" | tr 'A-Z_' 'a-z-' | sort)"

installed() {
  "$py" -m pip freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort
}

if [ -x "$py" ] && [ -z "$(comm -23 <(echo "$want") <(installed))" ]; then
  echo "$venv is up to date" >&2
  echo "$py"
  exit 0
fi

base="${PYTHON:-}"
if [ -z "$base" ]; then
  base="$(command -v python3.11 || command -v python3 || true)"
fi
if [ -z "$base" ]; then
  echo "error: no python3 found (set PYTHON to a CPython 3.11+ interpreter)" >&2
  exit 1
fi
if ! "$base" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: $base is $("$base" --version 2>&1); CPython 3.11 or newer is needed" >&2
  exit 1
fi

if [ ! -x "$py" ]; then
  echo "creating $venv with $("$base" --version 2>&1)" >&2
  "$base" -m venv "$venv"
fi
"$py" -m pip install --disable-pip-version-check --quiet -r "$req" >&2
missing="$(comm -23 <(echo "$want") <(installed))"
if [ -n "$missing" ]; then
  echo "error: after installing, $venv still lacks: $missing" >&2
  exit 1
fi
echo "$py"
