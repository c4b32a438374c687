"""Communication accounting: a process-group backend that counts what each collective sends.

``init_process_group("counting")`` (or ``DESStrategy(process_group_backend="counting")``, or
just adding :class:`~lightning_des.callbacks.CommStatsCallback`) wraps gloo in
:class:`CountingProcessGroup`. Every collective passes through it, whether called from
Python (TorchRec's all-to-alls, ``dist.*``) or from C++ (DDP's all-reduce), so the counts
are measured, not derived from formulas.

Bytes are *payload* bytes that leave this rank, not wire bytes (gloo's algorithms move more):

* all-to-all: the input rows addressed to other ranks;
* all-gather: the input, once per other rank;
* reduce-scatter: the input chunks addressed to other ranks;
* all-reduce: ``2 (N-1)/N`` times the tensor (the reduce-scatter + all-gather lower bound);
* broadcast: the tensor times ``N-1`` on the root; barrier: 0.

Counts are keyed ``"<collective>:<tag>"``; :func:`comm_tag` sets the tag (DES tags its
partial results ``partial`` and TorchRec's input distribution ``ids``; untagged is ``other``).
"""

from __future__ import annotations

import atexit
import threading
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
import torch._C._distributed_c10d as c10d

BACKEND = "counting"
_groups: list["CountingProcessGroup"] = []
_state = threading.local()
_counts: Counter[str] = Counter()


def _tag() -> str:
    return getattr(_state, "tag", "other")


@contextmanager
def comm_tag(tag: str) -> Iterator[None]:
    """Attribute the collectives issued inside the block to ``tag``."""
    prev = getattr(_state, "tag", "other")
    _state.tag = tag
    try:
        yield
    finally:
        _state.tag = prev


def snapshot() -> dict[str, int]:
    """Bytes counted so far on this rank, by ``"<collective>:<tag>"``."""
    return dict(_counts)


def reset() -> None:
    _counts.clear()


def _nbytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


