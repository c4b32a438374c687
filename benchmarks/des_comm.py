"""DES vs TorchRec sharding vs a parameter server: measured bytes per step and samples/s.

    python benchmarks/des_comm.py                 # default grid (~10 min on 2 cores)
    python benchmarks/des_comm.py --full          # the whole sweep, 240 configs (hours)
    python benchmarks/des_comm.py --worlds 2 --models WideAndDeep --fields 26 --multi-hot 1

Same model, same synthetic Criteo-like batches (Zipf ids), one process group per world size,
methods side by side. Bytes are payload bytes summed over ranks, counted by the ``counting``
process-group backend around the real collectives (lightning_des.distributed.comm):

* ``ids``: TorchRec's input distribution (identical for DES and TorchRec) / the PS id requests;
* ``changed``: everything else (partial results or pooled embeddings, their gradients, DDP's
  all-reduce of dense parameters, PS rows and gradients): what the method changes.

Writes benchmarks/results/des_comm.json and des_comm.png; prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ps_baseline import PSNet  # noqa: E402
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic  # noqa: E402
from lightning_des.distributed import comm  # noqa: E402
from lightning_des.distributed.des_net import plan_tables, shard_des, table_constraints  # noqa: E402
from lightning_des.distributed.sharders import DESEmbeddingBagCollectionSharder  # noqa: E402
from lightning_des.distributed.launch import spawn  # noqa: E402
from lightning_des.distributed.substitution import operator_costs  # noqa: E402
from lightning_des.models import recsys  # noqa: E402

MODELS = ["LogisticRegression", "FactorizationMachine", "DNN", "WideAndDeep", "DeepFM"]
TORCHREC_TYPES = ["table_wise", "column_wise", "row_wise", "data_parallel"]


def default_grid() -> list[dict]:
    """Every model at (F, L) in {(26, 1), (26, 4), (500, 4)} with d=16, H=1024, and at F=200,
    L=1, d=64, H=256: each sweep value appears (~10 minutes on 2 cores)."""
    grid = [dict(model=m, F=f, L=l, d=16, H=1024) for m in MODELS for f, l in ((26, 1), (26, 4), (500, 4))]
    return grid + [dict(model=m, F=200, L=1, d=64, H=256) for m in MODELS]


def full_grid() -> list[dict]:
    return [dict(model=m, F=f, L=l, d=d, H=h) for m, f, l, d, h in itertools.product(MODELS, (26, 200, 500), (1, 4), (16, 64), (256, 1024))]


def methods_for(cfg: dict) -> list[str]:
    extra = TORCHREC_TYPES[1:] if (cfg["F"], cfg["L"]) == (26, 1) else []  # the other TorchRec types, small configs
    return ["des", "auto", "table_wise", *extra, "ps"]


def synthetic_spec(cfg: dict, num_rows: int) -> SyntheticSpec:
    """Criteo-like batches for ``cfg``: 13 dense features, F fields of 1000 Zipf(1.2) ids, L ids each."""
    return SyntheticSpec(num_rows=num_rows, num_dense=13, cardinalities=(1000,) * cfg["F"], multi_hot=cfg["L"], zipf=1.2, seed=0)


def build(cfg: dict, schema):
    torch.manual_seed(0)
    cls = getattr(recsys, cfg["model"])
    kw = {"hidden": (cfg["H"],)} if cfg["model"] in ("DNN", "WideAndDeep", "DeepFM") else {}
    return cls(schema, embedding_dim=cfg["d"], sparse_optimizer="sgd", sparse_lr=0.05, **kw)


def wrap(module, method: str, env, global_batch: int):
    """Replace ``module.net`` by the method's distributed version; returns the DES plan/costs."""
    from torch.nn.parallel import DistributedDataParallel

    net = module.net
    if method in ("des", "auto"):
        module.net, plan = shard_des(net, env, torch.device("cpu"), module.sparse_optimizer_spec(), mode=method, global_batch=global_batch)
        return plan
    if method == "ps":
        plan = plan_tables(net, env, DESEmbeddingBagCollectionSharder(), table_constraints(net))
        owners = {m: {t: p.ranks[0] for t, p in plan.plan[m].items()} for m in ("wide", "deep") if m in plan.plan}
        ps = PSNet(net, owners, lr=0.05)
        ps.head = DistributedDataParallel(ps.head)
        module.net = ps
        return None
    cons = {}
    for ebc in (net.wide, net.deep):
        if ebc is None:
            continue
        for c in ebc.embedding_bag_configs():
            # 1-dim tables cannot be split by columns nor use the fused kernel: keep them table-wise
            st = method if (c.embedding_dim % 4 == 0 or method in ("table_wise", "data_parallel")) else "table_wise"
            cons[c.name] = {"sharding_types": [st], "compute_kernels": ["dense" if st == "data_parallel" else "fused"]}
    module.net, plan = shard_des(net, env, torch.device("cpu"), module.sparse_optimizer_spec(), mode="torchrec",
                                 constraints=cons, sharding_types=TORCHREC_TYPES, global_batch=global_batch)
    return plan


