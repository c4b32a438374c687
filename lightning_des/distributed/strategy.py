"""``DESStrategy``: Lightning strategy for DES training (``Trainer(strategy="des")``).

Built on ``DDPStrategy`` for what it already does well (launchers for local processes,
torchrun and SLURM; process-group set-up; reduce/barrier/broadcast; distributed samplers).
Instead of wrapping the LightningModule in DDP it shards ``module.net`` with
:func:`~lightning_des.distributed.des_net.shard_des` (TorchRec planner + DES sharder;
``DistributedModelParallel`` DDP-wraps the replicated dense layers). Checkpoints are written
with ``torch.distributed.checkpoint`` and resume at any world size
(:mod:`lightning_des.distributed.checkpoint`); norm clipping uses the global norm over ranks;
on SLURM the requeue checkpoint is written at a step boundary all ranks agree on
(:mod:`lightning_des.distributed.preemption`).
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import timedelta
from typing import Any, Literal, Mapping

import torch
import torch.distributed as dist
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.optim import Optimizer
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.keyed import KeyedOptimizer
from typing_extensions import override

from lightning_des.distributed import checkpoint as ckpt_io
from lightning_des.distributed import comm
from lightning_des.distributed.collectives import Collective
from lightning_des.distributed.des_net import DESPlan, shard_des
from lightning_des.distributed.launch import cpu_threads_per_process
from lightning_des.distributed.preemption import SyncedRequeue
from lightning_des.distributed.substitution import OPERATORS, Mode

log = logging.getLogger(__name__)
_MODES = ("auto", "des", "torchrec")
_COLLECTIVES = ("auto", "all_to_all", "reduce_scatter")


@torch.no_grad()
def _init_keyed_state(opt: KeyedOptimizer) -> None:
    """Create a KeyedOptimizer's lazy state (TorchRec loads state in place) without letting its
    dummy zero-gradient step touch the parameters (weight decay would)."""
    params = [p for p in opt.params.values() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    opt.init_state()
    for p, s in zip(params, saved):
        p.copy_(s)
        p.grad = None


class DESStrategy(DDPStrategy):
    """Distributed Equivalent Substitution on TorchRec.

    Args:
        mode: ``"auto"`` (default) picks DES or TorchRec table-wise per operator by the
            analytic cost model and logs the numbers; ``"des"`` forces DES (error for a model
            without an equivalent split, e.g. DLRM); ``"torchrec"`` uses TorchRec's standard
            table-wise sharding throughout.
        collective: how partial results are reduce-scattered: ``"auto"``, ``"all_to_all"``
            (all-to-all + local sum; right for gloo) or ``"reduce_scatter"`` (native; nccl).
        operators: which substitutable operators DES may take: ``["wide", "deep"]`` (default,
            both), i.e. the 1-dim LR tables and the ``d_f``-dim tables with what consumes them;
            the others use TorchRec table-wise.
        constraints: TorchRec ``ParameterConstraints`` fields per table name, e.g.
            ``{"emb_user_id": {"pooling_factors": [1.0]}}`` (sharding stays table-wise).
        process_group_backend: ``"gloo"``, ``"nccl"`` or ``"counting"`` (gloo that counts bytes;
            chosen automatically when a ``CommStatsCallback`` is present).
        start_method: launcher for local processes; ``"popen"`` (default) or ``"fork"``.
            ``"spawn"`` is refused: Lightning's spawn launcher reloads the module's state in
            the parent with ``weights_only`` and cannot carry sharded tensors.
        timeout: as for ``DDPStrategy``.
        accelerator: as for ``DDPStrategy``.
        parallel_devices: as for ``DDPStrategy``.
        cluster_environment: as for ``DDPStrategy``.
        checkpoint_io: must stay None: checkpoints go through ``torch.distributed.checkpoint``
            (:mod:`lightning_des.distributed.checkpoint`).
        precision_plugin: as for ``DDPStrategy``.

    Example::

        trainer = Trainer(strategy=DESStrategy(mode="des"), accelerator="cpu", devices=2)
        # or: Trainer(strategy="des", ...); YAML: ``strategy: des``, or class_path/init_args
    """

    strategy_name = "des"

    def __init__(
        self,
        mode: Literal["auto", "des", "torchrec"] = "auto",
        collective: Literal["auto", "all_to_all", "reduce_scatter"] = "auto",
        operators: list[Literal["wide", "deep"]] | None = None,
        constraints: dict[str, dict[str, Any]] | None = None,
        process_group_backend: str | None = None,
        start_method: Literal["popen", "fork"] = "popen",
        timeout: timedelta | None = default_pg_timeout,
        accelerator: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: Any = None,
        checkpoint_io: Any = None,
        precision_plugin: Any = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"DESStrategy: mode must be one of {list(_MODES)}, got {mode!r}")
        if collective not in _COLLECTIVES:
            raise ValueError(f"DESStrategy: collective must be one of {list(_COLLECTIVES)}, got {collective!r}")
        if start_method not in ("popen", "fork"):
            raise ValueError(f"DESStrategy: start_method must be 'popen' or 'fork', got {start_method!r}")
        unknown = sorted(set(operators or ()) - set(OPERATORS))
        if unknown:
            raise ValueError(f"DESStrategy: operators must be among {list(OPERATORS)}, got {unknown}")
        if checkpoint_io is not None:
            raise ValueError("DESStrategy: checkpoint_io plugins are not supported; sharded checkpoints are written with "
                             "torch.distributed.checkpoint (see lightning_des.distributed.checkpoint)")
        if constraints is not None and not all(isinstance(v, Mapping) for v in constraints.values()):
            raise ValueError("DESStrategy: constraints must map table names to dicts of ParameterConstraints fields")
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
        )
        self.mode: Mode = mode
        self.collective: Collective = collective
        self.operators = list(operators) if operators is not None else None
        self.constraints = dict(constraints or {})
        self.des_plan: DESPlan | None = None

    # -- process group -------------------------------------------------------------------
    @override
    def _get_process_group_backend(self) -> str:
        if self._process_group_backend is None and self._wants_comm_stats():
            self._process_group_backend = comm.BACKEND
        if self._process_group_backend == comm.BACKEND:
            comm.register()
        return super()._get_process_group_backend()

    def _wants_comm_stats(self) -> bool:
        from lightning_des.callbacks.comm_stats import CommStatsCallback

        trainer = getattr(self._lightning_module, "_trainer", None)
        return trainer is not None and any(isinstance(cb, CommStatsCallback) for cb in trainer.callbacks)

    @override
    def setup_environment(self) -> None:
        trainer = getattr(self._lightning_module, "_trainer", None)
        if trainer is not None and trainer.accumulate_grad_batches != 1:  # before any process group exists
            raise ValueError(
                f"DESStrategy does not support accumulate_grad_batches={trainer.accumulate_grad_batches}: TorchRec's fused "
                "embedding optimizer updates the tables in every backward pass, so the micro-batches would not add up to "
                "one step. Use a larger batch_size (per process) instead"
            )
        # TorchRec's get_local_size() assumes 8 when LOCAL_WORLD_SIZE is unset
        os.environ.setdefault("LOCAL_WORLD_SIZE", str(self.num_processes))
        if self.root_device.type == "cpu":
            threads = cpu_threads_per_process(self.num_processes)
            log.info("DESStrategy: %d CPU threads per process (%d processes per node)", threads, self.num_processes)
        super().setup_environment()

    # -- model ---------------------------------------------------------------------------
    @override
    def model_to_device(self) -> None:
        """Tables are placed by sharding; everything else moves with the sharded wrapper."""
        module = self.lightning_module
        for name, child in module.named_children():
            if name != "net":
                child.to(self.root_device)

    def _shard(self) -> None:
        module = self.lightning_module
        net = getattr(module, "net", None)
        if isinstance(net, DistributedModelParallel):
            return
        if net is None or not hasattr(module, "sparse_optimizer_spec"):
            raise TypeError(
                f"DESStrategy needs a recommender LightningModule with a `net` (RecsysNet) and "
                f"`sparse_optimizer_spec()` (see lightning_des.models.recsys.CTRModule); got {type(module).__name__}"
            )
        env = ShardingEnv.from_process_group(dist.group.WORLD)
        batch = getattr(getattr(module.trainer, "datamodule", None), "batch_size", 0) or 0
        module.net, self.des_plan = shard_des(
            net,
            env,
            self.root_device,
            module.sparse_optimizer_spec(),
            mode=self.mode,
            collective=self.collective,
            constraints=self.constraints,
            local_world_size=self.num_processes,
            global_batch=int(batch) * self.world_size,
            operators=self.operators,
        )
        rank_zero_info(f"DESStrategy(mode={self.mode!r}) plan:\n{self.des_plan.describe()}")

    @override
    def setup(self, trainer: Any) -> None:
        assert self.accelerator is not None
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        self._shard()
        if self.root_device.type == "cpu":
            # fbgemm's CPU lookups have no inference-mode kernels ("... is only available for
            # these backends: [CUDA, ...]"); Lightning already picks no_grad for plain gloo, but
            # not for other CPU backends such as "counting"
            for loop in (trainer.validate_loop, trainer.test_loop, trainer.predict_loop):
                loop.inference_mode = False
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
        self.setup_precision_plugin()
        if trainer.state.fn == TrainerFn.FITTING:
            _optimizers_to_device(self.optimizers, self.root_device)

    @override
    def configure_ddp(self) -> None:  # DMP wraps the dense part in DDP itself
        pass

    # -- SLURM preemption ----------------------------------------------------------------
    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        # Lightning has registered its signal handlers by now (after setup); replace its
        # requeue handler, which would save the collective checkpoint mid-step on each rank
        trainer = self.lightning_module.trainer
        self._requeue = SyncedRequeue(trainer) if SyncedRequeue.wanted(trainer) else None

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if getattr(self, "_requeue", None) is not None:
            self._requeue.check(self.root_device)

    # -- checkpoints ---------------------------------------------------------------------
    @property
    @override
    def restore_checkpoint_after_setup(self) -> bool:
        return True  # the sharded model must exist before its shards are loaded

    def _fused_optimizer(self):
        net = self.lightning_module.net
        return net.fused_optimizer if isinstance(net, DistributedModelParallel) else None

    def _checkpoint_tensors(self, optimizer_states: list[Mapping[str, Any]], fused_state: Mapping[str, Any] | None) -> dict[str, Any]:
        """The flat ``model/``, ``optim/<i>/`` and ``fused/`` tensors of this rank (see
        :mod:`lightning_des.distributed.checkpoint`) for these optimizer states."""
        tensors, _ = ckpt_io.flatten(self.lightning_module.state_dict(), "model")
        groups: list[tuple[str, Mapping[str, Any]]] = [(f"optim/{i}", st["state"]) for i, st in enumerate(optimizer_states)]
        if fused_state is not None:
            groups.append(("fused", fused_state["state"]))
        for prefix, state in groups:
            t, other = ckpt_io.flatten(state, prefix)
            if other:
                raise ValueError(f"optimizer state holds non-tensor values {sorted(other)[:3]}: DES checkpoints store tensors only")
            tensors.update(t)
        return tensors

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("DESStrategy.save_checkpoint: storage_options are not supported (checkpoints are written with "
                            "torch.distributed.checkpoint's FileSystemWriter)")
        states = checkpoint.get("optimizer_states", [])
        fused = self._fused_optimizer()
        tensors = self._checkpoint_tensors(states, fused.state_dict() if fused is not None else None)
        meta = None
        if self.is_global_zero:
            meta = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
            meta["optimizer_hparams"] = [[{k: v for k, v in g.items() if k != "params"} for g in st.get("param_groups", [])] for st in states]
            meta["world_size"] = self.world_size
        ckpt_io.save(filepath, tensors, meta)

    @override
    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Reads the model and optimizer tensors in place (resharded to this run's plan and world
        size) and returns the rest of the checkpoint; loading unpickles nothing."""
        meta = ckpt_io.read_meta(checkpoint_path)
        for opt in self.optimizers:
            if isinstance(opt, KeyedOptimizer):
                _init_keyed_state(opt)
        live_states = [opt.state_dict() for opt in self.optimizers]
        fused = self._fused_optimizer()
        live_fused = fused.state_dict() if fused is not None else None
        ckpt_io.load(checkpoint_path, self._checkpoint_tensors(live_states, live_fused))
        self._restored = (live_states, live_fused, meta.get("optimizer_hparams", []))
        rank_zero_info(f"DESStrategy: restored {checkpoint_path} (saved at world size {meta.get('world_size')}, "
                       f"now {self.world_size})")
        return {**meta, "state_dict": {}, "optimizer_states": live_states}

    @override
    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        """The model's tensors were read in place by :meth:`load_checkpoint`."""

    @override
    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        live_states, live_fused, hparams = getattr(self, "_restored", ([], None, []))
        for i, (opt, state) in enumerate(zip(self.optimizers, live_states)):
            saved = hparams[i] if i < len(hparams) else []
            if saved and len(saved) == len(state.get("param_groups", [])):  # learning rates etc. as saved
                state = {**state, "param_groups": [{**g, **h} for g, h in zip(state["param_groups"], saved)]}
            opt.load_state_dict(state)
        fused = self._fused_optimizer()
        if fused is not None and live_fused is not None:
            fused.load_state_dict(live_fused)

    @override
    def remove_checkpoint(self, filepath: _PATH) -> None:
        if self.is_global_zero:
            shutil.rmtree(filepath, ignore_errors=True)

    @override
    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="Distributed Equivalent Substitution on TorchRec")
