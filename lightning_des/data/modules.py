"""LightningDataModules over the CTR core in :mod:`lightning_des.data.ctr`.

Each module exposes ``schema`` (a :class:`CTRSchema`) as soon as it is constructed, so
LightningCLI can link it into the model (``data.schema -> model.init_args.schema``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Sequence

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lightning_des.data.ctr import (
    CRITEO_SPEC,
    BadRowPolicy,
    ColumnSpec,
    CTRDataset,
    CTRSchema,
    EncodedCTR,
    EncodedSplits,
    collate_batch,
    encode_splits,
    read_table,
    split_indices,
)
from lightning_des.data.prepare import ADULT_SPEC, MOVIELENS_SPEC, adult_path, movielens_path
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic

log = logging.getLogger(__name__)


class CTRDataModule(pl.LightningDataModule):
    """A delimited CTR table, split by seed into train/val/test, served as TorchRec batches.

    Args:
        path: the table (``.gz`` allowed).
        spec: a :class:`ColumnSpec`, or ``"criteo"`` for the Criteo display-advertising format.
        split: train/val/test fractions.
        seed: split seed; the same seed always gives the same split.
        min_freq: tokens seen fewer times in the training split map to the OOV id.
        batch_size: training batch size per process.
        eval_batch_size: validation/test/predict batch size (default: ``batch_size``).
        num_workers: ``DataLoader`` workers.
        pin_memory: pin host memory (useful with a GPU).
        bad_rows: ``"raise"`` (default) stops at the first malformed row, naming file and line;
            ``"skip"`` drops such rows and logs how many at the end of loading.
    """

    def __init__(
        self,
        path: str,
        spec: ColumnSpec | Literal["criteo"] = "criteo",
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        min_freq: int = 1,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        bad_rows: BadRowPolicy = "raise",
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bad_rows not in ("raise", "skip"):
            raise ValueError(f"bad_rows must be 'raise' or 'skip', got {bad_rows!r}")
        if isinstance(spec, str) and spec != "criteo":
            raise ValueError(f"spec must be a ColumnSpec or 'criteo', got {spec!r}")
        self.path = path
        self.spec = CRITEO_SPEC if spec == "criteo" else spec
        self.split, self.seed, self.min_freq = tuple(split), seed, min_freq
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.bad_rows = num_workers, pin_memory, bad_rows
        self._splits: EncodedSplits | None = None

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> EncodedSplits:
        table = read_table(self.path, self.spec, self.bad_rows)
        return encode_splits(table, self.spec, self.split, self.seed, self.min_freq)

    @property
    def splits(self) -> EncodedSplits:
        if self._splits is None:
            self._splits = self._load()
            if self._splits.skipped_rows:
                log.warning("%s: skipped %d malformed rows (bad_rows='skip')", self.path, self._splits.skipped_rows)
            s = self._splits
            log.info("%s: train %d, val %d, test %d rows", self.path, len(s.train), len(s.val), len(s.test))
        return self._splits

    @property
    def schema(self) -> CTRSchema:
        return self.splits.schema

    @property
    def skipped_rows(self) -> int:
        return self.splits.skipped_rows

    def setup(self, stage: str | None = None) -> None:
        self.splits  # noqa: B018  (load once, log counts)

    # -- loaders -------------------------------------------------------------------------
    def _loader(self, data: EncodedCTR, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            CTRDataset(data, self.schema.sparse_features),
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=collate_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_batch_size, shuffle=False)


class MovieLens100KDataModule(CTRDataModule):
    """MovieLens-100k as CTR (label = rating >= 4, 55.4% positive); 100,000 rows, 8 sparse
    fields (genres multi-hot) and 1 dense (age). Prepare it first with
    ``lightning-des data prepare movielens100k``. Split 80/10/10 at random by ``seed``.

    Args:
        cache_dir: where ``data prepare`` wrote it (default ``$LIGHTNING_DES_DATA`` or
            ``~/.cache/lightning_des``).
        **kwargs: the :class:`CTRDataModule` options except ``path`` and ``spec``.
    """

    def __init__(self, cache_dir: str | None = None, **kwargs) -> None:
        super().__init__(path=str(movielens_path(Path(cache_dir) if cache_dir else None)), spec=MOVIELENS_SPEC, **kwargs)


class AdultDataModule(CTRDataModule):
    """Adult census income (UCI, CC BY 4.0; committed): 48,842 rows, 8 sparse, 6 dense
    fields, label = income > 50K (23.9% positive). Split 80/10/10 at random by ``seed``.

    Args:
        **kwargs: the :class:`CTRDataModule` options except ``path`` and ``spec``.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(path=str(adult_path()), spec=ADULT_SPEC, **kwargs)


class SyntheticCTRDataModule(CTRDataModule):
    """Synthetic Criteo-like data (Zipf ids, planted signal) for scale tests and benchmarks.

    Args:
        num_rows: samples in total (split 80/10/10).
        num_dense: dense features.
        num_sparse: sparse fields.
        cardinality: ids per field.
        multi_hot: ids per sample per field.
        zipf: id skew (> 1).
        data_seed: generator seed (``seed`` still picks the split).
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
        **kwargs,
    ) -> None:
        super().__init__(path="<synthetic>", **kwargs)
        self.synthetic = SyntheticSpec(num_rows, num_dense, (cardinality,) * num_sparse, multi_hot, zipf, seed=data_seed)

    def _load(self) -> EncodedSplits:
        data = make_synthetic(self.synthetic)
        parts = [_take(data, i) for i in split_indices(len(data), self.split, self.seed)]
        return EncodedSplits(self.synthetic.schema(), *parts, vocabularies={})


def _take(data: EncodedCTR, idx: Sequence[int]) -> EncodedCTR:
    batch = data.batch(idx, list(data.values))
    kjt = batch.sparse_features
    values = {f: kjt[f].values().numpy() for f in data.values}
    offsets = {f: kjt[f].offsets().numpy().astype("int64") for f in data.values}
    return EncodedCTR(batch.labels.numpy(), batch.dense_features.numpy(), values, offsets)
