"""GRU language models: the character LM baseline (whole poems) and the planner's keyword LM
(a poem's keyword sequence; predicts the next line's keyword from the previous ones)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_des.data.poems import PAD
from lightning_des.models.poetry.base import PoetryModule
from lightning_des.models.rnn import beam_search


class GRULanguageModel(PoetryModule):
    """Next-token GRU LM over ``batch["tokens"]`` (``<bos>`` first).

    Args: vocab_size (linked from the data module), embedding_dim, hidden, layers, dropout, lr.
    """

    def __init__(self, vocab_size: int = 0, embedding_dim: int = 128, hidden: int = 256, layers: int = 1, dropout: float = 0.1,
                 lr: float = 2e-3) -> None:
        super().__init__(vocab_size, lr)
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.gru = nn.GRU(embedding_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, vocab_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, V] and the final hidden state [layers, B, H]."""
        out, h = self.gru(self.drop(self.emb(tokens)), h)
        return self.proj(self.drop(out)), h

    def token_logits(self, batch):
        tokens = batch["tokens"]
        logits, _ = self(tokens[:, :-1])
        return logits, tokens[:, 1:]

    @torch.no_grad()
    def next_log_probs(self, prefix: list[int]) -> torch.Tensor:
        self.eval()
        logits, _ = self(torch.tensor([prefix]))
        return F.log_softmax(logits[0, -1], -1)

    @torch.no_grad()
    def generate_line(self, prefix: list[int], masks: list[torch.Tensor], end: int, beam: int = 5, **search: Any) -> tuple[list[int], float]:
        """Constrained beam search for the next line after ``prefix`` (which ends with the token
        that precedes the line: ``<bos>`` or ``<sep>``), closed by ``end``."""
        self.eval()
        _, h = self(torch.tensor([prefix[:-1]])) if len(prefix) > 1 else (None, None)

        def step(y, state):
            (hs,) = state
            logits, h2 = self(y[:, None], hs.transpose(0, 1).contiguous() if hs.numel() else None)
            return F.log_softmax(logits[:, -1], -1), (h2.transpose(0, 1),)

        h0 = h.transpose(0, 1) if h is not None else torch.zeros(1, 0)
        return beam_search(step, (h0,), prefix[-1], end, beam, allowed=masks, **search)
