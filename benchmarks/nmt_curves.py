"""Learning curves of finished ``benchmarks/nmt.py`` runs: per epoch, the mean over seeds of the
training loss (label-smoothed, token-weighted over the epoch; runs since it was logged), the
validation loss and greedy validation BLEU, per model, and KVMemAtt minus the baseline. Rows are
read as ``nmt.py --report-only`` reads them (only runs whose recorded settings are a variant's today).

    python benchmarks/nmt_curves.py --rows benchmarks/results/nmt_zh_en_e6_s0_tie.jsonl [...] \
        [--pair zh_en] [--epochs 6] [--models bahdanau kvmem] [--out benchmarks/results/nmt_curves_zh_en_e6.json]

A gap that is as large in training loss as in validation loss means the model fits the training
data less well (slower optimisation, underfitting), not that it generalises worse. Writes
``--out`` (JSON) and the table beside it (.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nmt import current_rows  # benchmarks/ is on sys.path when this runs as a script

KEYS = ("train_loss", "val_loss", "val_bleu")


def curves(rows: list[dict], pair: str, epochs: int, models: list[str]) -> dict[str, list[dict]]:
    """model -> per epoch {epoch, seeds, mean of each of KEYS over the seeds that logged it}."""
    out = {}
    for m in models:
        rs = {r["seed"]: r for r in rows if r["pair"] == pair and r["model"] == m and r.get("epochs") == epochs and r.get("val_curve")}
        if not rs:
            raise SystemExit(f"no finished {pair} {m} run of {epochs} epochs with a validation curve in the given rows")
        per_epoch = []
        for e in range(epochs):
            points = [c for r in rs.values() for c in r["val_curve"] if c["epoch"] == e]
            per_epoch.append({"epoch": e, "seeds": len(points),
                              **{k: statistics.mean(c[k] for c in points) for k in KEYS if points and all(k in c for c in points)}})
        out[m] = per_epoch
    return out


def table(c: dict[str, list[dict]], models: list[str]) -> list[str]:
    base, other = models[0], models[-1]
    head = ["epoch", *(f"{k} {m}" for m in models for k in KEYS), *(f"{k} gap" for k in KEYS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell = lambda p, k: f"{p[k]:.3f}" if k in p else "-"  # noqa: E731
    for i, p0 in enumerate(c[base]):
        p1 = c[other][i]
        gaps = [f"{p1[k] - p0[k]:+.3f}" if k in p0 and k in p1 else "-" for k in KEYS]
        lines.append("| " + " | ".join([str(p0["epoch"] + 1), *(cell(c[m][i], k) for m in models for k in KEYS), *gaps]) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", required=True, help="nmt.py result rows (.jsonl)")
    ap.add_argument("--pair", default="zh_en", choices=["de_en", "zh_en"])
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--models", nargs=2, default=["bahdanau", "kvmem"], help="baseline, then the model compared with it")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    missing = [f for f in args.rows if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"no such rows file: {', '.join(missing)}")
    rows = list(current_rows([Path(f) for f in args.rows]).values())  # runs with today's settings, as --report-only reads them
    c = curves(rows, args.pair, args.epochs, args.models)
    lines = table(c, args.models)
    Path(args.out).write_text(json.dumps({"pair": args.pair, "epochs": args.epochs, "rows": args.rows, "curves": c}, indent=1))
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
