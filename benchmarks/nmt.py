"""Bahdanau-attention baseline vs KVMemAtt on de->en and zh->en, same budget, several seeds.

    lightning-des data prepare de-en && lightning-des data prepare zh-en
    python benchmarks/nmt.py [--pairs de_en zh_en] [--seeds 3] [--jobs 2] [--epochs N] [--models ...] [--out F]

Trains ``recipes/nmt_{bahdanau,kvmem}_{pair}.yaml`` (same sizes, tokeniser, epochs and seed
set; the only differences are the attention module and KVMemAtt's EOS term) through the CLI,
one thread per run, ``--jobs`` runs at a time; each run's best-validation checkpoint is tested
with beam search (BLEU, chrF, repetition, dropping; test split) and timed: training tokens/s
(target tokens of the training set x epochs / fit seconds) and decoding tokens/s (output
tokens / seconds of the ``test`` command, beam 5, one sentence at a time); both include the
process start-up (~10-15 s: imports, SentencePiece training), so they understate speed alike.
BLEU and chrF are against the raw reference sentences, overall and per source domain. Finished
runs are appended to ``--out`` with suffix ``.jsonl`` and skipped by a rerun (same pair, model,
seed, epochs, model settings: a row whose recorded settings differ from the recipe's today is
run again), so an interrupted benchmark resumes; a variant whose training settings equal a
cached row's in any ``nmt_*.jsonl`` beside ``--out`` (they differ only in decoding, e.g. the
length penalty) is tested on that row's checkpoint instead of trained again (its row names the run it was ``trained_in``).
Rows record a digest of the prepared corpus and the torch version (``environment``). Writes ``--out`` (default
benchmarks/results/nmt.json: runs + side-by-side examples). ``--models`` adds one-factor
KVMemAtt ablations (see ``VARIANTS``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import hashlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "lightning_logs" / "nmt_bench"
MODELS = ["bahdanau", "kvmem"]
# the first recipes' settings (PyTorch init, our conditional decoder, mean-state bridge, length
# penalty 1), spelt out so the peer-gap variants keep their meaning whatever the recipes say now
V1 = ["--model.init", "torch", "--model.decoder", "conditional", "--model.bridge", "mean", "--model.length_penalty", "1"]
# name -> (recipe model, extra CLI arguments): the two models, one-factor ablations of KVMemAtt and
# the peer-gap variants of the baseline
VARIANTS = {"bahdanau": ("bahdanau", []), "kvmem": ("kvmem", []),
            "kvmem_noeos": ("kvmem", ["--model.eos_weight", "0"]),  # KVMemAtt without the EOS term (the recipe since it is off there)
            # the paper's two address/read/update rounds per step (the recipes' until one round won validation)
            "kvmem_r2": ("kvmem", ["--model.rounds", "2", "--model.tie_embeddings", "false", "--model.val_bleu", "false"]),  # (untied, as it was run)
            "kvmem_eos": ("kvmem", ["--model.rounds", "2", "--model.eos_weight", "1"]),  # 2 rounds with the paper's EOS term, weight 1
            "kvmem_r1": ("kvmem", ["--model.rounds", "1"]),  # one round per step (the recipes' now: its runs are kvmem's too)
            "kvmem_fb3": ("kvmem", ["--model.forget_bias", "-3"]),  # forget gate starts near 0.05 (little erasing)
            "kvmem_gru": ("kvmem", ["--model.kv_refine", "gru"]),  # the query refined by a GRU cell between rounds
            "kvmem_static": ("kvmem", ["--model.rounds", "2", "--model.kv_update", "false"]),  # 2 rounds, the key memory never rewritten
            "kvmem_lr1e3": ("kvmem", ["--model.rounds", "2", "--model.lr", "0.001"]),  # 2 rounds, a learning rate of its own (3e-3 is the baseline's)
            "bahdanau_eos": ("bahdanau", ["--model.eos_weight", "1"]),  # the baseline with the EOS term
            # recipe candidates, judged on the baseline's validation split (benchmarks/nmt_decode.py)
            "bahdanau_ls": ("bahdanau", ["--model.label_smoothing", "0.1"]),  # label smoothing 0.1 (training loss only)
            "bahdanau_warmup": ("bahdanau", ["--model.lr_schedule", "warmup_rsqrt", "--model.warmup_steps", "400"]),  # warm-up, then 1/sqrt decay
            "bahdanau_d3": ("bahdanau", ["--model.dropout", "0.3"]),  # more dropout (0.2 was chosen on the small corpus)
            "bahdanau_tie": ("bahdanau", ["--model.tie_embeddings", "true"]),  # output projection tied to the target embeddings (the recipes' now)
            # batches of at most 1,400 padded tokens instead of 64 sentences (on de-en about as many updates: 1,201 vs 1,240 an epoch)
            "bahdanau_bt1400": ("bahdanau", ["--data.batch_tokens", "1400"]),
            # both models with their own output projection and checkpoints selected by validation loss (the recipes' until now)
            "bahdanau_untied": ("bahdanau", ["--model.tie_embeddings", "false", "--model.val_bleu", "false"]),
            "kvmem_untied": ("kvmem", ["--model.tie_embeddings", "false", "--model.val_bleu", "false"]),
            # GNMT's coverage penalty at decoding (beta 0.2: the best of 0-1 on the zh-en baseline's validation split)
            "bahdanau_cp02": ("bahdanau", ["--model.coverage_penalty", "0.2"]),
            "kvmem_cp02": ("kvmem", ["--model.coverage_penalty", "0.2"]),
            # length penalty 1 (the recipes' 0.5 was picked on the untied baseline; the tied one's validation prefers 1)
            "bahdanau_lp1": ("bahdanau", ["--model.length_penalty", "1"]),
            "kvmem_lp1": ("kvmem", ["--model.length_penalty", "1"]),
            # one factor at a time from the first recipe towards JoeyNMT's GRU recipe (the peer-gap study)
            "bahdanau_v1": ("bahdanau", V1),
            "bahdanau_xavier": ("bahdanau", [*V1, "--model.init", "xavier"]),  # JoeyNMT's initialisation
            "bahdanau_feeding": ("bahdanau", [*V1, "--model.decoder", "input_feeding"]),  # JoeyNMT's decoder (input feeding)
            "bahdanau_joey": ("bahdanau", [*V1, "--model.init", "xavier", "--model.decoder", "input_feeding"]),  # both
            # ... and JoeyNMT's bridge from the encoder's final states
            "bahdanau_joey_bridge": ("bahdanau", [*V1, "--model.init", "xavier", "--model.decoder", "input_feeding", "--model.bridge", "final"]),
            "kvmem_joey": ("kvmem", [*V1, "--model.init", "xavier", "--model.decoder", "input_feeding"])}  # KVMemAtt, bahdanau_joey's settings


def model_args(pair: str, model: str) -> dict:
    """A variant's model settings as trained and tested: the recipe's ``init_args`` with the
    variant's overrides (later ones win; a data-module override is kept as ``data.<name>``, so
    it tells runs apart too). Recorded in each row; a cached row whose settings differ from
    today's (a recipe changed) is run again."""
    recipe, extra = VARIANTS[model]
    args = dict(_recipe_model_args(recipe, pair))
    for k, v in zip(extra[::2], extra[1::2]):
        if not k.startswith(("--model.", "--data.")):
            raise ValueError(f"variant {model!r}: override {k!r} is neither --model.* nor --data.*")
        args[k.removeprefix("--model.").removeprefix("--")] = yaml.safe_load(v)
    return args


