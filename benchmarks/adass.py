"""AdaS&S against uniform widths, the mixed-dimension heuristic and random search, with
ablations (uniform sampling, no penalty), stability over seeds and cost.

    python benchmarks/adass.py [--setups deepfm-ml1m wdl-ml1m] [--seeds 0 1 2 3 4] [--threads 1]
    python benchmarks/adass.py --summarize          # table + PNG from the saved JSONL

Setups (model recipe, supernet epochs): DeepFM and Wide&Deep on MovieLens-1M (temporal split,
the main benchmark; 4 supernet epochs of 800k rows), DeepFM on MovieLens-100k and on Adult
(15 epochs). Per setup and seed: 5 uniform models (widths 4..64); at budgets of 50% and 80%
of uniform-16's embedding parameters: the mixed-dimension rule of Ginart et al.
(``lightning_des.adass.baselines``, alpha 0.3, scaled to the budget), and searches from one
supernet per sampler (adaptive, uniform): AdaS&S (reinforce with the penalty), no penalty,
random search with as many supernet evaluations as AdaS&S used, and the uniform-sampling
supernet with reinforce. Every result is retrained from scratch with the recipe (early
stopping on val logloss, best checkpoint) and tested. Rows are appended to
benchmarks/results/adass.jsonl as they finish (a rerun skips them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
UNIFORM = (4, 8, 16, 32, 64)
BUDGETS = (0.5, 0.8)
class Setup(NamedTuple):
    recipe: str
    supernet_epochs: int
    eval_rows: int | None  # validation rows the search scores on (None: all)


SETUPS = {
    "deepfm-ml1m": Setup("deepfm_movielens1m.yaml", 4, 20_000),
    "wdl-ml1m": Setup("wdl_movielens1m.yaml", 4, 20_000),
    "deepfm-ml100k": Setup("deepfm_movielens.yaml", 15, None),
    "deepfm-adult": Setup("deepfm_adult.yaml", 15, None),
}
SEARCHED = ("adass", "uniform_sampling", "no_penalty", "random", "md")
PARTS = ("uniform", "adaptive_supernet", "uniform_supernet")


def recipe(setup: str) -> Path:
    return ROOT / "recipes" / SETUPS[setup].recipe


def fit_and_test(setup: str, seed: int, extra: list[str]) -> dict:
    """Train the recipe (plus CLI overrides) from scratch; test the best checkpoint."""
    from lightning_des.cli import cli_main

    with tempfile.TemporaryDirectory() as tmp:
        cli = cli_main(["--config", str(recipe(setup)), *extra, "--seed_everything", str(seed),
                        "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false",
                        "--trainer.logger", "false", "--trainer.enable_model_summary", "false"], run=False)
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_s = time.perf_counter() - t0
        test = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
    params = sum(c.num_embeddings * c.embedding_dim for c in cli.model.net.deep.embedding_bag_configs())
    return {"test_auc": test["test_auc"], "test_logloss": test["test_logloss"], "params": params, "fit_s": fit_s}


def train_supernet(setup: str, seed: int, sampler: str):
    from lightning_des.adass import SupernetOptions
    from lightning_des.adass.pipeline import supernet_trainer
    from lightning_des.callbacks import AdaSSupernetCallback
    from lightning_des.cli import cli_main

    cli = cli_main(["--config", str(recipe(setup)), "--seed_everything", str(seed)], run=False)
    trainer = supernet_trainer(SETUPS[setup].supernet_epochs, [AdaSSupernetCallback(SupernetOptions(sampler=sampler), seed=seed)])
    t0 = time.perf_counter()
    trainer.fit(cli.model, cli.datamodule)
    return cli.model, cli.datamodule, time.perf_counter() - t0


def finished(out: Path, setup: str, seed: int) -> dict:
    """(method, dim, budget) -> supernet evaluations of the rows already in ``out``."""
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    return {(r["method"], r["dim"], r["budget"]): r.get("evaluations") for r in rows if r["setup"] == setup and r["seed"] == seed}


def run(setup: str, seed: int, out: Path, parts: tuple[str, ...] = PARTS) -> None:
    """One setup and seed: the ``parts`` (uniform widths, the adaptive-sampling supernet and its
    searches, the uniform-sampling supernet), skipping rows in ``out``. Finished rows are read
    again before every part and every training, so two processes may share a setup and seed."""
    from lightning_des.adass import SearchOptions
    from lightning_des.adass.baselines import mixed_dimension_choice
    from lightning_des.adass.callbacks import search_with_supernet, write_sizes
    from lightning_des.adass.evaluate import SupernetEvaluator
    from lightning_des.adass.search import SearchResult

    def emit(row: dict) -> None:
        row = {"setup": setup, "seed": seed, **row}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "sizes"}), flush=True)

    for d in UNIFORM if "uniform" in parts else ():
        if ("uniform", d, None) not in finished(out, setup, seed):
            emit({"method": "uniform", "dim": d, "budget": None, **fit_and_test(setup, seed, ["--model.init_args.embedding_dim", str(d)])})
    variants = {"adaptive": [("adass", "reinforce", 0.01), ("no_penalty", "reinforce", 0.0), ("random", "random", 0.01),
                             ("md", "md", 0.0)],
                "uniform": [("uniform_sampling", "reinforce", 0.01)]}
    for sampler, methods in variants.items():
        if {"adaptive": "adaptive_supernet", "uniform": "uniform_supernet"}[sampler] not in parts:
            continue
        done = finished(out, setup, seed)
        todo = [(name, m, p, b) for (name, m, p), b in itertools.product(methods, BUDGETS) if (name, None, b) not in done]
        if not todo:
            continue
        model, dm, supernet_s = train_supernet(setup, seed, sampler)
        evaluator = SupernetEvaluator(model.net, dm.val_dataloader(), max_rows=SETUPS[setup].eval_rows, seed=seed)
        space = model.net.deep.space
        for name, method, penalty, budget in todo:
            done = finished(out, setup, seed)
            if (name, None, budget) in done:
                continue
            if method == "md":  # no search: the heuristic's widths (scored on the supernet for the table)
                t0 = time.perf_counter()
                limit = SearchOptions(budget=budget, reference_dim=16).resolve_budget(space, 16)
                choice = mixed_dimension_choice(space, limit)
                r = SearchResult("md", choice, space.sizes(choice), space.params(choice), limit, evaluator(choice), 1,
                                 time.perf_counter() - t0)
            else:
                opts = SearchOptions(budget=budget, reference_dim=16, method=method, penalty=penalty, samples_per_iteration=8)
                if method == "random":  # the same number of supernet evaluations as AdaS&S used
                    opts.iterations = math.ceil(done[("adass", None, budget)] / 8)
                r = search_with_supernet(model, None, opts, seed=seed, evaluator=evaluator)
            with tempfile.TemporaryDirectory() as tmp:
                sizes = write_sizes(r, Path(tmp) / "sizes.yaml")
                res = fit_and_test(setup, seed, ["--config", str(sizes)])
            assert res["params"] == r.params <= r.budget, (res["params"], r.params, r.budget)
            emit({"method": name, "dim": None, "budget": budget, "budget_params": r.budget, "sizes": r.sizes, "supernet_val_auc": r.score,
                  "supernet_s": supernet_s, "search_s": r.seconds, "evaluations": r.evaluations, **res})


# -- summary ------------------------------------------------------------------------------
def _ranks(x: list[float]) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    order = a.argsort(kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    for v in np.unique(a):  # average ranks for ties
        r[a == v] = r[a == v].mean()
    return r


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def stability(size_dicts: list[dict]) -> tuple[float, float, float]:
    """Over the seeds' size vectors: share of fields with the same size in every seed, the
    same share averaged over seed pairs, and the mean pairwise Spearman correlation."""
    fields = list(size_dicts[0])
    same = statistics.mean(len({s[f] for s in size_dicts}) == 1 for f in fields)
    pairs = list(itertools.combinations(size_dicts, 2))
    agree = statistics.mean(statistics.mean(a[f] == b[f] for f in fields) for a, b in pairs)
    rhos = [spearman([a[f] for f in fields], [b[f] for f in fields]) for a, b in pairs]
    rhos = [r for r in rhos if r == r]
    return same, agree, (statistics.mean(rhos) if rhos else float("nan"))


def summarize(rows: list[dict], png: Path | None) -> str:
    def ms(v: list[float], p: int = 4) -> str:
        return f"{statistics.mean(v):.{p}f} ± {statistics.stdev(v):.{p}f}" if len(v) > 1 else f"{v[0]:.{p}f}"

    lines = []
    for ds in sorted({r["setup"] for r in rows}, key=list(SETUPS).index):
        rs = [r for r in rows if r["setup"] == ds]
        u16 = [r for r in rs if r["method"] == "uniform" and r["dim"] == 16]
        lines += [f"\n### {ds} ({len({r['seed'] for r in rs})} seeds)\n",
                  "| method | budget | emb. params | test AUC | test logloss | same size (all / pairs) | rank corr | supernet s | search s | retrain s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        groups = [("uniform", d, None) for d in UNIFORM] + [(m, None, b) for b in BUDGETS for m in SEARCHED]
        for m, d, b in groups:
            g = [r for r in rs if r["method"] == m and r["dim"] == d and r["budget"] == b]
            if not g:
                continue
            label = f"uniform-{d}" if m == "uniform" else m
            same, agree, rho = stability([r["sizes"] for r in g]) if m != "uniform" and len(g) > 1 else (float("nan"),) * 3
            stab = (f"{same:.2f} / {agree:.2f}", f"{rho:.2f}") if same == same else ("", "")
            cost = (f"{statistics.mean(r['supernet_s'] for r in g):.0f}", f"{statistics.mean(r['search_s'] for r in g):.0f}") if m != "uniform" else ("", "")
            lines.append(f"| {label} | {'' if b is None else f'{b:.0%}'} | {statistics.mean(r['params'] for r in g):,.0f} | "
                         f"{ms([r['test_auc'] for r in g])} | {ms([r['test_logloss'] for r in g])} | {stab[0]} | {stab[1]} | "
                         f"{cost[0]} | {cost[1]} | {statistics.mean(r['fit_s'] for r in g):.0f} |")
        if u16:
            base = statistics.mean(r["test_auc"] for r in u16)
            for b in BUDGETS:
                g = [r for r in rs if r["method"] == "adass" and r["budget"] == b]
                if g:
                    auc, params = statistics.mean(r["test_auc"] for r in g), statistics.mean(r["params"] for r in g)
                    line = (f"\nAdaS&S at {b:.0%}: {auc - base:+.4f} AUC vs uniform-16 "
                            f"({1 - params / statistics.mean(r['params'] for r in u16):.0%} fewer parameters)")
                    bigger = [d for d in UNIFORM if any(r["method"] == "uniform" and r["dim"] == d and r["params"] >= params for r in rs)]
                    if bigger:
                        d = bigger[0]
                        ud = [r for r in rs if r["method"] == "uniform" and r["dim"] == d]
                        line += (f"; {auc - statistics.mean(r['test_auc'] for r in ud):+.4f} AUC vs uniform-{d}, the smallest uniform model "
                                 f"at least as large ({1 - params / statistics.mean(r['params'] for r in ud):.0%} fewer parameters)")
                    for other in ("md", "random"):
                        o = [r["test_auc"] for r in rs if r["method"] == other and r["budget"] == b]
                        if o:
                            line += f"; {auc - statistics.mean(o):+.4f} AUC vs {other} at the same budget"
                    lines.append(line)
        for b in BUDGETS:  # the searched widths field by field: where the seeds disagree
            g = sorted((r for r in rs if r["method"] == "adass" and r["budget"] == b), key=lambda r: r["seed"])
            if len(g) > 1:
                lines += [f"\nAdaS&S widths at {b:.0%}, by seed:\n", "| field | " + " | ".join(f"seed {r['seed']}" for r in g) + " |",
                          "|---|" + "---|" * len(g)]
                lines += [f"| {f} | " + " | ".join(str(r["sizes"][f]) for r in g) + " |" for f in g[0]["sizes"]]
    if png is not None:
        _plot(rows, png)
    return "\n".join(lines)


def _plot(rows: list[dict], png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
        return
    datasets = sorted({r["setup"] for r in rows}, key=list(SETUPS).index)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    marks = {"uniform": "o-", "adass": "*", "uniform_sampling": "s", "no_penalty": "^", "random": "x", "md": "D"}
    for ax, ds in zip(axes[0], datasets):
        rs = [r for r in rows if r["setup"] == ds]
        for m, mark in marks.items():
            keys = sorted({(r["dim"], r["budget"]) for r in rs if r["method"] == m}, key=lambda k: (k[0] or 0, k[1] or 0))
            pts = []
            for d, b in keys:
                g = [r for r in rs if r["method"] == m and r["dim"] == d and r["budget"] == b]
                pts.append((statistics.mean(r["params"] for r in g), statistics.mean(r["test_auc"] for r in g),
                            statistics.stdev(r["test_auc"] for r in g) if len(g) > 1 else 0.0))
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, fmt=mark, label=m, capsize=3, markersize=9 if m == "adass" else 6)
        ax.set_xscale("log")
        ax.set(title=ds, xlabel="embedding parameters", ylabel="test AUC (mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setups", nargs="*", default=["deepfm-ml1m", "wdl-ml1m"], choices=list(SETUPS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS,
                   help="uniform widths, the adaptive-sampling supernet with its searches, the uniform-sampling supernet")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=str(RESULTS / "adass.jsonl"))
    p.add_argument("--summarize", action="store_true", help="only print the table and write the PNG from --out")
    p.add_argument("--png", default=str(RESULTS / "adass.png"))
    args = p.parse_args()
    out = Path(args.out)
    if not args.summarize:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        logging.getLogger("lightning_des").setLevel(logging.WARNING)
        out.parent.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:  # seed-major: every setup gets its first seeds first
            for ds in args.setups:
                run(ds, seed, out, tuple(args.parts))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    print(summarize(rows, Path(args.png) if args.png else None))


if __name__ == "__main__":
    main()
