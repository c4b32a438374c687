"""LightningDataModules over prepared CTR shards (:mod:`lightning_des.data.shards`).

Each module exposes ``schema`` (a :class:`CTRSchema`) as soon as it is constructed, read from
the prepared directory's ``meta.json``, so LightningCLI can link it into the model
(``data.schema -> model.init_args.schema``) without touching the data. A raw table given as
``path`` is prepared once into the cache (under a lock, so concurrent ranks wait for the first);
later runs only read its metadata.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lightning_des.data.ctr import CRITEO_SPEC, BadRowPolicy, ColumnSpec, CTRSchema, split_indices
from lightning_des.data.ingest import PrepareConfig, SplitBy
from lightning_des.data.prepare import (
    ADULT_SPEC,
    MOVIELENS1M_SPEC,
    MOVIELENS_SPEC,
    adult_path,
    movielens1m_path,
    movielens_path,
    prepare_cached,
)
from lightning_des.data.shards import PreparedCTR, ResumableLoader, ShardBatchSampler, ShardedCTRDataset
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic

log = logging.getLogger(__name__)


def _whole(batch):
    """``collate_fn`` for loaders over :class:`ShardedCTRDataset`: items already are batches."""
    return batch


class CTRDataModule(pl.LightningDataModule):
    """A CTR dataset served as TorchRec batches: a prepared directory, or a raw table prepared
    on first use.

    Args:
        path: a directory written by ``lightning-des data prepare`` (holds ``meta.json``), or a
            delimited table (``.gz`` allowed), prepared into ``cache_dir`` on first use.
        spec: the table's :class:`ColumnSpec`, or ``"criteo"`` (raw tables only).
        split: train/val/test fractions (raw tables; default 0.8/0.1/0.1).
        seed: split seed (raw tables, random split).
        min_freq: tokens seen fewer times in the training split map to the OOV id (raw tables).
        batch_size: training batch size per process.
        eval_batch_size: validation/test/predict batch size (default: ``batch_size``).
        num_workers: ``DataLoader`` workers.
        pin_memory: pin host memory (useful with a GPU).
        bad_rows: ``"raise"`` (default) stops at the first malformed row, naming file and line;
            ``"skip"`` drops such rows, counts them and logs the count (raw tables).
        split_by: ``"random"`` (default), ``"time"`` (needs ``spec.timestamp``) or ``"file"``.
        num_embeddings: hash tokens into this many ids instead of building vocabularies.
        shuffle_seed: training-order seed (default: Lightning's global seed, ``PL_GLOBAL_SEED``).
        shuffle_window: shards whose rows are shuffled together.
        cache_dir: where raw tables are prepared (default ``$LIGHTNING_DES_DATA`` or
            ``~/.cache/lightning_des``).

    The split options (``split``, ``seed``, ``min_freq``, ``bad_rows``, ``split_by``,
    ``num_embeddings``) are fixed when a table is prepared: with a prepared directory leave them
    unset or equal to what ``meta.json`` records (a different value is an error).
    """

    def __init__(
        self,
        path: str,
        spec: ColumnSpec | Literal["criteo"] = "criteo",
        split: tuple[float, float, float] | None = None,
        seed: int | None = None,
        min_freq: int | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        bad_rows: BadRowPolicy | None = None,
        split_by: SplitBy | None = None,
        num_embeddings: int | None = None,
        shuffle_seed: int | None = None,
        shuffle_window: int = 8,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if isinstance(spec, str) and spec != "criteo":
            raise ValueError(f"spec must be a ColumnSpec or 'criteo', got {spec!r}")
        self.path = path
        self.spec = CRITEO_SPEC if spec == "criteo" else spec
        options = {"fractions": split, "seed": seed, "min_freq": min_freq, "bad_rows": bad_rows, "split_by": split_by,
                   "num_embeddings": num_embeddings}
        self.config = PrepareConfig(**{k: tuple(v) if k == "fractions" else v for k, v in options.items() if v is not None})
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.shuffle_seed, self.shuffle_window = shuffle_seed, shuffle_window
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._given = sorted(k for k, v in options.items() if v is not None)
        self._data: PreparedCTR | None = None

    # -- data ----------------------------------------------------------------------------
    def _open(self) -> PreparedCTR:
        p = Path(self.path)
        if p.is_dir() and (p / "meta.json").is_file():
            data = PreparedCTR(p)
            prepared = data.meta.get("config", {})
            mine = {"fractions": list(self.config.fractions), **{k: getattr(self.config, k) for k in self._given if k != "fractions"}}
            differ = sorted(k for k in self._given if prepared.get(k) != mine[k])
            if differ:
                names = {"fractions": "split"}
                raise ValueError(f"{p} is already prepared with other split options (see its meta.json): "
                                 + ", ".join(f"{names.get(k, k)}={mine[k]!r} but prepared with {prepared.get(k)!r}" for k in differ)
                                 + "; remove them or prepare another directory")
            return data
        if p.is_dir():
            raise FileNotFoundError(f"{p} is a directory without meta.json: not prepared, or its prepare did not finish "
                                    "(run `lightning-des data prepare` again: it resumes)")
        if not p.is_file():
            raise FileNotFoundError(f"CTR table not found: {p}")
        return PreparedCTR(prepare_cached(p, self.spec, self.config, self.cache_dir, progress=False))

    @property
    def data(self) -> PreparedCTR:
        if self._data is None:
            self._data = self._open()
            if self._data.meta.get("skipped_rows"):
                log.warning("%s: %d malformed rows were skipped when it was prepared (bad_rows='skip')",
                            self.path, self._data.meta["skipped_rows"])
        return self._data

    @property
    def schema(self) -> CTRSchema:
        return self.data.schema

    @property
    def skipped_rows(self) -> int:
        return int(self.data.meta.get("skipped_rows", 0))

    def num_rows(self, split: str) -> int:
        """Rows of ``split`` (``"train"``, ``"val"``, ``"test"``)."""
        return self.data.num_rows(split)

    def setup(self, stage: str | None = None) -> None:
        d = self.data
        log.info("%s: train %d, val %d, test %d rows", self.path, *(d.num_rows(s) for s in ("train", "val", "test")))

    # -- loaders -------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _fit_epoch(self) -> int | None:
        """The epoch Lightning's fit loop is in (what it passes to ``set_epoch``), if fitting."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_progress.current.processed if trainer is not None else None

    def _fit_position(self) -> tuple[int, int]:
        """(epoch, training batches processed in it) of the fit loop, for a mid-epoch resume."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return trainer.fit_loop.epoch_progress.current.processed, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def dataset(self, split: str, batch_size: int, shuffle: bool) -> ShardedCTRDataset:
        """This rank's batches of ``split``."""
        rank, world = self._rank_world()
        seed = self.shuffle_seed if self.shuffle_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        return ShardedCTRDataset(self.data, split, batch_size, rank, world, shuffle, seed, self.shuffle_window)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.dataset(split, batch_size, shuffle)
        opts = dict(batch_size=None, collate_fn=_whole, num_workers=self.num_workers, pin_memory=self.pin_memory,
                    persistent_workers=self.num_workers > 0)
        if split == "train":  # resumable mid-epoch (Lightning saves its state_dict in checkpoints)
            return ResumableLoader(ds, ShardBatchSampler(ds, self._fit_epoch if shuffle else None), self._fit_position, **opts)
        return DataLoader(ds, sampler=ShardBatchSampler(ds, self._fit_epoch if shuffle else None), **opts)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)