@functools.cache
def _recipe_model_args(recipe: str, pair: str) -> dict:
    """A recipe's model ``init_args``, read once per process (callers copy before changing)."""
    return yaml.safe_load((ROOT / "recipes" / f"nmt_{recipe}_{pair}.yaml").read_text())["model"]["init_args"]


def run_dir(pair: str, model: str, seed: int, epochs: int | None) -> Path:
    """One run's folder; ``_e{epochs}`` when ``--epochs`` overrides the recipe's, then a digest of
    the settings, so a run of a changed recipe never overwrites one that cached rows still cite."""
    digest = hashlib.sha1(json.dumps(effective_args(model_args(pair, model)), sort_keys=True).encode()).hexdigest()[:8]
    return RUNS / (f"{model}_{pair}_s{seed}" + (f"_e{epochs}" if epochs else "") + f"_{digest}")


DECODING = {"beam", "length_penalty", "length_norm", "max_len_ratio", "coverage_penalty"}  # test-time settings only


KVMEM_ONLY = {"rounds", "forget_bias", "kv_refine", "kv_update"}  # settings additive attention never reads


@functools.cache
def _seq2seq_defaults() -> dict:
    from lightning_des.models.nmt import Seq2Seq

    return {k: p.default for k, p in inspect.signature(Seq2Seq.__init__).parameters.items() if p.default is not inspect.Parameter.empty}


