"""TextRank over a word co-occurrence graph (Mihalcea & Tarau 2004), as used by the planner.

Nodes are words; an undirected edge joins two words that occur in the same unit (a poem, or a
window of ``window`` words inside a text) with weight = number of such co-occurrences. Scores
are PageRank with damping ``d`` (0.85): ``s = (1 - d) + d * W_norm^T s``, iterated to
convergence (power iteration on a sparse matrix).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np


def textrank(units: Iterable[Sequence[str]], damping: float = 0.85, window: int | None = None, tol: float = 1e-8,
             max_iter: int = 200) -> dict[str, float]:
    """Scores of every word in ``units``. A unit's words co-occur pairwise (``window=None``)
    or within ``window`` consecutive words."""
    if not 0 < damping < 1:
        raise ValueError(f"damping must be in (0, 1), got {damping}")
    edges: Counter = Counter()
    words: dict[str, int] = {}
    for unit in units:
        unit = list(unit)
        for w in unit:
            words.setdefault(w, len(words))
        for i, a in enumerate(unit):
            end = len(unit) if window is None else min(len(unit), i + window)
            for b in unit[i + 1:end]:
                if a != b:
                    edges[(words[a], words[b])] += 1
    n = len(words)
    if n == 0:
        return {}
    rows, cols, vals = [], [], []
    for (a, b), c in edges.items():
        rows += [a, b]
        cols += [b, a]
        vals += [c, c]
    from lightning_des._extras import require

    sparse = require("scipy.sparse", "poetry")
    w = sparse.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float64)
    out = np.asarray(w.sum(axis=1)).ravel()
    out[out == 0] = 1.0
    p = sparse.diags(1.0 / out) @ w  # row-normalised: p[i, j] = w_ij / sum_k w_ik
    s = np.ones(n)
    for _ in range(max_iter):
        new = (1 - damping) + damping * (p.T @ s)
        if np.abs(new - s).max() < tol:
            s = new
            break
        s = new
    return {word: float(s[i]) for word, i in words.items()}
