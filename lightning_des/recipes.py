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


def _leaves(x: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _leaves(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: x}


class _LinkedCLI(LightningCLI):
    """LightningCLI with ``links`` (data module attribute, model argument) linked at
    instantiation. With ``--ckpt_path``, LightningCLI builds the model from the checkpoint's
    hyperparameters, which replace what ``--config`` and the command line say; each replaced
    model setting (linked ones aside) is named on stderr instead of being dropped silently (to
    decode with other settings, change the checkpoint's ``hyper_parameters`` or use
    ``benchmarks/nmt_decode.py``)."""

    links: tuple[tuple[str, str], ...] = ()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in self.links:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")

        def model_settings() -> dict[str, Any]:
            model = self.config[sub].get("model") if sub else None
            return _leaves(model.as_dict() if hasattr(model, "as_dict") else {})

        before = model_settings()
        super()._parse_ckpt_path()
        after = model_settings()
        linked = {f"init_args.{target}" for _, target in self.links}  # filled from the data module, not by the user
        replaced = {k: (before[k], after[k]) for k in (before.keys() & after.keys()) - linked if before[k] != after[k]}
        for k, (was, now) in sorted(replaced.items()):
            sys.stderr.write(f"--ckpt_path: the checkpoint's model.{k}={now!r} replaces {was!r} from the config/command line\n")


class DESLightningCLI(_LinkedCLI):
    """LightningCLI with the CTR schema linked from ``data`` into ``model``."""

    links = (("schema", "schema"),)


class PoetryLightningCLI(_LinkedCLI):
    """LightningCLI for the poetry models: the data module's character vocabulary size is
    linked into the model."""

    links = (("vocab_size", "vocab_size"),)


class NMTLightningCLI(_LinkedCLI):
    """LightningCLI for translation: both subword vocabulary sizes are linked into the model."""

    links = (("src_vocab_size", "src_vocab_size"), ("tgt_vocab_size", "tgt_vocab_size"))


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
