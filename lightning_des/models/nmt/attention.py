"""Attention readers over the encoder annotations, one step at a time.

* :class:`BahdanauAttention` (shared with poetry, in :mod:`lightning_des.models.rnn`): additive
  attention, ``a = softmax_j(v^T tanh(W q + U h_j))``, ``c = sum_j a_j h_j``; no state across steps.
* :class:`KVMemoryAttention` (KVMemAtt): a fixed value memory ``V = {h_j}`` and a key memory
  ``K`` (initialised to ``h_j``) that is rewritten at every read and carried to the next
  decoding step. Each step runs ``rounds`` rounds of: address with the key memory,
  ``a = softmax_j(v^T tanh(W q + U K_j))``; read ``c = sum_j a_j V_j``; update
  ``K_j <- K_j * (1 - a_j F) + a_j A`` with forget ``F = sigmoid(W_F q)`` and add
  ``A = tanh(W_A q)``; refine ``q <- tanh(W_r [q; c])`` (``refine="tanh"``) or
  ``q <- GRU(c, q)`` (``refine="gru"``: the read context is the GRU's input, the query its
  state). The last round's ``c`` and ``a`` are the step's context and attention.
``update=False`` (an ablation, not the method) never rewrites ``K``: multi-round attention with
query refinement and no memory, which isolates what the key-memory update contributes.

Choices where the paper is not explicit (documented here, tested): ``K`` starts as a copy of
``h_j`` (same width); ``F``/``A`` are computed from the round's query (one vector for every
slot, each slot scaled by its own weight ``a_j``); the refinement is one tanh layer by default, a
GRU cell with ``refine="gru"`` (the reading of the paper the issue suggests). Only the paper's
abstract and a third-party summary could be consulted here; they confirm multi-round address /
read / update with FORGET and ADD operations on the key memory and an EOS-attention training
objective (``Seq2Seq(eos_weight=...)``), not the equations, so neither refinement is claimed to be
the paper's; the forget layer's bias starts at ``forget_bias`` (0 = ``F`` about 0.5 at the
start; negative values start with little erasing, closer to plain additive attention).
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_des.models.rnn import BahdanauAttention

__all__ = ["BahdanauAttention", "KVMemoryAttention"]


class KVMemoryAttention(nn.Module):
    def __init__(self, query_dim: int, memory_dim: int, hidden: int, rounds: int = 2, forget_bias: float = 0.0,
                 refine: str = "tanh", update: bool = True) -> None:
        super().__init__()
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if refine not in ("tanh", "gru"):
            raise ValueError(f"refine must be 'tanh' or 'gru', got {refine!r}")
        self.rounds = rounds
        self.w, self.u, self.v = nn.Linear(query_dim, hidden), nn.Linear(memory_dim, hidden, bias=False), nn.Linear(hidden, 1, bias=False)
        self.forget, self.add = nn.Linear(query_dim, memory_dim), nn.Linear(query_dim, memory_dim)
        nn.init.constant_(self.forget.bias, forget_bias)
        self.refine = nn.Linear(query_dim + memory_dim, query_dim) if refine == "tanh" else nn.GRUCell(memory_dim, query_dim)
        self.refine_kind = refine
        self.update = update

    def init_state(self, memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (memory.clone(),)  # K^0 = h

    def forward(self, q: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, state: tuple[torch.Tensor, ...]):
        (keys,) = state
        for _ in range(self.rounds):
            a = torch.softmax(self.v(torch.tanh(self.u(keys) + self.w(q)[:, None])).squeeze(-1).masked_fill(~mask, float("-inf")), -1)
            c = (a[..., None] * memory).sum(1)
            if self.update:
                f, add = torch.sigmoid(self.forget(q)), torch.tanh(self.add(q))
                w = (a * mask)[..., None]
                keys = keys * (1 - w * f[:, None]) + w * add[:, None]
            q = torch.tanh(self.refine(torch.cat([q, c], -1))) if self.refine_kind == "tanh" else self.refine(c, q)
        return c, a, (keys,)