class MovieLens100KDataModule(CTRDataModule):
    """MovieLens-100k as CTR (label = rating >= 4, 55.4% positive); 100,000 rows, 8 sparse
    fields (genres multi-hot) and 1 dense (age). Prepare it first with
    ``lightning-des data prepare movielens100k``. Split 80/10/10 at random by ``seed``
    (``split_by="time"``: by rating time).

    Args:
        cache_dir: where ``data prepare`` wrote it (default ``$LIGHTNING_DES_DATA`` or
            ``~/.cache/lightning_des``).
        **kwargs: the :class:`CTRDataModule` options except ``path`` and ``spec``.
    """

    def __init__(self, cache_dir: str | None = None, **kwargs: Any) -> None:
        root = Path(cache_dir) if cache_dir else None
        super().__init__(path=str(movielens_path(root)), spec=MOVIELENS_SPEC, cache_dir=cache_dir, **kwargs)


class MovieLens1MDataModule(CTRDataModule):
    """MovieLens-1M as CTR (label = rating >= 4, 57.5% positive); 1,000,209 rows, 8 sparse
    fields (genres multi-hot) and 1 dense (age code). Prepare it first with
    ``lightning-des data prepare movielens1m``. Temporal split by default: the earliest 80% of
    ratings train, the next 10% validate, the latest 10% test.

    Args:
        cache_dir: where ``data prepare`` wrote it.
        split_by: ``"time"`` (default) or ``"random"``.
        **kwargs: the :class:`CTRDataModule` options except ``path`` and ``spec``.
    """

    def __init__(self, cache_dir: str | None = None, split_by: SplitBy = "time", **kwargs: Any) -> None:
        root = Path(cache_dir) if cache_dir else None
        super().__init__(path=str(movielens1m_path(root)), spec=MOVIELENS1M_SPEC, cache_dir=cache_dir,
                         split_by=split_by, **kwargs)


class AdultDataModule(CTRDataModule):
    """Adult census income (UCI, CC BY 4.0; committed): 48,842 rows, 8 sparse, 6 dense
    fields, label = income > 50K (23.9% positive). Split 80/10/10 at random by ``seed``.

    Args:
        **kwargs: the :class:`CTRDataModule` options except ``path`` and ``spec``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path=str(adult_path()), spec=ADULT_SPEC, **kwargs)


class SyntheticCTRDataModule(CTRDataModule):
    """Synthetic Criteo-like data (Zipf ids, planted signal) for scale tests and benchmarks,
    generated in memory and split 80/10/10 at random by ``seed``.

    Args:
        num_rows: samples in total.
        num_dense: dense features.
        num_sparse: sparse fields.
        cardinality: ids per field.
        multi_hot: ids per sample per field.
        zipf: id skew (> 1).
        data_seed: generator seed (``seed`` still picks the split).
        split: train/val/test fractions.
        seed: split seed.
        intrinsic_dims: the planted-truth testbed (one ``r_f`` per field, see
            :class:`~lightning_des.data.synthetic.SyntheticSpec`); None: the additive model.
        **kwargs: the :class:`CTRDataModule` loader options.
    """

    def __init__(
        self,
        num_rows: int = 10_000,
        num_dense: int = 13,
        num_sparse: int = 26,
        cardinality: int = 1000,
        multi_hot: int = 1,
        zipf: float = 1.2,
        data_seed: int = 0,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        intrinsic_dims: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path="<synthetic>", **kwargs)
        self.synthetic = SyntheticSpec(num_rows, num_dense, (cardinality,) * num_sparse, multi_hot, zipf, seed=data_seed,
                                       intrinsic_dims=intrinsic_dims)
        self.split, self.seed = tuple(split), seed

    def _open(self) -> PreparedCTR:
        data = make_synthetic(self.synthetic)
        parts = dict(zip(("train", "val", "test"), (data.take(i) for i in split_indices(len(data), self.split, self.seed))))
        return PreparedCTR.from_encoded(self.synthetic.schema(), parts)
