"""Recommender networks in plain PyTorch on TorchRec ``EmbeddingBagCollection``.

Every model is ``RecsysNet(tables, head)``: up to two embedding-bag collections (``wide``:
1-dim tables, one per field; ``deep``: ``d_f``-dim tables) and a head that maps the pooled
embeddings and the dense features to one logit per sample.

LR, FM, DNN, Wide&Deep and DeepFM share one head, :class:`SumOverFieldsHead`, written in the
split form that DES substitutes::

    S = sum_f partial_f(wide_f, deep_f)          # (B, P): the weights-rich operator
    logit = post(S, dense)                       # (B,): cheap, replicated

with the partial result ``P`` the concatenation of the enabled components:

* wide (LR part):  ``w_f``                                         1 float
* FM:              ``[sum_f v_f, sum_f ||v_f||^2]``, ``v_f = A_f e_f``   k + 1 floats
  (``A_f`` projects to the FM width ``k`` only where ``d_f != k``; the pairwise term is
  ``0.5 * (||sum v||^2 - sum ||v||^2)``, the squared-norm trick)
* deep first layer: ``W_f e_f`` (``W = [W_1 .. W_F | W_dense]``)         H floats

DLRM's pairwise interaction is not a sum over fields; :class:`DLRMHead` has no split form.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

Pooled = Mapping[str, Tensor]


def _uniform(bound: float):
    def init(w: Tensor) -> None:
        with torch.no_grad():
            w.uniform_(-bound, bound)

    return init


def make_tables(
    prefix: str,
    fields: Sequence[str],
    cardinalities: Sequence[int],
    dims: Sequence[int],
    multi_hot: Sequence[str] = (),
    init_bound: float = 0.05,
    device: torch.device | str | None = None,
) -> EmbeddingBagCollection:
    """One embedding bag per field, named ``f"{prefix}_{field}"``; multi-hot fields pool by
    mean, single-hot by sum."""
    configs = [
        EmbeddingBagConfig(
            name=f"{prefix}_{f}",
            embedding_dim=d,
            num_embeddings=n,
            feature_names=[f],
            pooling=PoolingType.MEAN if f in multi_hot else PoolingType.SUM,
            weight_init_min=-init_bound,
            weight_init_max=init_bound,
            init_fn=_uniform(init_bound),
        )
        for f, n, d in zip(fields, cardinalities, dims)
    ]
    return EmbeddingBagCollection(tables=configs, device=torch.device(device) if device else None)


def mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """ReLU MLP through ``sizes``; the last layer has no activation."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FieldOperator(nn.Module):
    """The weights of field ``f`` inside the substituted operator: the FM projection ``A_f``
    (only when the field's width differs from the FM width) and the deep block ``W_f``."""

    def __init__(self, dim: int, fm_dim: int | None, deep_width: int | None, fan_in: int) -> None:
        super().__init__()
        self.fm_proj = nn.Linear(dim, fm_dim, bias=False) if fm_dim is not None and dim != fm_dim else None
        self.deep_w = None
        if deep_width is not None:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default for the whole first layer
            self.deep_w = nn.Parameter(torch.empty(deep_width, dim).uniform_(-bound, bound))


