"""REINFORCE controller over per-field categorical size policies."""

from __future__ import annotations

import torch
from torch import Tensor


class ReinforceController:
    """Independent categorical policy per field, ``pi_f = softmax(theta_f)``, trained with
    REINFORCE and a per-field exponential-moving-average baseline:
    ``theta_f += lr * mean_n A_nf * (onehot(a_nf) - pi_f)`` with the advantage
    ``A = (R - b) / s``, ``s_f`` an EMA of the spread of ``R_f - b_f`` over each batch: rewards
    (AUC) move by ~1e-3 between size choices, so the advantage is scaled to order 1 per field
    and ``lr`` means the same on any task.

    Per-field rewards let the resource penalty reach the fields that cause it.

    Args:
        num_fields: rows of the policy (one per field).
        num_candidates: columns of the policy (one per candidate width).
        lr: step size on the logits.
        baseline_decay: EMA decay of the baseline (the first batch initialises it).
        generator: seeded ``torch.Generator`` for sampling.
    """

    def __init__(self, num_fields: int, num_candidates: int, lr: float = 0.3, baseline_decay: float = 0.9, generator: torch.Generator | None = None) -> None:
        self.logits = torch.zeros(num_fields, num_candidates, dtype=torch.float64)
        self.baseline: Tensor | None = None
        self.scale: Tensor | None = None
        self.lr, self.decay = lr, baseline_decay
        self.generator = generator

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=1)

    def sample(self, n: int) -> Tensor:
        """``n`` choices, (n, F) candidate indices."""
        return torch.multinomial(self.probs, n, replacement=True, generator=self.generator).t()

    def mode(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.logits.argmax(1))

    def update(self, choices: Tensor, rewards: Tensor) -> None:
        """``choices`` (n, F) indices, ``rewards`` (n, F) per-field rewards."""
        rewards = rewards.to(torch.float64)
        mean = rewards.mean(0)
        if self.baseline is None:
            self.baseline = mean.clone()
        dev = rewards - self.baseline  # (n, F)
        spread = dev.std(0, unbiased=False) if dev.shape[0] > 1 else dev.abs().mean(0)  # (F,)
        self.scale = spread if self.scale is None else self.decay * self.scale + (1 - self.decay) * spread
        adv = dev / self.scale.clamp(min=1e-8)
        onehot = torch.nn.functional.one_hot(choices, self.logits.shape[1]).to(torch.float64)  # (n, F, C)
        grad = (adv.unsqueeze(2) * (onehot - self.probs.unsqueeze(0))).mean(0)
        self.logits += self.lr * grad
        self.baseline = self.decay * self.baseline + (1 - self.decay) * mean

    def state_dict(self) -> dict:
        return {"logits": self.logits.clone(), "baseline": None if self.baseline is None else self.baseline.clone(), "scale": None if self.scale is None else self.scale.clone()}
