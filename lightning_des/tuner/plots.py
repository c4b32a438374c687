"""Plots of a FlexHB study: anytime curve and rank correlation between fidelities (PNG)."""

from __future__ import annotations

from pathlib import Path

from lightning_des.tuner.flexhb import FlexHB


def plot_study(tuner: FlexHB, path: str | Path, title: str = "") -> Path:
    """Left: best full-budget loss so far against budget used. Right: Spearman rank
    correlation of each rung level with the full budget (trials measured at both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    pts = [(r["budget"] / tuner.max_budget, r["best"]) for r in tuner.log if r["best"] != float("inf")]
    if pts:
        x, y = zip(*pts)
        a.step(x, y, where="post")
    a.set(xlabel="budget used (full-budget equivalents)", ylabel="best loss at full budget", title=f"anytime {title}".strip())
    a.grid(alpha=0.3)
    levels = tuner.levels[:-1]
    rhos = [tuner.rank_correlation(l, tuner.max_budget) for l in levels]
    b.bar([f"{l:g}" for l in levels], [r if r is not None else 0.0 for r in rhos], color=["C0" if r is not None else "0.8" for r in rhos])
    b.set(xlabel="budget", ylabel=f"Spearman vs budget {tuner.max_budget:g}", ylim=(-1, 1), title="fidelity rank correlation (grey: < 5 pairs)")
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
