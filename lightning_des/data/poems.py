"""Tang quatrains for planning-based poetry generation.

Corpus: ``assets/tang_quatrains.tsv.gz`` (13,978 quatrains from npm ``chinese-poetry``, MIT,
Simplified with OpenCC; built by ``scripts/build_poems.py``). Words come from jieba (with
part-of-speech tags); each line's **keyword** is its candidate word (a noun-like word, see
``KEYWORD_POS``) with the highest corpus TextRank score, as in planning-based generation.

:class:`PoetryDataModule` serves one of three tasks from the same deterministic split:
``lines`` (keyword + preceding lines -> line, for the line generator; ``use_keywords=False``
gives the no-planning baseline), ``poems`` (whole poems, for the character language model)
and ``keywords`` (each poem's 4 keywords in order, for the planner's keyword model).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_des.data.cache import default_cache_dir
from lightning_des.data.text import collate, fitted

log = logging.getLogger(__name__)
ASSET = Path(__file__).resolve().parent / "assets" / "tang_quatrains.tsv.gz"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>", "<nokw>"]
PAD, UNK, BOS, EOS, SEP, NOKW = range(len(SPECIALS))
# jieba tags of words that may be keywords: nouns, places, names, time and space words
KEYWORD_POS = frozenset({"n", "nr", "ns", "nt", "nz", "ng", "nrt", "nrfg", "s", "t", "tg"})
Task = Literal["lines", "poems", "keywords"]


class MalformedPoemError(ValueError):
    """A corpus row that is not a quatrain; names the file and 1-based line."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True)
class Poem:
    id: str
    author: str
    title: str
    lines: tuple[str, ...]

    @property
    def n_chars(self) -> int:
        return len(self.lines[0])


def load_quatrains(path: str | Path | None = None, chars: int | None = None) -> list[Poem]:
    """Read the corpus (``id, author, title, l1|l2|l3|l4``); ``chars`` 5 or 7 keeps one form."""
    path = Path(path or ASSET)
    if not path.is_file():
        raise FileNotFoundError(f"poem corpus {path} not found")
    if chars not in (None, 5, 7):
        raise ValueError(f"chars must be 5, 7 or None, got {chars!r}")
    opener = gzip.open if path.suffix == ".gz" else open
    poems = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, row in enumerate(f, 1):
            parts = row.rstrip("\n").split("\t")
            if len(parts) != 4:
                raise MalformedPoemError(path, i, f"expected 4 tab-separated columns, got {len(parts)}")
            lines = tuple(parts[3].split("|"))
            if len(lines) != 4 or len({len(x) for x in lines}) != 1 or len(lines[0]) not in (5, 7):
                raise MalformedPoemError(path, i, f"not a quatrain of 5- or 7-character lines: {parts[3]!r}")
            if chars is None or len(lines[0]) == chars:
                poems.append(Poem(parts[0], parts[1], parts[2], lines))
    return poems


def split_poems(poems: Sequence[Poem], seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)):
    """Deterministic train/val/test split (a seeded permutation)."""
    if abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    idx = np.random.default_rng(seed).permutation(len(poems))
    a = int(round(fractions[0] * len(poems)))
    b = a + int(round(fractions[1] * len(poems)))
    return [poems[i] for i in idx[:a]], [poems[i] for i in idx[a:b]], [poems[i] for i in idx[b:]]


class CharVocab:
    """Characters by training frequency after the special tokens."""

    def __init__(self, itos: Sequence[str]) -> None:
        if list(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError("a CharVocab starts with the special tokens")
        self.itos = list(itos)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Sequence[str], min_freq: int = 1) -> "CharVocab":
        from collections import Counter

        counts = Counter(c for t in texts for c in t)
        return cls(SPECIALS + [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, UNK) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if i >= len(SPECIALS))


def segment(lines: Sequence[str], cache: bool = True) -> list[list[tuple[str, str]]]:
    """jieba (word, POS) per line. Cached under the data directory by content hash (the whole
    corpus takes ~40 s once)."""
    key = hashlib.sha1("\n".join(lines).encode()).hexdigest()[:16]
    path = default_cache_dir() / "poems" / f"segmented-{key}.json.gz"
    if cache and path.is_file():
        return [[tuple(p) for p in s] for s in json.loads(gzip.decompress(path.read_bytes()))]
    from lightning_des._extras import require

    jieba = require("jieba", "poetry")
    pseg = require("jieba.posseg", "poetry")

    jieba.setLogLevel(logging.WARNING)
    out = [[(p.word, p.flag) for p in pseg.lcut(x)] for x in lines]
    if cache and len(lines) > 1000:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(json.dumps(out, ensure_ascii=False).encode()))
        tmp.replace(path)
    return out


def candidates(words: Sequence[tuple[str, str]]) -> list[str]:
    """Words of a segmented line that may be keywords (noun-like tags, Chinese characters)."""
    return [w for w, pos in words if pos in KEYWORD_POS and all("\u4e00" <= c <= "\u9fff" for c in w)]