class Measurement:
    """One (config, method) on this rank: the model built and wrapped, then timed steps taken in
    one or several calls to :meth:`steps` (several methods can be interleaved round by round, so
    slow drifts of a noisy machine hit them alike); :meth:`row` summarises (collective)."""

    def __init__(self, cfg: dict, method: str, env, rank: int, world: int, spec, batch: int) -> None:
        self.cfg, self.method, self.rank, self.world, self.spec, self.batch = cfg, method, rank, world, spec, batch
        self.module = build(cfg, spec.schema())
        self.costs = operator_costs(self.module.net, world, batch * world)
        self.common = 2 * (world - 1) * 4 * sum(
            p.numel() for n, p in self.module.named_parameters() if ".embedding_bags." not in n and ".field_ops." not in n
        )
        self.error: str | None = None
        try:
            self.plan = wrap(self.module, method, env, batch * world)
        except Exception as err:  # a TorchRec type the planner cannot place here: say so in the table
            self.error = f"{type(err).__name__}: {str(err)[:200]}"
            dist.barrier()
            return
        self.opt = self.module.configure_optimizers()
        self.times: list[float] = []
        self.per_step: list[dict[str, int]] = []
        self.probed: dict[str, float] = {}

    def steps(self, data, first: int, n: int, timed: bool = True, probe: Callable[[], dict[str, int]] | None = None) -> None:
        """Train global steps ``first .. first + n - 1`` (every method sees the same batches);
        ``timed=False`` for warm-up. ``probe`` counters are read around the timed steps."""
        if self.error is not None:
            return
        world, rank, batch = self.world, self.rank, self.batch
        if timed and probe is not None:
            dist.barrier()
            before_probe = probe()
        for s in range(first, first + n):
            idx = np.arange((s * world + rank) * batch, (s * world + rank + 1) * batch)
            b = data.batch(idx, self.spec.fields)
            dist.barrier()
            before = comm.snapshot()
            t0 = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(self.module(b.dense_features, b.sparse_features), b.labels)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            dist.barrier()
            dt = time.perf_counter() - t0
            after = comm.snapshot()
            if timed:
                self.times.append(dt)
                self.per_step.append({k: v - before.get(k, 0) for k, v in after.items() if k.split(":")[0] != "barrier"})
        if timed and probe is not None:
            for k, v in probe().items():
                self.probed[k] = self.probed.get(k, 0) + v - before_probe[k]

    def row(self) -> dict | None:
        """Collective; rank 0 gets the row (median step time, payload bytes per step by
        collective and tag summed over ranks, probe deltas per step per rank), others None."""
        if self.error is not None:
            return {**self.cfg, "world": self.world, "method": self.method, "error": self.error} if self.rank == 0 else None
        probed = {k: v / len(self.times) for k, v in self.probed.items()}
        gathered = [None] * self.world
        dist.all_gather_object(gathered, (self.per_step, probed))
        if self.rank != 0:
            return None
        total: dict[str, float] = {}
        for rank_steps, _ in gathered:
            for st in rank_steps:
                for k, v in st.items():
                    total[k] = total.get(k, 0) + v / len(rank_steps)
        ids = sum(v for k, v in total.items() if k.endswith(":ids"))
        changed = sum(v for k, v in total.items() if not k.endswith(":ids") and not k.startswith("broadcast"))
        des_ops = sorted(self.plan.des_operators) if self.plan is not None else []
        if self.method in ("des", "auto"):
            analytic = self.common + sum(c.des_bytes if c.name in des_ops else c.table_wise_bytes for c in self.costs)
        elif self.method == "table_wise":
            analytic = self.common + sum(c.table_wise_bytes for c in self.costs)
        else:
            analytic = None
        # a step ends when the slowest rank ends (the barrier): rank 0's times are the step times
        med = statistics.median(self.times)
        row = {**self.cfg, "world": self.world, "method": self.method, "des_operators": des_ops, "bytes": total,
               "ids_bytes": ids, "changed_bytes": changed, "total_bytes": ids + changed,
               "analytic_changed_bytes": analytic, "step_s": med, "samples_per_s": self.batch * self.world / med,
               "step_s_all": self.times}
        if self.probed:
            row["probe"] = [p for _, p in gathered]
        return row


