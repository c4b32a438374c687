"""FlexHBTuner on a real recommender: DeepFM on MovieLens-100k, fidelity = epochs 1..9.

    python benchmarks/hpo_deepfm.py [--methods ...] [--seeds 5] [--budget 6] [--jobs 2]

Runs ``recipes/tune_deepfm_movielens.yaml`` through :class:`FlexHBTuner` (real Lightning
training, trials resumed from their checkpoints) with each of the package's modes; the peers
are not wired into Lightning and are compared on benchmarks/hpo.py only. y = best validation
log-loss measured at 9 epochs so far, budget in full-budget (9-epoch) equivalents. Same table
as benchmarks/hpo.py (loss instead of regret); writes benchmarks/results/hpo_deepfm.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import hpo  # noqa: E402

METHODS = ["random", "hyperband", "bohb", "flexhb"]


def run_study(method: str, seed: int, budget: float) -> dict:
    import yaml

    from lightning_des.tuner.lightning import FlexHBTuner

    cfg = yaml.safe_load((ROOT / "recipes" / "tune_deepfm_movielens.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        cfg.update(recipe=str(ROOT / "recipes" / cfg["recipe"]), method=method, seed=seed, total_budget=budget, n_workers=1,
                   output_dir=tmp)
        t0 = time.perf_counter()
        tuner = FlexHBTuner(**cfg)
        tuner.run()
        wall = time.perf_counter() - t0
    t = tuner.tuner
    curve = [(r["budget"] / t.max_budget, r["best"]) for r in t.log]
    return {"problem": "deepfm-movielens", "method": method, "seed": seed, "curve": curve, "final": curve[-1][1],
            "configs": len(t.trials), "overhead_s": float("nan"), "wall_s": wall}


def _run(args: tuple) -> dict:
    return run_study(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=6.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hpo_deepfm.json"))
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    cache = Path(args.out).with_suffix(".jsonl")
    done = {(r["method"], r["seed"]): r for r in map(json.loads, cache.read_text().splitlines())} if cache.is_file() else {}
    todo = [(m, s, args.budget) for s in range(args.seeds) for m in args.methods if (m, s) not in done]
    import concurrent.futures as cf
    import multiprocessing as mp

    # not multiprocessing.Pool: its daemonic workers may not start the tuner's own trial processes
    with cache.open("a") as f, cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        for r in (fut.result() for fut in cf.as_completed([pool.submit(_run, t) for t in todo])):
            f.write(json.dumps(r) + "\n")
            f.flush()
            done[(r["method"], r["seed"])] = r
            print(f"{r['method']} seed {r['seed']}: {r['final']:.4f} ({r['wall_s']:.0f} s)", flush=True)
    rows = [r for (m, _), r in done.items() if m in args.methods]
    Path(args.out).write_text(json.dumps({"budget": args.budget, "rows": rows}))
    table = hpo.summarize(rows, args.budget).replace("final regret", "best val_logloss at 9 epochs")
    Path(args.out).with_suffix(".md").write_text(f"# benchmarks/hpo_deepfm.py ({args.budget:g} full-budget equivalents per study)\n{table}\n")
    print(table)
    hpo.plot(rows, args.budget, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()
