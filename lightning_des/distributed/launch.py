"""Run a function on N local gloo processes (127.0.0.1), for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def cpu_threads_per_process(local_processes: int) -> int:
    """Give each of ``local_processes`` CPU processes an equal share of the cores, unless
    ``OMP_NUM_THREADS`` says otherwise. Without it every process starts one OpenMP thread per
    core and their spin-waits fight: a fused-embedding backward measured 3.5 s instead of
    0.9 ms with 4 processes on 2 cores. (torchrun sets OMP_NUM_THREADS=1 for the same reason.)"""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    n = max(1, (os.cpu_count() or 1) // max(local_processes, 1))
    torch.set_num_threads(n)
    return n


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable[..., Any], world_size: int, port: int, backend: str, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),  # TorchRec's get_local_size assumes 8 without it
    )
    cpu_threads_per_process(world_size)
    if backend == "counting":
        from lightning_des.distributed import comm

        comm.register()
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    fn(rank, world_size, *args)  # an exception propagates to torch.multiprocessing, which reports it
    dist.destroy_process_group()
    # Leave without interpreter finalisation: destructors that ran there (a std::thread of the
    # collective stack) sometimes aborted a rank that had finished its work ("terminate called
    # without an active exception"), failing an otherwise successful run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> None:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` processes with an initialised
    process group; an exception in any rank is raised here. ``fn`` must be importable."""
    mp.spawn(_entry, args=(fn, world_size, free_port(), backend, args), nprocs=world_size, join=True)
