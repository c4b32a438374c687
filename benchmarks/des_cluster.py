"""DES vs TorchRec sharding vs a parameter server on an emulated, bandwidth-limited cluster.

    sudo python benchmarks/des_cluster.py             # default plan (~30 min on 2 cores; see default_plan)
    sudo python benchmarks/des_cluster.py --full      # every model, F, rate and method (hours; resumable)
    sudo python benchmarks/des_cluster.py --nodes 2 --rates unlimited 200mbit --models DeepFM --fields 200

Each node is its own network namespace with one interface on a shared bridge
(``benchmarks/netns.py``); every node's egress is shaped with ``tc tbf`` to the rate under test.
Ranks start with ``torchrun --nnodes N --nproc_per_node 1`` in their namespaces and meet over
c10d's static rendezvous on the bridge addresses (``GLOO_SOCKET_IFNAME=eth0``: gloo would bind to
127.0.0.1 otherwise). One launch per (N, rate) runs every pending (config, method) in turn, on the
same synthetic Criteo-like batches as ``des_comm.py``.

Per row: median step time over ``--steps`` steps after ``--warmup`` (a step ends when the slowest
rank ends; the methods of a config take turns in ``--rounds`` rounds, so the slow drifts of a
noisy 2-core machine hit them alike), samples/s, payload bytes per step counted by the ``counting`` backend (as in
``des_comm.py``) and *wire* bytes per step read from each node's
``/sys/class/net/eth0/statistics/tx_bytes`` (TCP/IP headers, gloo's own algorithms, the
rendezvous store: what really crossed the link). ``network share`` = 1 - samples/s at this rate /
samples/s unshaped: the part of a step the link limit adds.

Finished rows are appended to ``benchmarks/results/des_cluster.jsonl`` as they complete, so an
interrupted run resumes where it stopped (``--fresh`` starts over). Writes
``des_cluster.json`` (rows + summary) and ``des_cluster.png`` (samples/s vs bandwidth, a line per
method). Needs root (network namespaces) and the project's venv.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["LogisticRegression", "FactorizationMachine", "DNN", "WideAndDeep", "DeepFM"]
METHODS = ["des", "auto", "table_wise", "column_wise", "row_wise", "ps"]
RATES = ["unlimited", "10gbit", "1gbit", "200mbit"]
RATE_BITS = {"unlimited": float("inf"), "10gbit": 10e9, "1gbit": 1e9, "200mbit": 200e6}
SHAPES = {26: dict(L=1, d=16, H=1024), 200: dict(L=1, d=64, H=256), 500: dict(L=4, d=16, H=1024)}


def config(model: str, f: int) -> dict:
    return dict(model=model, F=f, **SHAPES[f])


Plan = list[tuple[int, dict, str, str]]  # (nodes, config, rate, method)


def default_plan() -> Plan:
    """~30 minutes on 2 cores. On 4 nodes, the targets' configs (W&D and DeepFM at F = 200 and
    500) at every rate with DES, ``auto``, table-wise and the parameter server, and column- and
    row-wise at unlimited bandwidth (``auto`` against the best TorchRec type); on 2 nodes every
    model at F = 26, unlimited and 200mbit, DES / table-wise / PS. ``--full`` runs everything."""
    four = [(4, config(m, f), r, meth) for m in ("WideAndDeep", "DeepFM") for f in (200, 500) for r in RATES
            for meth in METHODS if meth not in ("column_wise", "row_wise") or r == "unlimited"]
    two = [(2, config(m, 26), r, meth) for m in MODELS for r in ("unlimited", "200mbit") for meth in ("des", "table_wise", "ps")]
    return four + two


def full_plan(nodes: list[int]) -> Plan:
    return [(n, config(m, f), r, meth) for n in nodes for m in MODELS for f in SHAPES for r in RATES for meth in METHODS]


def key(row: dict) -> tuple:
    return (row["world"], row["rate"], row["model"], row["F"], row["L"], row["d"], row["H"], row["method"])


# -- inside a node: the torchrun worker -------------------------------------------------------
def _tx_probe() -> dict[str, int]:
    stats = Path("/sys/class/net/eth0/statistics")
    return {"tx_bytes": int((stats / "tx_bytes").read_text()), "rx_bytes": int((stats / "rx_bytes").read_text())}


def worker(jobs_path: str, out_path: str, rate: str, batch: int, warmup: int, steps: int, rounds: int) -> None:
    import torch
    import torch.distributed as dist
    from torchrec.distributed.types import ShardingEnv

    from benchmarks.des_comm import Measurement, synthetic_spec
    from lightning_des.data.synthetic import make_synthetic
    from lightning_des.distributed import comm
    from lightning_des.distributed.launch import cpu_threads_per_process

    comm.register()
    dist.init_process_group("counting")
    rank, world = dist.get_rank(), dist.get_world_size()
    cpu_threads_per_process(world)  # N ranks share this host's cores
    torch.manual_seed(0)
    env = ShardingEnv.from_process_group(dist.group.WORLD)
    jobs = json.loads(Path(jobs_path).read_text())
    per_round = -(-steps // rounds)
    for cfg_json, group in itertools.groupby(jobs, key=lambda j: json.dumps(j["cfg"], sort_keys=True)):
        cfg = json.loads(cfg_json)
        spec = synthetic_spec(cfg, batch * world * (warmup + per_round * rounds))
        data = make_synthetic(spec)
        runs = [Measurement(cfg, job["method"], env, rank, world, spec, batch) for job in group]
        if rank == 0:
            print(f"[{time.strftime('%H:%M:%S')}] N={world} {rate} {cfg} {[m.method for m in runs]}", flush=True)
        for m in runs:
            m.steps(data, 0, warmup, timed=False)
        for r in range(rounds):  # the methods take turns, so drifts of a noisy machine hit them alike
            for m in runs:
                m.steps(data, warmup + r * per_round, per_round, probe=_tx_probe)
        for m in runs:
            row = m.row()
            if row is not None:
                row.update(rate=rate, batch=batch, steps=per_round * rounds, rounds=rounds)
                with open(out_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
        del runs
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see lightning_des.distributed.launch._entry


# -- the host: namespaces, launches, cache ----------------------------------------------------
def launch(cluster, rate: str, jobs: list[dict], out: Path, a: argparse.Namespace, port: int) -> None:
    """One torchrun agent per node running ``jobs``; rows are appended to ``out`` by rank 0."""
    n = cluster.n
    with tempfile.TemporaryDirectory() as tmp:
        jobs_path = Path(tmp) / "jobs.json"
        jobs_path.write_text(json.dumps(jobs))
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "eth0", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        procs = []
        for i in range(n):
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={n}", "--nproc_per_node=1", f"--node_rank={i}",
                   f"--master_addr={cluster.addr(0)}", f"--master_port={port}", str(Path(__file__).resolve()), "--worker",
                   "--jobs", str(jobs_path), "--out", str(out), "--rate", rate, "--batch", str(a.batch),
                   "--warmup", str(a.warmup), "--steps", str(a.steps), "--rounds", str(a.rounds)]
            procs.append((i, cluster.popen(i, cmd, env=env, log=Path(tmp) / f"node{i}.log")))
        deadline = time.time() + a.timeout
        for i, p in procs:
            try:
                rc = p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                tail = (Path(tmp) / f"node{i}.log").read_text()[-3000:]
                cluster.close()
                raise RuntimeError(f"node {i} of N={n} at {rate} ended with {rc}; its log ends:\n{tail}")
        if a.verbose:
            print((Path(tmp) / "node0.log").read_text()[-2000:])


def run_plan(plan: Plan, a: argparse.Namespace, cache: Path) -> None:
    from benchmarks.netns import EmulatedCluster

    done = {key(r) for r in load(cache)}
    todo = [p for p in plan if key({**p[1], "world": p[0], "rate": p[2], "method": p[3]}) not in done]
    for n in sorted({p[0] for p in todo}):
        pending = {rate: [{"cfg": c, "method": m} for nn, c, r, m in todo if nn == n and r == rate] for rate in RATES}
        with EmulatedCluster(n) as cluster:
            for k, rate in enumerate(RATES):
                if not pending[rate]:
                    continue
                cluster.set_rate(None if rate == "unlimited" else rate)
                goodput = cluster.throughput()
                with open(cache.with_name(cache.stem + "_links.jsonl"), "a") as f:
                    f.write(json.dumps({"world": n, "rate": rate, "tcp_goodput_MBps": goodput / 1e6, "time": time.time()}) + "\n")
                print(f"[{time.strftime('%H:%M:%S')}] N={n} {rate} (TCP goodput {goodput / 1e6:.0f} MB/s): "
                      f"{len(pending[rate])} runs", flush=True)
                launch(cluster, rate, pending[rate], cache, a, port=29600 + k)


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- report -----------------------------------------------------------------------------------
def summarize(rows: list[dict]) -> list[dict]:
    """One line per (N, config, rate): samples/s and bytes per method, ratios, network share."""
    ok = [r for r in rows if "error" not in r]
    base = {(r["world"], r["model"], r["F"], r["method"]): r["samples_per_s"] for r in ok if r["rate"] == "unlimited"}
    out = []
    grp_key = lambda r: (r["world"], r["model"], r["F"], r["L"], r["d"], r["H"], RATES.index(r["rate"]))  # noqa: E731
    for k, grp in itertools.groupby(sorted(ok, key=grp_key), key=grp_key):
        by = {r["method"]: r for r in grp}
        s = dict(zip(("world", "model", "F", "L", "d", "H"), k[:6]), rate=RATES[k[6]])
        for m, r in by.items():
            n = r["world"]
            s[f"sps_{m}"] = r["samples_per_s"]
            s[f"payload_mb_{m}"] = r["total_bytes"] / n / 1e6
            s[f"wire_mb_{m}"] = statistics.mean(p["tx_bytes"] for p in r["probe"]) / 1e6
            b = base.get((r["world"], r["model"], r["F"], m))
            s[f"net_share_{m}"] = max(0.0, 1 - r["samples_per_s"] / b) if b else None
        tr = [by[m]["samples_per_s"] for m in ("table_wise", "column_wise", "row_wise") if m in by]
        if "des" in by and "table_wise" in by:
            s["des_over_tw"] = by["des"]["samples_per_s"] / by["table_wise"]["samples_per_s"]
        if "des" in by and "ps" in by:
            s["des_over_ps"] = by["des"]["samples_per_s"] / by["ps"]["samples_per_s"]
        if "auto" in by and tr:
            s["auto_over_best_torchrec"] = by["auto"]["samples_per_s"] / max(tr)
            s["auto_ops"] = "+".join(by["auto"]["des_operators"]) or "-"
        out.append(s)
    return out


def print_table(summary: list[dict], methods: list[str]) -> None:
    print("| N | model | F | rate | " + " | ".join(f"{m} samples/s (wire MB/node/step, net share)" for m in methods)
          + " | DES/TW | DES/PS | auto/best TorchRec |")
    print("|" + "---|" * (7 + len(methods)))
    for s in summary:
        cells = []
        for m in methods:
            if f"sps_{m}" not in s:
                cells.append("-")
                continue
            share = s[f"net_share_{m}"]
            cells.append(f"{s[f'sps_{m}']:.0f} ({s[f'wire_mb_{m}']:.2f}, {'-' if share is None else f'{share:.0%}'})")
        f = lambda k: f"{s[k]:.2f}x" if k in s else "-"  # noqa: E731
        print(f"| {s['world']} | {s['model']} | {s['F']} | {s['rate']} | " + " | ".join(cells)
              + f" | {f('des_over_tw')} | {f('des_over_ps')} | {f('auto_over_best_torchrec')} |")


def check_targets(summary: list[dict]) -> list[str]:
    """The issue's targets, each a line saying met / not met with the figure."""
    lines = []
    for s in summary:
        if s["world"] == 4 and s["model"] in ("WideAndDeep", "DeepFM") and s["F"] in (200, 500) and s["rate"] == "200mbit":
            for k, t in (("des_over_tw", 3.0), ("des_over_ps", 4.5)):
                if k in s:
                    lines.append(f"N=4 {s['model']} F={s['F']} 200mbit {k} {s[k]:.2f}x (target >= {t}x): {'met' if s[k] >= t else 'NOT met'}")
        if s["rate"] == "unlimited" and "auto_over_best_torchrec" in s:
            v = s["auto_over_best_torchrec"]
            lines.append(f"N={s['world']} {s['model']} F={s['F']} unlimited auto/best TorchRec {v:.2f}x (target >= 0.95x): {'met' if v >= 0.95 else 'NOT met'}")
    return lines


