#!/usr/bin/env bash
# Creates ./.venv (or $VENV) and installs the toolkit with its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build; a looser torch requirement would pull a multi-GB CUDA build on a CPU machine.
# On a GPU machine install the torch build for your CUDA first; this line then keeps it.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install -q -e ".[dev]"
