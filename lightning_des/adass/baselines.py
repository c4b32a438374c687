"""Embedding-size baselines a search is compared with: the mixed-dimension rule of Ginart et al.

Mixed-dimension embeddings (Ginart et al., 2021; DLRM's ``md_solver`` / ``alpha_power_rule``)
give field ``f`` the width ``d_f = lambda * p_f ** alpha`` where ``p_f`` is how often one of its
rows is used; with a table of ``n_f`` rows used uniformly ``p_f = 1 / n_f``, so
``d_f = lambda * n_f ** -alpha``: small tables get wide embeddings, large ones narrow. DLRM picks
``lambda = B / sum_f n_f ** (1 - alpha)`` so the unrounded widths use exactly ``B`` parameters,
then rounds. Here widths must be candidates of a :class:`SizeSpace`, so each ``d_f`` is rounded to
the nearest candidate (ties to the smaller) and ``lambda`` is the largest value, found by
bisection, whose rounded assignment fits the budget; at least one field is kept.
"""

from __future__ import annotations

from typing import Sequence

from lightning_des.adass.search import check_budget
from lightning_des.adass.space import SizeSpace


def md_widths(cardinalities: Sequence[int], budget: float, alpha: float) -> list[float]:
    """DLRM's unrounded widths ``lambda * n_f ** -alpha`` with ``sum_f n_f d_f = budget``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] (0: uniform widths), got {alpha}")
    lam = budget / sum(n ** (1 - alpha) for n in cardinalities)
    return [lam * n**-alpha for n in cardinalities]


def _nearest(space: SizeSpace, width: float) -> int:
    c = space.candidates
    return min(range(len(c)), key=lambda i: (abs(c[i] - width), c[i]))


def mixed_dimension_choice(space: SizeSpace, budget: int, alpha: float = 0.3) -> tuple[int, ...]:
    """The mixed-dimension choice within ``budget`` parameters (see the module docstring);
    ``alpha = 0.3`` is DLRM's default ``md_temperature``."""
    check_budget(space, budget)
    n = space.cardinalities

    def choice(scale: float) -> tuple[int, ...]:
        return tuple(_nearest(space, w) for w in md_widths(n, scale, alpha))

    lo, hi = 0.0, float(budget)
    while space.params(choice(hi)) <= budget and hi < 1e6 * max(budget, 1):  # rounding down can leave room
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if space.params(choice(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    best = choice(lo)
    if not space.keeps_a_field(best):
        best = space.smallest()  # within budget by check_budget
    return best
