"""Data: streaming CTR prepare into shards, per-rank shard readers (TorchRec batches) and the
LightningDataModules; text corpora for translation and poetry live in their own modules.

Names load lazily, so ``lightning_des.data.translation`` or ``.poems`` never import TorchRec.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "CRITEO_SPEC": "ctr", "ColumnSpec": "ctr", "CTRSchema": "ctr", "MalformedRowError": "ctr", "Vocabulary": "ctr",
    "read_table": "ctr",
    "PrepareConfig": "ingest", "prepare_table": "ingest",
    "AdultDataModule": "modules", "CTRDataModule": "modules", "MovieLens1MDataModule": "modules",
    "MovieLens100KDataModule": "modules", "SyntheticCTRDataModule": "modules",
    "PreparedCTR": "shards", "ShardedCTRDataset": "shards",
    "SyntheticSpec": "synthetic", "make_synthetic": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"lightning_des.data.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'lightning_des.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(_NAMES)


__all__ = sorted(_NAMES)
