"""DES under the launchers a cluster uses: two torchrun agents x 2 processes, and a real (one-node)
SLURM cluster with sbatch, including a SIGUSR1 preemption that requeues and resumes.

Each compares with the same recipe under Lightning's own launcher on one node. The SLURM tests
need Debian's slurm-wlm and munge (``scripts/install_system.sh``); they skip without them unless
``LIGHTNING_DES_REQUIRE_SLURM=1`` (set by ``.ci/run``), where a missing SLURM fails.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightning_des.distributed.launch import free_port
from tests import slurm_cluster
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "deepfm_movielens_des.yaml"
TEMPLATE = ROOT / "recipes" / "slurm" / "des_cpu.sbatch"


def overrides(tmp: Path, name: str, epochs: int, batches: int, extra_callbacks: list[dict] | None = None) -> Path:
    """A second --config: CSV metrics every step under tmp/name, a short fit, the recipe's
    CommStatsCallback plus ``extra_callbacks``."""
    recipe = yaml.safe_load(RECIPE.read_text())
    cfg = {"trainer": {
        "default_root_dir": str(tmp / name), "max_epochs": epochs, "limit_train_batches": batches, "limit_val_batches": 4,
        "log_every_n_steps": 1, "enable_progress_bar": False, "enable_checkpointing": False,
        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp / name), "name": "csv"}},
        "callbacks": recipe["trainer"]["callbacks"] + (extra_callbacks or []),
    }}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def metrics(run_dir: Path) -> tuple[list[float], dict[str, float]]:
    """(train losses by step over every logger version, the last epoch's validation metrics)."""
    losses: dict[int, float] = {}
    val: dict[str, float] = {}
    for version in sorted((run_dir / "csv").iterdir(), key=lambda p: int(p.name.split("_")[1])):
        for row in csv.DictReader(open(version / "metrics.csv")):
            if row.get("train_loss"):
                losses[int(row["step"])] = float(row["train_loss"])
            if row.get("val_auc"):
                val = {"epoch": float(row["epoch"]), "val_auc": float(row["val_auc"]), "val_logloss": float(row["val_logloss"])}
    return [losses[s] for s in sorted(losses)], val


@pytest.mark.slow
def test_torchrun_two_agents_of_two_processes_match_one_launcher(tmp_path, movielens_path):
    """2 nodes x 2 processes under torchrun (c10d static rendezvous on 127.0.0.1) give the losses
    of 4 processes started by Lightning on one node."""
    ref = overrides(tmp_path, "ref", 1, 6)
    run_cli(["fit", "--config", str(RECIPE), "--config", str(ref), "--trainer.devices", "4"], tmp_path, timeout=400)
    tr = overrides(tmp_path, "torchrun", 1, 6)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_"))}
    env.update(PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2", f"--node_rank={i}",
                                "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lightning_des.cli", "fit",
                                "--config", str(RECIPE), "--config", str(tr), "--trainer.devices", "2", "--trainer.num_nodes", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path) for i in range(2)]
    outs = []
    for a in agents:
        try:
            outs.append(a.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for b in agents:
                b.kill()
            pytest.fail("torchrun agents timed out")
    assert all(a.returncode == 0 for a in agents), "\n".join(o[-3000:] for o in outs)
    ref_losses, ref_val = metrics(tmp_path / "ref")
    tr_losses, tr_val = metrics(tmp_path / "torchrun")
    assert len(ref_losses) == 6
    assert tr_losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    assert tr_val == pytest.approx(ref_val, rel=1e-5, abs=1e-6)


# -- SLURM ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    gone = slurm_cluster.missing()
    if gone or os.geteuid() != 0:
        why = f"SLURM test cluster needs root and {', '.join(gone) or 'nothing else'} (scripts/install_system.sh)"
        if os.environ.get("LIGHTNING_DES_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    cluster = slurm_cluster.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def submit(slurm, tmp: Path, name: str, cfg: Path) -> int:
    venv = Path(sys.executable).parent.parent
    env = {"LIGHTNING_DES_VENV": str(venv), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "LOCAL_RANK", "SLURM_"))}, **env}
    return slurm.sbatch(f"--output={tmp / name}.out", f"--job-name=des-{name}", str(TEMPLATE), str(RECIPE), "--config", str(cfg),
                        cwd=ROOT, env=env)


def log_of(tmp: Path, name: str) -> str:
    p = tmp / f"{name}.out"
    return p.read_text()[-6000:] if p.exists() else "(no output)"


@pytest.mark.slow
def test_slurm_job_matches_default_launcher_and_resumes_after_preemption(slurm, tmp_path, movielens_path):
    """sbatch of the CPU template gives the default launcher's metrics; a SIGUSR1 mid-epoch makes
    the ranks save at one step boundary and requeue; the requeued job resumes from that
    checkpoint and ends on the uninterrupted run's losses and validation metrics."""
    epochs, batches = 2, 12
    run_cli(["fit", "--config", str(RECIPE), "--config", str(overrides(tmp_path, "ref", epochs, batches))], tmp_path, timeout=400)
    ref_losses, ref_val = metrics(tmp_path / "ref")
    assert len(ref_losses) == epochs * batches and ref_val["epoch"] == epochs - 1

    job = submit(slurm, tmp_path, "plain", overrides(tmp_path, "plain", epochs, batches))
    info = slurm.wait(job, timeout=400)
    assert info["JobState"] == "COMPLETED", f"{log_of(tmp_path, 'plain')}\n{slurm.logs()}"
    losses, val = metrics(tmp_path / "plain")
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)
    assert val == pytest.approx(ref_val, rel=1e-5, abs=1e-6)

    marker = tmp_path / "step.txt"
    slow = [{"class_path": "tests.distributed.cluster_helpers.StepMarker", "init_args": {"path": str(marker), "sleep": 0.4}}]
    job = submit(slurm, tmp_path, "preempted", overrides(tmp_path, "preempted", epochs, batches, slow))
    deadline = time.time() + 300
    while not (marker.exists() and marker.read_text().split() and int(marker.read_text().split()[0]) >= batches + 3):
        assert time.time() < deadline and slurm.job(job)["JobState"] in ("PENDING", "RUNNING"), log_of(tmp_path, "preempted")
        time.sleep(0.2)
    slurm.scancel("--signal=USR1", str(job))  # what --signal=SIGUSR1@90 sends before the time limit
    deadline = time.time() + 500
    while (info := slurm.job(job))["JobState"] not in slurm_cluster.TERMINAL:
        if info["JobState"] == "PENDING" and info.get("Reason") == "BeginTime":
            slurm.scontrol("update", f"JobId={job}", "StartTime=now")  # a requeued job waits for its begin time
        assert time.time() < deadline, f"{info}\n{log_of(tmp_path, 'preempted')}\n{slurm.logs()}"
        time.sleep(0.5)
    out = log_of(tmp_path, "preempted")
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{out}\n{slurm.logs()}"
    ckpts = sorted(p.name for p in (tmp_path / "preempted").glob("hpc_ckpt_*.ckpt"))
    assert ckpts == ["hpc_ckpt_1.ckpt"], out
    assert "Restored all states from the checkpoint" in out or "Restoring states from the checkpoint" in out, out
    losses, val = metrics(tmp_path / "preempted")
    assert losses == pytest.approx(ref_losses, rel=1e-5, abs=1e-6)  # every step once, the same numbers
    assert val == pytest.approx(ref_val, rel=1e-5, abs=1e-6)
