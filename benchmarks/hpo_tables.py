"""Build the real-learning-curve tables that benchmarks/hpo.py's ``table:*`` problems query.

    python benchmarks/hpo_tables.py --table deepfm-ml100k [--configs 100]
    python benchmarks/hpo_tables.py --table wdl-ml100k [--configs 100]
    python benchmarks/hpo_tables.py --table digits-mlp [--configs 400]
    python benchmarks/hpo_tables.py --report          # rank correlation low vs full fidelity

Each table holds ``--configs`` configurations drawn (seed 0, one draw per index) from the tuner's
search space, each trained once to the full budget with its validation loss recorded at every
epoch: DeepFM and Wide&Deep (this package's models, Lightning ``Trainer``, one thread) on
MovieLens-100k with the space of ``recipes/tune_deepfm_movielens.yaml``, epochs 1..9; the
one-hidden-layer MLP of hpo_problems.digits_problem on sklearn's digits, epochs 1..27.
The JSON (benchmarks/tables/<name>.json) is rewritten after every configuration, so an
interrupted build resumes where it stopped; ``--configs`` larger than what is there extends it
with the next draws.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hpo_problems import DIGITS_SPEC, digits_problem  # noqa: E402

from lightning_des.tuner.space import SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TABLES_DIR = ROOT / "benchmarks" / "tables"
RECSYS_SPEC = {  # recipes/tune_deepfm_movielens.yaml, without the ``model.init_args.`` prefix
    "dense_lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "sparse_lr": {"type": "float", "low": 1.0e-3, "high": 0.3, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "embedding_dim": {"type": "categorical", "choices": [4, 8, 16, 32]},
}
TABLES = {
    "deepfm-ml100k": dict(spec=RECSYS_SPEC, epochs=9, configs=100, model="DeepFM"),
    "wdl-ml100k": dict(spec=RECSYS_SPEC, epochs=9, configs=100, model="WideAndDeep"),
    "digits-mlp": dict(spec=DIGITS_SPEC, epochs=27, configs=400, model=None),
}


def draw(space: SearchSpace, index: int) -> dict:
    """Configuration ``index`` of a table: its own generator, so a table can be extended."""
    return space.sample(np.random.default_rng([0, index]))


def recsys_curve(model: str, config: dict, epochs: int) -> list[float]:
    """Validation log-loss after each of ``epochs`` epochs of ``model`` on MovieLens-100k."""
    import lightning.pytorch as pl
    import torch

    from lightning_des.data import MovieLens100KDataModule
    from lightning_des.models import recsys

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    dm = MovieLens100KDataModule(batch_size=512)
    dm.prepare_data()
    dm.setup("fit")
    net = getattr(recsys, model)(dm.schema, hidden=[256, 128], sparse_optimizer="adagrad", **config)
    losses: list[float] = []

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer, module) -> None:
            if not trainer.sanity_checking:
                losses.append(float(trainer.callback_metrics["val_logloss"]))

    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Record()])
    trainer.fit(net, dm)
    if len(losses) != epochs:
        raise RuntimeError(f"expected {epochs} validation losses, got {len(losses)}")
    return losses


def digits_curve(config: dict, epochs: int) -> list[float]:
    out, _ = digits_problem().evaluate(config, [float(e) for e in range(1, epochs + 1)], None)
    return [out[float(e)] for e in range(1, epochs + 1)]


def load(name: str) -> dict:
    path = TABLES_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: build it with python benchmarks/hpo_tables.py --table {name}")
    return json.loads(path.read_text())


def curve_matrix(table: dict) -> np.ndarray:
    """(configurations, epochs) losses of a table; NaN and inf (diverged runs) become 1e9, so
    they rank last and never count as good losses."""
    return np.nan_to_num(np.array([r["curve"] for r in table["rows"]], dtype=float), nan=1e9, posinf=1e9)


def build(name: str, n: int) -> None:
    t = TABLES[name]
    space = SearchSpace.from_dict(t["spec"])
    path = TABLES_DIR / f"{name}.json"
    table = json.loads(path.read_text()) if path.is_file() else {
        "name": name, "model": t["model"], "spec": t["spec"], "epochs": t["epochs"], "fidelity": "epochs",
        "metric": "val_logloss", "rows": [],
        "command": f"python benchmarks/hpo_tables.py --table {name} --configs {n}"}
    if table["spec"] != t["spec"] or table["epochs"] != t["epochs"]:
        raise ValueError(f"{path} was built with another space or epoch count; move it away to rebuild")
    TABLES_DIR.mkdir(parents=True, exist_ok=True)
    for i in range(len(table["rows"]), n):
        config = draw(space, i)
        t0 = time.perf_counter()
        curve = recsys_curve(t["model"], config, t["epochs"]) if t["model"] else digits_curve(config, t["epochs"])
        table["rows"].append({"config": config, "curve": curve, "seconds": round(time.perf_counter() - t0, 2)})
        table["command"] = f"python benchmarks/hpo_tables.py --table {name} --configs {len(table['rows'])}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)
        print(f"{name} {i + 1}/{n}: final {curve[-1]:.4f} best-epoch {int(np.argmin(curve)) + 1} ({table['rows'][-1]['seconds']:.1f} s)",
              flush=True)


def fidelity_correlation(table: dict) -> dict[int, float]:
    """Spearman rank correlation, over the table's configurations, of the loss at each epoch with
    the loss at the last epoch (non-finite losses rank last)."""
    from scipy.stats import spearmanr

    curves = curve_matrix(table)
    return {e + 1: float(spearmanr(curves[:, e], curves[:, -1]).statistic) for e in range(curves.shape[1])}


def report() -> str:
    lines = ["| table | configs | epochs | Spearman(epoch 1, last) | (1/9 of max) | (1/3 of max) | best final loss | median final | s/config |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in TABLES:
        if not (TABLES_DIR / f"{name}.json").is_file():
            continue
        t = load(name)
        rho = fidelity_correlation(t)
        e = t["epochs"]
        finals = [r["curve"][-1] for r in t["rows"]]
        lines.append(f"| {name} | {len(t['rows'])} | {e} | {rho[1]:.2f} | {rho[max(1, e // 9)]:.2f} | {rho[max(1, e // 3)]:.2f} | "
                     f"{min(finals):.4f} | {float(np.median(finals)):.4f} | {np.median([r['seconds'] for r in t['rows']]):.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", choices=list(TABLES))
    ap.add_argument("--configs", type=int, help="configurations in the table (default: the table's own)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.table:
        build(args.table, args.configs or TABLES[args.table]["configs"])
    if args.report or not args.table:
        print(report())


if __name__ == "__main__":
    main()
