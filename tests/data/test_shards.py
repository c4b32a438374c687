"""Reading prepared shards: every row once per epoch across ranks, deterministic shuffling,
workers, batches equal to the in-memory reference."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_des.data.ctr import EncodedCTR
from lightning_des.data.ingest import PrepareConfig, prepare_table
from lightning_des.data.modules import CTRDataModule
from lightning_des.data.shards import PreparedCTR, ShardBatchSampler, ShardedCTRDataset, global_batches
from tests.data.test_ingest import SPEC, write_table


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shards")
    path = write_table(tmp / "t.tsv", n=1003)
    return prepare_table([path], SPEC, tmp / "out", PrepareConfig(block_bytes=2048), progress=False)


def rows_of(batch):
    return np.rint(np.expm1(batch.dense_features[:, 0].numpy())).astype(int).tolist()


@pytest.mark.parametrize("world, batch_size, window", [(1, 64, 8), (2, 50, 3), (3, 17, 1), (4, 200, 100)])
def test_every_training_row_once_per_epoch_across_ranks(prepared, world, batch_size, window):
    data = PreparedCTR(prepared)
    n = data.num_rows("train")
    train_rows = sorted(np.rint(np.expm1(np.concatenate([data.shard("train", s).dense[:, 0] for s in range(len(data.sizes("train")))]))).astype(int))
    orders = []
    for epoch in (0, 1):
        seen, lengths = [], []
        for rank in range(world):
            ds = ShardedCTRDataset(data, "train", batch_size, rank, world, shuffle=True, seed=5, shuffle_window=window)
            mine = [rows_of(ds[(epoch, b)]) for b in range(len(ds))]
            assert all(len(m) > 0 for m in mine)
            lengths.append(len(mine))
            seen += [r for m in mine for r in m]
        assert len(set(lengths)) == 1  # the same number of steps on every rank
        assert len(seen) == n and sorted(seen) == train_rows
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_global_batches_merge_a_tail_smaller_than_the_world():
    assert global_batches(10, 2, 2).tolist() == [0, 4, 8, 10]
    assert global_batches(9, 2, 2).tolist() == [0, 4, 9]  # a 1-row tail joins the previous batch
    assert global_batches(3, 8, 3).tolist() == [0, 3]
    with pytest.raises(ValueError, match="2 rows cannot give each of 3 ranks a batch"):
        global_batches(2, 8, 3)


def test_shuffle_is_seeded_and_eval_keeps_input_order(prepared):
    data = PreparedCTR(prepared)
    a = ShardedCTRDataset(data, "train", 32, shuffle=True, seed=1)
    b = ShardedCTRDataset(data, "train", 32, shuffle=True, seed=1)
    c = ShardedCTRDataset(data, "train", 32, shuffle=True, seed=2)
    assert rows_of(a[(3, 2)]) == rows_of(b[(3, 2)]) != rows_of(c[(3, 2)])
    val = ShardedCTRDataset(data, "val", 10)
    got = [r for i in range(len(val)) for r in rows_of(val[(0, i)])]
    assert got == sorted(got) and len(got) == data.num_rows("val")


def test_batches_equal_the_in_memory_reference(prepared):
    data = PreparedCTR(prepared)
    shards = [data.shard("train", s) for s in range(len(data.sizes("train")))]
    ref = EncodedCTR(np.concatenate([s.labels for s in shards]), np.concatenate([s.dense for s in shards]),
                     {f: np.concatenate([s.values[f] for s in shards]) for f in SPEC.sparse},
                     {f: _concat_offsets(shards, f) for f in SPEC.sparse})
    position = {r: i for i, r in enumerate(np.rint(np.expm1(ref.dense[:, 0])).astype(int))}
    ds = ShardedCTRDataset(data, "train", 40, shuffle=True, seed=0, shuffle_window=2)
    for b in (0, len(ds) - 1):
        got = ds[(0, b)]
        want = ref.batch([position[r] for r in rows_of(got)], SPEC.sparse)
        assert torch.equal(got.sparse_features.values(), want.sparse_features.values())
        assert torch.equal(got.sparse_features.lengths(), want.sparse_features.lengths())
        assert torch.equal(got.labels, want.labels) and torch.equal(got.dense_features, want.dense_features)


def _concat_offsets(shards, f):
    parts, base = [np.zeros(1, np.int64)], 0
    for s in shards:
        off = s.offsets[f] if s.offsets[f] is not None else np.arange(len(s.labels) + 1)
        parts.append(off[1:] + base)
        base += off[-1]
    return np.concatenate(parts)


def test_workers_give_the_same_batches_in_the_same_order(prepared):
    ds = ShardedCTRDataset(PreparedCTR(prepared), "train", 48, shuffle=True, seed=4)
    out = []
    for workers in (0, 2):
        sampler = ShardBatchSampler(ds)
        sampler.set_epoch(1)
        loader = DataLoader(ds, sampler=sampler, batch_size=None, collate_fn=lambda b: b, num_workers=workers)
        out.append([rows_of(b) for b in loader])
    assert out[0] == out[1] and len(out[0]) == len(ds)
    assert out[0][0] == rows_of(ds[(1, 0)])


def test_schema_comes_from_meta_without_reading_data(prepared, monkeypatch):
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read a shard"))
    dm = CTRDataModule(str(prepared))
    assert dm.schema.sparse_features == SPEC.sparse and dm.schema.multi_hot == ("g",)
    assert CTRDataModule(str(prepared), seed=0, min_freq=1).schema == dm.schema  # as prepared: fine
    with pytest.raises(ValueError, match=r"prepared with other split options .*split=\[0.5, 0.25, 0.25\] but prepared with \[0.8, 0.1, 0.1\], min_freq=2 but prepared with 1;"):
        CTRDataModule(str(prepared), min_freq=2, split=(0.5, 0.25, 0.25)).schema


def test_unfinished_or_missing_directories_are_named(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="half is a directory without meta.json"):
        CTRDataModule(str(tmp_path / "half")).schema
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        PreparedCTR(tmp_path / "half")


class _Losses(__import__("lightning.pytorch", fromlist=["Callback"]).Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def _fit(tmp_path, ckpt=None, every=None):
    import lightning.pytorch as pl

    from lightning_des.data.modules import SyntheticCTRDataModule
    from lightning_des.models.recsys import DeepFM

    pl.seed_everything(0)
    dm = SyntheticCTRDataModule(num_rows=900, num_dense=2, num_sparse=4, cardinality=30, batch_size=64)
    model = DeepFM(dm.schema, embedding_dim=4, hidden=(8,), sparse_optimizer="adagrad", sparse_lr=0.1, dense_lr=0.01)
    losses = _Losses()
    cbs = [losses]
    if every:
        cbs.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=every,
                                                filename="{step}"))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=cbs, limit_val_batches=1, default_root_dir=tmp_path)
    trainer.fit(model, dm, ckpt_path=ckpt)
    return losses.losses


def test_a_fit_resumed_mid_epoch_sees_the_rest_of_that_epoch_once(tmp_path):
    """A checkpoint saved mid-epoch (every 5 steps; 12 batches per epoch) resumes at the next batch
    of the same epoch: the losses after it equal the uninterrupted run's (no batch seen twice)."""
    full = _fit(tmp_path, every=5)
    assert len(full) == 24
    ckpt = tmp_path / "ckpt" / "step=15.ckpt"  # epoch 1, after 3 of its 12 batches
    assert torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": 3, "batches_per_epoch": 12}]
    resumed = _fit(tmp_path / "resumed", ckpt=ckpt)
    assert resumed == pytest.approx(full[15:], abs=1e-6)


def test_a_mid_epoch_position_from_another_batch_count_is_refused(prepared):
    from lightning_des.data.shards import ResumableLoader

    ds = ShardedCTRDataset(PreparedCTR(prepared), "train", 64, shuffle=True, seed=0)
    loader = ResumableLoader(ds, ShardBatchSampler(ds), lambda: (0, 0), batch_size=None)
    n = len(ds)
    loader.load_state_dict({"epoch": 0, "batches_done": 2, "batches_per_epoch": n})
    assert [k for k in loader.sampler] == [(0, b) for b in range(2, n)]
    assert len([k for k in loader.sampler]) == n  # the skip applies to one iterator only
    loader.load_state_dict({"epoch": 0, "batches_done": n, "batches_per_epoch": n})  # an epoch boundary: nothing to skip
    assert len(list(loader.sampler)) == n
    with pytest.raises(ValueError, match=f"after 2 of {n + 5} batches of epoch 0, but this run has {n} batches"):
        loader.load_state_dict({"epoch": 0, "batches_done": 2, "batches_per_epoch": n + 5})
    with pytest.raises(ValueError, match="lacks"):
        loader.load_state_dict({"epoch": 0})