def effective_args(args: dict) -> dict:
    """The settings a model runs with: ``Seq2Seq``'s defaults under the given ones, less those its
    attention ignores (a baseline row is the same run whatever ``rounds`` it recorded)."""
    full = {**_seq2seq_defaults(), **args}
    return {k: v for k, v in full.items() if not (full["attention"] == "bahdanau" and k in KVMEM_ONLY)}


def training_args(args: dict) -> dict:
    """The settings that shape training (everything but the decoding ones), as run."""
    return {k: v for k, v in effective_args(args).items() if k not in DECODING}


def best_checkpoint(row: dict) -> Path:
    """The best checkpoint a finished row was tested with (in its run folder)."""
    return Path(row["predictions"]).parent / "checkpoints" / row["best"]


def trained_before(pair: str, model: str, seed: int, epochs: int | None, rows: list[dict]) -> dict | None:
    """A finished row trained with exactly this variant's training settings (same pair, seed,
    epochs) whose best checkpoint is still there: its model is tested again, not retrained."""
    want = training_args(model_args(pair, model))
    for r in rows:
        if (r["pair"], r["seed"], r.get("epochs")) == (pair, seed, epochs) and "model_args" in r and training_args(r["model_args"]) == want:
            if best_checkpoint(r).is_file():
                return r
    return None


def best_val_loss(ckpt: Path) -> float | None:
    """The monitored validation loss of the best checkpoint, as its ModelCheckpoint recorded it
    (None when the checkpoint monitored something else)."""
    import torch

    states = torch.load(ckpt, map_location="cpu", weights_only=False).get("callbacks", {})
    scores = [v["best_model_score"] for k, v in states.items() if k.startswith("ModelCheckpoint") and v.get("monitor") == "val_loss"]
    return float(scores[0]) if scores and scores[0] is not None else None


def validation_curve(metrics_csv: Path) -> list[dict]:
    """Per-epoch figures a fit's CSVLogger wrote: epoch, val_loss, (with ``val_bleu``) greedy
    validation BLEU and (where the model logged it) ``train_loss``, the epoch's token-weighted mean
    training loss, label-smoothed as it is optimised."""
    import csv

    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    train = {int(r["epoch"]): float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")}
    return [{"epoch": int(r["epoch"]), "val_loss": float(r["val_loss"]), **({"val_bleu": float(r["val_bleu"])} if r.get("val_bleu") else {}),
             **({"train_loss": train[int(r["epoch"])]} if int(r["epoch"]) in train else {})}
            for r in rows if r.get("val_loss")]


def with_decoding(trained: Path, folder: Path, args: dict) -> Path:
    """A copy of checkpoint ``trained`` in ``folder`` whose hyperparameters carry the decoding
    settings of ``args``: LightningCLI builds the model from a checkpoint's hyperparameters, which
    override ``--config`` and the command line, so they cannot be changed at ``test`` time."""
    import torch

    ckpt = torch.load(trained, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"].update({k: v for k, v in args.items() if k in DECODING})
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / f"reused-{trained.name}")
    return folder / f"reused-{trained.name}"


CLI = [sys.executable, "-m", "lightning_des.cli"]
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # one CPU thread per run


def cli_args(pair: str, model: str, seed: int, out: Path) -> list[str]:
    """The ``lightning-des`` arguments of one variant's run in folder ``out``: its recipe and
    overrides, the seed, where the run writes (no progress bar), and the recipe's two callbacks,
    the checkpoint (in ``out/checkpoints`` whatever the logger) selected as the variant's
    ``val_bleu`` says: by greedy validation BLEU, or by validation loss without it."""
    recipe, extra = VARIANTS[model]
    monitor, mode = ("val_bleu", "max") if model_args(pair, model).get("val_bleu") else ("val_loss", "min")
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": str(out / "checkpoints"), "monitor": monitor, "mode": mode, "save_last": True}},
                 {"class_path": "lightning_des.models.nmt.TranslationWriter", "init_args": {"output_file": str(out / "predictions.txt")}}]
    return ["--config", str(ROOT / "recipes" / f"nmt_{recipe}_{pair}.yaml"), *extra, "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false", "--trainer.callbacks", json.dumps(callbacks)]


