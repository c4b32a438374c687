"""Data path benchmark: prepare vs plain pyarrow, and the input pipeline vs the training it feeds.

    python benchmarks/data_ingest.py [--rows 1000000 10000000] [--repeats 3] [--work DIR]
    python benchmarks/data_ingest.py --rows 45000000 --no-baseline --repeats 1   # Criteo Kaggle size

For each size, a synthetic Criteo-format file (label, 13 ints with 10% missing, 26 Zipf hex
tokens with 10% missing) is generated once into ``--work`` (kept for later runs). Then, side by
side in alternating order, each in a fresh process (time measured around the work itself,
imports excluded; peak RSS of that process from ``getrusage``):

* baseline: ``pyarrow.csv.read_csv`` with typed columns + ``pyarrow.compute.dictionary_encode``
  of the 26 categoricals (the whole file in memory);
* ours: ``lightning-des data prepare criteo --input F --out D --force`` (streamed into shards).

Then on the smallest prepared file: the input pipeline alone (training batches of 4096 as
KeyedJaggedTensors through the data module's DataLoader, 0 and 2 workers) and DeepFM trained by
DES on 2 processes on the same batches (median step time after 5 warm-up steps).
Writes benchmarks/results/data_ingest.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def _child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line (its result)."""
    wrapper = code + "\nimport resource, json\nRESULT['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\nprint('RESULT' + json.dumps(RESULT))\n"
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT"):])


BASELINE = """
import time, pyarrow as pa, pyarrow.csv as pcsv, pyarrow.compute as pc
names = {names!r}
types = {{"label": pa.int8(), **{{f"I{{i}}": pa.float32() for i in range(1, 14)}}, **{{f"C{{i}}": pa.string() for i in range(1, 27)}}}}
t = time.perf_counter()
tab = pcsv.read_csv({path!r}, pcsv.ReadOptions(column_names=names), pcsv.ParseOptions(delimiter="\\t", quote_char=False),
                    pcsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False))
read_s = time.perf_counter() - t
enc = [pc.dictionary_encode(tab.column(f"C{{i}}")) for i in range(1, 27)]
RESULT = {{"seconds": time.perf_counter() - t, "read_s": read_s, "rows": tab.num_rows}}
"""

OURS = """
import time, json
from pathlib import Path
from lightning_des.cli import main
t = time.perf_counter()
rc = main(["data", "prepare", "criteo", "--input", {path!r}, "--out", {out!r}, "--force"])
secs = time.perf_counter() - t
assert rc == 0, rc
out = Path({out!r})
meta = json.loads((out / "meta.json").read_text())
size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
RESULT = {{"seconds": secs, "rows": sum(meta["splits"][s]["rows"] for s in ("train", "val", "test")), "output_bytes": size}}
"""

PIPELINE = """
import time, statistics
from lightning_des.data.modules import CTRDataModule
dm = CTRDataModule({out!r}, batch_size=4096, num_workers={workers})
loader = dm.train_dataloader()
times, t = [], time.perf_counter()
for i, b in enumerate(loader):
    now = time.perf_counter(); times.append(now - t); t = now
    if i + 1 >= {batches}:
        break
times = times[3:]  # worker start-up
RESULT = {{"median_batch_s": statistics.median(times), "rows_per_s": 4096 / statistics.median(times), "batches": len(times),
          "keys": len(b.sparse_features.keys())}}
"""


def generate(work: Path, rows: int) -> Path:
    path = work / f"criteo_synthetic_{rows}.tsv"
    if not path.is_file():
        sys.path.insert(0, str(ROOT))
        from lightning_des.data.synthetic import write_criteo_tsv

        t = time.perf_counter()
        write_criteo_tsv(path, rows, seed=0)
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def train_rate(out: Path, steps: int = 25) -> dict:
    """DeepFM by DES on 2 gloo processes, batches of 4096 per process from ``out``."""
    res = ROOT / "benchmarks" / "results" / "_des_train_rate.json"
    res.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_train", str(out), "--_steps", str(steps), "--_result", str(res)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0 or not res.is_file():
        raise RuntimeError(f"DES training run failed: {proc.stderr[-3000:]}")
    r = json.loads(res.read_text())
    res.unlink()
    return r


