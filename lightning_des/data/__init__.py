"""CTR data: streaming prepare into shards, per-rank shard readers, TorchRec batches, LightningDataModules."""

from lightning_des.data.ctr import CRITEO_SPEC, ColumnSpec, CTRSchema, MalformedRowError, Vocabulary, read_table
from lightning_des.data.ingest import PrepareConfig, prepare_table
from lightning_des.data.modules import (
    AdultDataModule,
    CTRDataModule,
    MovieLens1MDataModule,
    MovieLens100KDataModule,
    SyntheticCTRDataModule,
)
from lightning_des.data.shards import PreparedCTR, ShardedCTRDataset
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic

__all__ = [
    "AdultDataModule",
    "CRITEO_SPEC",
    "CTRDataModule",
    "CTRSchema",
    "ColumnSpec",
    "MalformedRowError",
    "MovieLens100KDataModule",
    "MovieLens1MDataModule",
    "PrepareConfig",
    "PreparedCTR",
    "ShardedCTRDataset",
    "SyntheticCTRDataModule",
    "SyntheticSpec",
    "Vocabulary",
    "make_synthetic",
    "prepare_table",
    "read_table",
]
