"""Multi-fidelity HPO benchmark harness (FlexHB issue; work in progress: peers not wired in yet).

    python benchmarks/hpo.py [--problems branin] [--seeds 30] [--budget 20]

Runs the tuner's modes (random, hyperband, bohb, flexhb) and FlexHB ablations on each problem;
the budget is counted in full-budget equivalents inside the tuner (trials resume; restarts are
charged in full). y = best loss measured *at the full budget* so far. Reports final regret
(mean ± SEM), average rank over seeds, speedup of FlexHB over each method (budget the method
needs to reach its own final mean regret / budget FlexHB needs for the same), and the wall
time per suggestion. Writes benchmarks/results/hpo.json and hpo.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lightning_des.tuner.benchmarks import BRANIN_MIN, BRANIN_SPACE, branin_objective
from lightning_des.tuner.flexhb import FlexHB, Job
from lightning_des.tuner.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "random": dict(mode="random"),
    "hyperband": dict(mode="hyperband"),
    "bohb": dict(mode="bohb"),
    "flexhb": dict(mode="flexhb"),
    "flexhb-no-glosh": dict(mode="flexhb", global_sh=False),
    "flexhb-no-flexband": dict(mode="flexhb", flexband=False),
    "flexhb-coarse": dict(mode="flexhb", fine_grained=False),
}


@dataclass
class Problem:
    name: str
    space: SearchSpace
    min_budget: float
    max_budget: float
    objective: Callable[[Job], dict[float, float]]
    optimum: float


PROBLEMS = {"branin": Problem("branin", BRANIN_SPACE, 1, 27, branin_objective(), BRANIN_MIN)}


def run_one(p: Problem, method: str, seed: int, budget: float) -> dict:
    t = FlexHB(p.space, p.min_budget, p.max_budget, eta=3, seed=seed, **METHODS[method])
    ask_s = []
    while t.budget_used < budget * p.max_budget:
        n, t0 = len(t.trials), time.perf_counter()
        job = t.ask()
        if len(t.trials) > n:  # a new configuration was suggested
            ask_s.append(time.perf_counter() - t0)
        t.tell(job, p.objective(job))
    curve = [(r["budget"] / p.max_budget, r["best"] - p.optimum) for r in t.log]
    return {"problem": p.name, "method": method, "seed": seed, "curve": curve, "final": curve[-1][1], "ask_s": statistics.median(ask_s)}


def mean_curve(runs: list[dict], grid: np.ndarray) -> np.ndarray:
    ys = []
    for r in runs:
        b, y = np.array([c[0] for c in r["curve"]]), np.array([c[1] for c in r["curve"]])
        idx = np.searchsorted(b, grid, side="right") - 1
        ys.append(np.where(idx >= 0, y[np.clip(idx, 0, None)], np.inf))
    return np.mean(np.array(ys), axis=0)


def summarize(rows: list[dict], budget: float) -> str:
    lines = []
    grid = np.linspace(0.05, budget, 400)
    for prob in sorted({r["problem"] for r in rows}):
        rs = [r for r in rows if r["problem"] == prob]
        methods = [m for m in METHODS if any(r["method"] == m for r in rs)]
        seeds = sorted({r["seed"] for r in rs})
        ranks = {m: [] for m in methods}
        for s in seeds:
            finals = {m: next(r["final"] for r in rs if r["method"] == m and r["seed"] == s) for m in methods}
            order = sorted(methods, key=lambda m: finals[m])
            for i, m in enumerate(order):
                ranks[m].append(i + 1)
        curves = {m: mean_curve([r for r in rs if r["method"] == m], grid) for m in methods}
        lines += [f"\n### {prob} ({len(seeds)} seeds, {budget:g} full-budget equivalents)\n",
                  "| method | final regret (mean ± SEM) | average rank | FlexHB speedup | s per suggestion |", "|---|---|---|---|---|"]
        for m in methods:
            f = [r["final"] for r in rs if r["method"] == m]
            sem = statistics.stdev(f) / len(f) ** 0.5 if len(f) > 1 else 0.0
            target = curves[m][-1]
            b_m = grid[np.argmax(curves[m] <= target)]
            reach = curves["flexhb"] <= target
            speed = f"{b_m / grid[np.argmax(reach)]:.2f}x" if reach.any() and m != "flexhb" else ("-" if m == "flexhb" else "never")
            ask = statistics.median(r["ask_s"] for r in rs if r["method"] == m)
            lines.append(f"| {m} | {statistics.mean(f):.4f} ± {sem:.4f} | {statistics.mean(ranks[m]):.2f} | {speed} | {ask:.4f} |")
    return "\n".join(lines)


def plot(rows: list[dict], budget: float, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    probs = sorted({r["problem"] for r in rows})
    fig, axes = plt.subplots(1, len(probs), figsize=(6 * len(probs), 4), squeeze=False)
    grid = np.linspace(0.05, budget, 400)
    for ax, prob in zip(axes[0], probs):
        for m in METHODS:
            rs = [r for r in rows if r["problem"] == prob and r["method"] == m]
            if rs:
                ax.plot(grid, mean_curve(rs, grid), label=m)
        ax.set(yscale="log", xlabel="budget (full-budget equivalents)", ylabel="mean regret at full budget", title=prob)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--budget", type=float, default=20.0, help="full-budget equivalents per run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hpo.json"))
    args = ap.parse_args()
    rows = [run_one(PROBLEMS[p], m, s, args.budget) for p in args.problems for m in args.methods for s in range(args.seeds)]
    Path(args.out).write_text(json.dumps({"budget": args.budget, "rows": rows}))
    print(summarize(rows, args.budget))
    plot(rows, args.budget, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()
