"""Surrogates for multi-fidelity BO: a random forest per fidelity group, combined as in
MFES-HB (weights = how often each group's model ranks the highest-fidelity results best),
and expected improvement."""

from __future__ import annotations


import numpy as np
from scipy.stats import norm
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import KFold


class ForestSurrogate:
    """Random forest with predictive mean and variance from the spread over trees (SMAC's
    choice: handles categorical one-hots and few points without kernel tuning)."""

    def __init__(self, seed: int = 0, n_trees: int = 20) -> None:
        self.model = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=1, max_features=0.8, random_state=seed, n_jobs=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ForestSurrogate":
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([t.predict(x) for t in self.model.estimators_])  # (T, N)
        return per_tree.mean(0), per_tree.var(0) + 1e-6


def standardise(y: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (a constant vector only centred)."""
    s = y.std()
    return (y - y.mean()) / (s if s > 0 else 1.0)


def discordance(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of pairs ordered differently by ``pred`` and ``true`` (0 = same ranking)."""
    i, j = np.triu_indices(len(true), 1)
    if len(i) == 0:
        return 0.5
    return float(np.mean((pred[i] < pred[j]) != (true[i] < true[j])))


class MultiFidelityEnsemble:
    """One :class:`ForestSurrogate` per fidelity group (targets standardised per group).

    Weights (MFES-HB): over ``n_bootstrap`` resamples of the highest group's observations,
    the fraction of resamples in which each model has the lowest ranking discordance with
    the observed highest-fidelity losses; the highest group's own model is scored by K-fold
    cross-validation. Predictions combine as a weighted product of experts:
    ``precision = sum_i w_i / var_i``, ``mean = sum_i w_i mean_i / var_i / precision``.
    """

    def __init__(self, seed: int = 0, n_bootstrap: int = 30, min_points: int = 3) -> None:
        self.seed, self.n_bootstrap, self.min_points = seed, n_bootstrap, min_points
        self.models: list[ForestSurrogate] = []
        self.weights = np.zeros(0)

    def fit(self, groups: list[tuple[np.ndarray, np.ndarray]]) -> "MultiFidelityEnsemble":
        """``groups``: (X, y) per fidelity group, lowest first; the last group is the target."""
        groups = [(x, standardise(y)) for x, y in groups if len(y) >= self.min_points]
        if not groups:
            raise ValueError(f"no fidelity group has {self.min_points} observations yet")
        self.models = [ForestSurrogate(self.seed + i).fit(x, y) for i, (x, y) in enumerate(groups)]
        xt, yt = groups[-1]
        if len(groups) == 1 or len(yt) < 4:
            self.weights = np.eye(len(groups))[-1]
            return self
        preds = [m.predict(xt)[0] for m in self.models[:-1]]
        cv = np.zeros(len(yt))
        for tr, te in KFold(n_splits=min(3, len(yt)), shuffle=True, random_state=self.seed).split(xt):
            cv[te] = ForestSurrogate(self.seed).fit(xt[tr], yt[tr]).predict(xt[te])[0]
        preds.append(cv)
        rng = np.random.default_rng(self.seed)
        wins = np.zeros(len(groups))
        for _ in range(self.n_bootstrap):
            idx = rng.integers(len(yt), size=len(yt))
            losses = [discordance(p[idx], yt[idx]) for p in preds]
            wins[int(np.argmin(losses))] += 1
        self.weights = wins / wins.sum()
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prec = np.zeros(len(x))
        num = np.zeros(len(x))
        for w, m in zip(self.weights, self.models):
            if w == 0:
                continue
            mu, var = m.predict(x)
            prec += w / var
            num += w * mu / var
        return num / prec, 1.0 / prec


def expected_improvement(mean: np.ndarray, var: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """EI for minimisation below ``best``."""
    sd = np.sqrt(var)
    z = (best - xi - mean) / sd
    return (best - xi - mean) * norm.cdf(z) + sd * norm.pdf(z)


__all__ = ["ForestSurrogate", "MultiFidelityEnsemble", "discordance", "expected_improvement", "standardise"]
