"""AdaS&S on a testbed with known answers: does the search give wider embeddings to fields whose
planted signal has a larger intrinsic dimension, and width 0 to pure-noise fields?

    python benchmarks/adass_planted.py [--seeds 0 1 2] [--rows 200000] [--epochs 15]
    python benchmarks/adass_planted.py --summarize

Data: ``SyntheticSpec(intrinsic_dims=...)`` (lightning_des/data/synthetic.py): field C1 is the
context (latent size 16); every other field f adds ``<z_ctx[:r_f], v_f[id]>`` to the logit, so
its (context x id) logit matrix has rank exactly ``r_f``; ``r_f`` in {0, 0, 1, 1, 2, 2, 4, 4, 8,
8, 16, 16}, 200 ids per field, Zipf 1.2. Model: DeepFM (common width 16, hidden [64]). Per seed:
one supernet (Adaptive Sampling, candidates 0..64), then the search at 50% and 80% of the
uniform-16 parameters. Reported: Spearman correlation of the searched widths with ``r_f`` over
the non-context fields, share of ``r_f = 0`` fields given width 0, stability across seeds.
Rows go to benchmarks/results/adass_planted.jsonl as they finish (reruns skip them).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.adass import spearman, stability  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DIMS = [16, 0, 0, 1, 1, 2, 2, 4, 4, 8, 8, 16, 16]  # C1 = the context
BUDGETS = (0.5, 0.8)


def recipe(rows: int, seed: int) -> dict:
    return {
        "seed_everything": seed,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1},
        "model": {"class_path": "lightning_des.models.recsys.DeepFM",
                  "init_args": {"embedding_dim": 16, "hidden": [64], "sparse_optimizer": "adagrad", "sparse_lr": 0.05,
                                "dense_lr": 0.001}},
        "data": {"class_path": "lightning_des.data.SyntheticCTRDataModule",
                 "init_args": {"num_rows": rows, "num_dense": 1, "num_sparse": len(DIMS), "cardinality": 200, "zipf": 1.2,
                               "data_seed": 0, "intrinsic_dims": DIMS, "batch_size": 512, "seed": 0}},
    }


def run(seed: int, rows: int, epochs: int, out: Path) -> None:
    from lightning_des.adass import SearchOptions, SupernetOptions
    from lightning_des.adass.callbacks import AdaSSupernetCallback, search_with_supernet
    from lightning_des.adass.evaluate import SupernetEvaluator
    from lightning_des.adass.pipeline import supernet_trainer
    from lightning_des.recipes import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "planted.yaml"
        path.write_text(yaml.safe_dump(recipe(rows, seed)))
        cli = cli_main(["--config", str(path), "--trainer.default_root_dir", tmp], run=False)
        trainer = supernet_trainer(epochs, [AdaSSupernetCallback(SupernetOptions(max_epochs=epochs), seed=seed)])
        t0 = time.perf_counter()
        trainer.fit(cli.model, cli.datamodule)
        supernet_s = time.perf_counter() - t0
        evaluator = SupernetEvaluator(cli.model.net, cli.datamodule.val_dataloader())
        for budget in BUDGETS:
            r = search_with_supernet(cli.model, None, SearchOptions(budget=budget, reference_dim=16), seed=seed, evaluator=evaluator)
            fields = list(r.sizes)[1:]  # not the context
            widths = [r.sizes[f] for f in fields]
            rho = spearman(widths, DIMS[1:])
            zero = [w for w, d in zip(widths, DIMS[1:]) if d == 0]
            row = {"seed": seed, "budget": budget, "rows": rows, "epochs": epochs, "sizes": r.sizes, "params": r.params,
                   "budget_params": r.budget, "spearman_r": rho, "noise_fields_dropped": sum(w == 0 for w in zero) / len(zero),
                   "supernet_val_auc": r.score, "supernet_s": supernet_s, "search_s": r.seconds}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "sizes"}), "\n widths by r_f:",
                  sorted(zip(DIMS[1:], widths)), flush=True)


def summarize(rows: list[dict]) -> str:
    lines = ["| rows | supernet epochs | budget | seeds | Spearman(width, r_f) | r_f=0 fields dropped | same size (all / pairs) "
             "| seed rank corr | supernet s |", "|---|---|---|---|---|---|---|---|---|"]
    for (n, e, b) in sorted({(r["rows"], r["epochs"], r["budget"]) for r in rows}):
        g = [r for r in rows if (r["rows"], r["epochs"], r["budget"]) == (n, e, b)]
        rho = [r["spearman_r"] for r in g]
        same, agree, corr = stability([r["sizes"] for r in g]) if len(g) > 1 else (float("nan"),) * 3
        lines.append(f"| {n:,} | {e} | {b:.0%} | {len(g)} | {statistics.mean(rho):.2f} (min {min(rho):.2f}) | "
                     f"{statistics.mean(r['noise_fields_dropped'] for r in g):.2f} | {same:.2f} / {agree:.2f} | {corr:.2f} | "
                     f"{statistics.mean(r['supernet_s'] for r in g):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "adass_planted.jsonl"))
    p.add_argument("--summarize", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    if not a.summarize:
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        prev = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
        for seed in a.seeds:
            if any(r["seed"] == seed and r["rows"] == a.rows and r["epochs"] == a.epochs for r in prev):
                continue
            run(seed, a.rows, a.epochs, out)
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    print(summarize(rows))


if __name__ == "__main__":
    main()
