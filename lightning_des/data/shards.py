"""Reading prepared shards: per-rank, per-epoch batches built in bulk as TorchRec batches.

* :class:`PreparedCTR` opens a directory written by :func:`~lightning_des.data.ingest.prepare_table`
  (``meta.json`` + memory-mapped ``.npy`` shards; nothing is read until a batch needs it), or
  wraps in-memory :class:`~lightning_des.data.ctr.EncodedCTR` parts (synthetic data).
* :class:`ShardedCTRDataset` serves *whole batches* of one split for one rank:
  ``dataset[(epoch, b)]`` is this rank's part of global batch ``b`` of that epoch.
* :class:`ShardBatchSampler` yields those keys and carries the epoch (Lightning calls
  ``set_epoch``), so any ``num_workers`` gives the same batches in the same order.

Epoch order: with shuffling, the shards are permuted by ``(seed, epoch)`` and taken in windows
of ``shuffle_window`` shards whose rows are permuted together (a full uniform shuffle when the
split has no more shards than that); without, input order. The order is cut into global batches
of ``world_size * batch_size`` rows, and each global batch into ``world_size`` contiguous parts
(sizes differ by at most one row); a last global batch smaller than ``world_size`` rows joins the
one before. So every row is seen exactly once per epoch across ranks, and every rank gets the
same number of non-empty batches (DDP and DES need equal step counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from lightning_des.data.ctr import CTRSchema, EncodedCTR, jagged_take

SPLITS = ("train", "val", "test")


@dataclass
class _Shard:
    """Arrays of one shard of one split (numpy or memory-mapped); ``offsets[f]`` is None for
    single-hot fields (one id per row)."""

    labels: np.ndarray
    dense: np.ndarray
    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray | None]

    def gather(self, idx: np.ndarray, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Rows ``idx`` (sorted): labels, dense, and per key (ids, lengths)."""
        fields = []
        for f in keys:
            off = self.offsets[f]
            if off is None:
                fields.append((self.values[f][idx], np.ones(len(idx), np.int64)))
                continue
            fields.append(jagged_take(self.values[f], off, idx))
        return self.labels[idx], self.dense[idx], fields