def fit_logger_args(out: Path) -> list[str]:
    """A CSVLogger for ``fit``, writing the validation curve to ``out/csv/fit/metrics.csv``."""
    return ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(out),
            "--trainer.logger.name", "csv", "--trainer.logger.version", "fit"]


def run(pair: str, model: str, seed: int, epochs: int | None, source: dict | None = None) -> dict:
    """Train (unless ``source``, a row of :func:`trained_before`, has the model), test and
    predict one variant; the row records where its model was trained."""
    out = run_dir(pair, model, seed, epochs)
    if source is None:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # an interrupted or outdated run's: fit starts afresh
    out.mkdir(parents=True, exist_ok=True)
    common = [*cli_args(pair, model, seed, out), "--trainer.logger", "false"]
    if epochs:
        common += ["--trainer.max_epochs", str(epochs)]
    if source is None:
        shutil.rmtree(out / "csv", ignore_errors=True)
        t0 = time.perf_counter()
        with open(out / "fit.log", "w") as log:
            subprocess.run([*CLI, "fit", *common, *fit_logger_args(out)], env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=log, check=True)
        fit_s = time.perf_counter() - t0
        ckpts = list((out / "checkpoints").glob("epoch=*.ckpt"))
        if not ckpts:  # e.g. fit stopped by a signal, which Lightning turns into a clean exit
            raise RuntimeError(f"{out}: fit ended without a checkpoint (see {out / 'fit.log'})")
        best = max(ckpts, key=lambda p: p.stat().st_mtime)  # save_top_k=1: the best
    else:
        fit_s = source["fit_s"]
        best = with_decoding(best_checkpoint(source), out / "checkpoints", model_args(pair, model))
    # decoding is timed on ``predict`` (beam search over the test split, exactly as ``test``
    # decodes it; running ``test`` as well would decode everything twice)
    t0 = time.perf_counter()
    with open(out / "predict.log", "w") as log:
        subprocess.run([*CLI, "predict", *common, "--ckpt_path", str(best)], env=CLI_ENV, stdout=subprocess.DEVNULL, stderr=log, check=True)
    decode_s = time.perf_counter() - t0
    # metrics from the predictions (predict decodes the test split exactly as test does): the
    # printed test table wraps long per-domain names, so it is not parsed
    metrics = {k: v for k, v in rescore(pair, model, seed, epochs, _data_module(pair)).items() if k not in ("pair", "model", "seed", "predictions")}
    if source:
        val = {k: source[k] for k in ("val_loss", "val_bleu", "val_curve") if k in source}
    else:
        curve = validation_curve(out / "csv" / "fit" / "metrics.csv")
        at_best = next((c for c in curve if f"epoch={c['epoch']}-" in best.name), {})  # the selected checkpoint's epoch
        val = {"val_loss": at_best.get("val_loss", best_val_loss(best)), "val_bleu": at_best.get("val_bleu"), "val_curve": curve}
    return {"pair": pair, "model": model, "model_args": model_args(pair, model), "seed": seed, "epochs": epochs, "fit_s": fit_s, "decode_s": decode_s, "best": best.name,
            **environment(pair),
            **val,
            **metrics, "out_tokens": _out_tokens(_data_module(pair), str(out / "predictions.txt")), "predictions": str(out / "predictions.txt"), "trained_in": source.get("trained_in", str(Path(source["predictions"]).parent)) if source else str(out)}


def rescore(pair: str, model: str, seed: int, epochs: int | None, dm) -> dict:
    """Test metrics of a finished run from its ``predictions.txt`` (``predict`` decodes the test
    split exactly as ``test`` does), against the raw references as in ``test``. No timings."""
    from lightning_des.models.nmt.metrics import metrics_by_domain, translation_metrics

    out = run_dir(pair, model, seed, epochs)
    hyps = (out / "predictions.txt").read_text().splitlines()
    refs = [t for _, t in dm.test_pairs]
    if len(hyps) != len(refs):
        raise ValueError(f"{out / 'predictions.txt'}: {len(hyps)} lines for {len(refs)} test pairs")
    per = {f"{k}/{d}": v for d, m in metrics_by_domain(hyps, refs, dm.test_domains).items() for k, v in m.items()}
    return {"pair": pair, "model": model, "seed": seed, **translation_metrics(hyps, refs), **per, "predictions": str(out / "predictions.txt")}


