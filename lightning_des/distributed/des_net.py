"""The DES form of a ``RecsysNet`` and the function that shards it with TorchRec.

:class:`DESNet` runs::

    out_w = wide(kjt)   # LocalPooled (DES): this rank's tables, all B_global samples
    out_d = deep(kjt)   #   or KeyedTensor (TorchRec table-wise): all tables, own samples
    p_global = [head.wide_partial(out_w) | head.deep_partial(out_d)]   for DES operators
    s = reduce_scatter_rows(p_global)                                   (B_local, P_des)
    logits = head.post([s | partial results of the non-DES operators], dense)

:func:`shard_des` plans it with TorchRec's planner (table-wise, per-table kernels), keeps each
field's ``W_f`` (and FM projection) only on the rank that owns that field's table, and wraps it
in ``DistributedModelParallel`` (which DDP-wraps the replicated dense layers, ``W_f`` excluded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.profiler import record_function
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from lightning_des.distributed.collectives import Collective, reduce_scatter_rows
from lightning_des.distributed.sharders import DES_SHARDING_TYPES, DESEmbeddingBagCollectionSharder, LocalPooled
from lightning_des.distributed.substitution import Mode, OperatorCost, choose_operators
from lightning_des.models.recsys.nets import RecsysNet, SumOverFieldsHead

log = logging.getLogger(__name__)
TABLE_MODULES = ("wide", "deep")


class DESNet(nn.Module):
    """A ``RecsysNet`` whose substituted operators exchange partial results (see module doc).

    Args:
        net: the unsharded network (its modules are reused, not copied).
        collective: see :func:`~lightning_des.distributed.collectives.reduce_scatter_rows`.

    Which operators run through DES is decided by the sharder: a collection sharded for DES
    returns :class:`LocalPooled`, any other its usual pooled embeddings.
    """

    def __init__(self, net: RecsysNet, collective: Collective = "auto") -> None:
        super().__init__()
        self.head, self.wide, self.deep = net.head, net.wide, net.deep
        self.collective = collective

    def forward(self, dense: Tensor, kjt: KeyedJaggedTensor) -> Tensor:
        head: SumOverFieldsHead = self.head
        b = dense.shape[0]
        with record_function("des/lookup"):  # ids to table owners, pooled lookups
            outs = {n: getattr(self, n)(kjt) if getattr(self, n) is not None else None for n in TABLE_MODULES}
        parts: dict[str, Tensor] = {}
        with record_function("des/partial"):
            for name, fn, dim in (("wide", head.wide_partial, head.wide_partial_dim), ("deep", head.deep_partial, head.deep_partial_dim)):
                out = outs[name]
                if not dim:
                    continue
                if out is None:
                    parts[name] = head._zeros(b, dim)
                elif isinstance(out, LocalPooled):
                    parts[name] = fn(out.values, sum(out.batch_size_per_rank))  # (B_global, P_op)
                else:
                    parts[name] = fn(out.to_dict(), b)  # (B_local, P_op): TorchRec already sent pooled rows
        des = [n for n in parts if isinstance(outs[n], LocalPooled)]
        if des:
            x = torch.cat([parts[n] for n in des], dim=1)
            if torch.is_grad_enabled() and not x.requires_grad:
                x.requires_grad_()  # a rank without local tables must still join the backward collective
            with record_function("des/reduce_scatter"):
                s = reduce_scatter_rows(x, outs[des[0]].batch_size_per_rank, self.collective)  # (B_local, sum P_op)
            for n, piece in zip(des, torch.split(s, [parts[n].shape[1] for n in des], dim=1)):
                parts[n] = piece
        with record_function("des/post"):
            return head.post(torch.cat([parts[n] for n in TABLE_MODULES if n in parts], dim=1), dense)


@dataclass
class DESPlan:
    """What :func:`shard_des` decided: the TorchRec plan, the DES operators and their costs."""

    plan: ShardingPlan
    des_operators: set[str]
    costs: list[OperatorCost]

    def describe(self) -> str:
        lines = [c.describe() + ("  -> DES" if c.name in self.des_operators else "  -> table-wise") for c in self.costs]
        return "\n".join(lines) or "no substitutable operator: TorchRec table-wise sharding"


def table_constraints(net: RecsysNet, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, ParameterConstraints]:
    """Table-wise and the fused kernel for every table (the planner places them);
    ``extra`` overrides ``ParameterConstraints`` fields per table name."""
    extra = dict(extra or {})
    out = {}
    for ebc in (net.wide, net.deep):
        if ebc is None:
            continue
        for cfg in ebc.embedding_bag_configs():
            kw: dict[str, Any] = {"sharding_types": ["table_wise"], "compute_kernels": ["fused"]}
            kw.update(extra.pop(cfg.name, {}))
            out[cfg.name] = ParameterConstraints(**kw)
    if extra:
        raise ValueError(f"constraints name unknown tables {sorted(extra)}; tables are {sorted(out)}")
    return out


def plan_tables(
    module: nn.Module,
    env: ShardingEnv,
    sharder: DESEmbeddingBagCollectionSharder,
    constraints: dict[str, ParameterConstraints],
    local_world_size: int | None = None,
    compute_device: str = "cpu",
) -> ShardingPlan:
    """TorchRec's planner over ``module``'s embedding collections (collectively: every rank
    gets rank 0's plan)."""
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=env.world_size, local_world_size=local_world_size or env.world_size),
        kernel_config=KernelConfig(compute_device=compute_device),
    )
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    return planner.collective_plan(module, [sharder], env.process_group)


