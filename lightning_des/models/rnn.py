"""Recurrent encoder-decoder parts shared by translation (``models.nmt``) and poetry
(``models.poetry``): the bidirectional GRU encoder and additive (Bahdanau) attention."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD = 0  # the padding id of every text vocabulary here


class BiGRUEncoder(nn.Module):
    """Bidirectional GRU over embedded tokens; annotations ``[B, T, hidden]`` (``hidden // 2``
    per direction), padding positions skipped (packed) and returned as zeros."""

    def __init__(self, embedding_dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(embedding_dim, hidden // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(1).clamp(min=1).cpu()
        out, _ = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out


class BahdanauAttention(nn.Module):
    """Additive attention, ``a = softmax_j(v^T tanh(W q + U h_j))``, ``c = sum_j a_j h_j``; the
    keys ``U h_j`` are computed once per source (``init_state``), no other state across steps."""

    def __init__(self, query_dim: int, memory_dim: int, hidden: int) -> None:
        super().__init__()
        self.w, self.u, self.v = nn.Linear(query_dim, hidden), nn.Linear(memory_dim, hidden, bias=False), nn.Linear(hidden, 1, bias=False)

    def init_state(self, memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.u(memory),)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """(context [B, H], attention [B, T], state)."""
        (keys,) = state
        a = torch.softmax(self.v(torch.tanh(keys + self.w(q)[:, None])).squeeze(-1).masked_fill(~mask, float("-inf")), -1)
        return (a[..., None] * memory).sum(1), a, state


__all__ = ["BahdanauAttention", "BiGRUEncoder"]
