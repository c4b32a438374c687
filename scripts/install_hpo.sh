#!/usr/bin/env bash
# Venv for the tuner comparison (benchmarks/hpo.py): the project's own install path, then the
# peer tuners and mf-prior-bench from requirements-hpo.txt (these pin numpy<2).
set -euo pipefail
export VENV="${VENV:-.venv-hpo}"
"$(dirname "$0")/install.sh"
"$VENV/bin/pip" install --quiet -r requirements-hpo.txt
"$VENV/bin/python" -c "import optuna, smac, dehb, hpbandster, mfpbench, lightning_des.tuner; print('hpo peers installed')"
