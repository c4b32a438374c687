"""Moving weights between a DES-sharded model and its single-process twin.

* :func:`load_full_state_dict` copies an unsharded state dict (from a single-process model or
  :func:`gather_full_state_dict`) into a sharded module: each rank takes its shards' slices.
* :func:`gather_full_state_dict` assembles the unsharded state dict on every rank: sharded
  tables through their shards, rank-local ``W_f`` blocks from their owners.

Keys are those of the unsharded ``RecsysNet`` (``DistributedModelParallel`` strips its own
wrapper prefixes), so the result loads straight into a single-process model for inference.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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


SHARDS = "__des_shards__"


def to_local(obj: Any) -> Any:
    """Replace every ``ShardedTensor`` in a nested structure by its local shards (offsets,
    sizes, tensor) plus its global size and dtype; other values are kept."""
    if isinstance(obj, ShardedTensor):
        return {
            SHARDS: [(list(s.metadata.shard_offsets), list(s.metadata.shard_sizes), s.tensor.detach().clone()) for s in obj.local_shards()],
            "size": list(obj.size()),
            "dtype": obj.dtype,
        }
    if isinstance(obj, Mapping):
        return {k: to_local(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_local(v) for v in obj)
    return obj


def merge_local(parts: Iterable[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Unsharded tensors from several ranks' :func:`to_local` state dicts: shards go to their
    offsets; a plain tensor (replicated, or held by one rank such as ``W_f``) is taken from the
    first rank that has it."""
    full: dict[str, Tensor] = {}
    for part in parts:
        for key, val in part.items():
            if isinstance(val, Mapping) and SHARDS in val:
                out = full.setdefault(key, torch.zeros(val["size"], dtype=val["dtype"]))
                for offsets, sizes, t in val[SHARDS]:
                    out[shard_slices(offsets, sizes)] = t.cpu()
            elif key not in full:
                full[key] = val.detach().cpu()
    return full


@torch.no_grad()
def gather_full_state_dict(module: nn.Module, group=None) -> dict[str, Tensor]:
    """The unsharded state dict of a DES-sharded ``module``, on every rank (collective)."""
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, to_local(module.state_dict()), group=group)
    return merge_local(everyone)
