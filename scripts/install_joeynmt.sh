#!/usr/bin/env bash
# Venv for the NMT peer check (benchmarks/nmt_joeynmt.py): JoeyNMT 2.3.0 on the same CPU torch
# build as the project (installed first, so JoeyNMT's `torch>=1.12` does not pull a CUDA build).
# JoeyNMT is a benchmark peer only, never a runtime dependency of lightning-des.
set -euo pipefail
VENV="${VENV:-.venv-joey}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch==2.13.0
"$VENV/bin/pip" install --quiet -r requirements-joeynmt.txt
"$VENV/bin/python" -c "import joeynmt, torch; print('joeynmt', joeynmt.__version__, 'torch', torch.__version__)"
