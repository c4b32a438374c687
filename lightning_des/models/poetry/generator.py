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

from lightning_des.data.poems import BOS, EOS, PAD
from lightning_des.models.poetry.base import PoetryModule
from lightning_des.models.rnn import BahdanauAttention, BiGRUEncoder, beam_search


class LineGenerator(PoetryModule):
    """Args: vocab_size (linked from the data module), embedding_dim, hidden, dropout, lr."""

    def __init__(self, vocab_size: int = 0, embedding_dim: int = 128, hidden: int = 256, dropout: float = 0.1, lr: float = 2e-3) -> None:
        super().__init__(vocab_size, lr)
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.kw_enc, self.ctx_enc = BiGRUEncoder(embedding_dim, hidden), BiGRUEncoder(embedding_dim, hidden)
        self.init = nn.Linear(hidden, hidden)
        self.att = BahdanauAttention(hidden, hidden, hidden)
        self.cell = nn.GRUCell(embedding_dim + hidden, hidden)
        self.out = nn.Linear(2 * hidden + embedding_dim, hidden)
        self.proj = nn.Linear(hidden, vocab_size)
        self.drop = nn.Dropout(dropout)

    LEGACY = {"att_mem.": "att.u.", "att_state.": "att.w.", "att_v.": "att.v."}  # names before the shared attention

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before the shared :class:`BahdanauAttention` are renamed (same weights)."""
        sd = checkpoint.get("state_dict", {})
        for k in list(sd):
            for old, new in self.LEGACY.items():
                if k.startswith(old):
                    sd[new + k[len(old):]] = sd.pop(k)

    def encode(self, keyword: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(memory [B, M, H], its attention keys, mask [B, M], initial state [B, H])."""
        memory = torch.cat([self.kw_enc(self.drop(self.emb(keyword)), keyword), self.ctx_enc(self.drop(self.emb(context)), context)], 1)
        mask = torch.cat([keyword != PAD, context != PAD], 1)
        mean = (memory * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        (keys,) = self.att.init_state(memory)
        return memory, keys, mask, torch.tanh(self.init(mean))

    def decode_step(self, y: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step from previous token ``y`` [n]; state = (s, memory, keys, mask). Logits [n, V]."""
        s, memory, keys, mask = state
        c, _, _ = self.att(s, memory, mask, (keys,))
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
        """Constrained beam search for one line: one mask per character (see
        :func:`lightning_des.models.rnn.beam_search`)."""
        self.eval()
        memory, keys, mask, s = self.encode(torch.tensor([keyword]), torch.tensor([context]))

        def step(y, state):
            logits, state = self.decode_step(y, state)
            return F.log_softmax(logits, -1), state

        return beam_search(step, (s, memory, keys, mask), BOS, EOS, beam, allowed=masks, **search)
