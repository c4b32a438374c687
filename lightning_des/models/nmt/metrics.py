"""Translation metrics: corpus BLEU and chrF (sacrebleu), repetition and dropping.

* repetition: n-grams that a hypothesis repeats beyond their count in the reference (at
  least one occurrence is always allowed), per hypothesis n-gram; n = 1 and 2.
* dropping: share of reference content words (lower-cased alphabetic words of >= 4 letters)
  that the hypothesis misses: a reference-coverage proxy for dropped source content.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def repetition_rate(hyps: list[str], refs: list[str], n: int = 1) -> float:
    rep = total = 0
    for h, r in zip(hyps, refs):
        hc, rc = _ngrams(h.lower().split(), n), _ngrams(r.lower().split(), n)
        rep += sum(max(0, c - max(1, rc[g])) for g, c in hc.items())
        total += sum(hc.values())
    return rep / max(total, 1)


def dropping_rate(hyps: list[str], refs: list[str]) -> float:
    missed = total = 0
    for h, r in zip(hyps, refs):
        hw = set(_WORD.findall(h.lower()))
        content = [w for w in _WORD.findall(r.lower()) if len(w) >= 4]
        missed += sum(w not in hw for w in content)
        total += len(content)
    return missed / max(total, 1)


def translation_metrics(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu), repetition (n = 1, 2), dropping, the output's length
    over the references' (sacrebleu's 13a-tokenised words) and BLEU's brevity penalty from it
    (``exp(1 - 1 / ratio)`` below 1, else 1; BLEU = penalty x geometric mean of the precisions)."""
    from lightning_des._extras import require

    metrics = require("sacrebleu.metrics", "nmt")
    BLEU, CHRF = metrics.BLEU, metrics.CHRF

    bleu = BLEU().corpus_score(hyps, [refs])
    return {"bleu": bleu.score, "chrf": CHRF().corpus_score(hyps, [refs]).score,
            "repetition": repetition_rate(hyps, refs, 1), "repetition2": repetition_rate(hyps, refs, 2),
            "dropping": dropping_rate(hyps, refs), "length_ratio": bleu.sys_len / max(bleu.ref_len, 1), "brevity_penalty": bleu.bp}


def metrics_by_domain(hyps: list[str], refs: list[str], domains: list[str]) -> dict[str, dict[str, float]]:
    """:func:`translation_metrics` of each source domain's sentences (``domains[i]`` names the
    domain of pair ``i``), domains in sorted order."""
    out = {}
    for d in sorted(set(domains)):
        idx = [i for i, x in enumerate(domains) if x == d]
        out[d] = translation_metrics([hyps[i] for i in idx], [refs[i] for i in idx])
    return out
