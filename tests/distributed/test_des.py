import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment

from lightning_des import DESStrategy
from lightning_des.cli import main
from lightning_des.distributed.launch import spawn
from lightning_des.distributed.substitution import OperatorCost, choose_operators
from lightning_des.models.recsys import DeepFM
from tests.distributed import des_workers

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "world, optimizer", [(2, "sgd"), (2, "adagrad"), (2, "rowwise_adagrad"), (3, "sgd"), (3, "adagrad")]
)
def test_equivalence_with_single_process_reference(world, optimizer):
    """LR, FM, DNN, W&D, DeepFM: outputs, loss, gradients and 5-step parameters within 1e-5."""
    spawn(des_workers.many_models, world, optimizer)


def test_equivalence_with_mixed_embedding_widths():
    spawn(des_workers.mixed_widths, 2)


def test_reduce_scatter_rows_uneven_batches():
    spawn(des_workers.collective, 3)


def test_native_reduce_scatter_branch_on_gloo():
    """The nccl code path (native reduce_scatter_tensor, equal batches) cannot run here on a GPU;
    gloo runs the same collective, so the branch is checked against dense math and in models."""
    spawn(des_workers.collective, 3, "reduce_scatter", (2, 2, 2))
    spawn(des_workers.native_reduce_scatter_models, 2)


@pytest.mark.parametrize("model, world", [("WideAndDeep", 2), ("FactorizationMachine", 3)])
def test_measured_bytes_match_analytic(model, world, tmp_path):
    """Partial-result traffic is exactly 2 (N-1) P B_global floats (fwd + bwd); TorchRec's
    pooled-embedding traffic is exactly 2 (N-1)/N sum_d B_global floats."""
    B = 8 * world
    for mode in ("des", "torchrec"):
        f = tmp_path / f"{mode}.json"
        spawn(des_workers.comm_bytes, world, model, mode, str(f), backend="counting")
        res = json.loads(f.read_text())
        costs = {c["name"]: OperatorCost(**c) for c in json.loads((tmp_path / "des.json").read_text())["costs"]}
        if mode == "des":
            analytic = sum(c.des_bytes for c in costs.values()) * B  # costs are per sample here
            assert res["bytes"]["all_to_all:partial"] == pytest.approx(analytic, rel=1e-9)
        else:
            analytic = sum(c.table_wise_bytes for c in costs.values()) * B
            assert res["bytes"]["all_to_all:other"] == pytest.approx(analytic, rel=1e-9)
            assert "all_to_all:partial" not in res["bytes"]
    des, tw = (json.loads((tmp_path / f"{m}.json").read_text())["bytes"] for m in ("des", "torchrec"))
    assert des["all_to_all:ids"] == tw["all_to_all:ids"]  # the id distribution is shared
    # table-wise replicates W_f, so DDP all-reduces it: 2 (N-1) |W| floats more in total
    w = sum(c.field_params for c in costs.values())
    assert tw["all_reduce:other"] - des["all_reduce:other"] == pytest.approx(2 * (world - 1) * w * 4, rel=1e-6)


def test_dlrm_has_no_split_and_falls_back_to_torchrec():
    spawn(des_workers.dlrm, 2)


