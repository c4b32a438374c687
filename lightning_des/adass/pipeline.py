"""The AdaS&S pipeline: supernet training, size search, retraining from scratch.

    lightning-des search --config recipes/adass_deepfm_movielens.yaml

Each step writes to ``output_dir``: ``supernet/`` (logs), ``adass_sizes.yaml`` (+ ``.json``:
the search), ``retrain/`` (checkpoints, logs) and ``result.json`` (sizes, parameters, test
AUC/logloss, timings).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger

from lightning_des.adass.callbacks import AdaSSearchCallback, AdaSSupernetCallback
from lightning_des.adass.options import SearchOptions, SupernetOptions

log = logging.getLogger(__name__)


def supernet_trainer(max_epochs: int, callbacks: list, logger: Any = False, progress_bar: bool = False) -> pl.Trainer:
    """The supernet's trainer: one CPU process, a fixed number of epochs, no checkpoints or
    early stopping (the recipe's trainer is for retraining)."""
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks, logger=logger,
                      enable_checkpointing=False, enable_progress_bar=progress_bar, enable_model_summary=False, num_sanity_val_steps=0)


def _fit_args(recipe: Path, seed: int, root: Path, extra: list[str]) -> list[str]:
    return ["--config", str(recipe), *extra, "--seed_everything", str(seed), "--trainer.default_root_dir", str(root)]


def run_adass(
    recipe: str,
    output_dir: str = "lightning_logs/adass",
    seed: int = 0,
    supernet: SupernetOptions | None = None,
    search: SearchOptions | None = None,
    retrain: bool = True,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Run AdaS&S on a model recipe (a ``lightning-des fit`` config of FM/DNN/W&D/DeepFM).

    Args:
        recipe: the model and data recipe; its model, data and optimizer settings train the
            supernet, and its trainer (early stopping, checkpointing) retrains the result.
        output_dir: where every artefact goes.
        seed: seed of the supernet, the sampler, the controller and the retraining.
        supernet: supernet options; its ``max_epochs`` replaces the recipe's for the supernet.
        search: search options (budget as a fraction of the uniform model at the recipe's
            ``embedding_dim`` unless ``reference_dim``/``budget_params`` say otherwise).
        retrain: train the searched model from scratch and test it.
        progress_bar: show Lightning's progress bars.

    Returns:
        the content of ``result.json``.
    """
    from lightning_des.recipes import cli_main

    supernet, search = supernet or SupernetOptions(), search or SearchOptions()
    path = Path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"AdaS&S recipe {recipe!r} not found")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    quiet = [] if progress_bar else ["--trainer.enable_progress_bar", "false"]

    # 1. supernet: the recipe's model and data, a fixed number of epochs, no early stopping
    cli = cli_main(_fit_args(path, seed, out / "supernet", quiet), run=False)
    sup_cb = AdaSSupernetCallback(supernet, seed=seed)
    search_cb = AdaSSearchCallback(search, seed=seed, output=str(out / "adass_sizes.yaml"))
    trainer = supernet_trainer(supernet.max_epochs, [sup_cb, search_cb], CSVLogger(out, name="supernet"), progress_bar)
    t0 = time.perf_counter()
    trainer.fit(cli.model, cli.datamodule)
    supernet_s = time.perf_counter() - t0 - search_cb.result.seconds
    r = search_cb.result
    space = cli.model.net.deep.space
    ref = search.reference_dim or cli.model.net.deep.dim
    result: dict[str, Any] = {
        "recipe": str(path), "seed": seed, "sizes": r.sizes, "params": r.params, "budget": r.budget,
        "uniform_params": space.uniform_params(ref), "reference_dim": ref, "supernet_val_auc": r.score,
        "supernet_s": supernet_s, "search_s": r.seconds, "evaluations": r.evaluations,
        "supernet": asdict(supernet), "search": asdict(search), "sizes_file": str(search_cb.path),
    }
    # 2. retrain from scratch with the searched sizes, through the recipe's own trainer
    if retrain:
        cli = cli_main(_fit_args(path, seed, out / "retrain", ["--config", str(search_cb.path), *quiet]), run=False)
        t0 = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        result["retrain_s"] = time.perf_counter() - t0
        ckpt = "best" if cli.trainer.checkpoint_callback is not None else None
        result.update(cli.trainer.validate(cli.model, cli.datamodule, ckpt_path=ckpt, verbose=False)[0])
        result.update(cli.trainer.test(cli.model, cli.datamodule, ckpt_path=ckpt, verbose=False)[0])
        result["model_embedding_params"] = sum(
            c.num_embeddings * c.embedding_dim for c in cli.model.net.deep.embedding_bag_configs()
        )
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log.info("AdaS&S result: %s", json.dumps({k: result[k] for k in ("sizes", "params", "budget") if k in result}))
    return result


def search_parser():
    """The jsonargparse parser of ``lightning-des search`` (``--config`` + :func:`run_adass`'s arguments)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="lightning-des search", description="AdaS&S: supernet, size search under a memory budget, retraining.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(run_adass, as_group=False)
    return parser


def search_main(argv: list[str]) -> int:
    """``lightning-des search --config <adass config>``: :func:`run_adass` from a YAML file
    (keys: ``recipe``, ``output_dir``, ``seed``, ``supernet``, ``search``, ``retrain``);
    unknown keys fail naming the key. ``recipe`` is looked up relative to the working
    directory, then to the config file."""
    parser = search_parser()
    cfg = parser.parse_args(argv)
    from lightning_des.recipes import recipe_path

    recipe = recipe_path(cfg)
    init = parser.instantiate_classes(cfg)
    kwargs = {k: init[k] for k in ("output_dir", "seed", "supernet", "search", "retrain", "progress_bar")}
    try:
        result = run_adass(recipe, **kwargs)
    except FileNotFoundError as err:
        print(f"lightning-des search: {err}", file=sys.stderr)
        return 1
    keys = ("sizes", "params", "budget", "uniform_params", "supernet_val_auc", "test_auc", "test_logloss")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=2))
    return 0
