"""``python -m lightning_des.tuner.trial <job.json>``: run one tuner job in this process.

Used by :func:`lightning_des.tuner.lightning.run_trial_subprocess` for trials whose trainer
runs on several processes: Lightning's launcher re-runs this command for the other ranks, and
rank 0 writes the signed metric per budget point to the spec's ``result`` file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightning_des.tuner.flexhb import Job
from lightning_des.tuner.lightning import run_trial


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lightning_des.tuner.trial <job.json>", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    out = run_trial(spec["recipe"], Job(**spec["job"]), spec["trial_dir"], spec["metric"], spec["sign"], spec["fidelity"],
                    spec["seed"], spec["grain"])
    if out:  # rank 0
        tmp = Path(spec["result"] + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(spec["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
