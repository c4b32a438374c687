"""Recommender LightningModules: LR, FM, DNN, Wide&Deep, DeepFM and DLRM.

They share :class:`CTRModule` (BCE-with-logits loss, AUROC and logloss from torchmetrics, a
sparse optimizer for the tables and Adam for the dense part); each subclass only builds its
:class:`~lightning_des.models.recsys.nets.RecsysNet`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import asdict
from typing import Any, Literal, Sequence

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC
from torchrec.datasets.utils import Batch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from lightning_des.data.ctr import CTRSchema
from lightning_des.models.recsys.nets import DLRMHead, RecsysNet, SumOverFieldsHead, make_tables

SparseOptimizer = Literal["adagrad", "rowwise_adagrad", "sgd"]
_SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
    "sgd": torch.optim.SGD,
}


class SparseDenseOptimizer(CombinedOptimizer):
    """TorchRec's ``CombinedOptimizer`` that evaluates Lightning's closure once per step
    (the parent would run forward/backward once per sub-optimizer)."""

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for _, opt in self.optimizers:
            opt.step()
        return loss

    def load_state_dict(self, state_dict: Any) -> None:
        """TorchRec's strict load needs every sub-optimizer's state to exist (a resumed run
        has not stepped yet): create it with one zero-gradient step at learning rate 0, which
        leaves the (already restored) weights untouched, then load."""
        for _, opt in self.optimizers:
            params = [p for p in opt.params.values() if p.requires_grad]
            if len(opt.state) < len(params):
                lrs = [g["lr"] for g in opt.param_groups]
                for g in opt.param_groups:
                    g["lr"] = 0.0
                opt.init_state()
                for g, lr in zip(opt.param_groups, lrs):
                    g["lr"] = lr
                for p in params:
                    p.grad = None
        super().load_state_dict(state_dict)


def _as_schema(schema: CTRSchema | dict) -> CTRSchema:
    if isinstance(schema, CTRSchema):
        return schema
    return CTRSchema(**{k: tuple(v) if isinstance(v, list) else v for k, v in schema.items()})


class CTRModule(pl.LightningModule):
    """Base for the CTR models.

    Args:
        schema: the data's :class:`CTRSchema` (LightningCLI links it from ``data.schema``).
        embedding_dim: default width of each field's deep table.
        embedding_dims: per-field widths overriding ``embedding_dim`` (``{field: dim}``); 0 drops
            the field's embedding (as an embedding-size search may choose; its 1-dim wide
            weight, where the model has one, stays).
        sparse_optimizer: optimizer of the embedding tables: ``adagrad``, ``rowwise_adagrad``
            or ``sgd``.
        sparse_lr: its learning rate.
        dense_lr: Adam learning rate of the dense parameters.
        dense_weight_decay: Adam weight decay.

    Batches are TorchRec ``Batch(dense_features (B, D), sparse_features KJT, labels (B,))``.
    """

    def __init__(
        self,
        schema: CTRSchema | dict,
        embedding_dim: int = 16,
        embedding_dims: dict[str, int] | None = None,
        sparse_optimizer: SparseOptimizer = "adagrad",
        sparse_lr: float = 0.05,
        dense_lr: float = 1e-3,
        dense_weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.schema = _as_schema(schema)
        if sparse_optimizer not in _SPARSE_OPTIMIZERS:
            raise ValueError(f"sparse_optimizer must be one of {sorted(_SPARSE_OPTIMIZERS)}, got {sparse_optimizer!r}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        unknown = sorted(set(embedding_dims or {}) - set(self.schema.sparse_features))
        if unknown:
            raise ValueError(f"embedding_dims names unknown fields {unknown}; fields are {list(self.schema.sparse_features)}")
        bad = {f: d for f, d in (embedding_dims or {}).items() if d < 0}
        if bad:
            raise ValueError(f"embedding_dims must be >= 0 (0 drops the field), got {bad}")
        self.save_hyperparameters(ignore=["schema"])
        self.hparams["schema"] = asdict(self.schema)
        self.field_dims = [(embedding_dims or {}).get(f, embedding_dim) for f in self.schema.sparse_features]
        if not any(self.field_dims):
            raise ValueError("embedding_dims drops every field (all widths 0); keep at least one")
        self.net = self.build_net()
        self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC()
        self.val_logloss, self.test_logloss = MeanMetric(), MeanMetric()

    # -- model ---------------------------------------------------------------------------
    @abstractmethod
    def build_net(self) -> RecsysNet:
        """Build the network from ``self.schema`` and ``self.field_dims``."""

    def _tables(self, wide: bool, deep: bool, dims: Sequence[int] | None = None):
        s = self.schema
        w = make_tables("wide", s.sparse_features, s.cardinalities, [1] * len(s.sparse_features), s.multi_hot, 0.01) if wide else None
        kept = [(f, n, d) for f, n, d in zip(s.sparse_features, s.cardinalities, dims or self.field_dims) if d > 0]
        d = make_tables("emb", *zip(*kept), multi_hot=s.multi_hot) if deep else None  # width 0: no table
        return w, d

    def _sum_over_fields(self, wide: bool, fm: bool, deep: Sequence[int] | None, dropout: float = 0.0) -> RecsysNet:
        s = self.schema
        fm_dim = self.hparams.embedding_dim if fm else None
        head = SumOverFieldsHead(s.sparse_features, self.field_dims, s.num_dense, wide, fm_dim, deep, dropout)
        return RecsysNet(head, *self._tables(head.uses_wide_tables, head.uses_deep_tables))

    def forward(self, dense: Tensor, kjt) -> Tensor:
        return self.net(dense, kjt)

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Mean BCE as ``loss``; the detached per-sample losses ride along as
        ``sample_losses`` for callbacks (AdaS&S's adaptive sampler reads them)."""
        logits = self(batch.dense_features, batch.sparse_features)
        per_sample = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
        loss = per_sample.mean()
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.labels.numel())
        return {"loss": loss, "sample_losses": per_sample.detach()}

    def _eval_step(self, batch: Batch, auc: BinaryAUROC, logloss: MeanMetric, prefix: str) -> None:
        logits = self(batch.dense_features, batch.sparse_features)
        per_sample = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
        auc.update(torch.sigmoid(logits), batch.labels.long())
        logloss.update(per_sample)
        n = batch.labels.numel()
        self.log(f"{prefix}_auc", auc, on_epoch=True, prog_bar=True, batch_size=n)
        self.log(f"{prefix}_logloss", logloss, on_epoch=True, prog_bar=True, batch_size=n)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_auc, self.val_logloss, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_auc, self.test_logloss, "test")

    def on_fit_end(self) -> None:
        m = self.trainer.callback_metrics
        if "val_auc" in m and "val_logloss" in m:
            rank_zero_info(f"validation AUC {m['val_auc'].item():.4f}, logloss {m['val_logloss'].item():.4f} (last epoch)")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch.dense_features, batch.sparse_features))

    # -- optimizers ----------------------------------------------------------------------
    def sparse_optimizer_spec(self) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
        """Optimizer class and kwargs for the embedding tables (DES fuses it into backward)."""
        kw: dict[str, Any] = {"lr": self.hparams.sparse_lr}
        if self.hparams.sparse_optimizer != "sgd":
            kw["eps"] = 1e-10  # torch's Adagrad default, passed explicitly so fused kernels match
        return _SPARSE_OPTIMIZERS[self.hparams.sparse_optimizer], kw

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip every gradient except the embedding tables' (TorchRec's fused tables update
        inside backward, so the single-process model follows the same rule). ``"norm"`` uses
        the global norm over ranks under DES (:mod:`lightning_des.distributed.clipping`)."""
        if gradient_clip_val is None or gradient_clip_val <= 0:
            return
        from lightning_des.distributed.clipping import clip_module_grad_norm_, clippable

        if (gradient_clip_algorithm or "norm") == "value":
            torch.nn.utils.clip_grad_value_([p for _, p in clippable(self.net)], gradient_clip_val)
        else:
            clip_module_grad_norm_(self.net, float(gradient_clip_val))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Sparse optimizer on the tables, Adam on the rest. Parameters that already carry an
        in-backward (fused) optimizer, as sharded tables do, are left out."""
        # tables of other ranks show up as empty placeholders in a sharded model
        named = [(n, p) for n, p in in_backward_optimizer_filter(self.named_parameters()) if p.numel()]
        sparse = {n: p for n, p in named if ".embedding_bags." in n}  # EBC and sharded EBC alike
        dense = {n: p for n, p in named if n not in sparse}
        cls, kw = self.sparse_optimizer_spec()
        opts = []
        if sparse:
            opts.append(("sparse", KeyedOptimizerWrapper(sparse, lambda ps: cls(ps, **kw))))
        lr, wd = self.hparams.dense_lr, self.hparams.dense_weight_decay
        opts.append(("dense", KeyedOptimizerWrapper(dense, lambda ps: torch.optim.Adam(ps, lr=lr, weight_decay=wd))))
        return SparseDenseOptimizer(opts)