def shard_des(
    net: RecsysNet,
    env: ShardingEnv,
    device: torch.device,
    sparse_optimizer: tuple[type[torch.optim.Optimizer], dict[str, Any]],
    mode: Mode = "auto",
    collective: Collective = "auto",
    constraints: dict[str, dict[str, Any]] | None = None,
    local_world_size: int | None = None,
    global_batch: int = 0,
    sharding_types: Sequence[str] = DES_SHARDING_TYPES,
    operators: Iterable[str] | None = None,
) -> tuple[DistributedModelParallel, DESPlan]:
    """Shard ``net`` for DES (or TorchRec table-wise where DES does not pay or apply).

    The fused tables get ``sparse_optimizer`` applied in backward (TorchRec fuses it into the
    lookup kernel); dense-kernel tables keep ordinary parameters for the caller's optimizer.
    All ranks must pass identically initialised ``net`` s (same seed). ``global_batch`` (B,
    summed over ranks) lets the cost model count the all-reduce that table-wise sharding needs
    for the replicated ``W_f``; 0 compares per sample. ``sharding_types`` are those the planner
    may use for collections that do not go through DES (benchmarks compare TorchRec's types;
    pick one per table with ``constraints``). ``operators`` limits DES to some of
    ``"wide"``/``"deep"`` (default: any that qualifies).
    """
    n, rank = env.world_size, env.rank
    des_ops, costs = choose_operators(net, n, mode, global_batch, operators)
    wrapped: nn.Module = DESNet(net, collective) if isinstance(net.head, SumOverFieldsHead) else net
    cons = table_constraints(net, constraints)
    sharder = DESEmbeddingBagCollectionSharder(des_modules={m for m in TABLE_MODULES if m in des_ops}, sharding_types=sharding_types)
    plan = plan_tables(wrapped, env, sharder, cons, local_world_size, device.type)
    des_plan = DESPlan(plan, des_ops, costs)
    # The fused kernel needs widths that are multiples of 4; TorchRec's planner only offers the
    # dense kernel with data-parallel sharding, but table-wise lookups run it fine, so 1-dim
    # wide/LR tables are switched to it after placement. Fused tables run the sparse optimizer
    # inside the kernel's backward; dense-kernel tables keep ordinary parameters.
    head = net.head
    field_ops = dict(head.field_ops) if isinstance(head, SumOverFieldsHead) else None
    fused: list[nn.Parameter] = []
    try:
        dmp = _shard_in_place(net, wrapped, env, device, plan, sharder, des_ops, sparse_optimizer, fused)
    except BaseException:
        _restore(net, field_ops, fused)  # leave the caller's model as it was
        raise
    log.info("DES plan (rank %d):\n%s", rank, des_plan.describe())
    return dmp, des_plan


def _shard_in_place(net: RecsysNet, wrapped: nn.Module, env: ShardingEnv, device: torch.device, plan: ShardingPlan,
                    sharder: DESEmbeddingBagCollectionSharder, des_ops: set[str],
                    sparse_optimizer: tuple[type[torch.optim.Optimizer], dict[str, Any]],
                    fused: list[nn.Parameter]) -> DistributedModelParallel:
    """The mutating part of :func:`shard_des` (``fused`` collects the tables given an
    in-backward optimizer, so a failure can be undone)."""
    rank = env.rank
    cls, kw = sparse_optimizer
    for name, ebc in (("wide", net.wide), ("deep", net.deep)):
        if ebc is None:
            continue
        for cfg in ebc.embedding_bag_configs():
            if plan.plan[name][cfg.name].compute_kernel == "dense":
                continue
            if cfg.embedding_dim % 4:
                plan.plan[name][cfg.name].compute_kernel = "dense"
            else:
                weight = ebc.embedding_bags[cfg.name].weight
                fused.append(weight)
                apply_optimizer_in_backward(cls, [weight], kw)

    ignore: list[str] = []
    if "deep" in des_ops:
        # keep W_f / A_f only where field f's table lives; they are rank-local, so not DDP's
        owned = {
            cfg.feature_names[0]
            for cfg in net.deep.embedding_bag_configs()
            if plan.plan["deep"][cfg.name].ranks == [rank]
        }
        head: SumOverFieldsHead = net.head
        for f in list(head.field_ops):
            if f not in owned:
                del head.field_ops[f]
        ignore = [f"head.field_ops.{name}" for name, _ in head.field_ops.named_parameters()]
    dmp = DistributedModelParallel(
        wrapped,
        env=env,
        device=device,
        plan=plan,
        sharders=[sharder],
        data_parallel_wrapper=DefaultDataParallelWrapper(params_to_ignore=ignore, static_graph=False),
    )
    return dmp


def _restore(net: RecsysNet, field_ops: dict[str, nn.Module] | None, fused: list[nn.Parameter]) -> None:
    """Undo :func:`_shard_in_place` on the caller's ``net``: the deleted ``W_f`` blocks come
    back in their order, and the in-backward optimizers (attributes and gradient hooks) go."""
    if field_ops is not None:
        ops = net.head.field_ops
        for name in list(ops):
            del ops[name]
        for name, mod in field_ops.items():
            ops[name] = mod
    from torch.distributed.optim import apply_optimizer_in_backward as aoib

    for p in fused:
        for handle in aoib.param_to_optim_hook_handle_map.pop(p, []):
            handle.remove()
        aoib.param_to_acc_grad_map.pop(p, None)
        for attr in ("_in_backward_optimizers", "_optimizer_classes", "_optimizer_kwargs"):
            if hasattr(p, attr):
                delattr(p, attr)
