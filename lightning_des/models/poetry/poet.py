"""Planning-based quatrain generation: plan four keywords from an intent, then write each line
from its keyword and the lines before it.

Planner: keywords of the intent (jieba words with noun-like tags; a word the corpus does not
know falls back to its longest known pieces) ranked by TextRank on the intent's own word graph (window 5, damping 0.85),
ties broken by the corpus TextRank score; fewer than four are **expanded** with the keyword LM
(the most likely next keyword given those so far, never repeating) or, without one, by
knowledge from the corpus: the keyword co-occurring most often with the plan so far in training
poems' plans, weighted by its TextRank score.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_des.data.poems import BOS, EOS, NOKW, SEP, SPECIALS, UNK, CharVocab, KeywordIndex, candidates, segment
from lightning_des.models.poetry.constraints import QuatrainConstraints
from lightning_des.models.poetry.generator import LineGenerator
from lightning_des.models.poetry.lm import GRULanguageModel
from lightning_des.data.textrank import textrank


@dataclass
class Planner:
    keywords: KeywordIndex
    keyword_vocab: list[str]
    keyword_lm: GRULanguageModel | None = None
    cooccurrence: dict[str, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keyword_ids = {k: i for i, k in enumerate(self.keyword_vocab)}

    @classmethod
    def from_plans(cls, keywords: KeywordIndex, keyword_vocab: list[str], plans: list[list[str]],
                   keyword_lm: GRULanguageModel | None = None) -> "Planner":
        co: dict[str, Counter] = {}
        for plan in plans:
            for a in plan:
                for b in plan:
                    if a != b:
                        co.setdefault(a, Counter())[b] += 1
        return cls(keywords, keyword_vocab, keyword_lm, co)

    def extract(self, intent: str, k: int = 4) -> list[str]:
        """Up to ``k`` keywords of ``intent``, best first."""
        words = segment([intent], cache=False)[0] if intent.strip() else []
        cands = candidates(words) or [w for w, _ in words if all("\u4e00" <= c <= "\u9fff" for c in w)]
        known: list[str] = []
        for w in cands:
            if w in self.keywords.scores:
                known.append(w)
            else:  # an unknown word (or a wrong segmentation): its longest known pieces
                known += self._known_pieces(w)
        known = list(dict.fromkeys(known))
        local = textrank([known], window=5) if len(known) > 1 else {w: 1.0 for w in known}
        return sorted(known, key=lambda w: (-round(local[w], 9), -self.keywords.scores[w], w))[:k]

    def _known_pieces(self, word: str) -> list[str]:
        out, i = [], 0
        while i < len(word):
            for j in range(len(word), i, -1):
                if word[i:j] in self.keywords.scores:
                    out.append(word[i:j])
                    i = j
                    break
            else:
                i += 1
        return out

    def expand(self, plan: list[str], n: int = 4) -> list[str]:
        plan = list(plan)
        while len(plan) < n:
            nxt = self._next_lm(plan) if self.keyword_lm is not None else self._next_cooccurrence(plan)
            if nxt is None:
                break
            plan.append(nxt)
        return plan

    def _next_lm(self, plan: list[str]) -> str | None:
        stoi = self.keyword_ids
        logp = self.keyword_lm.next_log_probs([BOS] + [stoi.get(k, UNK) for k in plan]).clone()
        logp[: len(SPECIALS)] = float("-inf")
        for k in plan:
            if k in stoi:
                logp[stoi[k]] = float("-inf")
        return self.keyword_vocab[int(logp.argmax())] if torch.isfinite(logp).any() else None

    def _next_cooccurrence(self, plan: list[str]) -> str | None:
        votes: Counter = Counter()
        for k in plan:
            votes.update(self.cooccurrence.get(k, Counter()))
        pool = [w for w in votes if w not in plan] or [w for w in self.keyword_vocab[len(SPECIALS):] if w not in plan]
        if not pool:
            return None
        return max(pool, key=lambda w: (votes[w] * self.keywords.scores.get(w, 0.0), self.keywords.scores.get(w, 0.0), w))

    def plan(self, intent: str, n: int = 4) -> list[str]:
        return self.expand(self.extract(intent, n), n)


@dataclass
class GeneratedPoem:
    plan: list[str]
    lines: list[str]
    score: float

    def __str__(self) -> str:
        return "plan: " + " / ".join(self.plan) + "\n" + "\n".join(self.lines)


class PlanningPoetGenerator:
    """Intent -> plan -> quatrain. ``generate`` decodes each line with constrained beam search
    (exact length, known characters only, rhyme and level tone on lines 2 and 4)."""

    def __init__(self, generator: LineGenerator, vocab: CharVocab, planner: Planner) -> None:
        self.generator, self.vocab, self.planner = generator.eval(), vocab, planner
        self.constraints = QuatrainConstraints(vocab.itos)

    @classmethod
    def from_checkpoints(cls, generator_ckpt: str | Path, keyword_lm_ckpt: str | Path | None = None) -> "PlanningPoetGenerator":
        """From a ``LineGenerator`` checkpoint (its data module state holds the vocabularies,
        TextRank scores and training plans) and optionally a keyword-LM checkpoint."""
        for p in (generator_ckpt, keyword_lm_ckpt):
            if p is not None and not Path(p).is_file():
                raise FileNotFoundError(f"checkpoint {p} not found")
        ckpt = torch.load(generator_ckpt, map_location="cpu", weights_only=False)
        state = ckpt.get("PoetryDataModule")
        if state is None:
            raise ValueError(f"{generator_ckpt} has no PoetryDataModule state: not a checkpoint of a poetry line generator")
        gen = LineGenerator.load_from_checkpoint(generator_ckpt, map_location="cpu")
        lm = GRULanguageModel.load_from_checkpoint(keyword_lm_ckpt, map_location="cpu") if keyword_lm_ckpt else None
        planner = Planner.from_plans(KeywordIndex(state["scores"]), state["keyword_vocab"], state["train_plans"], lm)
        return cls(gen, CharVocab(state["vocab"]), planner)

    def write(self, plan: list[str], chars: int = 7, rhyme: bool = True, tone: bool = True, beam: int = 5,
              use_keywords: bool = True, **search: Any) -> GeneratedPoem:
        """Write a quatrain for a given plan (four keywords); ``search``: ``max_repeat``,
        ``sample_top_k``, ``generator`` (see :func:`lightning_des.models.rnn.beam_search`)."""
        if chars not in (5, 7):
            raise ValueError(f"chars must be 5 or 7, got {chars}")
        lines: list[str] = []
        total = 0.0
        for i in range(4):
            ctx = [BOS] + [t for x in lines for t in self.vocab.encode(x) + [SEP]]
            kw = (self.vocab.encode(plan[i]) if i < len(plan) else []) if use_keywords else [NOKW]
            kw = [t for t in kw if t != UNK] or [NOKW]
            tokens, score = self.generator.generate_line(kw, ctx, self.constraints.masks(chars, i, lines, rhyme, tone), beam, **search)
            lines.append(self.vocab.decode(tokens))
            total += score
        return GeneratedPoem(list(plan), lines, total)

    def generate(self, intent: str, chars: int = 7, rhyme: bool = True, tone: bool = True, beam: int = 5) -> GeneratedPoem:
        return self.write(self.planner.plan(intent), chars, rhyme, tone, beam)


def lm_poem(lm: GRULanguageModel, vocab: CharVocab, chars: int = 7, rhyme: bool = True, tone: bool = True, beam: int = 5,
            **search: Any) -> list[str]:
    """The character-LM baseline: a quatrain line by line under the same constraints."""
    cons = QuatrainConstraints(vocab.itos)
    prefix, lines = [BOS], []
    for i in range(4):
        tokens, _ = lm.generate_line(prefix, cons.masks(chars, i, lines, rhyme, tone), EOS if i == 3 else SEP, beam, **search)
        lines.append(vocab.decode(tokens))
        prefix = prefix + tokens + [SEP]
    return lines
