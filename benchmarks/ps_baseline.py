"""A parameter-server-style embedding baseline for the communication benchmark.

Each table lives on one rank (its "server"; TorchRec's planner places them, as for DES). Every
step a worker (every rank) sends the *unique* ids its local batch needs to their servers
(tag ``ids``), pulls those rows (tag ``rows``), pools them locally, and in backward pushes the
rows' gradients back (tag ``grads``); the server applies SGD. The dense part is replicated and
all-reduced (DDP). Traffic goes through the same counting process group as DES and TorchRec.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from lightning_des.distributed.comm import comm_tag


def _a2a(send: Tensor, send_counts: list[int]) -> tuple[Tensor, list[int]]:
    """Variable-size all-to-all of a 1-D tensor (``send_counts[r]`` elements go to rank r)."""
    sc = torch.tensor(send_counts, dtype=torch.int64)
    rc = torch.empty_like(sc)
    dist.all_to_all_single(rc, sc)
    recv = torch.empty(int(rc.sum()), dtype=send.dtype)
    dist.all_to_all_single(recv, send.contiguous(), rc.tolist(), send_counts)
    return recv, rc.tolist()


class _PullPush(torch.autograd.Function):
    """Forward: pull the rows of every table's unique ids from their servers (one all-to-all
    for ids, one for rows). Backward: push the rows' gradients back; the server applies SGD."""

    @staticmethod
    def forward(ctx, anchor: Tensor, m: "PSEmbeddingBagCollection", uniq: list[Tensor]) -> Tensor:  # type: ignore[override]
        n, names = m.world, m.names
        counts = torch.tensor([len(u) for u in uniq], dtype=torch.int64)
        with comm_tag("ids"):
            all_counts = [torch.empty_like(counts) for _ in range(n)]
            dist.all_gather(all_counts, counts)  # every worker's per-table unique counts
            order = [[i for i, t in enumerate(names) if m.owner[t] == r] for r in range(n)]
            send = torch.cat([uniq[i] for r in range(n) for i in order[r]])
            asked, _ = _a2a(send, [int(sum(len(uniq[i]) for i in order[r])) for r in range(n)])
        # asked: for each worker q, my tables' ids in table order, sizes all_counts[q][i]
        mine = order[m.rank]
        pieces, off = [], 0
        for q in range(n):
            for i in mine:
                c = int(all_counts[q][i])
                pieces.append((q, i, asked[off : off + c]))
                off += c
        rows = [m.tables[names[i]][ids].reshape(-1) for _, i, ids in pieces]
        send_rows = [int(sum(p[2].numel() * m.dims[names[p[1]]] for p in pieces if p[0] == q)) for q in range(n)]
        with comm_tag("rows"):
            got, _ = _a2a(torch.cat(rows) if rows else torch.empty(0), send_rows)
        ctx.m, ctx.pieces, ctx.uniq, ctx.order = m, pieces, [len(u) for u in uniq], order
        # got: from each owner r, its tables (order[r]) for my unique ids; regroup per table
        out, off = [None] * len(names), 0
        for r in range(n):
            for i in order[r]:
                k = ctx.uniq[i] * m.dims[names[i]]
                out[i] = got[off : off + k]
                off += k
        return torch.cat(out)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        m, names, n = ctx.m, ctx.m.names, ctx.m.world
        sizes = [u * m.dims[t] for u, t in zip(ctx.uniq, names)]
        per_table = list(torch.split(g.contiguous(), sizes))
        send = torch.cat([per_table[i] for r in range(n) for i in ctx.order[r]])
        with comm_tag("grads"):
            got, _ = _a2a(send, [int(sum(sizes[i] for i in ctx.order[r])) for r in range(n)])
        off = 0
        with torch.no_grad():
            for q, i, ids in ctx.pieces:
                d = m.dims[names[i]]
                gr = got[off : off + ids.numel() * d].view(-1, d)
                off += ids.numel() * d
                m.tables[names[i]].index_add_(0, ids, gr, alpha=-m.lr)
        return torch.zeros_like(m.anchor), None, None


class PSEmbeddingBagCollection(nn.Module):
    """Drop-in for an ``EmbeddingBagCollection`` whose tables live on owner ranks.

    ``forward(kjt)`` returns ``{feature: (B_local, d)}`` like ``KeyedTensor.to_dict()``.
    """

    def __init__(self, ebc: EmbeddingBagCollection, owners: dict[str, int], lr: float = 0.05) -> None:
        super().__init__()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        cfgs = ebc.embedding_bag_configs()
        self.names = [c.name for c in cfgs]
        self.owner = {c.name: owners[c.name] for c in cfgs}
        self.dims = {c.name: c.embedding_dim for c in cfgs}
        self.feature = {c.name: c.feature_names[0] for c in cfgs}
        self.pooling = {c.name: "mean" if c.pooling == PoolingType.MEAN else "sum" for c in cfgs}
        self.tables = {t: ebc.embedding_bags[t].weight.detach().clone() for t in self.names if owners[t] == self.rank}
        self.lr = lr
        self.anchor = nn.Parameter(torch.zeros(1))  # a leaf, so backward reaches _PullPush

    def forward(self, kjt: KeyedJaggedTensor) -> dict[str, Tensor]:
        jts = [kjt[self.feature[t]] for t in self.names]
        uniq, inv = zip(*(torch.unique(jt.values(), return_inverse=True) for jt in jts))
        flat = _PullPush.apply(self.anchor, self, list(uniq))
        rows = torch.split(flat, [len(u) * self.dims[t] for u, t in zip(uniq, self.names)])
        return {
            self.feature[t]: F.embedding_bag(i, r.view(-1, self.dims[t]), jt.offsets()[:-1], mode=self.pooling[t])
            for t, i, r, jt in zip(self.names, inv, rows, jts)
        }


class PSNet(nn.Module):
    """``RecsysNet`` with parameter-server tables; ``head`` replicated (wrap in DDP)."""

    def __init__(self, net: nn.Module, owners: dict[str, dict[str, int]], lr: float = 0.05) -> None:
        super().__init__()
        self.head = net.head
        self.wide = PSEmbeddingBagCollection(net.wide, owners["wide"], lr) if net.wide is not None else None
        self.deep = PSEmbeddingBagCollection(net.deep, owners["deep"], lr) if net.deep is not None else None

    def forward(self, dense: Tensor, kjt: KeyedJaggedTensor) -> Tensor:
        wide = self.wide(kjt) if self.wide is not None else {}
        deep = self.deep(kjt) if self.deep is not None else {}
        return self.head(wide, deep, dense)