class SumOverFieldsHead(nn.Module):
    """LR / FM / DNN / Wide&Deep / DeepFM head in split form (see the module docstring).

    Args:
        fields: sparse feature names, in schema order.
        dims: deep embedding width ``d_f`` per field (ignored when neither FM nor deep is on);
            0 = the field has no deep table.
        num_dense: number of dense features.
        wide: add the per-field 1-dim (LR) term; needs the ``wide`` tables.
        fm_dim: FM width ``k`` (``None`` = no FM term).
        deep: hidden sizes of the deep MLP, first layer included (``None``/empty = no deep part).
        dropout: dropout in the deep MLP.

    Shapes: ``field_partial`` returns ``(B, partial_dim)``; ``post`` returns ``(B,)``.
    """

    def __init__(
        self,
        fields: Sequence[str],
        dims: Sequence[int],
        num_dense: int,
        wide: bool = True,
        fm_dim: int | None = None,
        deep: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not (wide or fm_dim or deep):
            raise ValueError("SumOverFieldsHead needs at least one of wide, fm_dim, deep")
        self.fields = tuple(fields)
        self.dims = dict(zip(fields, dims))
        self.wide, self.fm_dim = wide, fm_dim
        self.deep = tuple(deep or ())
        self.dense_linear = nn.Linear(num_dense, 1) if (wide or fm_dim) else None
        fan_in = sum(dims) + num_dense
        width = self.deep[0] if self.deep else None
        if fm_dim is not None or width is not None:
            ops = {f: FieldOperator(d, fm_dim, width, fan_in) for f, d in self.dims.items() if d > 0}
            self.field_ops = nn.ModuleDict(ops)  # a width-0 (dropped) field has no deep table
        else:
            self.field_ops = nn.ModuleDict()
        if width is not None:
            self.deep_dense = nn.Linear(num_dense, width)  # W_dense and the first layer's bias
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.deep_dense.weight, -bound, bound)
            nn.init.uniform_(self.deep_dense.bias, -bound, bound)
            self.deep_rest = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), mlp([*self.deep, 1], dropout))

    @property
    def uses_wide_tables(self) -> bool:
        return self.wide

    @property
    def uses_deep_tables(self) -> bool:
        return bool(self.fm_dim or self.deep)

    @property
    def partial_dim(self) -> int:
        return self.wide_partial_dim + self.deep_partial_dim

    @property
    def wide_partial_dim(self) -> int:
        return int(self.wide)

    @property
    def deep_partial_dim(self) -> int:
        return (self.fm_dim + 1 if self.fm_dim else 0) + (self.deep[0] if self.deep else 0)

    def wide_partial(self, wide: Pooled, batch_size: int) -> Tensor:
        """``sum_f w_f`` over the fields present in ``wide`` (each (B, 1)): (B, 1), or (B, 0)
        when the model has no wide part."""
        fields = [f for f in self.fields if f in wide]
        if not self.wide or not fields:
            return self._zeros(batch_size, self.wide_partial_dim)
        return torch.cat([wide[f] for f in fields], dim=1).sum(1, keepdim=True)  # (B, 1)

    def deep_partial(self, deep: Pooled, batch_size: int) -> Tensor:
        """FM and first-layer partial results over the fields present in ``deep`` (each
        (B, d_f)): (B, deep_partial_dim). DES calls it with the fields a rank owns."""
        fields = [f for f in self.fields if f in deep]
        if not fields or not self.deep_partial_dim:
            return self._zeros(batch_size, self.deep_partial_dim)
        parts: list[Tensor] = []
        if self.fm_dim:
            vs = [deep[f] if self.field_ops[f].fm_proj is None else self.field_ops[f].fm_proj(deep[f]) for f in fields]
            v = torch.stack(vs, dim=1)  # (B, F_local, k)
            parts += [v.sum(1), v.pow(2).sum((1, 2)).unsqueeze(1)]  # (B, k), (B, 1)
        if self.deep:
            e = torch.cat([deep[f] for f in fields], dim=1)  # (B, sum d_f)
            w = torch.cat([self.field_ops[f].deep_w for f in fields], dim=1)  # (H, sum d_f)
            parts.append(e @ w.t())  # (B, H)
        return torch.cat(parts, dim=1)

    def _zeros(self, batch_size: int, dim: int) -> Tensor:
        p = next(self.parameters())
        return torch.zeros(batch_size, dim, dtype=p.dtype, device=p.device)

    def field_partial(self, wide: Pooled, deep: Pooled, batch_size: int) -> Tensor:
        """Sum over the fields present of the per-field partial results, (B, P) = [wide | deep]."""
        return torch.cat([self.wide_partial(wide, batch_size), self.deep_partial(deep, batch_size)], dim=1)

    def post(self, s: Tensor, dense: Tensor) -> Tensor:
        """From the summed partial result ``s`` (B, P) and ``dense`` (B, D) to logits (B,)."""
        logit = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
        i = 0
        if self.wide:
            logit = logit + s[:, 0]
            i = 1
        if self.dense_linear is not None:
            logit = logit + self.dense_linear(dense).squeeze(1)
        if self.fm_dim:
            v_sum, sq = s[:, i : i + self.fm_dim], s[:, i + self.fm_dim]
            logit = logit + 0.5 * (v_sum.pow(2).sum(1) - sq)
            i += self.fm_dim + 1
        if self.deep:
            h = s[:, i : i + self.deep[0]] + self.deep_dense(dense)  # (B, H) first layer output
            logit = logit + self.deep_rest(h).squeeze(1)
        return logit

    def forward(self, wide: Pooled, deep: Pooled, dense: Tensor) -> Tensor:
        return self.post(self.field_partial(wide, deep, dense.shape[0]), dense)


class DLRMHead(nn.Module):
    """DLRM: bottom MLP on dense features, pairwise dot products among the dense vector and
    the field embeddings (all width ``d``), top MLP. Not a sum over fields: no DES split."""

    def __init__(self, fields: Sequence[str], dim: int, num_dense: int, bottom: Sequence[int], top: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        if num_dense < 1:
            raise ValueError("DLRMHead needs at least one dense feature for its bottom MLP")
        self.fields = tuple(fields)
        self.bottom = nn.Sequential(mlp([num_dense, *bottom, dim], dropout), nn.ReLU())
        n = len(fields) + 1
        self.register_buffer("_iu", torch.triu_indices(n, n, offset=1), persistent=False)
        self.top = mlp([dim + n * (n - 1) // 2, *top, 1], dropout)

    def forward(self, wide: Pooled, deep: Pooled, dense: Tensor) -> Tensor:
        z = self.bottom(dense)  # (B, d)
        x = torch.stack([z, *(deep[f] for f in self.fields)], dim=1)  # (B, F+1, d)
        inter = torch.bmm(x, x.transpose(1, 2))[:, self._iu[0], self._iu[1]]  # (B, (F+1)F/2)
        return self.top(torch.cat([z, inter], dim=1)).squeeze(1)


class RecsysNet(nn.Module):
    """Embedding tables plus a head: ``forward(dense (B, D), kjt) -> logits (B,)``."""

    def __init__(self, head: nn.Module, wide: EmbeddingBagCollection | None, deep: EmbeddingBagCollection | None) -> None:
        super().__init__()
        self.head, self.wide, self.deep = head, wide, deep

    def pooled(self, kjt: KeyedJaggedTensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        wide = self.wide(kjt).to_dict() if self.wide is not None else {}
        deep = self.deep(kjt).to_dict() if self.deep is not None else {}
        return wide, deep

    def forward(self, dense: Tensor, kjt: KeyedJaggedTensor) -> Tensor:
        wide, deep = self.pooled(kjt)
        return self.head(wide, deep, dense)
