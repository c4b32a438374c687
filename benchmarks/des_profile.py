"""Where a training step's time goes, DES vs TorchRec table-wise vs PS, one config.

    python benchmarks/des_profile.py --world 4 --model WideAndDeep --fields 500 --multi-hot 4

Per method: median wall time of forward, backward and optimizer step (barriers between phases,
so waiting for the slowest rank is included), and for DES the split of its forward by
``record_function`` label (torch.profiler, rank 0). Writes benchmarks/results/des_profile.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.des_comm import build, wrap  # noqa: E402
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic  # noqa: E402
from lightning_des.distributed.launch import spawn  # noqa: E402


def worker(rank: int, world: int, cfg: dict, batch: int, steps: int, out: str) -> None:
    from torchrec.distributed.types import ShardingEnv

    env = ShardingEnv.from_process_group(dist.group.WORLD)
    spec = SyntheticSpec(num_rows=batch * world * (steps + 2), num_dense=13, cardinalities=(1000,) * cfg["F"], multi_hot=cfg["L"], seed=0)
    data, schema = make_synthetic(spec), spec.schema()
    result = {}
    for method in ("des", "table_wise", "ps"):
        module = build(cfg, schema)
        wrap(module, method, env, batch * world)
        opt = module.configure_optimizers()
        phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
        labels: dict[str, float] = {}
        for s in range(steps + 2):
            b = data.batch(np.arange((s * world + rank) * batch, (s * world + rank + 1) * batch), spec.fields)
            prof = profile(activities=[ProfilerActivity.CPU]) if (rank == 0 and s == steps + 1 and method == "des") else None
            if prof:
                prof.__enter__()
            dist.barrier()
            t0 = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(module(b.dense_features, b.sparse_features), b.labels)
            dist.barrier()
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            dist.barrier()
            t2 = time.perf_counter()
            opt.step()
            dist.barrier()
            t3 = time.perf_counter()
            if prof:
                prof.__exit__(None, None, None)
                for e in prof.key_averages():
                    if e.key.startswith("des/"):
                        labels[e.key] = e.cpu_time_total / 1e3  # ms
            if s >= 2:
                for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                    v_ms = v * 1e3
                    phases[k].append(v_ms)
        result[method] = {k: statistics.median(v) for k, v in phases.items()}
        if labels:
            result[method]["forward_labels_ms"] = labels
        del module, opt
    if rank == 0:
        Path(out).write_text(json.dumps({"config": {**cfg, "world": world, "batch_per_rank": batch}, "ms": result}, indent=1))
        print(f"config {cfg}, world {world}, {batch} samples/rank; median ms per phase")
        for m, r in result.items():
            print(f"  {m:10s} forward {r['forward']:8.1f}  backward {r['backward']:8.1f}  optimizer {r['optimizer']:8.1f}")
            if "forward_labels_ms" in r:
                print("             DES forward on rank 0: " + ", ".join(f"{k} {v:.1f}" for k, v in r["forward_labels_ms"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, default=4)
    p.add_argument("--model", default="WideAndDeep")
    p.add_argument("--fields", type=int, default=500)
    p.add_argument("--multi-hot", type=int, default=4)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--H", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "des_profile.json"))
    a = p.parse_args()
    cfg = dict(model=a.model, F=a.fields, L=a.multi_hot, d=a.d, H=a.H)
    spawn(worker, a.world, cfg, a.batch, a.steps, a.out, backend="counting")


if __name__ == "__main__":
    main()
