"""Problems and budget accounting for benchmarks/hpo.py.

A problem evaluates a configuration at a list of fidelities (budget points), optionally from a
saved training state (resume). :class:`Meter` charges every method the same way, in
full-fidelity equivalents, and records the best loss measured *at the full fidelity*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from lightning_des.tuner.benchmarks import BRANIN_MIN, BRANIN_SPACE, branin_mf
from lightning_des.tuner.space import Float, SearchSpace

# evaluate(config, points, state) -> ({point: loss}, state after the last point)
Evaluate = Callable[[dict, list[float], Any], tuple[dict[float, float], Any]]


class Exhausted(Exception):
    """The run's budget is spent."""


@dataclass
class Problem:
    name: str
    space: SearchSpace
    min_budget: float
    max_budget: float
    evaluate: Evaluate
    optimum: float  # regret = loss - optimum (0 where unknown: the loss itself)
    steps: list[float] = field(default_factory=list)  # report points for step-wise methods (Optuna)


@dataclass
class Meter:
    """Budget used (full-fidelity equivalents) and best full-fidelity loss so far."""

    limit: float
    max_budget: float
    used: float = 0.0
    best: float = math.inf
    curve: list[tuple[float, float]] = field(default_factory=list)
    eval_s: float = 0.0  # seconds spent inside the objective

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def check(self) -> None:
        if self.exhausted:
            raise Exhausted

    def charge(self, cost: float, losses: dict[float, float]) -> None:
        self.used += cost / self.max_budget
        full = [v for b, v in losses.items() if b >= self.max_budget - 1e-9]
        if full:
            self.best = min(self.best, *full)
        self.curve.append((self.used, self.best))


# --- synthetic -----------------------------------------------------------------------------


def branin_problem() -> Problem:
    def evaluate(config, points, state):
        return {p: branin_mf(config, p) for p in points}, None

    return Problem("branin", BRANIN_SPACE, 1, 27, evaluate, BRANIN_MIN, [float(i) for i in range(1, 28)])


def mfh_problem(name: str) -> Problem:
    """mf-prior-bench ``mfh3_*``/``mfh6_*`` (Hartmann with a fidelity knob 1..100, bias and
    noise shrinking with fidelity). Fidelities are rounded to the benchmark's integer grid."""
    import mfpbench

    bench = mfpbench.get(name, seed=0)
    lo, hi, _ = bench.fidelity_range
    dims = len(list(bench.space.values()))
    space = SearchSpace({f"X_{i}": Float(0.0, 1.0) for i in range(dims)})
    optimum = float(bench.metric_optimums["value"].value)

    def evaluate(config, points, state):
        return {p: float(bench.query(config, at=int(min(max(round(p), lo), hi))).error) for p in points}, None

    return Problem(name, space, lo, hi, evaluate, optimum, [float(i) for i in range(lo, hi + 1)])


# --- real: an MLP on sklearn's digits, epochs as fidelity -----------------------------------

DIGITS_SPEC = {
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
    "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "batch_size": {"type": "int", "low": 16, "high": 512, "log": True},
}
DIGITS_SPACE = SearchSpace.from_dict(DIGITS_SPEC)


def digits_problem() -> Problem:
    """One-hidden-layer MLP (sklearn, Adam) on the 8x8 digits; loss = validation log-loss after
    ``b`` epochs. A trial's model is the state, so a resumed trial continues training."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    classes = np.arange(10)

    def evaluate(config, points, state):
        if state is None:
            state = (MLPClassifier(hidden_layer_sizes=(config["hidden"],), learning_rate_init=config["lr"], alpha=config["alpha"],
                                   batch_size=config["batch_size"], random_state=0), 0)
        mlp, done = state
        out = {}
        for p in points:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                while done < round(p):
                    mlp.partial_fit(xtr, ytr, classes=classes)
                    done += 1
                out[p] = float(log_loss(yva, np.clip(np.nan_to_num(mlp.predict_proba(xva), nan=0.1), 1e-7, 1), labels=classes))
        return out, (mlp, done)

    return Problem("digits-mlp", DIGITS_SPACE, 1, 27, evaluate, 0.0, [float(i) for i in range(1, 28)])


# --- real curves, tabulated: benchmarks/hpo_tables.py --------------------------------------


def tabular_problem(name: str) -> Problem:
    """A table of real learning curves (benchmarks/tables/<name>.json) as a problem: a queried
    configuration gets the curve of its nearest tabulated configuration (Euclidean distance in
    the space's unit-cube encoding: log scale where the parameter is log-scaled, one-hot for
    categoricals). Fidelity ``b`` reads the loss after ``round(b)`` epochs; the optimum is the
    table's best last-epoch loss, so regret 0 means the best tabulated configuration was found."""
    from hpo_tables import curve_matrix, load

    table = load(name)
    space = SearchSpace.from_dict(table["spec"])
    points = np.array([space.encode(r["config"]) for r in table["rows"]])
    curves = curve_matrix(table)
    epochs = table["epochs"]

    def evaluate(config, fidelities, state):
        i = int(np.argmin(((points - space.encode(config)) ** 2).sum(axis=1)))
        return {p: float(curves[i, int(min(max(round(p), 1), epochs)) - 1]) for p in fidelities}, None

    return Problem(f"table:{name}", space, 1, epochs, evaluate, float(curves[:, -1].min()), [float(i) for i in range(1, epochs + 1)])


TABLES = ["table:deepfm-ml100k", "table:wdl-ml100k", "table:digits-mlp"]
MFH = [f"mfh{d}_{v}" for d in (3, 6) for v in ("good", "bad", "terrible")]
SYNTHETIC = ["branin", *MFH]


def make_problem(name: str) -> Problem:
    if name == "branin":
        return branin_problem()
    if name == "digits-mlp":
        return digits_problem()
    if name in MFH:
        return mfh_problem(name)
    if name in TABLES:
        return tabular_problem(name.removeprefix("table:"))
    raise ValueError(f"unknown problem {name!r}; known: {[*SYNTHETIC, 'digits-mlp', *TABLES]}")
