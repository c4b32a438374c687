"""Supernet embedding: every candidate width of every field, projected to a common width."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from lightning_des.adass.space import SizeSpace


class SupernetEmbedding(nn.Module):
    """Drop-in for a deep ``EmbeddingBagCollection`` during supernet training.

    Field f, candidate width ``d > 0``: an ``nn.EmbeddingBag(rows_f, d)`` (``embedding_bags``,
    so the recsys modules give it the sparse optimizer) and a projection ``P_fd`` (``dim x d``,
    no bias) to the common width ``dim`` the head expects; width 0 outputs zeros (the field is
    dropped: in a sum-over-fields head a zero embedding contributes nothing).

    In training mode each sample uses its own sub-network, ``self.choice`` (B, F) (set by the
    sampler before the step); in eval mode every sample uses ``self.eval_choice`` (F,),
    the largest candidates unless set. ``forward(kjt)`` returns a ``KeyedTensor`` like an EBC.
    """

    def __init__(self, space: SizeSpace, dim: int, multi_hot: Sequence[str] = (), init_bound: float = 0.05) -> None:
        super().__init__()
        self.space, self.dim = space, dim
        self.embedding_bags = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        for f, n in zip(space.fields, space.cardinalities):
            for d in space.candidates:
                if d == 0:
                    continue
                bag = nn.EmbeddingBag(n, d, mode="mean" if f in multi_hot else "sum", include_last_offset=True)
                nn.init.uniform_(bag.weight, -init_bound, init_bound)
                self.embedding_bags[self.key(f, d)] = bag
                self.projections[self.key(f, d)] = nn.Linear(d, dim, bias=False)
        self.register_buffer("eval_choice", torch.tensor(space.largest()), persistent=False)
        self.choice: Tensor | None = None

    @staticmethod
    def key(field: str, width: int) -> str:
        return f"{field}_d{width}"

    def candidate_outputs(self, kjt: KeyedJaggedTensor) -> dict[str, Tensor]:
        """``{field: (B, C, dim)}``: the projected pooled embedding of every candidate."""
        out = {}
        for f in self.space.fields:
            jt = kjt[f]
            values, offsets = jt.values(), jt.offsets()
            cands = []
            for d in self.space.candidates:
                if d == 0:
                    cands.append(torch.zeros(offsets.numel() - 1, self.dim, dtype=self.projections_dtype, device=values.device))
                else:
                    k = self.key(f, d)
                    cands.append(self.projections[k](self.embedding_bags[k](values, offsets)))
            out[f] = torch.stack(cands, dim=1)
        return out

    @property
    def projections_dtype(self) -> torch.dtype:
        return next(iter(self.projections.parameters())).dtype

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        outs = self.candidate_outputs(kjt)
        batch = kjt.stride()
        if self.training:
            if self.choice is None or self.choice.shape != (batch, self.space.num_fields):
                raise RuntimeError(f"set SupernetEmbedding.choice to a ({batch}, {self.space.num_fields}) index matrix before a training step")
            choice = self.choice.to(outs[self.space.fields[0]].device)
        else:
            choice = self.eval_choice.expand(batch, -1)
        rows = torch.arange(batch, device=choice.device)
        pooled = [outs[f][rows, choice[:, i]] for i, f in enumerate(self.space.fields)]  # each (B, dim)
        return KeyedTensor.from_tensor_list(list(self.space.fields), pooled)