def _train_main(out: str, steps: int, result: str) -> None:
    """Runs under Lightning's launcher (it re-runs this command for rank 1)."""
    import lightning.pytorch as pl

    import lightning_des
    from lightning_des.data.modules import CTRDataModule
    from lightning_des.models.recsys import DeepFM

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, *a) -> None:
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, *a) -> None:
            trainer.strategy.barrier()
            self.times.append(time.perf_counter() - self.t)

    pl.seed_everything(0)
    dm = CTRDataModule(out, batch_size=4096)
    model = DeepFM(dm.schema, embedding_dim=16, hidden=(256, 128))
    timer = StepTimer()
    trainer = pl.Trainer(strategy=lightning_des.DESStrategy(mode="des"), accelerator="cpu", devices=2, max_steps=steps,
                         limit_val_batches=0, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         callbacks=[timer])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        t = statistics.median(timer.times[5:])
        Path(result).write_text(json.dumps({"median_step_s": t, "rows_per_s_per_rank": 4096 / t, "steps": len(timer.times) - 5}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", type=int, default=[1_000_000, 10_000_000])
    p.add_argument("--repeats", type=int, default=3, help="side-by-side repetitions for the smallest size (1 for larger)")
    p.add_argument("--work", type=Path, default=Path("/tmp/lightning_des_bench"))
    p.add_argument("--no-baseline", action="store_true", help="skip pyarrow (it holds the whole file in memory)")
    p.add_argument("--no-pipeline", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_ingest.json")
    p.add_argument("--_train", help=argparse.SUPPRESS)
    p.add_argument("--_steps", type=int, default=25, help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._train:
        return _train_main(args._train, args._steps, args._result)
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("prepare", {})
    for rows in args.rows:
        path = generate(args.work, rows)
        out = args.work / f"prepared_{rows}"
        runs: dict[str, list[dict]] = {"pyarrow": [], "ours": []}
        for _ in range(args.repeats if rows == min(args.rows) else 1):
            if not args.no_baseline:
                runs["pyarrow"].append(_child(BASELINE.format(names=NAMES, path=str(path))))
            runs["ours"].append(_child(OURS.format(path=str(path), out=str(out))))
            print(rows, {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()}, flush=True)
        entry = {"file_bytes": path.stat().st_size, "runs": runs,
                 "ours_s": statistics.median(r["seconds"] for r in runs["ours"]),
                 "ours_rss_mb": max(r["peak_rss_mb"] for r in runs["ours"]),
                 "output_bytes": runs["ours"][-1]["output_bytes"]}
        if runs["pyarrow"]:
            entry.update(pyarrow_s=statistics.median(r["seconds"] for r in runs["pyarrow"]),
                         pyarrow_rss_mb=max(r["peak_rss_mb"] for r in runs["pyarrow"]),
                         ratio=statistics.median(o["seconds"] / b["seconds"] for o, b in zip(runs["ours"], runs["pyarrow"])))
        results["prepare"][str(rows)] = entry
        args.out.write_text(json.dumps(results, indent=1))
    if not args.no_pipeline:
        out = args.work / f"prepared_{min(args.rows)}"
        pipe = {w: _child(PIPELINE.format(out=str(out), workers=w, batches=60)) for w in (0, 2)}
        train = train_rate(out)
        results["pipeline"] = {"rows": min(args.rows), "loader": {str(w): r for w, r in pipe.items()}, "des_deepfm_2proc": train,
                               "ratio_0_workers": pipe[0]["rows_per_s"] / train["rows_per_s_per_rank"],
                               "ratio_2_workers": pipe[2]["rows_per_s"] / train["rows_per_s_per_rank"]}
        args.out.write_text(json.dumps(results, indent=1))
    print("| rows | file MB | pyarrow s | ours s | ours / pyarrow | pyarrow peak RSS MB | ours peak RSS MB | rows/s (ours) | shards MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows, e in sorted(results["prepare"].items(), key=lambda kv: int(kv[0])):
        pa_s = f"{e['pyarrow_s']:.1f}" if "pyarrow_s" in e else "-"
        ratio = f"{e['ratio']:.2f}x" if "ratio" in e else "-"
        pa_rss = f"{e['pyarrow_rss_mb']:.0f}" if "pyarrow_rss_mb" in e else "-"
        print(f"| {int(rows):,} | {e['file_bytes'] / 1e6:.0f} | {pa_s} | {e['ours_s']:.1f} | {ratio} | {pa_rss} | "
              f"{e['ours_rss_mb']:.0f} | {int(rows) / e['ours_s']:,.0f} | {e['output_bytes'] / 1e6:.0f} |")
    if "pipeline" in results:
        pl_ = results["pipeline"]
        print(f"\ninput pipeline (batches of 4096, KJT): {pl_['loader']['0']['rows_per_s']:,.0f} rows/s with 0 workers, "
              f"{pl_['loader']['2']['rows_per_s']:,.0f} with 2; DES DeepFM on 2 processes consumes "
              f"{pl_['des_deepfm_2proc']['rows_per_s_per_rank']:,.0f} rows/s per rank (step {pl_['des_deepfm_2proc']['median_step_s'] * 1e3:.0f} ms): "
              f"pipeline {pl_['ratio_0_workers']:.1f}x / {pl_['ratio_2_workers']:.1f}x faster")


if __name__ == "__main__":
    main()
