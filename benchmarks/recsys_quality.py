"""Train every single-process recipe (model x dataset) with its defaults; report validation and
test AUC / logloss of the best (lowest val logloss) checkpoint.

    python benchmarks/recsys_quality.py [--recipes lr_movielens deepfm_adult ...] [--seeds 0 1 2]

    python benchmarks/recsys_quality.py --recipes {lr,fm,dnn,wdl,deepfm,dlrm}_movielens1m \
        --seeds 0 1 2 --out benchmarks/results/recsys_quality_ml1m.json

Writes benchmarks/results/recsys_quality.json (or ``--out``) after every finished run and prints
a markdown table (mean ± std over seeds). Finished (recipe, seed) runs already in ``--out`` are
kept and not rerun, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [f"{m}_{d}" for d in ("movielens", "adult") for m in ("lr", "fm", "dnn", "wdl", "deepfm", "dlrm")]


def run(recipe: str, seed: int) -> dict:
    from lightning_des.cli import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        cli = cli_main(
            ["--config", str(ROOT / "recipes" / f"{recipe}.yaml"), "--seed_everything", str(seed),
             "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"],
            run=False,
        )
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_s = time.perf_counter() - t0
        val = cli.trainer.validate(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
        test = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    return {"recipe": recipe, "seed": seed, "epochs": cli.trainer.current_epoch, "fit_s": fit_s, **val, **test}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--recipes", nargs="*", default=DEFAULT)
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recsys_quality.json"))
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for r in args.recipes:
        for s in args.seeds:
            if any(x["recipe"] == r and x["seed"] == s for x in rows):
                continue
            rows.append(run(r, s))
            out.write_text(json.dumps(rows, indent=2))
            print(f"{r} seed {s}: test AUC {rows[-1]['test_auc']:.4f} ({rows[-1]['fit_s']:.0f} s)", flush=True)
    rows = [x for x in rows if x["recipe"] in args.recipes and x["seed"] in args.seeds]
    print("| recipe | val AUC | val logloss | test AUC | test logloss | epochs | fit s |")
    print("|---|---|---|---|---|---|---|")
    for r in args.recipes:
        rs = [x for x in rows if x["recipe"] == r]

        def fmt(k: str) -> str:
            v = [x[k] for x in rs]
            return f"{statistics.mean(v):.4f}" + (f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else "")

        print(f"| {r} | {fmt('val_auc')} | {fmt('val_logloss')} | {fmt('test_auc')} | {fmt('test_logloss')} | "
              f"{statistics.mean(x['epochs'] for x in rs):.1f} | {statistics.mean(x['fit_s'] for x in rs):.0f} |")


if __name__ == "__main__":
    main()