class PreparedCTR:
    """A prepared CTR dataset: schema, row counts and shards per split.

    Args:
        root: a directory written by ``lightning-des data prepare`` (holds ``meta.json``).

    Raises:
        FileNotFoundError: ``root`` has no ``meta.json`` (not prepared, or prepare unfinished).
        ValueError: ``meta.json`` is from another format version, or a shard it lists is missing.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a prepared CTR dataset (no meta.json; an unfinished prepare resumes when run again)"
            )
        self.meta = json.loads(meta_path.read_text())
        from lightning_des.data.ingest import FORMAT_VERSION

        if self.meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format version {self.meta.get('version')!r}, this package reads {FORMAT_VERSION}")
        s = self.meta["schema"]
        self.schema = CTRSchema(tuple(s["dense_features"]), tuple(s["sparse_features"]), tuple(s["cardinalities"]), tuple(s["multi_hot"]))
        self._sizes = {k: [int(n) for _, n in self.meta["splits"][k]["shards"]] for k in SPLITS}
        self._names = {k: [f"{i:05d}" for i, _ in self.meta["splits"][k]["shards"]] for k in SPLITS}
        for k in SPLITS:
            for name in self._names[k]:
                if not (self.root / "shards" / name / k / "label.npy").is_file():
                    raise ValueError(f"{self.root}: shard {name}/{k} listed in meta.json is missing")
        self._memory: dict[str, list[_Shard]] | None = None

    @classmethod
    def from_encoded(cls, schema: CTRSchema, parts: Mapping[str, EncodedCTR]) -> "PreparedCTR":
        """In-memory parts (one shard per split), e.g. synthetic data."""
        self = cls.__new__(cls)
        self.root, self.meta, self.schema = None, {}, schema
        self._memory = {k: [_Shard(p.labels, p.dense, dict(p.values), {f: p.offsets[f] for f in p.values})] for k, p in parts.items()}
        self._sizes = {k: [len(p)] for k, p in parts.items()}
        self._names = {k: ["memory"] for k in parts}
        return self

    def num_rows(self, split: str) -> int:
        return sum(self.sizes(split))

    def sizes(self, split: str) -> list[int]:
        if split not in self._sizes:
            raise KeyError(f"unknown split {split!r}; available: {sorted(self._sizes)}")
        return self._sizes[split]

    def shard(self, split: str, i: int) -> _Shard:
        if self._memory is not None:
            return self._memory[split][i]
        return _open_shard(self.root / "shards" / self._names[split][i] / split, self.schema.sparse_features, self.schema.multi_hot)

    def batch(self, split: str, pieces: Sequence[tuple[int, np.ndarray]]) -> Batch:
        """A TorchRec ``Batch`` of the rows ``pieces = [(shard, sorted local rows), ...]``."""
        keys = self.schema.sparse_features
        got = [self.shard(split, s).gather(idx, keys) for s, idx in pieces]
        labels = np.concatenate([g[0] for g in got])
        dense = np.concatenate([g[1] for g in got])
        values = np.concatenate([g[2][j][0] for j in range(len(keys)) for g in got]).astype(np.int64)
        lengths = np.concatenate([g[2][j][1] for j in range(len(keys)) for g in got]).astype(np.int32)
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=list(keys), values=torch.from_numpy(values), lengths=torch.from_numpy(lengths))
        return Batch(dense_features=torch.from_numpy(np.ascontiguousarray(dense, np.float32)), sparse_features=kjt,
                     labels=torch.from_numpy(np.ascontiguousarray(labels, np.float32)))


@lru_cache(maxsize=64)
def _open_shard(d: Path, keys: tuple[str, ...], multi_hot: tuple[str, ...]) -> _Shard:
    load = lambda name: np.load(d / f"{name}.npy", mmap_mode="r")  # noqa: E731
    return _Shard(load("label"), load("dense"), {f: load(f"{f}.ids") for f in keys},
                  {f: (load(f"{f}.offsets") if f in multi_hot else None) for f in keys})


def global_batches(num_rows: int, batch_size: int, world_size: int) -> np.ndarray:
    """Start offsets of the global batches plus the end: ``(G + 1,)``; see the module docstring.

    Raises:
        ValueError: fewer rows than ranks (some rank would get no batch).
    """
    if num_rows < world_size:
        raise ValueError(f"{num_rows} rows cannot give each of {world_size} ranks a batch")
    gb = batch_size * world_size
    g = -(-num_rows // gb)
    if g > 1 and num_rows - (g - 1) * gb < world_size:
        g -= 1
    bounds = np.arange(g + 1, dtype=np.int64) * gb
    bounds[-1] = num_rows
    return bounds


class _EpochOrder:
    """Maps positions of one epoch's order to (shard, local row)."""

    def __init__(self, sizes: Sequence[int], shuffle: bool, seed: int, epoch: int, window: int) -> None:
        self.sizes = np.asarray(sizes, np.int64)
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        order = np.random.default_rng([seed, epoch]).permutation(len(sizes)) if shuffle else np.arange(len(sizes))
        self.windows = [order[i:i + window] for i in range(0, len(order), window)] if shuffle else [order]
        self.wstart = np.concatenate([[0], np.cumsum([self.sizes[w].sum() for w in self.windows])])
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard of each position, local row of each position) in window ``w``."""
        if self._cache is None or self._cache[0] != w:
            shards = self.windows[w]
            owner = np.repeat(shards, self.sizes[shards])
            local = np.arange(len(owner)) - np.repeat(np.concatenate([[0], np.cumsum(self.sizes[shards])[:-1]]), self.sizes[shards])
            if self.shuffle:
                perm = np.random.default_rng([self.seed, self.epoch, w]).permutation(len(owner))
                owner, local = owner[perm], local[perm]
            self._cache = (w, owner, local)
        return self._cache[1], self._cache[2]

    def pieces(self, start: int, stop: int) -> list[tuple[int, np.ndarray]]:
        """Rows at positions ``[start, stop)`` as ``[(shard, sorted local rows), ...]``."""
        out: list[tuple[int, np.ndarray]] = []
        w = int(np.searchsorted(self.wstart, start, side="right")) - 1
        while start < stop:
            owner, local = self._window(w)
            a, b = start - self.wstart[w], min(stop, self.wstart[w + 1]) - self.wstart[w]
            o, loc = owner[a:b], local[a:b]
            for s in np.unique(o):
                out.append((int(s), np.sort(loc[o == s])))
            start = int(self.wstart[w] + b)
            w += 1
        return out


class ShardedCTRDataset(Dataset):
    """One rank's batches of one split; ``dataset[(epoch, b)]`` -> TorchRec ``Batch``.

    Args:
        data: the prepared dataset.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: rows per batch on this rank (the global batch is ``world_size`` times that).
        rank: this process's rank.
        world_size: number of ranks.
        shuffle: shuffle per epoch (training).
        seed: shuffling seed; the same seed and epoch always give the same batches.
        shuffle_window: shards whose rows are shuffled together.
    """

    def __init__(self, data: PreparedCTR, split: str, batch_size: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = False, seed: int = 0, shuffle_window: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window must be >= 1, got {shuffle_window}")
        self.data, self.split = data, split
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle, self.seed, self.shuffle_window = shuffle, seed, shuffle_window
        self.bounds = global_batches(data.num_rows(split), batch_size, world_size)
        self._order: _EpochOrder | None = None

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def positions(self, b: int) -> tuple[int, int]:
        """This rank's positions ``[start, stop)`` in the epoch order for global batch ``b``."""
        a, z = int(self.bounds[b]), int(self.bounds[b + 1])
        m = z - a
        return a + m * self.rank // self.world_size, a + m * (self.rank + 1) // self.world_size

    def order(self, epoch: int) -> _EpochOrder:
        if self._order is None or self._order.epoch != epoch:
            self._order = _EpochOrder(self.data.sizes(self.split), self.shuffle, self.seed, epoch, self.shuffle_window)
        return self._order

    def __getitem__(self, key: tuple[int, int]) -> Batch:
        epoch, b = key
        if not 0 <= b < len(self):
            raise IndexError(f"batch {b} out of range: this rank has {len(self)} batches")
        return self.data.batch(self.split, self.order(epoch).pieces(*self.positions(b)))


