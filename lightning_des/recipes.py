"""Building a LightningCLI from a recipe: the one place the CLI, AdaS&S and the tuner share.

``cli_main(args)`` picks the LightningCLI variant from the recipe's model class path
(recommenders: the CTR schema is linked from the data module into the model; poetry: the
character vocabulary size; translation: both subword vocabulary sizes). :func:`recipe_path`
resolves the ``recipe`` key of ``search``/``tune`` configs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import lightning_des  # noqa: F401  (registers the "des" strategy)


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


def cli_main(args: Sequence[str] | None = None, run: bool = True, parser_kwargs: dict[str, Any] | None = None) -> LightningCLI:
    """Build (and by default run) the LightningCLI; ``args`` as for ``LightningCLI(args=...)``,
    ``parser_kwargs`` as for ``LightningCLI(parser_kwargs=...)`` (e.g. ``exit_on_error=False``).
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
        from lightning_des.data.modules import CTRDataModule
        from lightning_des.models.recsys.module import CTRModule

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
        parser_kwargs=parser_kwargs,
    )
