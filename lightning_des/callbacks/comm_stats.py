"""``CommStatsCallback``: bytes sent per collective kind per training step, measured."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_des.distributed import comm

log = logging.getLogger(__name__)


class CommStatsCallback(Callback):
    """Log the payload bytes each rank sends in every training step, by collective and tag
    (``all_to_all:partial``, ``all_to_all:ids``, ``all_reduce:other`` ...), as counted by the
    ``counting`` process-group backend (:mod:`lightning_des.distributed.comm`).

    With ``DESStrategy`` the backend is selected automatically when this callback is present;
    with another strategy pass ``process_group_backend="counting"``. The counting backend wraps
    gloo (CPU): under another backend (e.g. nccl on GPUs, as the SLURM template uses) the callback
    warns once, naming what it needs, counts nothing and says so in ``summary``, and training runs on.

    Args:
        log_every_n_steps: how often to ``log`` the per-step bytes (0 = never; the summary is
            kept regardless).
        output: optional JSON file for the summary (written by rank 0 at the end of fit).

    Attributes:
        summary: after fit: ``{key: mean bytes per step summed over ranks}`` plus ``"steps"``.

    """

    def __init__(self, log_every_n_steps: int = 1, output: str | None = None) -> None:
        if log_every_n_steps < 0:
            raise ValueError(f"log_every_n_steps must be >= 0, got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps
        self.output = output
        self._before: dict[str, int] = {}
        self._totals: dict[str, int] = defaultdict(int)
        self._steps = 0
        self.summary: dict[str, Any] = {}
        self.unavailable: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(output=self.output)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.unavailable = None
        if dist.is_available() and dist.is_initialized() and dist.get_backend() != comm.BACKEND:
            self.unavailable = (
                f"CommStatsCallback needs the '{comm.BACKEND}' process-group backend (gloo on CPU; DESStrategy selects it "
                f"unless process_group_backend is set), the run uses '{dist.get_backend()}': no bytes are counted"
            )
            rank_zero_warn(self.unavailable)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.unavailable is None:
            self._before = comm.snapshot()

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.unavailable is not None:
            return
        now = comm.snapshot()
        step = {k: v - self._before.get(k, 0) for k, v in now.items() if v != self._before.get(k, 0)}
        for k, v in step.items():
            self._totals[k] += v
        self._steps += 1
        if self.log_every_n_steps and trainer.global_step % self.log_every_n_steps == 0:
            for k, v in step.items():
                pl_module.log(f"comm_bytes/{k}", float(v), on_step=True, on_epoch=False, rank_zero_only=True)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.unavailable is not None:
            self.summary = {"unavailable": self.unavailable}
            return
        totals = [dict(self._totals)]
        if dist.is_available() and dist.is_initialized():
            totals = [None] * dist.get_world_size()
            with comm.comm_tag("stats"):
                dist.all_gather_object(totals, dict(self._totals))
        merged: dict[str, float] = defaultdict(float)
        for t in totals:
            for k, v in t.items():
                merged[k] += v
        steps = max(self._steps, 1)
        self.summary = {k: v / steps for k, v in sorted(merged.items())}
        self.summary["steps"] = self._steps
        if trainer.is_global_zero:
            rank_zero_info(f"communication per step (payload bytes, all ranks): {self.summary}")
            if self.output:
                Path(self.output).parent.mkdir(parents=True, exist_ok=True)
                Path(self.output).write_text(json.dumps(self.summary, indent=2))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self._totals), "steps": self._steps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._totals = defaultdict(int, state_dict["totals"])
        self._steps = state_dict["steps"]
