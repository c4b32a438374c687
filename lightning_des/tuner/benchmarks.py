"""Cheap multi-fidelity test functions (losses to minimise, deterministic, resumable)."""

from __future__ import annotations

import math

from lightning_des.tuner.flexhb import Job
from lightning_des.tuner.space import Float, SearchSpace

BRANIN_SPACE = SearchSpace({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)})
BRANIN_MIN = 0.397887


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def branin_mf(config: dict, budget: float, max_budget: float = 27.0, bias: float = 1.0) -> float:
    """Continuous-fidelity Branin: at budget b the loss is Branin plus a shifted-Branin
    distortion scaled by ``bias * (1 - b / max_budget)``, so low fidelities rank
    configurations only partly like the full one; at ``max_budget`` it is exactly Branin."""
    x1, x2 = config["x1"], config["x2"]
    gap = 1.0 - budget / max_budget
    return branin(x1, x2) + bias * gap * (0.5 * branin(x2 - 5.0, x1 + 5.0) + 20.0)


def branin_objective(bias: float = 1.0, max_budget: float = 27.0):
    def objective(job: Job) -> dict[float, float]:
        return {p: branin_mf(job.config, p, max_budget, bias) for p in job.points}

    return objective
