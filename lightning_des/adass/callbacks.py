"""AdaS&S as Lightning callbacks: supernet training and the size search after it.

    trainer = pl.Trainer(max_epochs=3, callbacks=[AdaSSupernetCallback(), AdaSSearchCallback(budget=0.5)])
    trainer.fit(DeepFM(schema, embedding_dim=16), datamodule)   # writes adass_sizes.yaml
    # retrain: lightning-des fit --config recipes/deepfm_movielens.yaml --config adass_sizes.yaml

Works with the sum-over-fields recommenders (FM, DNN, Wide&Deep, DeepFM); the supernet trains
in one process (the searched model then trains with any strategy, DES included).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
import torch
from typing_extensions import override

from lightning_des.models.recsys.module import CTRModule
from lightning_des.models.recsys.nets import SumOverFieldsHead
from lightning_des.adass.evaluate import SupernetEvaluator
from lightning_des.adass.options import SearchOptions, SupernetOptions
from lightning_des.adass.sampler import AdaptiveSampler, UniformSampler
from lightning_des.adass.search import SearchResult, search_sizes
from lightning_des.adass.space import SizeSpace
from lightning_des.adass.supernet import SupernetEmbedding

log = logging.getLogger(__name__)


def _supernet(pl_module: pl.LightningModule) -> SupernetEmbedding:
    deep = getattr(getattr(pl_module, "net", None), "deep", None)
    if not isinstance(deep, SupernetEmbedding):
        raise MisconfigurationException("the module has no AdaS&S supernet: train it with AdaSSupernetCallback first")
    return deep


class AdaSSupernetCallback(Callback):
    """Turn a recsys module's deep embeddings into the AdaS&S supernet for ``fit`` and draw a
    sub-network per sample at every step (:mod:`lightning_des.adass.sampler`).

    Args:
        options: candidates, sampler and its settings (:class:`SupernetOptions`; its
            ``max_epochs`` is for :func:`~lightning_des.adass.pipeline.run_adass`, the
            callback trains for as long as the trainer does).
        seed: sampler seed.

    The module must be a :class:`CTRModule` with a sum-over-fields head and one width for all
    fields (``embedding_dim``): that width is the common width candidates are projected to.
    Validation runs the largest sub-network. ``probs_history`` keeps the sampling
    probabilities at the end of each epoch.
    """

    def __init__(self, options: SupernetOptions | None = None, seed: int = 0) -> None:
        self.options = options or SupernetOptions()
        self.candidates = tuple(self.options.candidates)
        self.sampler_name = self.options.sampler
        self.sampler_kw = self.options.sampler_kwargs()
        self.seed = seed
        self.sampler: UniformSampler | None = None
        self.probs_history: list[list[list[float]]] = []
        self._pending_state: dict | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size > 1:
            raise MisconfigurationException(f"AdaS&S supernet training runs in one process, got world size {trainer.world_size}; train the searched model with DES afterwards")
        if not isinstance(pl_module, CTRModule) or not isinstance(pl_module.net.head, SumOverFieldsHead) or not pl_module.net.head.uses_deep_tables:
            raise MisconfigurationException(
                f"AdaS&S searches the embedding widths of FM, DNN, WideAndDeep or DeepFM; got {type(pl_module).__name__} "
                "(LR has no embeddings to size, DLRM's interaction needs one width)"
            )
        net, schema = pl_module.net, pl_module.schema
        if not isinstance(net.deep, SupernetEmbedding):
            if len(set(pl_module.field_dims)) != 1:
                raise MisconfigurationException(f"the supernet's module needs one embedding width for all fields, got {pl_module.field_dims}")
            space = SizeSpace(schema.sparse_features, schema.cardinalities, self.candidates)
            net.deep = SupernetEmbedding(space, pl_module.field_dims[0], schema.multi_hot).to(pl_module.device)
        space = net.deep.space
        gen = torch.Generator().manual_seed(self.seed)
        if self.sampler_name == "adaptive":
            self.sampler = AdaptiveSampler(space.num_fields, space.num_candidates, gen, has_drop=space.candidates[0] == 0, widths=space.candidates, **self.sampler_kw)
        else:
            self.sampler = UniformSampler(space.num_fields, space.num_candidates, gen)
        if self._pending_state is not None:
            self.sampler.load_state_dict(self._pending_state)
            self._pending_state = None

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        _supernet(pl_module).choice = self.sampler.sample(batch.labels.numel())

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "sample_losses" not in outputs:
            raise MisconfigurationException("AdaSSupernetCallback needs training_step to return {'loss', 'sample_losses'} (CTRModule does)")
        self.sampler.update(_supernet(pl_module).choice, outputs["sample_losses"].cpu())

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.probs_history.append(self.sampler.probs().tolist())

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict() if self.sampler else None, "probs_history": self.probs_history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probs_history = state_dict["probs_history"]
        if state_dict["sampler"] is not None:
            if self.sampler is None:
                self._pending_state = state_dict["sampler"]
            else:
                self.sampler.load_state_dict(state_dict["sampler"])


def search_with_supernet(pl_module: pl.LightningModule, dataloader: Any, options: SearchOptions | None = None, seed: int = 0,
                         evaluator: SupernetEvaluator | None = None) -> SearchResult:
    """Run the search on a module trained with :class:`AdaSSupernetCallback`, scoring choices
    by AUC on ``dataloader`` (the validation split). ``options.reference_dim`` defaults to the
    supernet's common width; ``options.eval_rows`` subsamples the rows scored on. Pass
    ``evaluator`` to reuse the cached embeddings (its rows are then the evaluator's)."""
    options = options or SearchOptions()
    sup = _supernet(pl_module)
    total = options.resolve_budget(sup.space, sup.dim)
    evaluator = evaluator or SupernetEvaluator(pl_module.net, dataloader, max_rows=options.eval_rows, seed=seed)
    return search_sizes(evaluator, sup.space, total, options, seed)


def write_sizes(result: SearchResult, path: str | Path, **extra: Any) -> Path:
    """Write the chosen sizes as a LightningCLI config fragment (``--config`` it after the
    model's recipe) and the full result as JSON next to it (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# AdaS&S ({result.method}): {result.params} embedding parameters, budget {result.budget}, "
              f"supernet val AUC {result.score:.4f}\n# retrain: lightning-des fit --config <model recipe> --config {path.name}\n")
    path.write_text(header + yaml.safe_dump({"model": {"init_args": {"embedding_dims": result.sizes}}}, sort_keys=False))
    path.with_suffix(".json").write_text(json.dumps({**result.to_dict(), **extra}, indent=2))
    return path


class AdaSSearchCallback(Callback):
    """After ``fit`` of the supernet, search the widths under a memory budget and write them.

    Args:
        options: budget, method and controller settings (:class:`SearchOptions`).
        seed: controller / random-search seed.
        output: the sizes YAML (default ``<trainer.log_dir or default_root_dir>/adass_sizes.yaml``);
            the full result goes to the same name with ``.json``.

    Attributes:
        result: the :class:`SearchResult` after fit.
    """

    def __init__(self, options: SearchOptions | None = None, seed: int = 0, output: str | None = None) -> None:
        self.options, self.seed = options or SearchOptions(), seed
        self.output = output
        self.result: SearchResult | None = None
        self.path: Path | None = None

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.datamodule is None:
            raise MisconfigurationException("AdaSSearchCallback scores on the datamodule's val_dataloader(); fit with a datamodule")
        self.result = search_with_supernet(pl_module, trainer.datamodule.val_dataloader(), self.options, self.seed)
        out = self.output or Path(trainer.log_dir or trainer.default_root_dir) / "adass_sizes.yaml"
        self.path = write_sizes(self.result, out)
        r = self.result
        log.info("AdaS&S sizes %s: %d params (budget %d), supernet val AUC %.4f -> %s", r.sizes, r.params, r.budget, r.score, self.path)