def test_lightning_fit_resume_and_consolidate(tmp_path):
    """Resume after epoch 1 gives the same epoch-2 losses and weights as an uninterrupted run;
    the sharded checkpoint consolidates into a single-process DeepFM."""
    script = Path(des_workers.__file__).with_name("des_fit_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1"}
    env.pop("MASTER_PORT", None)

    def run(out, epochs, ckpt=None):
        cmd = [sys.executable, str(script), str(out), str(epochs)] + ([str(ckpt)] if ckpt else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]

    full, part = tmp_path / "full", tmp_path / "resumed"
    run(full, 2)
    ckpts = sorted((full / "ckpt").iterdir())
    assert [c.name for c in ckpts] == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]
    assert sorted(p.name for p in ckpts[0].iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "lightning.pt"]
    run(part, 2, ckpts[0])
    uninterrupted = json.loads((full / "losses.json").read_text())
    resumed = json.loads((part / "losses.json").read_text())
    assert len(uninterrupted) == 8 and len(resumed) == 4
    assert resumed == pytest.approx(uninterrupted[4:], abs=1e-6)
    a, b = torch.load(full / "full_state.pt"), torch.load(part / "full_state.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)

    out = tmp_path / "single.ckpt"
    assert main(["checkpoint", "consolidate", str(ckpts[1]), str(out)]) == 0
    model = DeepFM.load_from_checkpoint(out)  # single process, strict
    for k, v in a.items():
        torch.testing.assert_close(model.state_dict()["net." + k], v)
    assert main(["checkpoint", "consolidate", str(tmp_path), str(out)]) == 1  # not a DES checkpoint

    stats = json.loads((full / "comm.json").read_text())
    assert stats["steps"] == 8 and stats["all_to_all:partial"] > 0 and stats["all_to_all:ids"] > 0


def _run_fit_script(tmp_path, out, epochs, ckpt=None, devices=2):
    script = Path(des_workers.__file__).with_name("des_fit_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1"}
    env.pop("MASTER_PORT", None)
    cmd = [sys.executable, str(script), str(out), str(epochs), str(ckpt or "-"), str(devices)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_checkpoint_saved_at_world_2_resumes_at_world_3(tmp_path):
    """Tables, W_f and optimizer states move to their new owners: the gathered state right after
    loading equals the saved one exactly; training then continues."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
    import torch.distributed.checkpoint as dcp

    _run_fit_script(tmp_path, tmp_path / "w2", 1)
    ckpt = next((tmp_path / "w2" / "ckpt").iterdir())
    saved: dict = {}
    _load_state_dict(saved, storage_reader=dcp.FileSystemReader(str(ckpt)), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    proc = _run_fit_script(tmp_path, tmp_path / "w3", 2, ckpt, devices=3)
    assert "saved at world size 2, now 3" in proc.stdout + proc.stderr
    restored = torch.load(tmp_path / "w3" / "restored.pt")
    assert set(restored) == set(saved)
    assert any(k.startswith("fused/") for k in saved) and any(k.startswith("optim/0/") and "field_ops" in k for k in saved)
    for k, v in saved.items():
        assert torch.equal(restored[k], v), k
    losses = json.loads((tmp_path / "w3" / "losses.json").read_text())
    assert len(losses) == 4 and all(0 < x < 5 for x in losses)


def test_checkpoint_missing_a_shard_or_pickled_is_refused(tmp_path):
    from lightning_des.distributed import checkpoint as ckpt_io

    _run_fit_script(tmp_path, tmp_path / "w2", 1)
    ckpt = next((tmp_path / "w2" / "ckpt").iterdir())
    (ckpt / "rank7.pt.bak").write_text("a stray file")  # ignored: the metadata names the data files
    assert ckpt_io.consolidate(ckpt)["state_dict"]
    (ckpt / "__1_0.distcp").unlink()
    with pytest.raises(ValueError, match=r"is incomplete: __1_0.distcp is missing; it held \['"):
        ckpt_io.consolidate(ckpt)
    assert main(["checkpoint", "consolidate", str(ckpt), str(tmp_path / "x.ckpt")]) == 1
    (ckpt / "lightning.pt").unlink()
    with pytest.raises(FileNotFoundError, match="is not a DES checkpoint"):
        ckpt_io.read_meta(ckpt)


def test_registry_resolves_and_bad_options_fail():
    t = Trainer(strategy="des", accelerator="cpu", devices=2, logger=False)
    assert isinstance(t.strategy, DESStrategy) and t.strategy.mode == "auto"
    with pytest.raises(ValueError, match=r"mode must be one of \['auto', 'des', 'torchrec'\], got 'fast'"):
        DESStrategy(mode="fast")
    with pytest.raises(ValueError, match="collective must be one of"):
        DESStrategy(collective="ring")
    with pytest.raises(ValueError, match="start_method must be 'popen' or 'fork', got 'spawn'"):
        DESStrategy(start_method="spawn")
    with pytest.raises(ValueError, match=r"operators must be among \['wide', 'deep'\], got \['fm'\]"):
        DESStrategy(operators=["fm"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'sharding'"):
        DESStrategy(sharding="row_wise")
    with pytest.raises(ValueError, match="mode must be auto, des or torchrec"):
        choose_operators(None, 2, "x")


def test_slurm_environment_resolves_ranks(monkeypatch):
    env = {
        "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "des-train",
        "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_ID": "42",
        "SLURM_NODELIST": "node[1-2]", "SLURM_CPUS_PER_TASK": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # SLURMEnvironment writes MASTER_ADDR/MASTER_PORT into os.environ; let monkeypatch undo that,
    # or later multi-process tests would try to reach "node1"
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "")  # records the value to restore ...
        monkeypatch.delenv(var)  # ... and leaves it unset for SLURMEnvironment to fill
    t = Trainer(strategy="des", accelerator="cpu", devices=2, num_nodes=2, logger=False)
    s = t.strategy
    assert isinstance(s, DESStrategy) and isinstance(s.cluster_environment, SLURMEnvironment)
    assert (s.global_rank, s.local_rank, s.node_rank, s.world_size) == (3, 1, 1, 4)
    assert s.cluster_environment.main_address == "node1"


def test_shard_des_failure_leaves_the_callers_model_intact():
    spawn(des_workers.shard_failure_leaves_model_intact, 2)


@pytest.mark.parametrize("world", [2, 3])
def test_gradient_norm_clipping_uses_the_global_norm(world):
    spawn(des_workers.clipped, world)


def test_gradient_accumulation_is_refused_at_setup(tmp_path):
    from lightning_des.data.modules import SyntheticCTRDataModule

    dm = SyntheticCTRDataModule(num_rows=200, num_dense=2, num_sparse=3, cardinality=20, batch_size=16)
    trainer = Trainer(strategy=DESStrategy(mode="des"), accelerator="cpu", devices=1, accumulate_grad_batches=2, max_steps=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    saved = dict(os.environ)
    try:
        with pytest.raises(ValueError, match="does not support accumulate_grad_batches=2"):
            trainer.fit(DeepFM(dm.schema, embedding_dim=4, hidden=(8,)), dm)
        assert not torch.distributed.is_initialized()  # refused before any process group
    finally:  # Lightning's launcher writes MASTER_* / rank variables that later subprocess tests would inherit
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("world", [2, 3])
def test_auto_mode_with_mixed_pooling_equals_the_reference(world):
    spawn(des_workers.auto_mode_mixed_pooling, world)
