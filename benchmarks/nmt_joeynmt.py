"""Peer check: JoeyNMT 2.3.0's GRU + Bahdanau attention on exactly our corpus split and subwords.

    scripts/install_joeynmt.sh                        # .venv-joey (JoeyNMT is never a runtime dependency)
    lightning-des data prepare de-en
    python benchmarks/nmt_joeynmt.py [--pair de-en] [--epochs 4] [--max-pairs N] [--seed 0]

Exports the split and the SentencePiece models of ``recipes/nmt_bahdanau_<pair>.yaml``'s data
module (plain text files ``train/dev/test.<lang>``; JoeyNMT's vocabulary files list our pieces,
so both systems see identical subwords), writes a JoeyNMT config with the recipe's sizes
(embedding, GRU width, bidirectional encoder, dropout, label smoothing, Adam learning rate,
gradient-norm clip, sentence batches, maximum length, epochs; beam 5 with length penalty alpha 1
at test, greedy BLEU on the dev set for checkpoint selection), trains and tests it with one CPU thread, and
scores its test output with sacrebleu against our **raw** reference sentences (overall and per
source domain), exactly as ``Seq2Seq``'s test does. Result (config, metrics, wall time) in
``benchmarks/results/nmt_joeynmt_<pair>[_<tag>].json``; a finished run is not repeated.
Differences JoeyNMT keeps by design: input feeding and its "bridge" initial state; they are
part of the peer, which is the point of the check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JOEY = ROOT / ".venv-joey" / "bin" / "python"
LANGS = {"de-en": ("de", "en"), "zh-en": ("zh", "en")}


def recipe(pair: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / f"nmt_bahdanau_{pair.replace('-', '_')}.yaml").read_text())


def export(pair: str, out: Path, max_pairs: int | None) -> tuple[object, dict]:
    """Our data module's split and subword models as JoeyNMT plain-text data."""
    from lightning_des.data.translation import TranslationDataModule

    args = {**recipe(pair)["data"]["init_args"], "max_pairs": max_pairs}
    dm = TranslationDataModule(**args)
    src, trg = LANGS[pair]
    out.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", dm.train_pairs), ("dev", dm.val_pairs), ("test", dm.test_pairs)):
        (out / f"{name}.{src}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (out / f"{name}.{trg}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    for side, tok in (("src", dm.src_tok), ("trg", dm.tgt_tok)):
        (out / f"{side}.model").write_bytes(tok.proto)
        pieces = [tok.sp.id_to_piece(i) for i in range(4, len(tok))]  # ids 0-3: our pad/unk/bos/eos
        (out / f"{side}.vocab").write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    return dm, args


def joey_config(pair: str, data: Path, model_dir: Path, epochs: int, seed: int, steps_per_epoch: int) -> dict:
    r = recipe(pair)
    m, d = r["model"]["init_args"], r["data"]["init_args"]
    src, trg = LANGS[pair]

    def side(lang: str, name: str) -> dict:
        return {"lang": lang, "max_length": d.get("max_tokens", 64), "min_length": 1, "lowercase": False, "normalize": False,
                "level": "bpe", "voc_file": str(data / f"{name}.vocab"), "tokenizer_type": "sentencepiece",
                "tokenizer_cfg": {"model_file": str(data / f"{name}.model"), "pretokenizer": "none"}}

    emb, hidden, drop = m["embedding_dim"], m["hidden"], m["dropout"]
    # JoeyNMT wants logging_freq < validation_freq and dividing it
    log_every = next((k for k in range(min(200, steps_per_epoch - 1), 0, -1) if steps_per_epoch % k == 0), 1)
    return {
        "name": f"joeynmt_{pair}", "joeynmt_version": "2.3.0", "model_dir": str(model_dir), "use_cuda": False,
        "data": {"train": str(data / "train"), "dev": str(data / "dev"), "test": str(data / "test"), "dataset_type": "plain",
                 "src": side(src, "src"), "trg": side(trg, "trg")},
        "testing": {"n_best": 1, "beam_size": m.get("beam", 5), "beam_alpha": 1.0, "batch_size": 32,  # alpha: GNMT's form
                    "batch_type": "sentence", "eval_metrics": ["bleu"], "sacrebleu_cfg": {"tokenize": "13a"}},
        "training": {"random_seed": seed, "optimizer": "adam", "learning_rate": m["lr"], "learning_rate_min": 1e-6,
                     "label_smoothing": m.get("label_smoothing", 0.0),  # the recipe's (JoeyNMT's default is 0)
                     "clip_grad_norm": r["trainer"].get("gradient_clip_val", 5.0), "batch_size": d.get("batch_size", 64),
                     "batch_type": "sentence", "normalization": "tokens",
                     "scheduling": "exponential", "decrease_factor": 1.0,  # constant, as ours (2.3.0 needs a scheduler)
                     "epochs": epochs, "validation_freq": steps_per_epoch, "logging_freq": log_every, "early_stopping_metric": "bleu",
                     "shuffle": True, "overwrite": True, "keep_best_ckpts": 1, "print_valid_sents": [0, 1]},
        "model": {"initializer": "xavier_uniform", "bias_initializer": "zeros", "embed_initializer": "normal", "embed_init_weight": 0.1,
                  "encoder": {"type": "recurrent", "rnn_type": "gru", "embeddings": {"embedding_dim": emb}, "hidden_size": hidden // 2,
                              "bidirectional": True, "dropout": drop, "num_layers": 1},
                  "decoder": {"type": "recurrent", "rnn_type": "gru", "embeddings": {"embedding_dim": emb}, "hidden_size": hidden,
                              "dropout": drop, "hidden_dropout": drop, "num_layers": 1, "input_feeding": True,
                              "init_hidden": "bridge", "attention": "bahdanau"}},
    }


def score(hyps: list[str], dm) -> dict:
    from lightning_des.models.nmt.metrics import metrics_by_domain, translation_metrics

    refs = [t for _, t in dm.test_pairs]
    if len(hyps) != len(refs):
        raise RuntimeError(f"JoeyNMT wrote {len(hyps)} test hypotheses for {len(refs)} references")
    n = Counter(dm.test_domains)
    return {"overall": translation_metrics(hyps, refs),
            **{d: {**m, "n": n[d]} for d, m in metrics_by_domain(hyps, refs, dm.test_domains).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="de-en", choices=list(LANGS))
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's max_epochs")
    ap.add_argument("--max-pairs", type=int, default=None, help="first N training pairs (quick checks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the result file")
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="seconds for training")
    args = ap.parse_args()
    if not JOEY.is_file():
        raise SystemExit(f"{JOEY} not found: run scripts/install_joeynmt.sh first")
    result = ROOT / "benchmarks" / "results" / f"nmt_joeynmt_{args.pair.replace('-', '_')}{'_' + args.tag if args.tag else ''}.json"
    if result.is_file():
        print(json.dumps(json.loads(result.read_text())["test"]["overall"], indent=1))
        return
    epochs = args.epochs or recipe(args.pair)["trainer"]["max_epochs"]
    work = ROOT / "lightning_logs" / "nmt_joeynmt" / f"{args.pair}{'_' + args.tag if args.tag else ''}_s{args.seed}"
    dm, data_args = export(args.pair, work / "data", args.max_pairs)
    # validate about once per epoch, as Lightning does (JoeyNMT counts steps after its length filter)
    steps = max(len(dm.encode(dm.train_pairs, drop_long=True)) // data_args.get("batch_size", 64), 2)
    cfg = joey_config(args.pair, work / "data", work / "model", epochs, args.seed, steps)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(work / "train.log", "w") as log:
        subprocess.run([str(JOEY), "-m", "joeynmt", "train", str(work / "config.yaml"), "--skip-test"], env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True, timeout=args.timeout)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(work / "test.log", "w") as log:
        subprocess.run([str(JOEY), "-m", "joeynmt", "test", str(work / "config.yaml"), "--output-path", str(work / "hyp")], env=env,
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    test_s = time.perf_counter() - t0
    hyps = (work / "hyp.test").read_text(encoding="utf-8").split("\n")[: len(dm.test_pairs)]
    out = {"pair": args.pair, "seed": args.seed, "epochs": epochs, "max_pairs": args.max_pairs, "data": data_args,
           "train_pairs": len(dm.train_pairs), "train_s": train_s, "test_s": test_s, "joeynmt_config": cfg,
           "test": score(hyps, dm), "examples": [{"source": s, "reference": t, "joeynmt": h}
                                                 for (s, t), h in list(zip(dm.test_pairs, hyps))[:: max(len(hyps) // 8, 1)][:8]]}
    result.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(json.dumps(out["test"], indent=1))


if __name__ == "__main__":
    main()
