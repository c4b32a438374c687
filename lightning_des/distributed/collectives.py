"""The DES collective: reduce-scatter of per-rank partial results along the batch.

Forward: every rank holds partial results ``(B_global, P)`` for all samples (rows rank-major);
each rank receives the sum over ranks of the rows of its own samples, ``(B_local, P)``.
Backward: each rank's gradient ``(B_local, P)`` is all-gathered back to ``(B_global, P)`` on
every rank and divided by the world size N, matching DDP's gradient averaging (each rank's loss
is a mean over its own samples; the single-process reference averages over the global batch).

Two implementations with the same result:

* ``all_to_all``: ``all_to_all_single`` + a local sum (true reduce-scatter traffic; the default
  on gloo, which runs ``reduce_scatter`` as an all-reduce and would move ~N/2 times more);
* ``reduce_scatter``: the native ``reduce_scatter_tensor`` (nccl), equal batch sizes only.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_des.distributed.comm import comm_tag

Collective = Literal["auto", "all_to_all", "reduce_scatter"]


def _a2a_reduce(x: Tensor, sizes: Sequence[int], rank: int, group) -> Tensor:
    n = len(sizes)
    out = x.new_empty((n * sizes[rank], x.shape[1]))
    dist.all_to_all_single(out, x.contiguous(), [sizes[rank]] * n, list(sizes), group=group)
    return out.view(n, sizes[rank], x.shape[1]).sum(0)


def _a2a_gather(g: Tensor, sizes: Sequence[int], rank: int, group) -> Tensor:
    n = len(sizes)
    out = g.new_empty((sum(sizes), g.shape[1]))
    dist.all_to_all_single(out, g.contiguous().repeat(n, 1), list(sizes), [sizes[rank]] * n, group=group)
    return out


class _ReduceScatterRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], native: bool, group) -> Tensor:  # type: ignore[override]
        rank = dist.get_rank(group)
        ctx.sizes, ctx.native, ctx.group, ctx.rank = sizes, native, group, rank
        with comm_tag("partial"):
            if native:
                out = x.new_empty((sizes[rank], x.shape[1]))
                dist.reduce_scatter_tensor(out, x.contiguous(), group=group)
                return out
            return _a2a_reduce(x, sizes, rank, group)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        n = len(ctx.sizes)
        with comm_tag("partial"):
            if ctx.native:
                out = g.new_empty((sum(ctx.sizes), g.shape[1]))
                dist.all_gather_into_tensor(out, g.contiguous(), group=ctx.group)
            else:
                out = _a2a_gather(g, ctx.sizes, ctx.rank, ctx.group)
        return out / n, None, None, None


def reduce_scatter_rows(x: Tensor, batch_size_per_rank: Sequence[int], collective: Collective = "auto", group: dist.ProcessGroup | None = None) -> Tensor:
    """Sum ``x`` (B_global, P) over ranks and keep this rank's rows, (B_local, P).

    Args:
        x: partial results for all samples of the global batch, rank-major rows.
        batch_size_per_rank: ``B_r`` per rank.
        collective: ``auto`` picks ``reduce_scatter`` on nccl with equal batch sizes and
            ``all_to_all`` otherwise.
        group: process group (default: the world).
    """
    sizes = tuple(int(s) for s in batch_size_per_rank)
    if x.shape[0] != sum(sizes):
        raise ValueError(f"partial results have {x.shape[0]} rows, the batch sizes per rank sum to {sum(sizes)}")
    if collective not in ("auto", "all_to_all", "reduce_scatter"):
        raise ValueError(f"collective must be auto, all_to_all or reduce_scatter, got {collective!r}")
    equal = len(set(sizes)) == 1
    if collective == "reduce_scatter" and not equal:
        raise ValueError(f"collective='reduce_scatter' needs equal batch sizes per rank, got {list(sizes)}")
    native = collective == "reduce_scatter" or (collective == "auto" and equal and dist.get_backend(group) == "nccl")
    return _ReduceScatterRows.apply(x, sizes, native, group)