@functools.cache
def _data_module(pair: str):
    from lightning_des.data.translation import TranslationDataModule

    return TranslationDataModule(**yaml.safe_load((ROOT / "recipes" / f"nmt_kvmem_{pair}.yaml").read_text())["data"]["init_args"])


@functools.cache
def environment(pair: str) -> dict:
    """What a run's figures also depend on beyond its settings: a digest of the prepared corpus
    (its train/valid/test files, so rows from machines that built the corpus differently are told
    apart) and the torch version."""
    import torch

    source = _data_module(pair).source
    h = hashlib.sha1()
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        h.update((source / name).read_bytes())
    return {"corpus_sha1": h.hexdigest()[:12], "torch": torch.__version__}


def _out_tokens(dm, predictions: str) -> int:
    return sum(len(dm.tgt_tok.encode(x)) + 1 for x in Path(predictions).read_text().splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="*", default=["de_en", "zh_en"], choices=["de_en", "zh_en"])
    ap.add_argument("--models", nargs="*", default=MODELS, choices=list(VARIANTS), help="models and ablations to run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first_seed .. first_seed + seeds - 1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipes' max_epochs")
    ap.add_argument("--rescore", action="store_true", help="no training: metrics of the finished runs from their predictions")
    ap.add_argument("--report-only", action="store_true",
                    help="no training: the table of every finished run with today's settings in the nmt_*.jsonl files beside --out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nmt.json"))
    args = ap.parse_args()
    todo = [(p, m, s, args.epochs) for p in args.pairs for s in range(args.first_seed, args.first_seed + args.seeds) for m in args.models]
    rows = []
    if args.rescore:
        dms = {p: _data_module(p) for p in args.pairs}
        rows = [rescore(p, m, s, e, dms[p]) for p, m, s, e in todo]
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "predictions"}))
        Path(args.out).write_text(json.dumps({"rows": rows}, ensure_ascii=False, indent=1))
        return
    cache = Path(args.out).with_suffix(".jsonl")
    if args.report_only:
        found = current_rows(sorted(cache.parent.glob("nmt_*.jsonl")))
        report([found[t] for t in todo if t in found], args)
        return
    # every finished run of this results folder, for trained_before (a checkpoint any benchmark output trained)
    files = sorted({*cache.parent.glob("nmt_*.jsonl"), *([cache] if cache.is_file() else [])})  # --out may have any name
    by_file = {f: [json.loads(line) for line in f.read_text().splitlines()] for f in files}
    cached = [r for rs in by_file.values() for r in rs]
    done = current_rows([cache]) if cache.is_file() else {}  # an outdated row is run again
    rows = [done[t] for t in todo if t in done]
    with cf.ThreadPoolExecutor(args.jobs) as pool, cache.open("a") as f:
        for r in pool.map(lambda t: run(*t, trained_before(*t, cached)), [t for t in todo if t not in done]):
            rows.append(r)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            print(f"{r['pair']} {r['model']} seed {r['seed']}: BLEU {r.get('bleu', float('nan')):.2f} ({r['fit_s']:.0f} s fit)", flush=True)

    report(rows, args)


def current_rows(files: list[Path]) -> dict[tuple, dict]:
    """Every finished run in ``files`` whose recorded settings are today's settings of a variant,
    by (pair, model, seed, epochs); a run found in several files is taken from the last one. A run
    counts for every variant whose settings it has, not only the one it was run as (after a recipe
    adopts an ablation, the ablation's runs are the recipe's): such a copy keeps its original
    name in ``run_as``."""
    rows = {}
    for f in files:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if "model_args" not in r:  # settings unknown
                continue
            settings = effective_args(r["model_args"])
            for name in VARIANTS:
                if settings == effective_args(model_args(r["pair"], name)):
                    rows[(r["pair"], name, r["seed"], r.get("epochs"))] = r if name == r["model"] else {**r, "model": name, "run_as": r["model"]}
    return rows


