"""DES checkpoints with ``torch.distributed.checkpoint`` (DCP): resharding, safe loading.

A DES checkpoint is a directory::

    <path>/.metadata, __<rank>_0.distcp   DCP: every tensor, flat keys
        model/<state_dict key>              tables (ShardedTensor), W_f (on its owner), dense layers
        optim/<i>/<param>/<state>           dense optimizer states, keyed by parameter name
        fused/<param>/<state>               TorchRec's fused table optimizer states (sharded)
    <path>/lightning.pt                     the rest of Lightning's checkpoint (loops, callbacks,
                                            hyper-parameters, optimizer hyper-parameters), rank 0

Because DCP stores each tensor with its global layout, a checkpoint saved at world size N
resumes at any M: the new plan's shards, the new owners' ``W_f`` and their optimizer states
are read from wherever they were written. Only tensors go into DCP (a non-tensor optimizer value
is refused at save), and loading refuses any pickled object, so nothing in a checkpoint runs
code: ``lightning.pt`` is read with ``torch.load(weights_only=True)``. :func:`check` refuses a
checkpoint whose files are missing or truncated, naming them and the keys they hold;
:func:`consolidate` assembles the unsharded ``state_dict`` without a process group, for
single-process inference.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata

META_FILE = "lightning.pt"
FORMAT = "lightning-des/dcp/1"


class _TensorsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, refusing pickled (non-tensor) entries: DCP would ``torch.load`` them
    with ``weights_only=False``."""

    def load_bytes(self, read_item, value) -> None:
        raise ValueError(f"checkpoint entry {read_item.dest_index.fqn!r} is a pickled object, not a tensor: refused")


def flatten(tree: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, other values) of a nested mapping, with ``/``-joined keys under ``prefix``."""
    tensors: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}"
        if isinstance(v, ShardedTensor):
            if v.local_shards():  # ranks without a shard have nothing to write or read here
                tensors[key] = v
        elif isinstance(v, Tensor):
            tensors[key] = v
        elif isinstance(v, Mapping):
            t, o = flatten(v, key)
            tensors.update(t)
            other.update(o)
        else:
            other[key] = v
    return tensors, other


def _safe_globals() -> list:
    from lightning_des.data.ctr import CTRSchema

    return [CTRSchema]


def save(path: str | Path, tensors: Mapping[str, Any], meta: Mapping[str, Any] | None) -> None:
    """Collective: every rank passes its tensors; rank 0 (the one with ``meta``) also writes
    ``lightning.pt``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dcp.save(dict(tensors), checkpoint_id=str(path))
    if meta is not None:
        torch.save({"format": FORMAT, **meta}, path / META_FILE)


def read_meta(path: str | Path) -> dict[str, Any]:
    """``lightning.pt`` of a checkpoint, after :func:`check`; loaded with ``weights_only=True``."""
    check(path)
    with torch.serialization.safe_globals(_safe_globals()):
        meta = torch.load(Path(path) / META_FILE, map_location="cpu", weights_only=True)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: {META_FILE} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def check(path: str | Path) -> Metadata:
    """The DCP metadata of a complete checkpoint.

    Raises:
        FileNotFoundError: ``path`` is not a DES checkpoint (no ``.metadata`` or ``lightning.pt``).
        ValueError: a data file is missing or shorter than the metadata says (names the files and
            some keys they hold), or the checkpoint holds pickled objects.
    """
    path = Path(path)
    if not (path / ".metadata").is_file() or not (path / META_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a DES checkpoint (needs .metadata and {META_FILE}; "
                                "per-rank rank*.pt checkpoints of lightning-des < 0.2 are no longer read)")
    md = dcp.FileSystemReader(str(path)).read_metadata()
    pickled = sorted(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    if pickled:
        raise ValueError(f"{path} holds pickled objects {pickled[:5]}: refused (DES checkpoints hold tensors only)")
    need: dict[str, int] = defaultdict(int)
    keys: dict[str, set[str]] = defaultdict(set)
    for index, info in md.storage_data.items():
        need[info.relative_path] = max(need[info.relative_path], info.offset + info.length)
        keys[info.relative_path].add(index.fqn)
    bad: dict[str, str] = {}
    for name, size in sorted(need.items()):
        f = path / name
        if not f.is_file():
            bad[name] = f"{name} is missing"
        elif f.stat().st_size < size:
            bad[name] = f"{name} is truncated ({f.stat().st_size} of {size} bytes)"
    if bad:
        held = sorted(k for name in bad for k in keys[name])
        raise ValueError(f"{path} is incomplete: {'; '.join(bad.values())}; it held {held[:6]}{' ...' if len(held) > 6 else ''}")
    return md


def load(path: str | Path, tensors: Mapping[str, Any]) -> None:
    """Collective: read every tensor of ``tensors`` in place from the checkpoint, resharding
    sharded ones to their live layout.

    Raises:
        KeyError: the checkpoint lacks a key this model needs (another model or config).
    """
    md = check(path)
    missing = sorted(k for k in tensors if k not in md.state_dict_metadata)
    if missing:
        raise KeyError(f"{path} lacks {len(missing)} entries this model needs, e.g. {missing[:5]}: "
                       "it was saved from another model or configuration")
    dcp.load(dict(tensors), checkpoint_id=str(path), planner=_TensorsOnlyLoadPlanner())


def consolidate(path: str | Path) -> dict[str, Any]:
    """The checkpoint as one single-process Lightning checkpoint dict (unsharded ``state_dict``,
    optimizer states dropped); needs no process group."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    meta = read_meta(path)
    full: dict[str, Any] = {}
    _load_state_dict(full, storage_reader=dcp.FileSystemReader(str(path)), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    state = {k[len("model/"):]: v for k, v in full.items() if k.startswith("model/")}
    ckpt = {k: v for k, v in meta.items() if k not in ("format", "optimizer_hparams", "world_size")}
    ckpt["state_dict"] = state
    ckpt["optimizer_states"] = []
    return ckpt
