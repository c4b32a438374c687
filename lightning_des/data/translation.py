"""Parallel corpora for neural machine translation and their data module.

``lightning-des data prepare de-en|zh-en`` builds the large corpora of
:mod:`lightning_des.data.parallel` (LibreOffice help and UI catalogs, GCC, util-linux, the
Debian Reference; for de-en also the Ding dictionary's sentence pairs) from Debian packages
fetched with ``apt-get download`` (the registry's own client) and extracted with ``dpkg -x``,
into ``<cache>/translation/<pair>/{train,valid,test}.tsv`` with fixed, per-domain test sets.
Nothing is downloaded at training time.

Sources read in :mod:`lightning_des.data.parallel`, among them:

* Ding (``trans-de-en`` 1.9-6, ``usr/share/trans/de-en``, GPL-2+): a line is
  ``de | de2 :: en | en2``; sub-entries at the same position are translations. Kept: pairs
  whose two sides are sentences (end in ``.?!``, >= 4 words, no ``;`` alternatives) after
  removing ``{...}``/``[...]`` tags.
* Debian Reference (``debian-reference-en``/``-de``/``-zh-cn`` 2.100, GPL-2+): paragraphs
  aligned one to one per chapter (po4a translations); chapters whose paragraph counts differ
  are skipped.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_des.data.cache import default_cache_dir
from lightning_des.data.text import collate, fitted

log = logging.getLogger(__name__)
PAIRS = ("de-en", "zh-en")


def _fetch_debs(packages: tuple[str, ...], dest: Path) -> None:
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found: preparing translation data needs a Debian/Ubuntu system")
    for pkg in packages:
        proc = subprocess.run(["apt-get", "download", pkg], cwd=dest, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"apt-get download {pkg} failed (run `apt-get update` first?): {proc.stderr.strip()[-500:]}")
    for deb in sorted(dest.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(dest / "root")], check=True)


def prepare_translation(pair: str, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Build ``<cache>/translation/<pair>/`` (train/valid/test TSV and ``stats.json``) once;
    returns the directory."""
    from lightning_des.data.parallel import build, sources

    if pair not in PAIRS:
        raise ValueError(f"unknown language pair {pair!r}; known: {list(PAIRS)}")
    out = Path(cache_dir or default_cache_dir()) / "translation" / pair
    if (out / "stats.json").is_file() and not force:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _fetch_debs(tuple(p for pkgs in sources(pair).values() for p in pkgs), tmp)
        info = build(pair, tmp / "root", out)
    log.info("%s: %s -> %s", pair, info["splits"], out)
    return out


