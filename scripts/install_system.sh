#!/usr/bin/env bash
# System packages for the SLURM tests (Debian/Ubuntu, root or sudo): slurm-wlm (slurmctld,
# slurmd, sbatch, srun, scontrol) and munge. The packages' own services are not started (the
# tests start private daemons with generated configs and stop them by pid).
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
ADDED=""
if [ ! -e "$POLICY" ]; then  # keep the packages' postinst from starting munge/slurm services
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  ADDED=1
fi
trap '[ -n "$ADDED" ] && $SUDO rm -f "$POLICY"' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
slurmctld -V
