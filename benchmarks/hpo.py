"""Multi-fidelity HPO benchmark: FlexHB against its own modes, ablations and peer tuners.

    scripts/install_hpo.sh                      # .venv-hpo: the project + peers (numpy<2)
    .venv-hpo/bin/python benchmarks/hpo.py [--problems ...] [--methods ...] [--seeds 30] [--jobs 2]

Problems (benchmarks/hpo_problems.py): continuous-fidelity Branin (1..27), mf-prior-bench
``mfh3``/``mfh6`` in good/bad/terrible variants (1..100), an MLP on sklearn's digits (epochs
1..27). Methods: this package's modes (random, hyperband, bohb, flexhb) and FlexHB ablations,
and the peers Optuna (TPE + HyperbandPruner), SMAC3 (multi-fidelity facade, Hyperband), DEHB and
HpBandSter BOHB (benchmarks/hpo_peers.py), all with eta 3. Every method is charged by the same
:class:`Meter` in full-fidelity equivalents: our modes and Optuna resume trials (pay only the new
budget), SMAC3, DEHB and HpBandSter restart them (pay the whole budget). y = best loss measured
*at full fidelity* so far. Reports final regret (mean ± SEM), average rank over seeds, speedup of
FlexHB over each method (budget the method needs to reach its own final mean regret / budget
FlexHB needs for the same) and tuner overhead per configuration (wall time outside the
objective / configurations tried). Runs are cached in a JSONL file (rerunning skips finished
ones); writes benchmarks/results/hpo.json, hpo.md (the tables) and hpo.png.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hpo_problems import SYNTHETIC, TABLES, Exhausted, Meter, Problem, make_problem  # noqa: E402

from lightning_des.tuner.flexhb import FlexHB  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OURS = {
    "random": dict(mode="random"),
    "hyperband": dict(mode="hyperband"),
    "bohb": dict(mode="bohb"),
    "flexhb": dict(mode="flexhb"),
    "flexhb-no-glosh": dict(mode="flexhb", global_sh=False),
    "flexhb-glosh-resume": dict(mode="flexhb", resume_paused=True),  # GloSH also resuming past brackets' trials
    "flexhb-no-flexband": dict(mode="flexhb", flexband=False),
    "flexhb-coarse": dict(mode="flexhb", fine_grained=False),
    "flexhb-single-model": dict(mode="flexhb", surrogate="single"),
    "flexhb-fine-groups": dict(mode="flexhb", group_step=3),  # one ensemble member per 3 budget units (the paper's g = eta)
}
PEER_NAMES = ["optuna", "smac", "dehb", "hpbandster"]
ABLATIONS = [m for m in OURS if m.startswith("flexhb-")]
MAIN = [m for m in OURS if m not in ABLATIONS] + PEER_NAMES
METHODS = [*OURS, *PEER_NAMES]
PROBLEMS = [*SYNTHETIC, "digits-mlp", *TABLES]
CHEAP = {*SYNTHETIC, *TABLES}  # problems run with --seeds (digits-mlp trains live: --seeds-real)


def run_ours(p: Problem, method: str, seed: int, meter: Meter) -> FlexHB:
    t = FlexHB(p.space, p.min_budget, p.max_budget, eta=3, seed=seed, **OURS[method])
    states: dict[int, object] = {}
    try:
        while True:
            meter.check()
            job = t.ask()
            t0 = time.perf_counter()
            losses, states[job.trial_id] = p.evaluate(job.config, job.points, states.get(job.trial_id) if job.start > 0 else None)
            meter.eval_s += time.perf_counter() - t0
            meter.charge(job.cost, losses)
            t.tell(job, losses)
    except Exhausted:
        pass
    return t


def steps(curve: list) -> list:
    """A best-so-far curve reduced to the points where it changes (plus the last)."""
    out = [c for i, c in enumerate(curve) if i == 0 or c[1] != curve[i - 1][1]]
    return out if out[-1] == curve[-1] else out + [curve[-1]]


def run_one(problem: str, method: str, seed: int, budget: float) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = make_problem(problem)
    meter = Meter(budget, p.max_budget)
    t0 = time.perf_counter()
    extra = {}
    if method in OURS:
        t = run_ours(p, method, seed, meter)
        n, extra = len(t.trials), {"levels": t.levels, "switches": t.switches}  # a later tuner may round or default differently
    else:
        from hpo_peers import PEERS

        n = PEERS[method](p, seed, meter)
    wall = time.perf_counter() - t0
    curve = steps([(u, b - p.optimum) for u, b in meter.curve])
    if problem.startswith("table:"):
        extra["table_configs"] = _table_configs(problem)
    return {"problem": problem, "method": method, "seed": seed, "curve": curve, "final": curve[-1][1],
            "configs": n, "overhead_s": (wall - meter.eval_s) / max(n, 1), "wall_s": wall, **extra}


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
                  "| method | final regret (mean ± SEM) | average rank | FlexHB speedup | overhead s/config |", "|---|---|---|---|---|"]
        for m in methods:
            f = [r["final"] for r in rs if r["method"] == m]
            sem = statistics.stdev(f) / len(f) ** 0.5 if len(f) > 1 else 0.0
            target = curves[m][-1]
            b_m = grid[np.argmax(curves[m] <= target)]
            if m == "flexhb" or "flexhb" not in curves:  # no FlexHB curve to compare with
                speed = "-"
            else:
                reach = curves["flexhb"] <= target
                speed = f"{b_m / grid[np.argmax(reach)]:.2f}x" if reach.any() else "never"
            ask = statistics.median(r["overhead_s"] for r in rs if r["method"] == m)
            lines.append(f"| {m} | {statistics.mean(f):.4f} ± {sem:.4f} | {statistics.mean(ranks[m]):.2f} | {speed} | {ask:.4f} |")
    return "\n".join(lines)


def fidelity_report(problems: list[str], n: int = 200) -> str:
    """Spearman rank correlation of the loss at each rung budget (eta 3) with the loss at the
    full budget: over every tabulated configuration for ``table:*`` problems, over ``n``
    random configurations (seed 0) for the others (digits-mlp: its table)."""
    from scipy.stats import spearmanr

    lines = ["| problem | rung budgets | Spearman with the full budget, per rung |", "|---|---|---|"]
    for name in problems:
        p = make_problem("table:digits-mlp" if name == "digits-mlp" else name)
        levels = FlexHB(p.space, p.min_budget, p.max_budget, eta=3).levels
        if p.name.startswith("table:"):
            from hpo_tables import load

            configs = [r["config"] for r in load(p.name.removeprefix("table:"))["rows"]]
        else:
            rng = np.random.default_rng(0)
            configs = [p.space.sample(rng) for _ in range(n)]
        losses = np.array([[v for _, v in sorted(p.evaluate(c, levels, None)[0].items())] for c in configs])
        losses = np.nan_to_num(losses, nan=1e9, posinf=1e9)
        rho = [spearmanr(losses[:, k], losses[:, -1]).statistic for k in range(len(levels) - 1)]
        lines.append(f"| {name} | {', '.join(f'{b:g}' for b in levels)} | {', '.join(f'{r:.2f}' for r in rho)} |")
    return "\n".join(lines)


def targets(rows: list[dict], budget: float) -> str:
    """The issue's targets, problem by problem: FlexHB's final mean regret <= every peer's;
    FlexHB's mean curve reaching SMAC3-HB's final mean regret within half of the budget;
    FlexHB vs this package's BOHB mode."""
    grid = np.linspace(0.05, budget, 400)
    lines = ["| problem | FlexHB <= every peer (final mean) | budget FlexHB needs for SMAC3's final / budget | FlexHB vs BOHB (final mean) |",
             "|---|---|---|---|"]
    for prob in sorted({r["problem"] for r in rows}):
        final = {m: statistics.mean(r["final"] for r in rows if r["problem"] == prob and r["method"] == m)
                 for m in METHODS if any(r["problem"] == prob and r["method"] == m for r in rows)}
        if "flexhb" not in final:
            continue
        peers = {m: v for m, v in final.items() if m in PEER_NAMES}
        beat = all(final["flexhb"] <= v for v in peers.values()) if peers else None
        worse = ", ".join(f"{m} {v:.4f}" for m, v in peers.items() if v < final["flexhb"])
        reach = "-"
        if "smac" in final:
            curve = mean_curve([r for r in rows if r["problem"] == prob and r["method"] == "flexhb"], grid)
            hit = curve <= final["smac"]
            reach = f"{grid[np.argmax(hit)] / budget:.2f}" if hit.any() else "never"
        bohb = f"{final['flexhb']:.4f} vs {final['bohb']:.4f}" if "bohb" in final else "-"
        lines.append(f"| {prob} | {'yes' if beat else 'no (' + worse + ')' if beat is False else '-'} | {reach} | {bohb} |")
    return "\n".join(lines)


