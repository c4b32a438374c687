"""Decoding settings of a trained translation checkpoint, chosen on the *validation* split.

    python benchmarks/nmt_decode.py --ckpt lightning_logs/nmt_bench/<run>/checkpoints/<best>.ckpt \
        [--pair de_en] [--length-penalty 0 0.5 1] [--length-norm power gnmt] [--max-len-ratio 2] [--coverage-penalty 0 0.2] [--beam 5] [--limit N] [--split val|test]

Loads the checkpoint (its hyperparameters), the pair's data module (``recipes/nmt_kvmem_{pair}.yaml``,
the same split and SentencePiece models as training), decodes the validation sentences with each
setting (length penalty alpha, its form ``power`` = ``len ** alpha`` or ``gnmt`` =
``((5 + len) / 6) ** alpha``, maximum length ratio, GNMT coverage penalty beta) and prints BLEU, chrF, repetition and dropping against the raw validation references
(the metrics of ``test``); writes ``--out`` (JSON). Test data is not touched, so a setting picked
here can then be reported on the test split without selecting on it: ``--split test`` decodes the
test sentences with the given setting(s) (metrics overall and per source domain, translations in
``predictions_<setting>.txt`` beside the output).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from nmt import _data_module  # the benchmark's data module of a pair (benchmarks/ is on sys.path)


def decode(model, dm, pairs: list, beam: int) -> list[str]:
    out: dict[int, str] = {}
    for batch in dm._loader(pairs, False):
        for i, hyp in zip(batch["idx"][:, 0].tolist(), model.translate(batch["src"], beam)):
            out[i] = dm.tgt_tok.decode(hyp)
    return [out[i] for i in range(len(pairs))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--pair", default="de_en", choices=["de_en", "zh_en"])
    ap.add_argument("--length-penalty", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--length-norm", nargs="+", default=["power"], choices=["power", "gnmt"])
    ap.add_argument("--max-len-ratio", type=float, nargs="+", default=[2.0])
    ap.add_argument("--coverage-penalty", type=float, nargs="+", default=[0.0], help="GNMT's coverage weight beta (0 = off)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="first N pairs only")
    ap.add_argument("--split", default="val", choices=["val", "test"], help="test: only to report a setting picked on val")
    ap.add_argument("--out", default=None, help="JSON with one row per setting (default: beside the checkpoint)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lightning_des.models.nmt import Seq2Seq
    from lightning_des.models.nmt.metrics import metrics_by_domain, translation_metrics

    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint at {ckpt}")
    dm = _data_module(args.pair)
    model = Seq2Seq.load_from_checkpoint(ckpt, map_location="cpu").eval()
    pairs = (dm.val_pairs if args.split == "val" else dm.test_pairs)[: args.limit]
    refs = [t for _, t in pairs]
    out = Path(args.out) if args.out else ckpt.parent.parent / f"decode_{args.split}.json"
    rows = []
    for norm, lp, ratio, cp in itertools.product(args.length_norm, args.length_penalty, args.max_len_ratio, args.coverage_penalty):
        model.hparams.length_norm, model.hparams.length_penalty, model.hparams.max_len_ratio, model.hparams.coverage_penalty = norm, lp, ratio, cp
        t0 = time.perf_counter()
        with torch.no_grad():
            hyps = decode(model, dm, pairs, args.beam)
        row = {"length_norm": norm, "length_penalty": lp, "max_len_ratio": ratio, "coverage_penalty": cp, "beam": args.beam, "pairs": len(pairs),
               "split": args.split, "seconds": time.perf_counter() - t0, **translation_metrics(hyps, refs)}
        if args.split == "test":
            doms = dm.test_domains[: len(pairs)]
            row.update({f"{k}/{d}": v for d, m in metrics_by_domain(hyps, refs, doms).items() for k, v in m.items()})
            (out.parent / f"predictions_{'' if norm == 'power' else norm + '_'}lp{lp:g}_r{ratio:g}{f'_cp{cp:g}' if cp else ''}.txt").write_text("\n".join(hyps) + "\n")
        rows.append(row)
        print(f"{norm} length_penalty {lp:g} max_len_ratio {ratio:g} coverage_penalty {cp:g}: BLEU {row['bleu']:.2f} chrF {row['chrf']:.2f} repetition "
              f"{row['repetition']:.3f}/{row['repetition2']:.3f} dropping {row['dropping']:.3f} length ratio {row['length_ratio']:.3f} ({row['seconds']:.0f} s)", flush=True)
    out.write_text(json.dumps({"ckpt": str(ckpt), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
