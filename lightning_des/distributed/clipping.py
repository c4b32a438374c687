"""Gradient-norm clipping by the true global norm of a DES-sharded model.

Under DES the replicated dense layers hold the same (DDP-averaged) gradient on every rank,
while each field's ``W_f`` (and FM projection) lives on one rank only. The global norm counts
each parameter once: ``sqrt(|g_replicated|^2 + sum over ranks |g_rank_local|^2)``, so every
rank gets the same clip factor and the replicated layers stay identical. Embedding tables are
not clipped (TorchRec's fused tables update inside backward, before clipping could see them);
the single-process model follows the same rule, so both clip the same gradients.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def clippable(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Parameters with a gradient, except embedding tables."""
    return [(n, p) for n, p in module.named_parameters() if ".embedding_bags." not in n and p.grad is not None]


def replicated_ids(module: nn.Module) -> set[int]:
    """Ids of the parameters DDP keeps in sync (those it does not ignore) inside ``module``."""
    out: set[int] = set()
    for m in module.modules():
        if isinstance(m, DistributedDataParallel):
            out |= {id(p) for n, p in m.module.named_parameters() if n not in m.parameters_to_ignore}
    return out


@torch.no_grad()
def clip_grad_norm_(params: Iterable[nn.Parameter], rank_local: Iterable[nn.Parameter], max_norm: float,
                    reduce: bool = True, group=None) -> Tensor:
    """Scale the gradients of ``params`` (replicated) and ``rank_local`` so their global norm is
    at most ``max_norm``, with torch's formula (``coef = min(1, max_norm / (norm + 1e-6))``).
    Returns the global norm (before clipping). With ``reduce`` (a collective: every rank must
    call it) the rank-local squares are summed over ``group``.
    """
    rep, loc = [p.grad for p in params], [p.grad for p in rank_local]
    device = (rep + loc)[0].device if rep + loc else torch.device("cpu")
    sq_rep = sum((g.double().pow(2).sum() for g in rep), torch.zeros((), dtype=torch.float64, device=device))
    sq_loc = sum((g.double().pow(2).sum() for g in loc), torch.zeros((), dtype=torch.float64, device=device))
    if reduce:
        dist.all_reduce(sq_loc, group=group)
    norm = (sq_rep + sq_loc).sqrt()
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in rep + loc:
        g.mul_(coef.to(g.dtype))
    return norm.float()


def clip_module_grad_norm_(module: nn.Module, max_norm: float, group=None) -> Tensor:
    """:func:`clip_grad_norm_` over ``module``'s clippable parameters, split into those DDP
    replicates and the rank-local rest; a module without DDP (single process) clips locally."""
    named = clippable(module)
    rep_ids = replicated_ids(module)
    if not rep_ids:
        return clip_grad_norm_([p for _, p in named], [], max_norm, reduce=False)
    rep = [p for _, p in named if id(p) in rep_ids]
    loc = [p for _, p in named if id(p) not in rep_ids]
    return clip_grad_norm_(rep, loc, max_norm, reduce=True, group=group)
