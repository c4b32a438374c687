"""Moving weights between a DES-sharded model and its single-process twin.

* :func:`load_full_state_dict` copies an unsharded state dict (from a single-process model or
  :func:`gather_full_state_dict`) into a sharded module: each rank takes its shards' slices.
* :func:`gather_full_state_dict` assembles the unsharded state dict on every rank: sharded
  tables through their shards, rank-local ``W_f`` blocks from their owners.

Keys are those of the unsharded ``RecsysNet`` (``DistributedModelParallel`` strips its own
wrapper prefixes), so the result loads straight into a single-process model for inference.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed._shard.sharded_tensor import ShardedTensor


def shard_slices(offsets: list[int], sizes: list[int]) -> tuple[slice, ...]:
    """The index of a shard (given by its offsets and sizes) inside the full tensor."""
    return tuple(slice(o, o + s) for o, s in zip(offsets, sizes))


@torch.no_grad()
def load_full_state_dict(module: nn.Module, full: Mapping[str, Tensor], strict: bool = True) -> None:
    """Copy the unsharded ``full`` state into ``module`` (sharded or not), in place.

    Keys of ``full`` that ``module`` does not hold locally (``W_f`` of tables on other ranks)
    are skipped; with ``strict`` every key ``module`` holds must be present in ``full``.
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in full)
    if strict and missing:
        raise KeyError(f"state dict lacks keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for key, dst in own.items():
        if key not in full:
            continue
        src = full[key]
        if isinstance(dst, ShardedTensor):
            for shard in dst.local_shards():
                md = shard.metadata
                shard.tensor.copy_(src[shard_slices(md.shard_offsets, md.shard_sizes)])
        else:
            if dst.shape != src.shape:
                raise ValueError(f"{key}: shape {tuple(src.shape)} does not match {tuple(dst.shape)}")
            dst.copy_(src)


@torch.no_grad()
def gather_full_state_dict(module: nn.Module, group=None) -> dict[str, Tensor]:
    """The unsharded state dict of a DES-sharded ``module``, on every rank (collective)."""
    own = module.state_dict()
    shapes: dict[str, tuple[list[int], torch.dtype]] = {}
    local: dict[str, list[tuple[list[int], list[int], Tensor]]] = {}
    for key, t in own.items():
        if isinstance(t, ShardedTensor):
            shapes[key] = (list(t.size()), t.dtype)
            local[key] = [(s.metadata.shard_offsets, s.metadata.shard_sizes, s.tensor.detach().cpu()) for s in t.local_shards()]
        else:
            shapes[key] = (list(t.shape), t.dtype)
            local[key] = [([0] * t.dim(), list(t.shape), t.detach().cpu())]
    everyone: list[dict] = [None] * dist.get_world_size(group)  # type: ignore[list-item]
    dist.all_gather_object(everyone, (shapes, local), group=group)
    out: dict[str, Tensor] = {}
    for shapes_r, local_r in everyone:
        for key, pieces in local_r.items():
            shape, dtype = shapes_r[key]
            if key not in out:
                out[key] = torch.zeros(shape, dtype=dtype)
            for offsets, sizes, t in pieces:
                out[key][shard_slices(offsets, sizes)] = t
    return out