class CountingProcessGroup(dist.ProcessGroup):
    """A Python ``ProcessGroup`` that forwards every collective to a gloo backend and counts
    the payload bytes this rank sends (see the module docstring for the rules)."""

    def __init__(self, store: dist.Store, rank: int, world_size: int, timeout: timedelta) -> None:
        super().__init__(rank, world_size)
        self._inner = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        self._n = world_size
        self._rank = rank
        self._group_name = self._group_desc = ""
        _groups.append(self)

    def _add(self, kind: str, nbytes: float) -> None:
        key = f"{kind}:{_tag()}"
        _counts[key] += int(nbytes)

    def getBackendName(self) -> str:  # noqa: N802 (c10d's names)
        return BACKEND

    def setGroupName(self, name: str) -> None:  # noqa: N802
        self._group_name = name

    def getGroupName(self) -> str:  # noqa: N802
        return self._group_name

    def setGroupDesc(self, desc: str) -> None:  # noqa: N802
        self._group_desc = desc

    def getGroupDesc(self) -> str:  # noqa: N802
        return self._group_desc

    # -- all-reduce ----------------------------------------------------------------------
    def allreduce(self, tensors, opts=c10d.AllreduceOptions()):
        self._add("all_reduce", 2 * (self._n - 1) / self._n * _nbytes(tensors))
        return self._inner.allreduce(tensors, opts)

    def allreduce_coalesced(self, tensors, opts=c10d.AllreduceCoalescedOptions()):
        self._add("all_reduce", 2 * (self._n - 1) / self._n * _nbytes(tensors))
        return self._inner.allreduce_coalesced(tensors, opts)

    # -- all-to-all ----------------------------------------------------------------------
    def _a2a_bytes(self, inp: torch.Tensor, in_splits) -> float:
        if not inp.numel():
            return 0
        row = inp[0].numel() * inp.element_size() if inp.dim() else inp.element_size()
        rows = list(in_splits) if len(in_splits) else [inp.shape[0] // self._n] * self._n
        return (sum(rows) - rows[self._rank]) * row

    def all_to_all_single(self, out, inp, out_splits, in_splits, opts=c10d.AllToAllOptions()):
        self._add("all_to_all", self._a2a_bytes(inp, in_splits))
        return self._inner.alltoall_base(out, inp, out_splits, in_splits, opts)

    def alltoall_base(self, out, inp, out_splits, in_splits, opts=c10d.AllToAllOptions()):
        return self.all_to_all_single(out, inp, out_splits, in_splits, opts)

    def alltoall(self, outs, inps, opts=c10d.AllToAllOptions()):
        self._add("all_to_all", _nbytes(t for i, t in enumerate(inps) if i != self._rank))
        return self._inner.alltoall(outs, inps, opts)

    # -- all-gather ----------------------------------------------------------------------
    def allgather(self, outs, inps, opts=c10d.AllgatherOptions()):
        self._add("all_gather", (self._n - 1) * _nbytes(inps))
        return self._inner.allgather(outs, inps, opts)

    def all_gather_single(self, out, inp, opts=c10d.AllgatherOptions()):
        self._add("all_gather", (self._n - 1) * _nbytes([inp]))
        return self._inner._allgather_base(out, inp, opts)

    def _allgather_base(self, out, inp, opts=c10d.AllgatherOptions()):
        return self.all_gather_single(out, inp, opts)

    def all_gather_single_coalesced(self, outs, inps, opts=c10d.AllgatherOptions()):
        self._add("all_gather", (self._n - 1) * _nbytes(inps))
        return self._inner.allgather_into_tensor_coalesced(outs, inps, opts)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    # -- reduce-scatter ------------------------------------------------------------------
    def reduce_scatter(self, outs, inps, opts=c10d.ReduceScatterOptions()):
        self._add("reduce_scatter", sum(_nbytes(t for i, t in enumerate(lst) if i != self._rank) for lst in inps))
        return self._inner.reduce_scatter(outs, inps, opts)

    def reduce_scatter_single(self, out, inp, opts=c10d.ReduceScatterOptions()):
        self._add("reduce_scatter", (self._n - 1) / self._n * _nbytes([inp]))
        return self._inner._reduce_scatter_base(out, inp, opts)

    def _reduce_scatter_base(self, out, inp, opts=c10d.ReduceScatterOptions()):
        return self.reduce_scatter_single(out, inp, opts)

    def reduce_scatter_single_coalesced(self, outs, inps, opts=c10d.ReduceScatterOptions()):
        self._add("reduce_scatter", (self._n - 1) / self._n * _nbytes(inps))
        return self._inner.reduce_scatter_tensor_coalesced(outs, inps, opts)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    # -- the rest ------------------------------------------------------------------------
    def broadcast(self, tensors, opts=c10d.BroadcastOptions()):
        self._add("broadcast", (self._n - 1) * _nbytes(tensors) if opts.rootRank == self._rank else 0)
        return self._inner.broadcast(tensors, opts)

    def gather(self, outs, inps, opts=c10d.GatherOptions()):
        self._add("gather", 0 if opts.rootRank == self._rank else _nbytes(inps))
        return self._inner.gather(outs, inps, opts)

    def scatter(self, outs, inps, opts=c10d.ScatterOptions()):
        self._add("scatter", _nbytes(t for lst in inps for t in lst) if opts.rootRank == self._rank else 0)
        return self._inner.scatter(outs, inps, opts)

    def reduce(self, tensors, opts=c10d.ReduceOptions()):
        self._add("reduce", 0 if opts.rootRank == self._rank else _nbytes(tensors))
        return self._inner.reduce(tensors, opts)

    def barrier(self, opts=c10d.BarrierOptions()):
        return self._inner.barrier(opts)

    def send(self, tensors, dst, tag):
        self._add("send", _nbytes(tensors))
        return self._inner.send(tensors, dst, tag)

    def recv(self, tensors, src, tag):
        return self._inner.recv(tensors, src, tag)


def _create(store, rank, world_size, timeout):
    return CountingProcessGroup(store, rank, world_size, timeout)


def _release() -> None:
    """Free the wrapped gloo backends while the interpreter is still alive. Left to interpreter
    shutdown, their worker threads were sometimes destroyed unjoined and the process aborted
    ("terminate called without an active exception") after a successful run. Registered with
    ``atexit`` before Lightning registers ``destroy_process_group``, so it runs after it."""
    for g in _groups:
        g._inner = None
    _groups.clear()


def register() -> None:
    """Make ``"counting"`` a c10d backend name (idempotent; done on ``import lightning_des``)."""
    if BACKEND not in dist.Backend.backend_list:
        dist.Backend.register_backend(BACKEND, _create, devices=["cpu"])
        atexit.register(_release)