class LogisticRegression(CTRModule):
    """LR: ``logit = sum_f w_f[id] + beta . dense + b`` (1-dim tables only)."""

    def build_net(self) -> RecsysNet:
        return self._sum_over_fields(wide=True, fm=False, deep=None)


class FactorizationMachine(CTRModule):
    """FM (Rendle 2010): linear terms plus pairwise ``<v_f, v_g>`` of the field embeddings
    (width ``embedding_dim``; fields of another width are projected to it)."""

    def build_net(self) -> RecsysNet:
        return self._sum_over_fields(wide=True, fm=True, deep=None)


class DNN(CTRModule):
    """MLP over the concatenated field embeddings and dense features.

    Args:
        hidden: hidden sizes; ``hidden[0]`` is the substituted first layer's width H.
        dropout: dropout after hidden layers.
    """

    def __init__(self, schema: CTRSchema | dict, hidden: Sequence[int] = (256, 128), dropout: float = 0.0, **kwargs: Any) -> None:
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be non-empty positive sizes, got {hidden}")
        self._hidden, self._dropout = list(hidden), dropout
        super().__init__(schema, **kwargs)

    def build_net(self) -> RecsysNet:
        return self._sum_over_fields(wide=False, fm=False, deep=self._hidden, dropout=self._dropout)


