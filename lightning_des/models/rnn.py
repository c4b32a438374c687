"""Recurrent encoder-decoder parts shared by translation (``models.nmt``) and poetry
(``models.poetry``): the bidirectional GRU encoder, additive (Bahdanau) attention and beam
search (open-ended sentences for translation, fixed-length constrained lines for poetry)."""

from __future__ import annotations

import math
from typing import Callable

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


def length_normaliser(length: int, alpha: float, form: str = "power") -> float:
    """What a finished hypothesis' log-prob is divided by: ``length ** alpha`` (``power``) or
    GNMT's ``((5 + length) / 6) ** alpha`` (``gnmt``, Wu et al. 2016; JoeyNMT's and OpenNMT's form)."""
    if form == "power":
        return length ** alpha
    if form == "gnmt":
        return ((5 + length) / 6) ** alpha
    raise ValueError(f"length_norm must be 'power' or 'gnmt', got {form!r}")


def hypothesis_score(logp: float, length: int, coverage: torch.Tensor | None, length_penalty: float, coverage_penalty: float,
                     length_norm: str = "power") -> float:
    """``logp / length_normaliser(length) + coverage_penalty * sum_j log(min(coverage_j, 1))``
    (GNMT's coverage term over source positions; ``coverage`` is the attention summed over the
    hypothesis' steps, positions never attended (padding) left out)."""
    score = logp / length_normaliser(length, length_penalty, length_norm)
    if coverage_penalty and coverage is not None:
        c = coverage[coverage > 0]
        score += coverage_penalty * float(torch.log(c.clamp(max=1.0)).sum())
    return score


Step = Callable[[torch.Tensor, tuple], tuple]  # (previous tokens [n], state) -> (log-probs [n, V], state[, attention [n, S]])


def beam_search(step: Step, state: tuple, first: int, end: int, beam: int = 5, max_len: int = 100, *,
                allowed: list[torch.Tensor] | None = None, length_penalty: float = 0.0, coverage_penalty: float = 0.0,
                length_norm: str = "power", max_repeat: int | None = None, sample_top_k: int = 0,
                generator: torch.Generator | None = None) -> tuple[list[int], float]:
    """Beam search from token ``first``; returns (tokens without ``end``, score).

    ``step(prev_tokens [n], state) -> (log_probs [n, V], state)`` or ``(..., attention [n, S])``;
    ``state`` is a tuple of tensors whose first dimension is the hypothesis.

    * Open-ended (``allowed`` None; translation): at most ``max_len`` tokens; choosing ``end``
      finishes a hypothesis, scored by :func:`hypothesis_score`; the search stops once ``beam``
      hypotheses are finished and none of the open ones can still score better (``length_norm``:
      see :func:`length_normaliser`).
    * Fixed length (``allowed`` = one boolean mask per position; poetry): exactly
      ``len(allowed)`` tokens, position ``t`` drawn from ``allowed[t]``, then ``end``.

    ``max_repeat``: no token more than this many times in a hypothesis (unless nothing else is
    allowed). ``sample_top_k > 0``: one hypothesis, each token sampled from the ``k`` most likely
    allowed ones (``generator`` seeds it) instead of searching.
    """
    length_normaliser(1, length_penalty, length_norm)  # refuses an unknown form before any work
    fixed = allowed is not None
    steps = len(allowed) + 1 if fixed else max_len
    k = 1 if sample_top_k > 0 else beam
    ys, scores, hyps = torch.tensor([first]), torch.zeros(1), [[]]
    cover: torch.Tensor | None = None
    finished: list[tuple[float, list[int], float]] = []  # (score, tokens, log-prob)
    for t in range(steps):
        out = step(ys, state)
        logp, state = out[0], out[1]
        if coverage_penalty and len(out) > 2:
            cover = out[2] if cover is None else cover + out[2]
        if fixed:
            only_end = torch.zeros(logp.shape[1], dtype=torch.bool)
            only_end[end] = True
            mask = allowed[t] & ~only_end if t < len(allowed) else only_end
            logp = logp.masked_fill(~mask, float("-inf"))
        if max_repeat is not None:
            for i, h in enumerate(hyps):
                used = [x for x in set(h) if h.count(x) >= max_repeat]
                if used and torch.isfinite(logp[i]).sum() > len(used):
                    logp[i, used] = float("-inf")
        if sample_top_k > 0 and not (fixed and t == len(allowed)):
            top = logp[0].topk(min(sample_top_k, int(torch.isfinite(logp[0]).sum())))
            pick = int(torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator))
            cands = [(float(scores[0] + top.values[pick]), 0, int(top.indices[pick]))]
        else:
            flat = (scores[:, None] + logp).view(-1)
            top = flat.topk(min(2 * k, int(torch.isfinite(flat).sum())))
            V = logp.shape[1]
            cands = [(sc, ix // V, ix % V) for sc, ix in zip(top.values.tolist(), top.indices.tolist())]
        keep = []
        for sc, h, tok in cands:
            if tok == end:
                c = cover[h] if cover is not None else None
                finished.append((hypothesis_score(sc, len(hyps[h]) + 1, c, length_penalty, coverage_penalty, length_norm), hyps[h], sc))
            elif len(keep) < k:
                keep.append((sc, h, tok))
        if fixed:
            if t == len(allowed) or not keep:
                break
        else:
            best_open = max((sc for sc, _, _ in keep), default=-math.inf) / length_normaliser(t + 2, length_penalty, length_norm)
            # open hypotheses only lose log-prob; their coverage term can still rise to 0
            if not keep or len(finished) >= k and max(f[0] for f in finished) >= best_open:
                break
        idx = torch.tensor([h for _, h, _ in keep])
        hyps = [hyps[h] + [tok] for _, h, tok in keep]
        scores, ys = torch.tensor([sc for sc, _, _ in keep]), torch.tensor([tok for _, _, tok in keep])
        state = tuple(x.index_select(0, idx) for x in state)
        if cover is not None:
            cover = cover.index_select(0, idx)
    if not finished:  # open-ended search ran out of length
        finished = [(hypothesis_score(float(sc), max(len(h), 1), cover[i] if cover is not None else None, length_penalty,
                                      coverage_penalty, length_norm), h, float(sc)) for i, (sc, h) in enumerate(zip(scores.tolist(), hyps))]
    best = max(finished, key=lambda f: f[0])
    return best[1], best[0]


__all__ = ["BahdanauAttention", "BiGRUEncoder", "beam_search", "hypothesis_score", "length_normaliser"]
