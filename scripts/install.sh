#!/usr/bin/env bash
# The one supported CPU install path (used by `make` and `.ci/run`).
# torchrec's metadata asks for the CUDA `fbgemm-gpu`, which would overwrite the CPU
# build, so the stack is installed in a fixed order and the project with --no-deps.
set -euo pipefail
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install --quiet --upgrade pip
"$PIP" install --quiet torch==2.13.0 fbgemm-gpu-cpu==1.8.0
"$PIP" install --quiet --no-deps torchrec==1.9.2
"$PIP" install --quiet -r requirements-cpu.txt
"$PIP" install --quiet --no-deps -e .
"$VENV/bin/python" -c "import torchrec, lightning_des; print('lightning-des installed:', lightning_des.__version__)"
