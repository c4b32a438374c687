"""Worker functions for the multi-process DES tests (importable by spawned processes)."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchrec.distributed.types import ShardingEnv

from lightning_des.data.synthetic import SyntheticSpec, make_synthetic
from lightning_des.distributed.clipping import clip_module_grad_norm_
from lightning_des.distributed.des_net import shard_des
from lightning_des.distributed.state import gather_full_state_dict, load_full_state_dict
from lightning_des.models import recsys

SPEC = SyntheticSpec(num_rows=256, num_dense=3, cardinalities=(20, 30, 40, 50, 25), multi_hot=2, seed=1)
TOL = 1e-5


def build(model: str, sparse_optimizer: str, seed: int = 0, schema=None, **kw):
    torch.manual_seed(seed)
    cls = getattr(recsys, model)
    extra = {"hidden": (16, 8)} if model in ("DNN", "WideAndDeep", "DeepFM") else {}
    return cls(schema or SPEC.schema(), embedding_dim=8, sparse_optimizer=sparse_optimizer, sparse_lr=0.1, dense_lr=0.01, **extra, **kw)


def _clean(name: str) -> str:
    return name.replace("_dmp_wrapped_module.", "").replace("net.module.", "net.")


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a - b).abs().max().item() if a.numel() else 0.0
    if not err <= TOL:
        raise AssertionError(f"{what}: max abs diff {err:.3g} > {TOL}")


def equivalence(rank: int, world: int, model: str, sparse_optimizer: str, steps: int = 5, clip: float | None = None,
                mode: str = "des", schema=None, collective: str = "auto", **model_kw):
    """DES vs a single-process reference on the same global batches: outputs, loss, every
    gradient that exists outside the fused kernels, and all parameters after ``steps`` steps."""
    data = make_synthetic(SPEC)
    ref, mod = (build(model, sparse_optimizer, schema=schema, **model_kw) for _ in range(2))
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    mod.net, plan = shard_des(mod.net, env, torch.device("cpu"), mod.sparse_optimizer_spec(), mode=mode, collective=collective)
    load_full_state_dict(mod.net, {k[4:]: v for k, v in ref.state_dict().items() if k.startswith("net.")})
    opt_ref, opt = ref.configure_optimizers(), mod.configure_optimizers()
    ref_params = dict(ref.named_parameters())
    b_local = 4
    B = b_local * world
    for step in range(steps):
        rows = np.arange(step * B, (step + 1) * B)
        gb = data.batch(rows, SPEC.fields)
        lb = data.batch(rows[rank * b_local : (rank + 1) * b_local], SPEC.fields)
        ref_logits = ref(gb.dense_features, gb.sparse_features)
        ref_loss = F.binary_cross_entropy_with_logits(ref_logits, gb.labels)
        logits = mod(lb.dense_features, lb.sparse_features)
        loss = F.binary_cross_entropy_with_logits(logits, lb.labels)
        _close(logits, ref_logits[rank * b_local : (rank + 1) * b_local], f"step {step} logits")
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        _close(global_loss / world, ref_loss.detach(), f"step {step} loss")
        opt_ref.zero_grad()
        opt.zero_grad()
        ref_loss.backward()
        loss.backward()
        if clip is not None:  # the reference clips locally (no DDP); DES by the norm over ranks
            ref_norm = clip_module_grad_norm_(ref.net, clip)
            norm = clip_module_grad_norm_(mod.net, clip)
            _close(norm, ref_norm, f"step {step} gradient norm")
            if not ref_norm > 2 * clip:
                raise AssertionError(f"step {step}: norm {ref_norm:.3g} does not exercise clipping at {clip}")
        checked = 0
        for name, p in mod.named_parameters():
            if p.grad is None or isinstance(p, torch.distributed._shard.sharded_tensor.ShardedTensor):
                continue
            rname = _clean(name)
            if rname in ref_params:
                _close(p.grad, ref_params[rname].grad, f"step {step} grad {rname}")
                checked += 1
        if checked == 0:
            raise AssertionError("no gradient was compared")
        opt_ref.step()
        opt.step()
    full = gather_full_state_dict(mod.net)
    ref_sd = {k[4:]: v for k, v in ref.state_dict().items() if k.startswith("net.")}
    if set(full) != set(ref_sd):
        raise AssertionError(f"state keys differ: {sorted(set(full) ^ set(ref_sd))}")
    for k, v in ref_sd.items():
        _close(full[k], v, f"after {steps} steps: {k}")
    return plan


def many_models(rank: int, world: int, sparse_optimizer: str) -> None:
    for model in ("LogisticRegression", "FactorizationMachine", "DNN", "WideAndDeep", "DeepFM"):
        try:
            equivalence(rank, world, model, sparse_optimizer)
        except AssertionError as err:
            raise AssertionError(f"{model}, world {world}, {sparse_optimizer}: {err}") from None


def mixed_widths(rank: int, world: int) -> None:
    """Per-field embedding widths and a dropped field (as AdaS&S chooses them): the FM
    projections A_f live with their tables too."""
    for model in ("FactorizationMachine", "DeepFM"):
        equivalence(rank, world, model, "adagrad", embedding_dims={"C1": 4, "C2": 12, "C3": 0, "C4": 16})


def collective(rank: int, world: int, kind: str = "auto", sizes: tuple[int, ...] = (2, 3, 1)) -> None:
    """reduce_scatter_rows (``kind``: the all-to-all path, or the native ``reduce_scatter_tensor``
    that nccl uses, run here on gloo) against dense math."""
    from lightning_des.distributed.collectives import reduce_scatter_rows

    sizes = list(sizes)[:world]
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(sum(sizes), 5, generator=g) for _ in range(world)]  # every rank's partials
    up = torch.randn(sizes[rank], 5, generator=torch.Generator().manual_seed(100 + rank))
    x = xs[rank].clone().requires_grad_()
    out = reduce_scatter_rows(x, sizes, kind)
    start = sum(sizes[:rank])
    _close(out, sum(xs)[start : start + sizes[rank]], "reduce-scatter output")
    (out * up).sum().backward()
    # d/dx_r of sum_q <out_q, up_q> = up_q on q's rows, averaged over the world (DDP convention)
    ups = [torch.randn(sizes[q], 5, generator=torch.Generator().manual_seed(100 + q)) for q in range(world)]
    _close(x.grad, torch.cat(ups) / world, "reduce-scatter gradient")


def native_reduce_scatter_models(rank: int, world: int) -> None:
    """The GPU path (``collective="reduce_scatter"``, what ``auto`` picks on nccl) through whole
    DES models, on gloo: equal to the single-process reference."""
    for model in ("FactorizationMachine", "DeepFM"):
        equivalence(rank, world, model, "adagrad", steps=3, collective="reduce_scatter")


def comm_bytes(rank: int, world: int, model: str, mode: str, result_file: str) -> None:
    """One training step under the counting backend; rank 0 writes the summed byte counts."""
    import json

    from lightning_des.distributed import comm

    data = make_synthetic(SPEC)
    mod = build(model, "sgd")
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    mod.net, plan = shard_des(mod.net, env, torch.device("cpu"), mod.sparse_optimizer_spec(), mode=mode)
    opt = mod.configure_optimizers()
    b = data.batch(np.arange(rank * 8, rank * 8 + 8), SPEC.fields)
    comm.reset()
    loss = F.binary_cross_entropy_with_logits(mod(b.dense_features, b.sparse_features), b.labels)
    loss.backward()
    opt.step()
    counts = [None] * world
    dist.all_gather_object(counts, comm.snapshot())
    if rank == 0:
        total: dict[str, int] = {}
        for c in counts:
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        with open(result_file, "w") as fh:
            json.dump({"bytes": total, "des": sorted(plan.des_operators), "costs": [c.__dict__ for c in plan.costs]}, fh)


def dlrm(rank: int, world: int) -> None:
    from lightning_des.distributed.substitution import NotSubstitutableError

    env = ShardingEnv.from_process_group(dist.group.WORLD)
    mod = build("DLRM", "sgd")
    try:
        shard_des(mod.net, env, torch.device("cpu"), mod.sparse_optimizer_spec(), mode="des")
    except NotSubstitutableError as err:
        if "DLRMHead has no equivalent DES split" not in str(err):
            raise
    else:
        raise AssertionError("mode='des' accepted DLRM")
    ref, mod = build("DLRM", "sgd"), build("DLRM", "sgd")
    mod.net, plan = shard_des(mod.net, env, torch.device("cpu"), mod.sparse_optimizer_spec(), mode="auto")
    if plan.des_operators:
        raise AssertionError(f"auto chose DES for DLRM: {plan.des_operators}")
    load_full_state_dict(mod.net, {k[4:]: v for k, v in ref.state_dict().items() if k.startswith("net.")})
    data = make_synthetic(SPEC)
    gb = data.batch(np.arange(8 * world), SPEC.fields)
    lb = data.batch(np.arange(rank * 8, rank * 8 + 8), SPEC.fields)
    _close(mod(lb.dense_features, lb.sparse_features), ref(gb.dense_features, gb.sparse_features)[rank * 8 : rank * 8 + 8], "DLRM logits")


def shard_failure_leaves_model_intact(rank: int, world: int) -> None:
    """shard_des raising inside DistributedModelParallel leaves the caller's net as it was:
    same parameters (W_f of every field), no in-backward optimizer hooks."""
    from lightning_des.distributed import des_net

    mod = build("DeepFM", "adagrad")
    before = {k: v.clone() for k, v in mod.net.state_dict().items()}

    def fail(*a, **k):
        raise RuntimeError("planted sharding failure")

    real, des_net.DistributedModelParallel = des_net.DistributedModelParallel, fail
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    try:
        shard_des(mod.net, env, torch.device("cpu"), mod.sparse_optimizer_spec(), mode="des")
        raise AssertionError("shard_des did not raise")
    except RuntimeError as err:
        assert "planted sharding failure" in str(err), err
    finally:
        des_net.DistributedModelParallel = real
    after = mod.net.state_dict()
    assert list(after) == list(before), sorted(set(before) ^ set(after))
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    for name, p in mod.net.named_parameters():
        assert not hasattr(p, "_in_backward_optimizers"), name
    batch = make_synthetic(SPEC).batch(np.arange(8), SPEC.fields)
    loss = F.binary_cross_entropy_with_logits(mod(batch.dense_features, batch.sparse_features), batch.labels)
    loss.backward()  # no fused optimizer: the tables get ordinary gradients again
    table = next(iter(mod.net.deep.embedding_bags.values())).weight
    assert table.grad is not None and table.grad.abs().sum() > 0


def clipped(rank: int, world: int) -> None:
    """Norm clipping: the DES models clip by the same global norm as the reference."""
    for model in ("FactorizationMachine", "DNN", "WideAndDeep", "DeepFM"):
        try:
            equivalence(rank, world, model, "adagrad", clip=0.01)
        except AssertionError as err:
            raise AssertionError(f"{model}, world {world}, clipped: {err}") from None


def auto_mode_mixed_pooling(rank: int, world: int) -> None:
    """mode="auto" (DES for some operators, TorchRec table-wise for others) with mixed SUM and
    MEAN pooling (multi-hot fields pool by mean) and 1-dim dense-kernel wide tables."""
    from dataclasses import replace

    schema = replace(SPEC.schema(), multi_hot=("C1", "C3"))  # C2, C4, C5 sum their two ids
    chosen = {}
    for model in ("LogisticRegression", "FactorizationMachine", "DNN", "WideAndDeep", "DeepFM"):
        try:
            chosen[model] = equivalence(rank, world, model, "adagrad", mode="auto", schema=schema).des_operators
        except AssertionError as err:
            raise AssertionError(f"{model}, world {world}, auto: {err}") from None
    # the cost model mixes within a model (e.g. DeepFM: wide part by DES, deep part table-wise)
    if not any(len(chosen[m]) == 1 for m in ("FactorizationMachine", "WideAndDeep", "DeepFM")):
        raise AssertionError(f"auto chose {chosen}; expected a model mixing DES and table-wise")