# --- data module ----------------------------------------------------------------------------

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``source TAB target`` lines; a line without exactly one tab raises naming the line."""
    from lightning_des.data.parallel import read_fields

    return read_fields(path, ("source", "target"))


class SubwordTokenizer:
    """A SentencePiece unigram model (ids: 0 pad, 1 unk, 2 bos, 3 eos)."""

    def __init__(self, model_proto: bytes) -> None:
        from lightning_des._extras import require

        spm = require("sentencepiece", "nmt")

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, sentences: list[str], vocab_size: int, character_coverage: float = 1.0) -> "SubwordTokenizer":
        import io

        from lightning_des._extras import require

        spm = require("sentencepiece", "nmt")

        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
                                       model_type="unigram", character_coverage=character_coverage, pad_id=PAD, unk_id=UNK,
                                       bos_id=BOS, eos_id=EOS, hard_vocab_limit=False, num_threads=1, minloglevel=2)
        except RuntimeError as err:
            raise ValueError(f"SentencePiece could not train a vocabulary of {vocab_size}: {err}") from err
        return cls(buf.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i > EOS])


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length: shuffle, cut into chunks, sort each chunk by length, batch it,
    shuffle the batches (a new order every epoch, seeded). ``batch_size`` examples per batch,
    or with ``max_tokens`` as many as fit ``examples * longest length <= max_tokens`` (the
    padded token count; a longer single example forms its own batch)."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, max_tokens: int | None = None) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.lengths, self.batch_size, self.shuffle, self.seed, self.epoch = lengths, batch_size, shuffle, seed, 0
        self.max_tokens = max_tokens

    def _batches(self, epoch: int) -> list[list[int]]:
        if not self.lengths:
            return []
        g = np.random.default_rng(self.seed + epoch)
        idx = g.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        chunk = self.batch_size * 50 if self.max_tokens is None else max(int(50 * self.max_tokens / max(np.mean(self.lengths), 1)), 1)
        batches: list[list[int]] = []
        for c in range(0, len(idx), chunk):
            part = sorted(idx[c:c + chunk], key=lambda i: self.lengths[i])
            if self.max_tokens is None:
                batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
                continue
            cur: list[int] = []
            for i in part:  # ascending length: the newest example is the longest
                if cur and (len(cur) + 1) * self.lengths[i] > self.max_tokens:
                    batches.append(cur)
                    cur = []
                cur.append(i)
            if cur:
                batches.append(cur)
        order = g.permutation(len(batches)) if self.shuffle else range(len(batches))
        return [list(map(int, batches[i])) for i in order]

    def __iter__(self):
        batches = self._batches(self.epoch)
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        if self.max_tokens is None:
            return -(-len(self.lengths) // self.batch_size)
        return len(self._batches(self.epoch))  # the batches the next iteration yields


class TranslationDataModule(pl.LightningDataModule):
    """A parallel corpus with SentencePiece subwords per side and length-bucketed batches of
    ``{"src", "tgt"}`` (source ends with ``<eos>``, target is ``<bos> ... <eos>``).

    Args:
        pair: ``de-en`` or ``zh-en``: the prepared corpus with its fixed train/valid/test
            splits (``test_domains`` names each test pair's source domain).
        path: instead, any ``source TAB target`` file, split 80/10/10 at random (``seed``), or a
            directory laid out like a prepared corpus.
        reverse: translate target -> source instead.
        vocab_size: subword vocabulary per side (a maximum for small corpora).
        max_tokens: drop training pairs longer than this on either side (counted in the log).
        batch_tokens: form batches by padded token count (at most this many) instead of
            ``batch_size`` examples.
        max_pairs: keep the first N (training) pairs (tests, quick runs).
    """

    def __init__(self, pair: str = "de-en", path: str | None = None, reverse: bool = False, vocab_size: int = 8000,
                 max_tokens: int = 64, batch_size: int = 64, seed: int = 0, max_pairs: int | None = None,
                 num_workers: int = 0, batch_tokens: int | None = None) -> None:
        super().__init__()
        if path is None and pair not in PAIRS:
            raise ValueError(f"unknown language pair {pair!r}; known: {sorted(PAIRS)} (or give path=)")
        self.source = Path(path) if path else default_cache_dir() / "translation" / pair
        self.prepared = path is None or self.source.is_dir()  # a corpus directory (else one TSV)
        self.pair, self.batch_size, self.seed, self.num_workers = pair, batch_size, seed, num_workers
        self.reverse, self.vocab_size, self.max_pairs, self.max_tokens = reverse, vocab_size, max_pairs, max_tokens
        self.batch_tokens = batch_tokens

    train_pairs = fitted()
    val_pairs = fitted()
    test_pairs = fitted()
    test_domains = fitted()
    src_tok = fitted()
    tgt_tok = fitted()

    def _fit(self) -> dict:
        """Read the corpus, split it, train both subword models (on first use, once)."""
        if self.prepared:  # fixed splits
            from lightning_des.data.parallel import read_tsv

            splits = {name: read_tsv(self.source / f"{name}.tsv") for name in ("train", "valid", "test")}
            domains = [p.domain for p in splits["test"]]
            train, val, test = ([(p.src, p.tgt) for p in splits[n]] for n in ("train", "valid", "test"))
            train = train[: self.max_pairs]
        else:
            pairs = read_pairs(self.source)[: self.max_pairs]
            if len(pairs) < 3:
                raise ValueError(f"need at least 3 sentence pairs, got {len(pairs)}")
            idx = np.random.default_rng(self.seed).permutation(len(pairs))
            a, b = int(0.8 * len(pairs)), int(0.9 * len(pairs))
            train, val, test = ([pairs[i] for i in idx[s]] for s in (slice(0, a), slice(a, b), slice(b, None)))
            domains = [self.source.stem] * len(test)
        if self.reverse:
            train, val, test = ([(t, s) for s, t in ps] for ps in (train, val, test))
        zh = lambda texts: any("\u4e00" <= c <= "\u9fff" for t in texts[:50] for c in t)  # noqa: E731
        src, tgt = [s for s, _ in train], [t for _, t in train]
        return {"train_pairs": train, "val_pairs": val, "test_pairs": test, "test_domains": domains,
                "src_tok": SubwordTokenizer.train(src, self.vocab_size, 0.9995 if zh(src) else 1.0),
                "tgt_tok": SubwordTokenizer.train(tgt, self.vocab_size, 0.9995 if zh(tgt) else 1.0)}

    @property
    def src_vocab_size(self) -> int:
        return len(self.src_tok)

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.tgt_tok)

    def encode(self, pairs: list[tuple[str, str]], drop_long: bool) -> list[dict]:
        """Token ids per pair, with ``idx``: the pair's position in ``pairs`` (so metrics can
        use the raw reference text)."""
        out, dropped = [], 0
        for i, (s, t) in enumerate(pairs):
            src, tgt = self.src_tok.encode(s) + [EOS], [BOS] + self.tgt_tok.encode(t) + [EOS]
            if drop_long and max(len(src), len(tgt)) > self.max_tokens:
                dropped += 1
                continue
            out.append({"src": src, "tgt": tgt, "idx": [i]})
        if dropped:
            log.info("dropped %d of %d training pairs longer than %d tokens", dropped, len(pairs), self.max_tokens)
        return out

    def state_dict(self) -> dict:
        return {"src_sp": self.src_tok.proto, "tgt_sp": self.tgt_tok.proto, "pair": self.pair}

    def load_state_dict(self, state: dict) -> None:
        if state.get("src_sp") != self.src_tok.proto or state.get("tgt_sp") != self.tgt_tok.proto:
            raise ValueError("the checkpoint's subword models differ from this data module's (other corpus, split or vocab_size)")

    def _loader(self, pairs, train: bool) -> DataLoader:
        items = self.encode(pairs, drop_long=train)
        lengths = [max(len(x["src"]), len(x["tgt"])) if self.batch_tokens else len(x["src"]) for x in items]
        sampler = BucketBatchSampler(lengths, self.batch_size, shuffle=train, seed=self.seed, max_tokens=self.batch_tokens)
        return DataLoader(items, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_pairs, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_pairs, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_pairs, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_pairs, False)
