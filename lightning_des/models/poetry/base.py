"""Shared parts of the poetry LightningModules: Adam, token cross-entropy and perplexity."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from lightning_des.data.poems import PAD


class PoetryModule(pl.LightningModule):
    """Base class: subclasses implement ``token_logits(batch) -> (logits [B, T, V], targets [B, T])``."""

    def __init__(self, vocab_size: int, lr: float = 2e-3) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size} (set by the data module)")
        self.vocab_size, self.lr = vocab_size, lr

    def token_logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets = self.token_logits(batch)
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD, reduction="sum")
        return total, (targets != PAD).sum()

    def training_step(self, batch, batch_idx):
        total, n = self._loss(batch)
        loss = total / n
        self.log("train_loss", loss, prog_bar=True, batch_size=int(n))
        return loss

    def _eval(self, batch, prefix: str) -> None:
        total, n = self._loss(batch)
        self.log(f"{prefix}_loss", total / n, prog_bar=True, batch_size=int(n))

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def perplexity(self, loader) -> float:
        """exp(mean token cross-entropy) over a loader (every token weighted equally)."""
        self.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                t, m = self._loss(batch)
                total, n = total + float(t), n + int(m)
        return math.exp(total / max(n, 1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