class WideAndDeep(DNN):
    """Wide&Deep (Cheng et al. 2016): LR part (1-dim tables + dense) plus the DNN."""

    def build_net(self) -> RecsysNet:
        return self._sum_over_fields(wide=True, fm=False, deep=self._hidden, dropout=self._dropout)


class DeepFM(DNN):
    """DeepFM (Guo et al. 2017): linear + FM + DNN over shared field embeddings."""

    def build_net(self) -> RecsysNet:
        return self._sum_over_fields(wide=True, fm=True, deep=self._hidden, dropout=self._dropout)


class DLRM(CTRModule):
    """DLRM (Naumov et al. 2019): bottom MLP, pairwise dot interaction, top MLP. All fields
    share ``embedding_dim`` (the interaction needs equal widths).

    Args:
        bottom: hidden sizes of the bottom (dense) MLP; its output width is ``embedding_dim``.
        top: hidden sizes of the top MLP.
    """

    def __init__(self, schema: CTRSchema | dict, bottom: Sequence[int] = (64,), top: Sequence[int] = (128, 64), dropout: float = 0.0, **kwargs: Any) -> None:
        self._bottom, self._top, self._dropout = list(bottom), list(top), dropout
        super().__init__(schema, **kwargs)

    def build_net(self) -> RecsysNet:
        if len(set(self.field_dims)) != 1:
            raise ValueError(f"DLRM needs one embedding width for all fields, got {sorted(set(self.field_dims))}")
        s, d = self.schema, self.field_dims[0]
        head = DLRMHead(s.sparse_features, d, s.num_dense, self._bottom, self._top, self._dropout)
        return RecsysNet(head, None, self._tables(False, True)[1])
