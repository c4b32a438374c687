"""Which operators DES substitutes, and when it pays (the analytic cost model).

A :class:`~lightning_des.models.recsys.nets.SumOverFieldsHead` has up to two substitutable
operators, one per embedding collection:

* ``wide``: the LR term ``sum_f w_f`` over the 1-dim tables; partial result 1 float;
* ``deep``: FM (``sum v``, ``sum ||v||^2``: k + 1 floats) and the deep first layer
  (``sum_f W_f e_f``: H floats) over the ``d_f``-dim tables.

Per step with a global batch of B samples, forward plus backward, N ranks, fp32 (4 bytes),
payload summed over ranks:

* DES moves ``2 (N-1) P B`` floats (reduce-scatter of partial results + gather of their
  grads); the per-field weights ``W_f``/``A_f`` stay with their tables and are never reduced;
* TorchRec table-wise moves ``2 (N-1)/N * sum_f d_f * B`` floats (pooled embeddings and their
  grads) plus ``2 (N-1) * |W|`` for the all-reduce of the now replicated ``W_f``/``A_f``
  (that term vanishes per sample for large B; without a batch size it is left out);
* both move the same ids (TorchRec's input distribution), so the choice ignores them.

``mode="auto"`` picks, per operator, whichever moves fewer bytes; ``mode="des"`` forces DES
(and raises for a head with no equivalent split, such as DLRM's pairwise interaction);
``mode="torchrec"`` uses TorchRec's standard table-wise sharding everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from torch import nn

from lightning_des.models.recsys.nets import RecsysNet, SumOverFieldsHead

Mode = Literal["auto", "des", "torchrec"]
FLOAT_BYTES = 4


class NotSubstitutableError(ValueError):
    """The model's operator after the embedding lookup is not a sum over fields."""


@dataclass(frozen=True)
class OperatorCost:
    """Analytic payload bytes per step (forward + backward, all ranks) of one operator.

    Attributes:
        name: ``"wide"`` or ``"deep"`` (the embedding collection it consumes).
        partial_dim: P, floats of partial result per sample.
        pooled_dim: ``sum_f d_f`` of its tables.
        field_params: number of per-field weights (``W_f``, ``A_f``) of the operator.
        world_size: N.
        global_batch: B (0 = unknown: costs per sample, all-reduce term left out).
    """

    name: str
    partial_dim: int
    pooled_dim: int
    field_params: int
    world_size: int
    global_batch: int = 0

    @property
    def _b(self) -> int:
        return self.global_batch or 1

    @property
    def des_bytes(self) -> float:
        return 2.0 * (self.world_size - 1) * self.partial_dim * self._b * FLOAT_BYTES

    @property
    def table_wise_bytes(self) -> float:
        n = self.world_size
        pooled = 2.0 * (n - 1) / n * self.pooled_dim * self._b
        reduce = 2.0 * (n - 1) * self.field_params if self.global_batch else 0.0
        return (pooled + reduce) * FLOAT_BYTES

    @property
    def use_des(self) -> bool:
        return self.des_bytes <= self.table_wise_bytes

    def describe(self) -> str:
        unit = f"B/step (B={self.global_batch})" if self.global_batch else "B/sample"
        return (
            f"{self.name}: DES {self.des_bytes:,.0f} {unit} (P={self.partial_dim}) vs table-wise "
            f"{self.table_wise_bytes:,.0f} {unit} (sum d={self.pooled_dim}, |W|={self.field_params}), N={self.world_size}"
        )


def operator_costs(net: nn.Module, world_size: int, global_batch: int = 0) -> list[OperatorCost]:
    """Cost of each substitutable operator of ``net`` (``global_batch`` 0 = per sample).

    Raises:
        NotSubstitutableError: ``net`` is not a ``RecsysNet`` with a sum-over-fields head.
    """
    if not isinstance(net, RecsysNet) or not isinstance(net.head, SumOverFieldsHead):
        head = type(getattr(net, "head", net)).__name__
        raise NotSubstitutableError(
            f"{head} has no equivalent DES split (its interaction is not a sum over fields, e.g. "
            "DLRM's pairwise dot products); use DESStrategy(mode='torchrec') or mode='auto' to "
            "shard it with TorchRec's standard table-wise sharding"
        )
    head = net.head
    costs = []
    if net.wide is not None and head.wide_partial_dim:
        costs.append(OperatorCost("wide", head.wide_partial_dim, len(head.fields), 0, world_size, global_batch))
    if net.deep is not None and head.deep_partial_dim:
        n_params = sum(p.numel() for p in head.field_ops.parameters())
        costs.append(OperatorCost("deep", head.deep_partial_dim, sum(head.dims.values()), n_params, world_size, global_batch))
    return costs


OPERATORS = ("wide", "deep")


def choose_operators(
    net: nn.Module, world_size: int, mode: Mode, global_batch: int = 0, allowed: Iterable[str] | None = None
) -> tuple[set[str], list[OperatorCost]]:
    """The embedding collections (``"wide"``/``"deep"``) to run through DES, with their costs.

    ``auto`` on a model without a split returns no operators (TorchRec standard sharding).
    ``allowed`` restricts DES to those operators (the others use TorchRec table-wise).
    """
    if mode not in ("auto", "des", "torchrec"):
        raise ValueError(f"mode must be auto, des or torchrec, got {mode!r}")
    allowed = set(OPERATORS if allowed is None else allowed)
    unknown = sorted(allowed - set(OPERATORS))
    if unknown:
        raise ValueError(f"unknown DES operators {unknown}; choose from {list(OPERATORS)}")
    if mode == "torchrec":
        return set(), []
    try:
        costs = operator_costs(net, world_size, global_batch)
    except NotSubstitutableError:
        if mode == "des":
            raise
        return set(), []
    if mode == "des":
        return {c.name for c in costs if c.name in allowed}, costs
    return {c.name for c in costs if c.use_des and c.name in allowed}, costs
