import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_des.data.modules import SyntheticCTRDataModule
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic
from lightning_des.models.recsys import DLRM, DNN, DeepFM, FactorizationMachine, LogisticRegression, WideAndDeep

SPEC = SyntheticSpec(num_rows=64, num_dense=3, cardinalities=(11, 13, 17, 19), multi_hot=2, seed=0)
MODELS = [LogisticRegression, FactorizationMachine, DNN, WideAndDeep, DeepFM, DLRM]


def make(cls, **kw):
    torch.manual_seed(0)
    extra = {"hidden": (8, 4)} if cls in (DNN, WideAndDeep, DeepFM) else {}
    return cls(SPEC.schema(), **{"embedding_dim": 4, **extra, **kw})


@pytest.fixture(scope="module")
def batch():
    return make_synthetic(SPEC).batch(np.arange(10), SPEC.fields)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_forward_backward_shapes_and_loss(cls, batch):
    m = make(cls)
    logits = m(batch.dense_features, batch.sparse_features)
    assert logits.shape == (10,)
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
    assert torch.isfinite(loss) and 0.3 < loss.item() < 1.5
    loss.backward()
    table_grads = [p.grad for n, p in m.named_parameters() if ".embedding_bags." in n]
    assert table_grads and all(g is not None and g.abs().sum() > 0 for g in table_grads)


def test_deepfm_matches_dense_math_reference(batch):
    """DeepFM in split form equals the textbook formula computed from the pooled embeddings."""
    m = make(DeepFM)
    net, head = m.net, m.net.head
    wide, deep = net.pooled(batch.sparse_features)
    x = batch.dense_features
    e = torch.stack([deep[f] for f in SPEC.fields], 1)  # (B, F, d)
    linear = sum(wide[f][:, 0] for f in SPEC.fields) + head.dense_linear(x)[:, 0]
    pairwise = sum((e[:, i] * e[:, j]).sum(1) for i in range(4) for j in range(i + 1, 4))
    w1 = torch.cat([head.field_ops[f].deep_w for f in SPEC.fields] + [head.deep_dense.weight], 1)  # (H, F*d + D)
    h = torch.relu(torch.cat([e.flatten(1), x], 1) @ w1.t() + head.deep_dense.bias)
    mlp = head.deep_rest[2]  # Linear(8, 4), ReLU, Linear(4, 1)
    deep_out = mlp(h)[:, 0]
    expected = linear + pairwise + deep_out
    torch.testing.assert_close(m(x, batch.sparse_features), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [LogisticRegression, FactorizationMachine, DNN, WideAndDeep, DeepFM], ids=lambda c: c.__name__)
def test_partial_results_are_additive_over_fields(cls, batch):
    """The DES premise: partial(all fields) == partial(A) + partial(B) for any split A|B."""
    head = make(cls).net.head
    wide, deep = make(cls).net.pooled(batch.sparse_features)
    a, b = ["C1", "C3"], ["C2", "C4"]
    sub = lambda d, fs: {f: d[f] for f in fs if f in d}  # noqa: E731
    full = head.field_partial(wide, deep, 10)
    split = head.field_partial(sub(wide, a), sub(deep, a), 10) + head.field_partial(sub(wide, b), sub(deep, b), 10)
    torch.testing.assert_close(full, split)
    assert full.shape == (10, head.partial_dim)


def test_mixed_embedding_sizes(batch):
    m = make(DeepFM, embedding_dims={"C1": 2, "C2": 8})
    assert m.field_dims == [2, 8, 4, 4]
    assert m.net.head.field_ops["C1"].fm_proj is not None and m.net.head.field_ops["C3"].fm_proj is None
    assert m(batch.dense_features, batch.sparse_features).shape == (10,)
    with pytest.raises(ValueError, match=r"DLRM needs one embedding width for all fields, got \[2, 4\]"):
        make(DLRM, embedding_dims={"C1": 2})


