"""SLURM preemption for sharded training: save and requeue at a step boundary all ranks agree on.

Lightning's SLURM handler saves the requeue checkpoint *inside the signal handler*, wherever the
signal finds each rank. A DES checkpoint is a collective (``torch.distributed.checkpoint``), so
ranks interrupted at different points (one in a step's all-to-all, another already past it)
would enter it out of step and hang or mix two steps' tensors. Here the signal only sets a flag;
at the start of every training step the ranks all-reduce the flag (4 bytes, only while SLURM
auto-requeue is on), and if any rank was signalled they all write ``hpc_ckpt_<n>.ckpt`` together (Lightning's
name; the requeued job resumes from it automatically), rank 0 calls ``scontrol requeue``, and
the ranks wait, training no further, for SLURM to stop the job.

The checkpoint holds the batch progress of the interrupted epoch, and the data modules'
loaders restart the epoch at that batch (:class:`~lightning_des.data.shards.ResumableLoader`),
so the requeued job ends where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


class SyncedRequeue:
    """Replaces Lightning's SLURM requeue signal handler by a flag checked at step starts."""

    def __init__(self, trainer: Any, stop_timeout: float = 600.0) -> None:
        self.trainer = trainer
        env = trainer._accelerator_connector.cluster_environment
        self.signum = env.requeue_signal or signal.SIGUSR1
        self.signalled = False
        self.stop_timeout = stop_timeout
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
        # Lightning's handler lets every rank pick the next free hpc_ckpt_<n> name itself; a rank
        # that looks after another has begun writing picks n + 1, and the sharded checkpoint ends
        # up split over two directories (seen in CI). Rank 0 names it for all.
        path = trainer.strategy.broadcast(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir), src=0)
        log.info("requeue signal %s: saving %s at epoch %d after %d batches, then requeueing", self.signum, path,
                 trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        for logger in trainer.loggers:
            logger.finalize("finished")
        trainer.save_checkpoint(path)  # every rank, together; ends with a barrier
        ok = torch.tensor([int(_requeue()) if trainer.is_global_zero else 0], device=device)
        dist.broadcast(ok, src=0)
        if not ok.item():
            raise RuntimeError(f"scontrol requeue failed; the run was saved to {path}: resume it with --ckpt_path {path}")
        # SLURM now stops this job and starts it again; ending the processes ourselves raced with
        # that (a batch script ending first was recorded as FAILED), so wait to be stopped
        log.info("job requeued; waiting for SLURM to stop this run")
        deadline = time.time() + self.stop_timeout
        while time.time() < deadline:
            time.sleep(0.5)
        raise RuntimeError(f"SLURM did not stop the requeued job within {self.stop_timeout:.0f} s")


def _requeue() -> bool:
    """``scontrol requeue`` this job (array tasks too); True on success."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if proc.returncode != 0:
        log.error("scontrol requeue %s failed (%d): %s", job, proc.returncode, proc.stderr.strip())
    return proc.returncode == 0
