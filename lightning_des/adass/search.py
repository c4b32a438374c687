"""Search over size assignments with a trained supernet's scores: REINFORCE with the
resource-competition penalty, or random search under the same budget (the ablation)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from lightning_des.adass.controller import ReinforceController
from lightning_des.adass.options import SearchOptions
from lightning_des.adass.penalty import ResourcePenalty
from lightning_des.adass.space import SizeSpace

Choice = tuple[int, ...]


class _Scores:
    """Memoised ``evaluate``: each distinct choice is scored once."""

    def __init__(self, evaluate: Callable[[Choice], float]) -> None:
        self.evaluate, self.cache = evaluate, {}

    def __call__(self, choice: Sequence[int]) -> float:
        c = tuple(int(i) for i in choice)
        if c not in self.cache:
            self.cache[c] = float(self.evaluate(c))
        return self.cache[c]


def check_budget(space: SizeSpace, budget: int) -> None:
    """Refuse a budget that no choice keeping at least one field can meet."""
    if budget < space.min_params():
        raise ValueError(f"budget {budget} is below the smallest feasible assignment: {space.min_params()} parameters "
                         f"({space.sizes(space.smallest())})")


def fit_to_budget(choice: Sequence[int], space: SizeSpace, budget: int, score: Callable[[Choice], float]) -> Choice:
    """Make ``choice`` fit ``budget`` and keep at least one field: while over, move one field
    down one candidate, the one whose step loses the least score per parameter saved (never
    the last field left); a choice that dropped every field gets back the single field of
    best score that fits.

    Raises:
        ValueError: ``budget`` is below :meth:`SizeSpace.min_params`.
    """
    check_budget(space, budget)
    c = tuple(int(i) for i in choice)
    if not space.keeps_a_field(c):
        singles = [tuple(1 if i == f else 0 for i in range(space.num_fields)) for f in range(space.num_fields)]
        c = max((s for s in singles if space.params(s) <= budget), key=lambda s: (score(s), -space.params(s)))
    while space.params(c) > budget:
        here, base = score(c), space.params(c)
        best, best_rate = None, None
        for f in range(space.num_fields):
            if c[f] == 0:
                continue
            down = c[:f] + (c[f] - 1,) + c[f + 1 :]
            saved = base - space.params(down)
            if saved <= 0 or not space.keeps_a_field(down):
                continue
            rate = (here - score(down)) / saved
            if best_rate is None or rate < best_rate:
                best, best_rate = down, rate
        if best is None:  # cannot happen when budget >= min_params (checked above)
            raise ValueError(f"cannot fit {space.sizes(c)} into {budget} parameters")
        c = best
    return c


@dataclass
class SearchResult:
    """The chosen sizes and how the search got there (``history``: one row per iteration)."""

    method: str
    choice: Choice
    sizes: dict[str, int]
    params: int
    budget: int
    score: float
    evaluations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    probs: list[list[float]] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def search_sizes(
    evaluate: Callable[[Choice], float],
    space: SizeSpace,
    budget: int,
    options: SearchOptions | None = None,
    seed: int = 0,
) -> SearchResult:
    """Search one width per field that maximises ``evaluate(choice)`` (validation AUC of the
    sub-network) within ``budget`` embedding parameters (``options.budget*`` are not read here:
    :meth:`SearchOptions.resolve_budget` turns them into ``budget``).

    ``reinforce``: the controller samples ``samples_per_iteration`` choices per iteration,
    rewarded per field with ``score - penalty_f`` (:class:`ResourcePenalty`, strength
    ``penalty``; 0 = the no-penalty ablation). ``random``: as many uniform random choices
    (rejection-sampled into the budget, else shrunk). ``reinforce`` returns the policy's mode
    (shrunk into the budget by :func:`fit_to_budget` if it is over: the no-penalty ablation
    relies on that), ``random`` the best-scoring choice it evaluated; neither exceeds
    ``budget`` and both keep at least one field. A budget below
    :meth:`SizeSpace.min_params` raises ``ValueError`` giving the minimum. Returning the mode
    rather than the best of ~800 scored choices avoids picking the choice that fits the
    supernet's validation noise best.
    """
    o = options or SearchOptions()
    method, penalty, iterations, samples_per_iteration = o.method, o.penalty, o.iterations, o.samples_per_iteration
    lr, baseline_decay = o.lr, o.baseline_decay
    check_budget(space, budget)
    t0 = time.perf_counter()
    score = _Scores(evaluate)
    gen = torch.Generator().manual_seed(seed)
    pen = ResourcePenalty(budget, penalty)
    history: list[dict] = []
    probs = None
    extra: list[Choice] = []
    if method == "reinforce":
        ctrl = ReinforceController(space.num_fields, space.num_candidates, lr, baseline_decay, gen)
        for it in range(iterations):
            choices = ctrl.sample(samples_per_iteration)
            rows, scores, params = [], [], []
            for c in choices.tolist():
                s = score(c)
                fp = space.field_params(c)
                rows.append([s - p for p in pen.field_penalties(fp)])
                scores.append(s)
                params.append(sum(fp))
            ctrl.update(choices, torch.tensor(rows))
            history.append({"iteration": it, "score": sum(scores) / len(scores), "params": sum(params) / len(params),
                            "feasible": sum(p <= budget for p in params) / len(params)})
        extra.append(fit_to_budget(ctrl.mode(), space, budget, score))
        probs = ctrl.probs.tolist()
    else:
        C = space.num_candidates
        for it in range(iterations):
            for _ in range(samples_per_iteration):
                for _try in range(100):
                    c = tuple(torch.randint(C, (space.num_fields,), generator=gen).tolist())
                    if space.params(c) <= budget and space.keeps_a_field(c):
                        break
                else:
                    c = fit_to_budget(c, space, budget, score)
                score(c)
            history.append({"iteration": it, "evaluations": len(score.cache)})
    if method == "reinforce":
        best = extra[0]
    else:
        feasible = [c for c in score.cache if space.params(c) <= budget and space.keeps_a_field(c)]
        best = max(feasible, key=lambda c: (score(c), -space.params(c)))
    return SearchResult(method, best, space.sizes(best), space.params(best), int(budget), score(best),
                        len(score.cache), time.perf_counter() - t0, history, probs)