def measure(cfg: dict, method: str, env, rank: int, world: int, data, spec, batch: int, warmup: int, steps: int) -> dict | None:
    """One method alone: ``warmup`` untimed then ``steps`` timed steps (see :class:`Measurement`)."""
    m = Measurement(cfg, method, env, rank, world, spec, batch)
    if rank == 0 and m.error is None:
        print(f"[{time.strftime('%H:%M:%S')}] N={world} {cfg} {method}", flush=True)
    m.steps(data, 0, warmup, timed=False)
    m.steps(data, warmup, steps)
    return m.row()


def worker(rank: int, world: int, grid: list[dict], batch: int, warmup: int, steps: int, out: str) -> None:
    from torchrec.distributed.types import ShardingEnv

    env = ShardingEnv.from_process_group(dist.group.WORLD)
    rows = []
    for cfg in grid:
        spec = synthetic_spec(cfg, batch * world * (warmup + steps))
        data = make_synthetic(spec)
        for method in methods_for(cfg):
            row = measure(cfg, method, env, rank, world, data, spec, batch, warmup, steps)
            if row is not None:
                rows.append(row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    key = lambda r: (r["world"], r["model"], r["F"], r["L"], r["d"], r["H"])  # noqa: E731
    for k, grp in itertools.groupby(sorted((r for r in rows if "error" not in r), key=key), key=key):
        by = {r["method"]: r for r in grp}
        des, tw, ps, auto = by.get("des"), by.get("table_wise"), by.get("ps"), by.get("auto")
        s = dict(zip(("world", "model", "F", "L", "d", "H"), k))
        s["des_changed"] = des["changed_bytes"]
        s["des_vs_analytic"] = des["changed_bytes"] / des["analytic_changed_bytes"]
        s["tw_changed"] = tw["changed_bytes"]
        s["tw_vs_analytic"] = tw["changed_bytes"] / tw["analytic_changed_bytes"]
        s["saving_vs_tw"] = 1 - des["changed_bytes"] / tw["changed_bytes"]
        s["saving_vs_tw_total"] = 1 - des["total_bytes"] / tw["total_bytes"]
        s["saving_vs_ps_total"] = 1 - des["total_bytes"] / ps["total_bytes"]
        s["saving_vs_ps_changed"] = 1 - des["changed_bytes"] / ps["changed_bytes"]
        s["auto_over_best"] = auto["changed_bytes"] / min(des["changed_bytes"], tw["changed_bytes"]) - 1
        s["auto_ops"] = "+".join(auto["des_operators"]) or "-"
        for m, r in by.items():
            s[f"sps_{m}"] = r["samples_per_s"]
        out.append(s)
    return out


def plot(summary: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    labels = [f"{s['model'][:6]} F{s['F']} L{s['L']} d{s['d']} H{s['H']} N{s['world']}" for s in summary]
    x = np.arange(len(summary))
    for i, (key, name) in enumerate((("des_changed", "DES"), ("tw_changed", "TorchRec table-wise"))):
        axes[0].bar(x + (i - 0.5) * 0.4, [s[key] / 1e6 for s in summary], 0.4, label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("MB per step (payload, all ranks, ids excluded)")
    axes[0].set_xticks(x, labels, rotation=90, fontsize=6)
    axes[0].legend()
    for i, (key, name) in enumerate((("sps_des", "DES"), ("sps_table_wise", "table-wise"), ("sps_ps", "PS"))):
        axes[1].bar(x + (i - 1) * 0.27, [s.get(key, 0) for s in summary], 0.27, label=name)
    axes[1].set_ylabel("samples/s (2 CPU cores, gloo)")
    axes[1].set_xticks(x, labels, rotation=90, fontsize=6)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every combination of the sweep (hours) instead of the default sample")
    p.add_argument("--worlds", nargs="*", type=int, default=[2, 4])
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--fields", nargs="*", type=int, default=None)
    p.add_argument("--multi-hot", nargs="*", type=int, default=None)
    p.add_argument("--batch", type=int, default=64, help="samples per rank per step")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "des_comm"))
    a = p.parse_args()
    grid = full_grid() if a.full else default_grid()
    grid = [g for g in grid if (a.models is None or g["model"] in a.models) and (a.fields is None or g["F"] in a.fields)
            and (a.multi_hot is None or g["L"] in a.multi_hot)]
    rows = []
    t0 = time.time()
    for world in a.worlds:
        tmp = Path(a.out + f".w{world}.tmp")
        spawn(worker, world, grid, a.batch, a.warmup, a.steps, str(tmp), backend="counting")
        rows += json.loads(tmp.read_text())
        tmp.unlink()
    summary = summarize(rows)
    Path(a.out + ".json").write_text(json.dumps({"rows": rows, "summary": summary, "wall_s": time.time() - t0}, indent=1))
    print("| N | model | F | L | d | H | DES MB/step | meas/analytic | table-wise MB | meas/analytic | DES saving vs TW (excl. ids / total) "
          "| vs PS (excl. ids / total) | auto ops | auto over best | samples/s DES / TW / PS |")
    print("|" + "---|" * 15)
    for s in summary:
        print(f"| {s['world']} | {s['model']} | {s['F']} | {s['L']} | {s['d']} | {s['H']} | {s['des_changed'] / 1e6:.3f} | "
              f"{s['des_vs_analytic']:.3f} | {s['tw_changed'] / 1e6:.3f} | {s['tw_vs_analytic']:.3f} | "
              f"{s['saving_vs_tw']:.1%} / {s['saving_vs_tw_total']:.1%} | {s['saving_vs_ps_changed']:.1%} / {s['saving_vs_ps_total']:.1%} | "
              f"{s['auto_ops']} | {s['auto_over_best']:+.1%} | {s['sps_des']:.0f} / {s['sps_table_wise']:.0f} / {s['sps_ps']:.0f} |")
    other = [r for r in rows if r["method"] in TORCHREC_TYPES[1:]]
    if other:
        print("\nOther TorchRec sharding types (F=26): MB/step excl. ids, samples/s")
        for r in other:
            msg = r.get("error") or f"{r['changed_bytes'] / 1e6:.3f} MB, {r['samples_per_s']:.0f}/s"
            print(f"  N={r['world']} {r['model']} L={r['L']} {r['method']}: {msg}")
    if plot(summary, Path(a.out + ".png")):
        print(f"wrote {a.out}.json and {a.out}.png")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
