"""The AdaS&S options, spelled out once: supernet training and the size search.

Both are dataclasses, so LightningCLI/jsonargparse configure them as nested YAML sections
(``supernet:``/``search:`` in ``recipes/adass_*.yaml``, ``options:`` of the callbacks) and
unknown keys fail naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lightning_des.adass.space import DEFAULT_CANDIDATES, SizeSpace


@dataclass
class SupernetOptions:
    """Supernet training (:class:`~lightning_des.adass.callbacks.AdaSSupernetCallback`).

    Args:
        candidates: candidate widths per field (ascending; 0 drops the field).
        sampler: ``adaptive`` (Adaptive Sampling) or ``uniform`` (the ablation).
        max_epochs: supernet epochs (the pipeline's; the recipe's trainer retrains).
        warmup_steps: steps of uniform sampling that fill the statistics first.
        tau: softmax temperature over the non-zero candidates' scores.
        beta: weight of the under-training term of a candidate's score.
        rho: how much a field's importance lowers its drop probability.
        epsilon: probability floor ``epsilon / C`` of every candidate.
        gamma: exponent of width in a candidate's target share of samples.

    The last six are :class:`~lightning_des.adass.sampler.AdaptiveSampler`'s (formulas there).
    """

    candidates: list[int] = field(default_factory=lambda: list(DEFAULT_CANDIDATES))
    sampler: Literal["adaptive", "uniform"] = "adaptive"
    max_epochs: int = 15
    warmup_steps: int = 50
    tau: float = 1.0
    beta: float = 1.0
    rho: float = 0.5
    epsilon: float = 0.2
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in ("adaptive", "uniform"):
            raise ValueError(f"sampler must be 'adaptive' or 'uniform', got {self.sampler!r}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")

    def sampler_kwargs(self) -> dict[str, float]:
        return {"warmup_steps": self.warmup_steps, "tau": self.tau, "beta": self.beta, "rho": self.rho,
                "epsilon": self.epsilon, "gamma": self.gamma}


@dataclass
class SearchOptions:
    """The size search under a memory budget (:func:`~lightning_des.adass.search.search_sizes`).

    Args:
        budget: fraction of the uniform-``reference_dim`` model's embedding parameters.
        reference_dim: the uniform width the budget refers to (default: the supernet's width).
        budget_params: an absolute budget in parameters (overrides ``budget``).
        method: ``reinforce`` (the controller with the resource penalty) or ``random``.
        penalty: resource-penalty strength (0 = the no-penalty ablation).
        iterations: controller updates (``random`` scores ``iterations * samples_per_iteration`` choices).
        samples_per_iteration: choices sampled per update.
        lr: controller learning rate.
        baseline_decay: decay of the reward baseline.
        eval_rows: score choices on a fixed random subset of this many validation rows (None:
            all); each of the search's evaluations is linear in the rows.
    """

    budget: float | None = 0.8
    reference_dim: int | None = None
    budget_params: int | None = None
    method: Literal["reinforce", "random"] = "reinforce"
    penalty: float = 0.01
    iterations: int = 300
    samples_per_iteration: int = 8
    lr: float = 0.3
    baseline_decay: float = 0.9
    eval_rows: int | None = None

    def __post_init__(self) -> None:
        if self.eval_rows is not None and self.eval_rows < 2:
            raise ValueError(f"eval_rows must be >= 2 or None (all rows), got {self.eval_rows}")
        if self.method not in ("reinforce", "random"):
            raise ValueError(f"method must be 'reinforce' or 'random', got {self.method!r}")
        if self.iterations < 1 or self.samples_per_iteration < 1:
            raise ValueError("iterations and samples_per_iteration must be >= 1")

    def resolve_budget(self, space: SizeSpace, default_dim: int) -> int:
        """The budget in embedding parameters: ``budget_params`` if given, else ``budget`` times
        the uniform-``reference_dim`` (default ``default_dim``) model's parameters."""
        if self.budget_params is not None:
            if self.budget_params <= 0:
                raise ValueError(f"budget_params must be > 0, got {self.budget_params}")
            return int(self.budget_params)
        ref = self.reference_dim or default_dim
        if self.budget is None or self.budget <= 0:
            raise ValueError(f"budget must be a fraction > 0 of the uniform-{ref} model's parameters, got {self.budget}")
        return int(self.budget * space.uniform_params(ref))