class KeywordIndex:
    """Corpus TextRank scores over candidate words (co-occurrence within a poem), the keyword
    of each line, and the keyword vocabulary."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    @classmethod
    def fit(cls, segmented_poems: Sequence[Sequence[Sequence[tuple[str, str]]]], damping: float = 0.85) -> "KeywordIndex":
        from lightning_des.data.textrank import textrank

        units = [[w for line in poem for w in candidates(line)] for poem in segmented_poems]
        return cls(textrank(units, damping=damping))

    def line_keyword(self, words: Sequence[tuple[str, str]]) -> str:
        """The line's candidate with the highest score; else its best-scored word (any tag)."""
        cands = [w for w in candidates(words) if w in self.scores]
        if cands:
            return max(cands, key=lambda w: (self.scores[w], w))
        pool = [w for w, _ in words]
        return max(pool, key=lambda w: (self.scores.get(w, 0.0), len(w), w))


class _Examples(torch.utils.data.Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class PoetryDataModule(pl.LightningDataModule):
    """Tang quatrains for one task (see the module docstring).

    Args:
        task: ``lines``, ``poems`` or ``keywords``.
        chars: 5, 7 or None (both forms).
        max_poems: keep the first N poems of the corpus order (tests, quick runs).
        use_keywords: ``lines`` only; False replaces every keyword by ``<nokw>``.
        path: corpus file (default: the committed asset).
    """

    def __init__(self, task: Task = "lines", chars: int | None = None, batch_size: int = 128, seed: int = 0,
                 max_poems: int | None = None, use_keywords: bool = True, min_freq: int = 1, num_workers: int = 0,
                 path: str | None = None) -> None:
        super().__init__()
        if task not in ("lines", "poems", "keywords"):
            raise ValueError(f"task must be 'lines', 'poems' or 'keywords', got {task!r}")
        self.task, self.batch_size, self.num_workers, self.use_keywords = task, batch_size, num_workers, use_keywords
        self.path, self.chars, self.max_poems, self.seed, self.min_freq = path, chars, max_poems, seed, min_freq

    train_poems = fitted()
    val_poems = fitted()
    test_poems = fitted()
    vocab = fitted()
    segmented = fitted()
    keywords = fitted()
    plans = fitted()
    keyword_vocab = fitted()

    def _fit(self) -> dict:
        """Load and split the corpus, build the vocabularies, segment (jieba) and plan (on first use, once)."""
        from collections import Counter

        poems = load_quatrains(self.path, self.chars)[: self.max_poems]
        if len(poems) < 3:
            raise ValueError(f"need at least 3 poems, got {len(poems)}")
        train, val, test = split_poems(poems, self.seed)
        seg = segment([x for p in poems for x in p.lines])
        segmented = {p.id: seg[4 * i: 4 * i + 4] for i, p in enumerate(poems)}
        keywords = KeywordIndex.fit([segmented[p.id] for p in train])
        plans = {p.id: [keywords.line_keyword(s) for s in segmented[p.id]] for p in poems}
        counts = Counter(k for p in train for k in plans[p.id])
        # keywords seen at least twice in training (rarer ones are mostly segmentation noise)
        return {"train_poems": train, "val_poems": val, "test_poems": test,
                "vocab": CharVocab.build([x for p in train for x in p.lines], self.min_freq),
                "segmented": segmented, "keywords": keywords, "plans": plans,
                "keyword_vocab": SPECIALS + sorted(k for k, n in counts.items() if n >= 2)}

    def state_dict(self) -> dict:
        """Saved in checkpoints: what generation needs without the corpus."""
        return {"vocab": self.vocab.itos, "keyword_vocab": self.keyword_vocab, "scores": self.keywords.scores,
                "train_plans": [self.plans[p.id] for p in self.train_poems], "task": self.task, "use_keywords": self.use_keywords}

    def load_state_dict(self, state: dict) -> None:
        if state.get("vocab") != self.vocab.itos:
            raise ValueError("the checkpoint's character vocabulary differs from this data module's (other corpus, split or min_freq)")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) if self.task != "keywords" else len(self.keyword_vocab)

    def examples(self, poem: Poem) -> list[dict]:
        v = self.vocab
        if self.task == "poems":
            ids = [BOS] + [t for i, x in enumerate(poem.lines) for t in v.encode(x) + [SEP if i < 3 else EOS]]
            return [{"tokens": ids}]
        if self.task == "keywords":
            kstoi = {k: i for i, k in enumerate(self.keyword_vocab)}
            return [{"tokens": [BOS] + [kstoi.get(k, UNK) for k in self.plans[poem.id]]}]
        out = []
        for i, line in enumerate(poem.lines):
            ctx = [BOS] + [t for x in poem.lines[:i] for t in v.encode(x) + [SEP]]
            kw = v.encode(self.plans[poem.id][i]) if self.use_keywords else [NOKW]
            out.append({"keyword": kw, "context": ctx, "target": [BOS] + v.encode(line) + [EOS]})
        return out

    def _loader(self, poems: list[Poem], shuffle: bool) -> DataLoader:
        items = [e for p in poems for e in self.examples(p)]
        return DataLoader(_Examples(items), batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_poems, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_poems, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_poems, False)
