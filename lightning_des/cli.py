"""``lightning-des`` command line.

* ``lightning-des fit|validate|test|predict --config recipes/<name>.yaml``: LightningCLI
  (jsonargparse) over the recommender models and CTR data modules; the data module's schema
  is linked into the model, so recipes never repeat field names or vocabulary sizes.
* ``lightning-des data prepare {movielens100k,adult,all}``: fetch real data once into the cache.
* ``lightning-des search --config recipes/adass_<model>_<data>.yaml``: AdaS&S embedding-size
  search (supernet, search under a memory budget, retraining); see :mod:`lightning_des.adass`.
* ``lightning-des tune --config recipes/tune_<model>_<data>.yaml``: FlexHB tuning of a recipe
  (:mod:`lightning_des.tuner.lightning`).
* ``lightning-des poem "<intent>" --generator G.ckpt [--keyword-lm K.ckpt]``: plan and write a
  quatrain (:class:`~lightning_des.models.poetry.PlanningPoetGenerator`).
* ``lightning-des checkpoint consolidate DIR OUT.ckpt``: a sharded DES checkpoint as one
  ordinary checkpoint, for single-process inference (``predict --ckpt_path OUT.ckpt``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import lightning_des  # noqa: F401  (registers the "des" strategy)
from lightning_des.recipes import DESLightningCLI, NMTLightningCLI, PoetryLightningCLI, cli_main, recipe_path

__all__ = ["DESLightningCLI", "NMTLightningCLI", "PoetryLightningCLI", "cli_main", "main", "recipe_path"]


def _spec_from_yaml(path: Path):
    """A :class:`ColumnSpec` from a YAML mapping of its fields (unknown keys are refused)."""
    import dataclasses

    import yaml

    from lightning_des.data.ctr import ColumnSpec

    raw = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(ColumnSpec)}
    unknown = sorted(set(raw) - known)
    if not isinstance(raw, dict) or unknown:
        raise ValueError(f"{path}: unknown ColumnSpec keys {unknown}; known: {sorted(known)}")
    return ColumnSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def data_main(argv: Sequence[str]) -> int:
    from lightning_des.data.prepare import DATASETS

    parser = argparse.ArgumentParser(prog="lightning-des data", description="Prepare datasets (once, cached).")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="fetch a registry dataset, or prepare your own table into shards")
    prep.add_argument("name", choices=[*sorted(DATASETS), "all", "criteo", "table"],
                      help="a registry dataset, 'criteo' (Criteo-format files) or 'table' (any table, with --spec)")
    prep.add_argument("--cache-dir", type=Path, default=None, help="default: $LIGHTNING_DES_DATA or ~/.cache/lightning_des")
    prep.add_argument("--force", action="store_true", help="start over even if (partly) prepared")
    own = prep.add_argument_group("criteo / table")
    own.add_argument("--input", nargs="+", type=Path, default=None, help="input files in order (.gz allowed)")
    own.add_argument("--out", type=Path, default=None, help="output directory (the data module's `path`)")
    own.add_argument("--spec", type=Path, default=None, help="YAML with the ColumnSpec fields (name 'table')")
    own.add_argument("--split-by", choices=["random", "time", "file"], default=None,
                     help="default: 'file' for criteo with several inputs (days 0..n-2 train, the last day val+test), else 'random'")
    own.add_argument("--fractions", nargs=3, type=float, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    own.add_argument("--seed", type=int, default=0, help="random-split seed")
    own.add_argument("--min-freq", type=int, default=1)
    own.add_argument("--num-embeddings", type=int, default=None, help="hash ids into this many buckets (no vocabulary)")
    own.add_argument("--bad-rows", choices=["raise", "skip"], default="raise")
    own.add_argument("--block-mb", type=int, default=64, help="MiB of text per shard")
    own.add_argument("--keep-raw", action="store_true", help="keep the parsed intermediate shards")
    args = parser.parse_args(argv)
    if args.name in ("criteo", "table"):
        return _prepare_own(parser, args)
    extra = [f"--{k.replace('_', '-')}" for k in ("input", "out", "spec") if getattr(args, k) is not None]
    if extra:
        parser.error(f"{' '.join(extra)} apply to 'criteo' and 'table' only, not to {args.name!r}")
    names = sorted(DATASETS) if args.name == "all" else [args.name]
    for name in names:
        try:
            path = DATASETS[name](cache_dir=args.cache_dir, force=args.force)
        except (RuntimeError, ValueError) as err:
            print(f"lightning-des data prepare {name}: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path}")
    return 0


def _prepare_own(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from lightning_des.data.ctr import CRITEO_SPEC, MalformedRowError
    from lightning_des.data.ingest import PrepareConfig, prepare_table

    if not args.input or args.out is None:
        parser.error(f"'{args.name}' needs --input FILE [FILE ...] and --out DIR")
    if args.name == "table" and args.spec is None:
        parser.error("'table' needs --spec SPEC.yaml (the ColumnSpec fields: label, dense, sparse, ...)")
    try:
        spec = CRITEO_SPEC if args.name == "criteo" else _spec_from_yaml(args.spec)
        split_by = args.split_by or ("file" if args.name == "criteo" and len(args.input) > 1 else "random")
        cfg = PrepareConfig(split_by=split_by, fractions=tuple(args.fractions), seed=args.seed, min_freq=args.min_freq,
                            num_embeddings=args.num_embeddings, bad_rows=args.bad_rows, block_bytes=args.block_mb << 20)
        out = prepare_table(args.input, spec, args.out, cfg, force=args.force, keep_raw=args.keep_raw)
    except (FileNotFoundError, ValueError, MalformedRowError) as err:
        print(f"lightning-des data prepare {args.name}: {err}", file=sys.stderr)
        return 1
    import json

    meta = json.loads((out / "meta.json").read_text())
    rows = ", ".join(f"{s} {meta['splits'][s]['rows']:,}" for s in ("train", "val", "test"))
    print(f"{out}: {rows} rows; {meta['skipped_rows']} skipped; {meta['prepare_seconds']:.1f} s")
    return 0


def checkpoint_main(argv: Sequence[str]) -> int:
    import torch

    from lightning_des.distributed.checkpoint import consolidate

    parser = argparse.ArgumentParser(prog="lightning-des checkpoint", description="Work with sharded DES checkpoints.")
    sub = parser.add_subparsers(dest="action", required=True)
    cons = sub.add_parser("consolidate", help="merge a DES checkpoint directory into one single-process .ckpt")
    cons.add_argument("src", type=Path, help="the DES checkpoint directory (torch.distributed.checkpoint files inside)")
    cons.add_argument("dst", type=Path, help="the .ckpt file to write")
    args = parser.parse_args(argv)
    try:
        ckpt = consolidate(args.src)
    except (FileNotFoundError, ValueError) as err:
        print(f"lightning-des checkpoint consolidate: {err}", file=sys.stderr)
        return 1
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.dst)
    print(f"{args.dst}: {len(ckpt['state_dict'])} tensors; load with Model.load_from_checkpoint or --ckpt_path")
    return 0


def poem_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightning-des poem", description="Plan and write a Chinese quatrain from an intent.")
    parser.add_argument("intent", help="a word, phrase or short text, e.g. 秋夜思乡")
    parser.add_argument("--generator", required=True, type=Path, help="LineGenerator checkpoint (recipes/poetry_planned.yaml)")
    parser.add_argument("--keyword-lm", type=Path, default=None, help="keyword LM checkpoint (recipes/poetry_keywords.yaml); "
                        "without it the plan is expanded from corpus co-occurrence")
    parser.add_argument("--chars", type=int, choices=[5, 7], default=7, help="characters per line")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--no-rhyme", action="store_true", help="do not force lines 2 and 4 to rhyme")
    parser.add_argument("--no-tone", action="store_true", help="do not force level tones at the rhyme positions")
    args = parser.parse_args(argv)
    from lightning_des.models.poetry import PlanningPoetGenerator

    try:
        poet = PlanningPoetGenerator.from_checkpoints(args.generator, args.keyword_lm)
    except (FileNotFoundError, ValueError) as err:
        print(f"lightning-des poem: {err}", file=sys.stderr)
        return 1
    poem = poet.generate(args.intent, chars=args.chars, rhyme=not args.no_rhyme, tone=not args.no_tone, beam=args.beam)
    print(poem)
    return 0


SUBCOMMANDS = {
    "fit": "train a recipe (LightningCLI; also --print_config)",
    "validate": "validate a recipe or checkpoint (LightningCLI)",
    "test": "test a recipe or checkpoint (LightningCLI)",
    "predict": "predict with a recipe or checkpoint (LightningCLI)",
    "data": "data prepare: fetch registry datasets, or stream your own tables into shards",
    "search": "AdaS&S embedding-size search (supernet, search under a memory budget, retraining)",
    "tune": "FlexHB multi-fidelity tuning of a recipe",
    "poem": "plan and write a Chinese quatrain from an intent",
    "checkpoint": "checkpoint consolidate: a sharded DES checkpoint as one single-process .ckpt",
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    return (f"usage: lightning-des <subcommand> [options]    (lightning-des <subcommand> --help for its options)\n\n"
            f"PyTorch Lightning plugins for large recommendation models (lightning-des {lightning_des.__version__}).\n\n"
            f"subcommands:\n{rows}\n")


def main(argv: Sequence[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"lightning-des {lightning_des.__version__}")
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(_usage(), end="", file=sys.stderr)
        print(f"lightning-des: unknown subcommand {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    if argv[0] not in ("fit", "validate", "test", "predict"):  # LightningCLI configures its own output
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[0] == "data":
        return data_main(argv[1:])
    if argv[0] == "checkpoint":
        return checkpoint_main(argv[1:])
    if argv[0] == "tune":
        from lightning_des.tuner.lightning import tune_main

        return tune_main(argv[1:])
    if argv[0] == "poem":
        return poem_main(argv[1:])
    if argv[0] == "search":
        from lightning_des.adass.pipeline import search_main

        return search_main(argv[1:])
    cli_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
