"""Recommender LightningModules on TorchRec embedding-bag collections."""

from lightning_des.models.recsys.module import (
    DLRM,
    DNN,
    CTRModule,
    DeepFM,
    FactorizationMachine,
    LogisticRegression,
    WideAndDeep,
)
from lightning_des.models.recsys.nets import DLRMHead, RecsysNet, SumOverFieldsHead

__all__ = [
    "CTRModule",
    "DLRM",
    "DLRMHead",
    "DNN",
    "DeepFM",
    "FactorizationMachine",
    "LogisticRegression",
    "RecsysNet",
    "SumOverFieldsHead",
    "WideAndDeep",
]