@pytest.mark.parametrize("cls", [FactorizationMachine, DNN, DeepFM], ids=lambda c: c.__name__)
def test_width_zero_drops_the_field(cls, batch):
    """A field of width 0 has no deep table and no operator weights, and the model equals the
    full-width one with that field's embedding zeroed (wide weights stay)."""
    dropped = make(cls, embedding_dims={"C2": 0, "C3": 8})
    names = [c.name for c in dropped.net.deep.embedding_bag_configs()]
    assert names == ["emb_C1", "emb_C3", "emb_C4"] and "C2" not in dropped.net.head.field_ops
    ref = make(cls, embedding_dims={"C3": 8})
    # copy the surviving weights into the reference, zero C2's table there
    sd = dropped.state_dict()
    ref_sd = ref.state_dict()
    for k, v in sd.items():
        ref_sd[k].copy_(v)
    ref_sd["net.deep.embedding_bags.emb_C2.weight"].zero_()
    x, kjt = batch.dense_features, batch.sparse_features
    torch.testing.assert_close(dropped(x, kjt), ref(x, kjt), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"embedding_dims": {"C9": 4}}, r"embedding_dims names unknown fields \['C9'\]"),
        ({"embedding_dims": {"C1": -1}}, r"embedding_dims must be >= 0 \(0 drops the field\)"),
        ({"embedding_dims": {f: 0 for f in SPEC.fields}}, "drops every field"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1, got 0"),
        ({"sparse_optimizer": "adam"}, r"sparse_optimizer must be one of \['adagrad', 'rowwise_adagrad', 'sgd'\], got 'adam'"),
    ],
)
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(DeepFM, **kwargs)
    with pytest.raises(ValueError, match=r"hidden must be non-empty positive sizes"):
        make(DNN, hidden=())


def test_optimizer_groups_tables_and_dense():
    m = make(WideAndDeep, sparse_optimizer="rowwise_adagrad")
    opt = m.configure_optimizers()
    names = {name: set(o.params) for name, o in opt.optimizers}
    assert all(".embedding_bags." in n for n in names["sparse"])
    assert not any(".embedding_bags." in n for n in names["dense"])
    assert len(names["sparse"]) == 8  # 4 wide + 4 deep tables


def test_trainer_fit_learns_and_checkpoint_roundtrip(tmp_path):
    dm = SyntheticCTRDataModule(num_rows=3000, num_dense=2, num_sparse=4, cardinality=50, batch_size=64, data_seed=1)
    model = DeepFM(dm.schema, embedding_dim=8, hidden=(16,), dense_lr=0.01, sparse_lr=0.1)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    auc = trainer.callback_metrics["val_auc"].item()
    assert auc > 0.7
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    restored = DeepFM.load_from_checkpoint(ckpt)
    b = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(restored(b.dense_features, b.sparse_features), model(b.dense_features, b.sparse_features))


def test_single_process_resume_matches_uninterrupted_training(tmp_path):
    """Resuming from a Lightning checkpoint restores the table and dense optimizer states
    (TorchRec's strict KeyedOptimizer load): epoch 2 after a resume equals epoch 2 straight
    through (train order fixed so that only the restore can differ)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class FixedOrder(SyntheticCTRDataModule):
        def train_dataloader(self):
            return self._loader("train", self.batch_size, shuffle=False)

    dm = FixedOrder(num_rows=600, num_dense=2, num_sparse=3, cardinality=40, batch_size=64)

    def fit(epochs, where, ckpt=None):
        pl.seed_everything(0)
        m = DeepFM(dm.schema, embedding_dim=4, hidden=[8], dense_weight_decay=0.01, sparse_optimizer="rowwise_adagrad")
        pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=where,
                   callbacks=[ModelCheckpoint(dirpath=where, save_last=True, save_top_k=0)]).fit(m, dm, ckpt_path=ckpt)
        return m

    straight = fit(2, tmp_path / "a")
    fit(1, tmp_path / "b")
    resumed = fit(2, tmp_path / "b", ckpt=str(tmp_path / "b" / "last.ckpt"))
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_skips_tables_and_matches_torch(batch, algorithm):
    """configure_gradient_clipping clips every non-table gradient as torch does; table
    gradients (fused into backward under DES) are left alone."""
    m, ref = make(DeepFM), make(DeepFM)
    for mod in (m, ref):
        F.binary_cross_entropy_with_logits(mod(batch.dense_features, batch.sparse_features), batch.labels).backward()
    m.configure_gradient_clipping(None, 0.01, algorithm)
    dense = [p for n, p in ref.named_parameters() if ".embedding_bags." not in n]
    if algorithm == "norm":
        assert torch.nn.utils.clip_grad_norm_(dense, 0.01) > 0.1  # clipping is active
    else:
        torch.nn.utils.clip_grad_value_(dense, 0.01)
    ref_grads = dict(ref.named_parameters())
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n].grad, rtol=1e-6, atol=1e-9)  # tables: unclipped in both


def test_comm_stats_under_another_backend_warns_and_counts_nothing(monkeypatch):
    """On nccl (the SLURM GPU template) the callback says what it needs instead of stopping the run."""
    import torch.distributed as dist

    from lightning_des.callbacks import CommStatsCallback

    cb = CommStatsCallback()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    with pytest.warns(UserWarning, match="needs the 'counting' process-group backend .* uses 'nccl'"):
        cb.on_fit_start(None, None)
    cb.on_train_batch_start(None, None, None, 0)
    cb.on_train_batch_end(None, None, None, None, 0)
    cb.on_fit_end(None, None)
    assert list(cb.summary) == ["unavailable"] and cb._steps == 0
