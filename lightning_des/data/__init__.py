"""CTR data: readers, vocabularies, TorchRec batches and LightningDataModules."""

from lightning_des.data.ctr import CRITEO_SPEC, ColumnSpec, CTRSchema, MalformedRowError, Vocabulary, read_table
from lightning_des.data.modules import AdultDataModule, CTRDataModule, MovieLens100KDataModule, SyntheticCTRDataModule
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic

__all__ = [
    "AdultDataModule",
    "CRITEO_SPEC",
    "CTRDataModule",
    "CTRSchema",
    "ColumnSpec",
    "MalformedRowError",
    "MovieLens100KDataModule",
    "SyntheticCTRDataModule",
    "SyntheticSpec",
    "Vocabulary",
    "make_synthetic",
    "read_table",
]