def plot(summary: list[dict], methods: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return False
    cfgs = sorted({(s["world"], s["model"], s["F"]) for s in summary})
    cols = min(4, len(cfgs))
    rows = (len(cfgs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (n, model, f) in zip(axes.flat, cfgs):
        pts = sorted((s for s in summary if (s["world"], s["model"], s["F"]) == (n, model, f)), key=lambda s: RATES.index(s["rate"]))
        x = [RATES[::-1].index(s["rate"]) for s in pts]
        for m in methods:
            y = [s.get(f"sps_{m}") for s in pts]
            if any(v is not None for v in y):
                ax.plot([a for a, v in zip(x, y) if v is not None], [v for v in y if v is not None], marker="o",
                        color=f"C{METHODS.index(m)}", label=m)
        ax.set_xticks(range(len(RATES)), RATES[::-1], fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"N={n} {model} F={f}", fontsize=9)
        ax.set_ylabel("samples/s", fontsize=8)
    for ax in list(axes.flat)[len(cfgs):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    fig.legend([Line2D([], [], color=f"C{METHODS.index(m)}", marker="o") for m in methods], methods, loc="lower right",
               fontsize=8, ncol=2)
    fig.suptitle("samples/s vs per-node egress bandwidth (tc tbf, network namespaces, 2 CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every model at F in {26, 200, 500}, every rate and method, on every --nodes")
    p.add_argument("--nodes", nargs="*", type=int, default=[2, 4])
    p.add_argument("--rates", nargs="*", default=RATES, choices=RATES)
    p.add_argument("--models", nargs="*", default=None, choices=MODELS)
    p.add_argument("--fields", nargs="*", type=int, default=None, choices=sorted(SHAPES))
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--batch", type=int, default=64, help="samples per rank per step")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4, help="the methods of a config take turns: steps/rounds timed steps each per round")
    p.add_argument("--timeout", type=float, default=3600, help="seconds one (N, rate) launch may take")
    p.add_argument("--cache", default=str(RESULTS / "des_cluster.jsonl"))
    p.add_argument("--fresh", action="store_true", help="forget the cached rows")
    p.add_argument("--report-only", action="store_true", help="summarize the cache, run nothing")
    p.add_argument("--calibrate", action="store_true", help="only measure each rate's TCP goodput (node 1 -> node 0)")
    p.add_argument("--verbose", action="store_true")
    # inside a node
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jobs", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--rate", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.jobs, a.out, a.rate, a.batch, a.warmup, a.steps, a.rounds)
        return
    cache = Path(a.cache)
    if a.fresh and cache.exists():
        cache.unlink()
    plan = full_plan(a.nodes) if a.full else default_plan()
    plan = [(n, c, r, m) for n, c, r, m in plan if n in a.nodes and r in a.rates and m in a.methods
            and (a.models is None or c["model"] in a.models) and (a.fields is None or c["F"] in a.fields)]
    t0 = time.time()
    links_path = cache.with_name(cache.stem + "_links.jsonl")
    if a.calibrate:
        from benchmarks.netns import EmulatedCluster

        for n in a.nodes:
            with EmulatedCluster(n) as cluster:
                for rate in [r for r in RATES if r in a.rates]:
                    cluster.set_rate(None if rate == "unlimited" else rate)
                    with open(links_path, "a") as f:
                        f.write(json.dumps({"world": n, "rate": rate, "tcp_goodput_MBps": cluster.throughput() / 1e6, "time": time.time()}) + "\n")
        a.report_only = True
    if not a.report_only:
        run_plan(plan, a, cache)
    wanted = {key({**c, "world": n, "rate": r, "method": m}) for n, c, r, m in plan}
    rows = [r for r in load(cache) if key(r) in wanted]
    summary = summarize(rows)
    links = {(r["world"], r["rate"]): r["tcp_goodput_MBps"] for r in load(links_path)}  # the latest per (N, rate)
    if links:
        print("TCP goodput node 1 -> node 0 (MB/s): " + ", ".join(f"N={n} {r}: {v:.0f}" for (n, r), v in sorted(links.items())))
    methods = [m for m in METHODS if m in a.methods]
    print_table(summary, methods)
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"  N={r['world']} {r['model']} F={r['F']} {r['rate']} {r['method']}: {r['error']}")
    targets = check_targets(summary)
    print("\n".join(["", "Targets:", *targets]))
    out = Path(a.cache).with_suffix("")
    Path(f"{out}.json").write_text(json.dumps({"rows": rows, "summary": summary, "targets": targets,
                                               "links_MBps": {f"N={n} {r}": v for (n, r), v in sorted(links.items())},
                                               "wall_s_this_call": time.time() - t0, "argv": sys.argv[1:]}, indent=1))
    if plot(summary, methods, Path(f"{out}.png")):
        print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
