"""Sharded DES checkpoints: one file per rank, and consolidation into a plain checkpoint.

A DES checkpoint is a directory ``<path>/rank<r>.pt``. Each rank writes its own part of
TorchRec's sharded state dict (the local shards of every ``ShardedTensor``, with their offsets
and the global size), its rank-local ``W_f`` blocks, the optimizer states (dense and fused)
and Lightning's loop/callback state. Resuming needs the same world size (the planner then
reproduces the same placement; a mismatch is detected and named).

:func:`consolidate` turns the directory into an ordinary single-process state dict (no
process group needed), so ``Model.load_from_checkpoint`` and inference work on one CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor
from torch.distributed._shard.sharded_tensor import ShardedTensor

from lightning_des.distributed.state import SHARDS, merge_local


@torch.no_grad()
def copy_local_(dst: Any, src: Any, where: str = "") -> None:
    """Copy a :func:`to_local` structure ``src`` into the live tensors of ``dst`` in place."""
    if isinstance(dst, ShardedTensor):
        if not (isinstance(src, Mapping) and SHARDS in src):
            raise ValueError(f"{where}: checkpoint holds a plain tensor where the model has a sharded one")
        mine = {tuple(s.metadata.shard_offsets): s.tensor for s in dst.local_shards()}
        saved = {tuple(o): t for o, _, t in src[SHARDS]}
        if set(mine) != set(saved):
            raise ValueError(f"{where}: shard placement differs from the checkpoint's (resume with the same world size)")
        for off, t in mine.items():
            t.copy_(saved[off])
    elif isinstance(dst, Tensor):
        if not isinstance(src, Tensor) or src.shape != dst.shape:
            raise ValueError(f"{where}: checkpoint tensor does not match the model's {tuple(dst.shape)}")
        dst.copy_(src)
    elif isinstance(dst, Mapping):
        missing = sorted(set(dst) - set(src))
        if missing:
            raise KeyError(f"{where}: checkpoint lacks {missing[:8]}")
        for k in dst:
            copy_local_(dst[k], src[k], f"{where}.{k}" if where else str(k))


def rank_file(path: str | Path, rank: int) -> Path:
    return Path(path) / f"rank{rank}.pt"


def consolidate(path: str | Path) -> dict[str, Any]:
    """Assemble a DES checkpoint directory into a single-process Lightning checkpoint dict
    (``state_dict`` complete and unsharded; optimizer states dropped)."""
    files = sorted(Path(path).glob("rank*.pt"), key=lambda p: int(p.stem[4:]))
    if not files:
        raise FileNotFoundError(f"{path} holds no rank*.pt files: not a DES checkpoint")
    parts = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
    full = merge_local(p["state_dict"] for p in parts)
    ckpt = {k: v for k, v in parts[0].items() if k not in ("state_dict", "optimizer_states", "des_fused_optimizer")}
    ckpt["state_dict"] = full
    ckpt["optimizer_states"] = []
    return ckpt
