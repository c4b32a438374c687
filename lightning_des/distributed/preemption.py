"""SLURM preemption for sharded training: save and requeue at a step boundary all ranks agree on.

Lightning's SLURM handler saves the requeue checkpoint *inside the signal handler*, wherever the
signal finds each rank. A DES checkpoint is a collective (``torch.distributed.checkpoint``), so
ranks interrupted at different points (one in a step's all-to-all, another already past it)
would enter it out of step and hang or mix two steps' tensors. Here the signal only sets a flag;
at the start of every training step the ranks all-reduce the flag (4 bytes, only while SLURM
auto-requeue is on), and if any rank was signalled they all run Lightning's handler together:
it writes ``hpc_ckpt_<n>.ckpt`` (resumed automatically by the requeued job) and rank 0 calls
``scontrol requeue``. The run then stops with :class:`Requeued` instead of training on until
SLURM kills it.

The checkpoint holds the batch progress of the interrupted epoch, and the data modules'
loaders restart the epoch at that batch (:class:`~lightning_des.data.shards.ResumableLoader`),
so the requeued job ends where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class Requeued(SystemExit):
    """Raised on every rank after the requeue checkpoint is written and the job requeued
    (exit status 0: the requeued job continues the run)."""

    def __init__(self, path: str) -> None:
        super().__init__(0)
        self.path = path


class SyncedRequeue:
    """Replaces Lightning's SLURM requeue signal handler by a flag checked at step starts."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        env = trainer._accelerator_connector.cluster_environment
        self.signum = env.requeue_signal or signal.SIGUSR1
        self.signalled = False
        self._lightning_handler = trainer._signal_connector._slurm_sigusr_handler_fn
        signal.signal(self.signum, self._on_signal)

    @staticmethod
    def wanted(trainer: Any) -> bool:
        env = trainer._accelerator_connector.cluster_environment
        return isinstance(env, SLURMEnvironment) and env.auto_requeue and trainer.world_size > 1

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def check(self, device: torch.device) -> None:
        """Collective: if any rank was signalled, save the requeue checkpoint, requeue, stop."""
        flag = torch.tensor([int(self.signalled)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not flag.item():
            return
        trainer = self.trainer
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        log.info("requeue signal %s: saving %s at epoch %d, batch %d, then requeueing", self.signum, path,
                 trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.completed)
        self._lightning_handler(self.signum, None)  # save_checkpoint (all ranks) + scontrol requeue (rank 0)
        trainer.strategy.barrier("requeued")
        raise Requeued(path)