def across_problems(rows: list[dict], methods: list[str], n_boot: int = 2000) -> str:
    """Mean rank over the problems on which every one of ``methods`` ran on the same seeds
    (each problem weighs the same; a problem with unfinished runs is left out), with a 95%
    bootstrap interval (seeds resampled within each problem), and how often FlexHB's final
    regret beats each method's on the same problem and seed (ties count half)."""
    from scipy.stats import rankdata

    seeds_of = lambda p, m: {r["seed"] for r in rows if r["problem"] == p and r["method"] == m}  # noqa: E731
    probs = [p for p in sorted({r["problem"] for r in rows})
             if seeds_of(p, methods[0]) and all(seeds_of(p, m) == seeds_of(p, methods[0]) for m in methods)]
    if not probs:
        return "(no problem on which all of these methods ran)"
    ranks, wins = [], []  # per problem: seeds x methods
    for p in probs:
        final = {(r["method"], r["seed"]): r["final"] for r in rows if r["problem"] == p}
        seeds = sorted(seeds_of(p, methods[0]))
        f = np.array([[final[(m, s)] for m in methods] for s in seeds])
        ranks.append(rankdata(f, axis=1))
        ref = f[:, [methods.index("flexhb")]]
        wins.append((ref < f) + 0.5 * (ref == f))
    rng = np.random.default_rng(0)

    def stat(blocks: list[np.ndarray], boot: bool) -> np.ndarray:
        return np.mean([b[rng.integers(0, len(b), len(b))].mean(0) if boot else b.mean(0) for b in blocks], axis=0)

    def ci(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boots = np.array([stat(blocks, True) for _ in range(n_boot)])
        return stat(blocks, False), *np.percentile(boots, [2.5, 97.5], axis=0)

    (r, rlo, rhi), (w, wlo, whi) = ci(ranks), ci(wins)
    lines = [f"Over {len(probs)} problems ({', '.join(probs)}); 95% bootstrap intervals.\n",
             "| method | mean rank | FlexHB better on (share of problem x seed) |", "|---|---|---|"]
    for i in np.argsort(r):
        share = "-" if methods[i] == "flexhb" else f"{w[i]:.2f} [{wlo[i]:.2f}, {whi[i]:.2f}]"
        lines.append(f"| {methods[i]} | {r[i]:.2f} [{rlo[i]:.2f}, {rhi[i]:.2f}] | {share} |")
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
    cols = min(3, len(probs))
    rows_n = -(-len(probs) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.5 * cols, 3.8 * rows_n), squeeze=False)
    for ax in axes.ravel()[len(probs):]:
        ax.set_visible(False)
    grid = np.linspace(0.05, budget, 400)
    # one colour per method on every panel; tab20's dark shades first (its pairs look alike)
    colour = {m: plt.cm.tab20((2 * i) % 20 + (2 * i) // 20) for i, m in enumerate(METHODS)}
    for ax, prob in zip(axes.ravel(), probs):
        for m in METHODS:
            rs = [r for r in rows if r["problem"] == prob and r["method"] == m]
            if rs:
                ax.plot(grid, mean_curve(rs, grid), label=m, color=colour[m], lw=2.2 if m == "flexhb" else 1.2)
        ax.set(xlabel="budget (full-budget equivalents)", ylabel="mean regret at full budget", title=prob)
        if prob in TABLES:  # regret 0 (the best tabulated configuration) is reachable
            ax.set_yscale("symlog", linthresh=1e-3)
        else:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def _run(args: tuple) -> dict:
    return run_one(*args)


@functools.cache
def _tuner_now(problem: str, method: str) -> FlexHB:
    p = make_problem(problem)
    return FlexHB(p.space, p.min_budget, p.max_budget, eta=3, **OURS[method])


@functools.cache
def _table_configs(problem: str) -> int | None:
    """How many configurations a ``table:*`` problem's table holds now (None for other problems)."""
    if not problem.startswith("table:"):
        return None
    from hpo_tables import load

    return len(load(problem.removeprefix("table:"))["rows"])


def _stale(row: dict) -> bool:
    """A cached run of ours whose rung levels or resolved switches differ from what the tuner
    uses now (a run without a record of them is stale), or any run on a table that has grown
    since (its nearest neighbours and optimum changed)."""
    if row.get("table_configs") != _table_configs(row["problem"]):
        return True
    if row["method"] not in OURS:
        return False
    now = _tuner_now(row["problem"], row["method"])
    return row.get("levels") != now.levels or row.get("switches") != now.switches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="*", default=PROBLEMS, choices=PROBLEMS)
    ap.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", type=int, default=30, help="seeds on the synthetic and tabular problems")
    ap.add_argument("--seeds-real", type=int, default=10, help="seeds on digits-mlp")
    ap.add_argument("--budget", type=float, default=20.0, help="full-budget equivalents per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (1 thread each)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hpo.json"))
    ap.add_argument("--report-only", action="store_true", help="run nothing: tables and plot from the cached runs")
    args = ap.parse_args()
    cache = Path(args.out).with_suffix(".jsonl")
    done = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            if r.get("budget", args.budget) == args.budget and not _stale(r):
                done[(r["problem"], r["method"], r["seed"])] = r
    n_seeds = lambda p: args.seeds if p in CHEAP else args.seeds_real  # noqa: E731
    todo = [] if args.report_only else [(p, m, s, args.budget) for p in args.problems for m in args.methods
                                         for s in range(n_seeds(p)) if (p, m, s) not in done]
    print(f"{len(todo)} runs to do, {len(done)} cached in {cache}")
    os.environ["OMP_NUM_THREADS"] = "1"
    with cache.open("a") as f:
        if args.jobs > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(args.jobs) as pool:
                results = pool.imap_unordered(_run, todo)
                for r in results:
                    f.write(json.dumps({**r, "budget": args.budget}) + "\n")
                    f.flush()
                    done[(r["problem"], r["method"], r["seed"])] = r
        else:
            for t in todo:
                r = run_one(*t)
                f.write(json.dumps({**r, "budget": args.budget}) + "\n")
                f.flush()
                done[(r["problem"], r["method"], r["seed"])] = r
    rows = [r for (p, m, _), r in done.items() if p in args.problems and m in args.methods]
    count = collections.Counter((r["problem"], r["method"]) for r in rows)
    unfinished = sorted(k for k, n in count.items() if n < n_seeds(k[0]))
    if unfinished:  # reported only once every seed has run (an interrupted benchmark resumes them)
        print("unfinished, left out of the tables:", ", ".join(f"{p}/{m} ({count[p, m]} of {n_seeds(p)} seeds)" for p, m in unfinished))
        rows = [r for r in rows if (r["problem"], r["method"]) not in unfinished]
    Path(args.out).write_text(json.dumps({"budget": args.budget, "rows": rows}))
    table = summarize(rows, args.budget)
    problems = [p for p in PROBLEMS if any(r["problem"] == p for r in rows)]
    ran = lambda ms: [m for m in ms if any(r["method"] == m for r in rows)]  # noqa: E731  (variants never run are left out)
    extra = (f"\n\n## Rank correlation between fidelities\n\n{fidelity_report(problems)}\n\n"
             f"## Targets\n\n{targets(rows, args.budget)}\n\n"
             f"## Across problems: tuners\n\n{across_problems(rows, MAIN)}\n\n"
             f"## Across problems: FlexHB's parts\n\n{across_problems(rows, ['flexhb', *ran(ABLATIONS), 'bohb'])}")
    Path(args.out).with_suffix(".md").write_text(f"# benchmarks/hpo.py ({args.budget:g} full-budget equivalents per run)\n{table}{extra}\n")
    print(table + extra)
    plot(rows, args.budget, Path(args.out).with_suffix(".png"))


if __name__ == "__main__":
    main()
