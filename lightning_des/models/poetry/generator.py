"""The line generator of planning-based poetry generation: an attention encoder-decoder (GRU).

Line ``i`` is generated from its keyword and all preceding lines: a bidirectional GRU encodes
the keyword's characters, another the preceding text (``<bos> line1 <sep> ... line_{i-1} <sep>``);
both sequences of annotations form the attention memory (Bahdanau, additive). The decoder GRU
starts from a projection of the memory's mean and at each step reads a context vector from the
memory with its previous state. With ``<nokw>`` as the keyword (data ``use_keywords=False``)
the same network is the no-planning baseline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lightning_des.data.poems import BOS, EOS, PAD
from lightning_des.models.poetry.base import PoetryModule
from lightning_des.models.poetry.constraints import constrained_beam


class BiEncoder(nn.Module):
    def __init__(self, embedding_dim: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(embedding_dim, hidden // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(1).clamp(min=1).cpu()
        out, _ = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return out


class LineGenerator(PoetryModule):
    """Args: vocab_size (linked from the data module), embedding_dim, hidden, dropout, lr."""

    def __init__(self, vocab_size: int = 0, embedding_dim: int = 128, hidden: int = 256, dropout: float = 0.1, lr: float = 2e-3) -> None:
        super().__init__(vocab_size, lr)
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.kw_enc, self.ctx_enc = BiEncoder(embedding_dim, hidden), BiEncoder(embedding_dim, hidden)
        self.init = nn.Linear(hidden, hidden)
        self.att_mem, self.att_state, self.att_v = nn.Linear(hidden, hidden, bias=False), nn.Linear(hidden, hidden), nn.Linear(hidden, 1, bias=False)
        self.cell = nn.GRUCell(embedding_dim + hidden, hidden)
        self.out = nn.Linear(2 * hidden + embedding_dim, hidden)
        self.proj = nn.Linear(hidden, vocab_size)
        self.drop = nn.Dropout(dropout)

    def encode(self, keyword: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(memory [B, M, H], its attention keys, mask [B, M], initial state [B, H])."""
        memory = torch.cat([self.kw_enc(self.drop(self.emb(keyword)), keyword), self.ctx_enc(self.drop(self.emb(context)), context)], 1)
        mask = torch.cat([keyword != PAD, context != PAD], 1)
        mean = (memory * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return memory, self.att_mem(memory), mask, torch.tanh(self.init(mean))

    def attend(self, s: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self.att_v(torch.tanh(keys + self.att_state(s)[:, None])).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (torch.softmax(e, -1)[..., None] * memory).sum(1)

    def decode_step(self, y: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step from previous token ``y`` [n]; state = (s, memory, keys, mask). Logits [n, V]."""
        s, memory, keys, mask = state
        c = self.attend(s, memory, keys, mask)
        e = self.drop(self.emb(y))
        s = self.cell(torch.cat([e, c], -1), s)
        logits = self.proj(self.drop(torch.tanh(self.out(torch.cat([s, c, e], -1)))))
        return logits, (s, memory, keys, mask)

    def token_logits(self, batch):
        memory, keys, mask, s = self.encode(batch["keyword"], batch["context"])
        target = batch["target"]
        state, logits = (s, memory, keys, mask), []
        for t in range(target.shape[1] - 1):
            lt, state = self.decode_step(target[:, t], state)
            logits.append(lt)
        return torch.stack(logits, 1), target[:, 1:]

    @torch.no_grad()
    def generate_line(self, keyword: list[int], context: list[int], masks: list[torch.Tensor], beam: int = 5,
                      **search: Any) -> tuple[list[int], float]:
        """Constrained beam search for one line (see :func:`constrained_beam`)."""
        self.eval()
        memory, keys, mask, s = self.encode(torch.tensor([keyword]), torch.tensor([context]))

        def step(y, state):
            logits, state = self.decode_step(y, state)
            return F.log_softmax(logits, -1), state

        tokens, score, _ = constrained_beam(step, (s, memory, keys, mask), BOS, masks, EOS, beam, **search)
        return tokens, score
