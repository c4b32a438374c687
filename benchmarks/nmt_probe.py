"""Short training probes: which factor of a translation variant costs validation loss early.

    python benchmarks/nmt_probe.py [--pair de_en] [--models bahdanau kvmem kvmem_r1 ...] [--steps 600] [--every 200]

Trains each variant of ``benchmarks/nmt.py``'s ``VARIANTS`` (recipe + overrides, seed 0, one
CPU thread) for ``--steps`` optimiser steps, measuring the validation loss (full validation
split) every ``--every`` steps, and times the whole ``fit`` process (start-up and validation
included: a rough cost, not a training speed). A probe is not a result: it ranks
one-factor changes cheaply before full runs are spent on them (early and final rankings may
differ). Runs are cached in ``--out`` (JSONL; same pair, model, settings, steps and seed are
skipped). Prints a table (validation loss per step, wall time, and wall time relative to ``bahdanau``).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nmt import CLI, CLI_ENV, ROOT, VARIANTS, cli_args, model_args  # noqa: E402

RUNS = ROOT / "lightning_logs" / "nmt_probe"


def probe(pair: str, model: str, steps: int, every: int, seed: int) -> dict:
    out = RUNS / f"{model}_{pair}_s{seed}_n{steps}"
    cmd = [*CLI, "fit", *cli_args(pair, model, seed, out), "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
           "--trainer.val_check_interval", str(every), "--trainer.num_sanity_val_steps", "0",
           "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(out), "--trainer.logger.version", "0"]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "fit.log", "w") as log:
        subprocess.run(cmd, env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=log, check=True)
    wall = time.perf_counter() - t0
    with open(out / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = {str(int(r["step"]) + 1): float(r["val_loss"]) for r in rows if r.get("val_loss")}  # str keys, as JSON stores them
    if max(map(int, val), default=0) < steps:
        raise RuntimeError(f"{out}: no validation loss at step {steps} (see {out / 'fit.log'})")
    return {"pair": pair, "model": model, "model_args": model_args(pair, model), "steps": steps, "seed": seed, "val_loss": val, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="de_en", choices=["de_en", "zh_en"])
    ap.add_argument("--models", nargs="*", default=["bahdanau", "kvmem", "kvmem_noeos", "kvmem_r1", "kvmem_gru", "kvmem_fb3"], choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nmt_probe.jsonl"))
    args = ap.parse_args()
    cache, done = Path(args.out), {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["pair"], r["model"], r["steps"], r["seed"], json.dumps(r["model_args"], sort_keys=True))] = r
    rows = []
    for m in args.models:
        key = (args.pair, m, args.steps, args.seed, json.dumps(model_args(args.pair, m), sort_keys=True))
        if key not in done:
            done[key] = probe(args.pair, m, args.steps, args.every, args.seed)
            with cache.open("a") as f:
                f.write(json.dumps(done[key]) + "\n")
        rows.append(done[key])
    points = sorted({int(s) for r in rows for s in r["val_loss"]})
    ref = next((r["wall_s"] for r in rows if r["model"] == "bahdanau"), None)
    print(f"| variant ({args.pair}, seed {args.seed}) | " + " | ".join(f"val loss @{p}" for p in points) + " | wall s | wall vs bahdanau |")
    print("|---" * (len(points) + 3) + "|")
    for r in rows:
        vals = " | ".join(f"{r['val_loss'].get(str(p), float('nan')):.3f}" for p in points)
        speed = f"{r['wall_s'] / ref:.2f}x" if ref else "-"
        print(f"| {r['model']} | {vals} | {r['wall_s']:.0f} | {speed} |")


if __name__ == "__main__":
    main()