class ShardBatchSampler(DistributedSampler):
    """Yields ``(epoch, batch)`` keys of a :class:`ShardedCTRDataset`.

    It subclasses ``DistributedSampler`` because it already is one (the dataset holds this
    rank's part of every batch): Lightning then neither replaces it nor wraps it, and calls
    ``set_epoch`` on it each epoch. Lightning creates the first iterator of a resumed fit
    *before* ``set_epoch``, so ``epoch_fn`` (e.g. the trainer's epoch counter), when given, is
    asked for the epoch when the iterator starts instead.

    Args:
        dataset: the batches to index.
        epoch_fn: returns the current epoch, or None to use the ``set_epoch`` value.
    """

    def __init__(self, dataset: ShardedCTRDataset, epoch_fn: Callable[[], int | None] | None = None) -> None:  # noqa: D107
        # no super().__init__: it would need a process group and samples indices, not batches
        self.dataset, self.epoch_fn = dataset, epoch_fn
        self.num_replicas, self.rank = dataset.world_size, dataset.rank
        self.shuffle, self.seed, self.epoch, self.drop_last = dataset.shuffle, dataset.seed, 0, False
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batch: int) -> None:
        """Start the next iterator of ``epoch`` at ``batch`` (once), for a mid-epoch resume."""
        self._resume = (epoch, batch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self.epoch if epoch is None else epoch
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
        self._resume = None
        return iter([(epoch, b) for b in range(start, len(self.dataset))])

    def __len__(self) -> int:
        return len(self.dataset)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ShardBatchSampler` that Lightning resumes mid-epoch.

    Lightning saves a loader's ``state_dict()`` in its checkpoints and, on resume, calls
    ``load_state_dict`` before creating the first iterator. The state is the fit loop's epoch
    and the number of batches it has *processed* in it (``position_fn``; what the model has
    seen, unaffected by prefetching); loading it makes that epoch continue at the next batch, so
    a run interrupted mid-epoch (a SLURM requeue, ``ModelCheckpoint(every_n_train_steps=...)``)
    sees every batch once, as an uninterrupted one does.

    Args:
        dataset: the batches.
        sampler: their sampler.
        position_fn: returns ``(epoch, batches processed in it)``.
        **kwargs: ``DataLoader`` options.
    """

    def __init__(self, dataset: ShardedCTRDataset, sampler: ShardBatchSampler, position_fn: Callable[[], tuple[int, int]],
                 **kwargs: Any) -> None:  # noqa: D107
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.position_fn = position_fn

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.position_fn()
        return {"epoch": int(epoch), "batches_done": int(done), "batches_per_epoch": len(self.sampler)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        missing = {"epoch", "batches_done", "batches_per_epoch"} - set(state)
        if missing:
            raise ValueError(f"ResumableLoader.load_state_dict: the checkpoint's loader state lacks {sorted(missing)}")
        epoch, done, n = int(state["epoch"]), int(state["batches_done"]), int(state["batches_per_epoch"])
        if not 0 < done < n:
            return  # saved at an epoch boundary: nothing to skip
        if n != len(self.sampler):
            raise ValueError(
                f"the checkpoint was saved after {done} of {n} batches of epoch {epoch}, but this run has "
                f"{len(self.sampler)} batches per epoch (another world size or batch size): it cannot continue that epoch "
                "where it stopped. Resume from a checkpoint written at the end of an epoch, or with the same world and batch size."
            )
        self.sampler.resume_at(epoch, done)
