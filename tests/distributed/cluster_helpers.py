"""Callbacks the cluster-launch tests add to a recipe (importable by the launched ranks)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl


class StepMarker(pl.Callback):
    """Rank 0 writes the global step to ``path`` after every training step and then sleeps
    ``sleep`` seconds, so a test can signal the run mid-epoch (the numbers are unchanged)."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path, self.sleep = Path(path), sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            self.path.write_text(f"{trainer.global_step} {trainer.current_epoch} {batch_idx}\n")
        time.sleep(self.sleep)


class BatchLog(pl.Callback):
    """Appends ``<trial dir> <epoch> <batch>`` to ``path`` after every training batch and sleeps
    ``sleep`` seconds: which batches were trained, and time for a test to interrupt."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path, self.sleep = Path(path), sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as f:
            f.write(f"{Path(trainer.default_root_dir).name} {trainer.current_epoch} {batch_idx}\n")
        time.sleep(self.sleep)