def _decode_tokens_per_s(dm, r: dict) -> float | None:
    """Output tokens per second of decoding the test split; rows from before ``out_tokens`` was
    recorded count them from their predictions (None when those are gone)."""
    n = r.get("out_tokens")
    if n is None and Path(r["predictions"]).is_file():
        n = _out_tokens(dm, r["predictions"])
    return None if n is None else n / r.get("decode_s", r.get("test_s"))


def report(rows: list[dict], args) -> None:
    """Mean ± sd over the seeds found, per pair and model (overall and per domain), side-by-side
    examples where the first seed's predictions are still there; writes ``--out`` .json and .md."""
    fmt = lambda xs: f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"  # noqa: E731
    med = lambda xs: f"{statistics.median(xs):.0f}" if xs else "-"  # noqa: E731
    examples, lines = {}, ["| pair | model | seeds | val loss / greedy val BLEU | BLEU | chrF | repetition (1-gram / 2-gram) | dropping | train tokens/s | decode tokens/s |",
                           "|---|---|---|---|---|---|---|---|---|---|"]
    for pair in args.pairs:
        dm = _data_module(pair)
        train_tokens = sum(len(x["tgt"]) - 1 for x in dm.encode(dm.train_pairs, drop_long=True))
        epochs = args.epochs or yaml.safe_load((ROOT / "recipes" / f"nmt_kvmem_{pair}.yaml").read_text())["trainer"]["max_epochs"]
        for m in args.models:
            rs = sorted((r for r in rows if r["pair"] == pair and r["model"] == m), key=lambda r: r["seed"])
            if not rs:
                lines.append(f"| {pair} | {m} | 0 | - | - | - | - | - | - | - |")
                continue
            dec = [x for x in (_decode_tokens_per_s(dm, r) for r in rs) if x is not None]
            vl = [r["val_loss"] for r in rs if r.get("val_loss") is not None]
            vb = [r["val_bleu"] for r in rs if r.get("val_bleu") is not None]
            val = " / ".join([f"{statistics.mean(vl):.3f}" if vl else "-", f"{statistics.mean(vb):.2f}" if vb else "-"])
            lines.append(f"| {pair} | {m} | {', '.join(str(r['seed']) for r in rs)} | {val} | {fmt([r['bleu'] for r in rs])} | {fmt([r['chrf'] for r in rs])} | "
                         f"{statistics.mean(r['repetition'] for r in rs):.4f} / {statistics.mean(r['repetition2'] for r in rs):.4f} | "
                         f"{statistics.mean(r['dropping'] for r in rs):.3f} | {med([train_tokens * epochs / r['fit_s'] for r in rs])} | {med(dec)} |")
        firsts = {m: next((r for r in rows if r["pair"] == pair and r["model"] == m and r["seed"] == args.first_seed), None) for m in args.models}
        if all(r is not None and Path(r["predictions"]).is_file() for r in firsts.values()):
            hyp = {m: Path(r["predictions"]).read_text().splitlines() for m, r in firsts.items()}
            examples[pair] = [{"source": s, "reference": t, **{m: hyp[m][i] for m in args.models}} for i, (s, t) in enumerate(dm.test_pairs[:8])]
    domains = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("bleu/")})
    if domains:
        lines += ["", "| pair | model | " + " | ".join(f"BLEU {d}" for d in domains) + " |", "|---|---|" + "---|" * len(domains)]
        for pair in args.pairs:
            for m in args.models:
                rs = [r for r in rows if r["pair"] == pair and r["model"] == m]
                cells = [f"{statistics.mean(r[f'bleu/{d}'] for r in rs):.2f}" if rs and all(f"bleu/{d}" in r for r in rs) else "-" for d in domains]
                lines.append(f"| {pair} | {m} | " + " | ".join(cells) + " |")
    Path(args.out).write_text(json.dumps({"rows": rows, "examples": examples}, ensure_ascii=False, indent=1))
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for pair, ex in examples.items():
        for e in ex[:4]:
            print(f"\n[{pair}] {e['source']}\n  ref: {e['reference']}" + "".join(f"\n  {m}: {e[m]}" for m in args.models))


if __name__ == "__main__":
    main()
