import gzip

import numpy as np
import pytest
import torch

from lightning_des.data.ctr import (
    CRITEO_SPEC,
    MISSING_ID,
    OOV_ID,
    ColumnSpec,
    CTRSchema,
    EncodedCTR,
    MalformedRowError,
    Vocabulary,
    encode_splits,
    read_table,
    split_indices,
    transform_dense,
)
from lightning_des.data.modules import CTRDataModule


def criteo_row(label="1", dense=None, cats=None):
    dense = dense if dense is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *dense, *cats])


@pytest.fixture
def criteo_file(tmp_path):
    rows = [
        criteo_row("1"),
        criteo_row("0", dense=[""] * 13, cats=[""] * 26),  # every field empty (allowed)
        criteo_row("0", dense=["-3"] + ["1"] * 12),
    ]
    p = tmp_path / "train.txt"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_criteo_reader_good_rows(criteo_file):
    t = read_table(criteo_file, CRITEO_SPEC)
    assert len(t) == 3 and t.skipped == 0
    assert t.labels.tolist() == [1.0, 0.0, 0.0]
    assert t.dense.shape == (3, 13)
    assert np.isnan(t.dense[1]).all()
    assert t.tokens["C1"] == [["00000000"], [], ["00000000"]]


@pytest.mark.parametrize(
    "row, reason",
    [
        ("1\t2\t3", "expected 40 columns, got 3"),
        (criteo_row(dense=["x"] + ["1"] * 12), "dense column 'I1' is not numeric: 'x'"),
        (criteo_row(label="2"), "label must be 0 or 1, got '2'"),
        (criteo_row(label=""), "label must be 0 or 1, got ''"),
    ],
)
def test_criteo_reader_bad_rows_raise_with_file_and_line(tmp_path, row, reason):
    p = tmp_path / "bad.txt"
    p.write_text(criteo_row() + "\n" + row + "\n")
    with pytest.raises(MalformedRowError) as err:
        read_table(p, CRITEO_SPEC)
    assert str(err.value) == f"{p}:2: {reason}"
    assert err.value.line == 2


def test_bad_rows_skip_policy_counts(tmp_path):
    p = tmp_path / "mixed.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join([criteo_row(), "1\t2", criteo_row(label="7"), criteo_row("0")]) + "\n")
    t = read_table(p, CRITEO_SPEC, bad_rows="skip")
    assert len(t) == 2 and t.skipped == 2


def test_bad_policy_and_missing_file_errors(tmp_path, criteo_file):
    with pytest.raises(ValueError, match="bad_rows must be 'raise' or 'skip', got 'ignore'"):
        read_table(criteo_file, CRITEO_SPEC, bad_rows="ignore")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_table(tmp_path / "nope.tsv", CRITEO_SPEC)


def test_column_spec_reader_multi_hot_and_header(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("y\tage\tuser\tgenres\n1\t30\tu1\ta|b\n0\t\tu2\t\n")
    spec = ColumnSpec(label="y", dense=("age",), sparse=("user", "genres"), multi_hot={"genres": "|"})
    t = read_table(p, spec)
    assert t.tokens["genres"] == [["a", "b"], []]
    assert t.tokens["user"] == [["u1"], ["u2"]]
    p.write_text("y\tage\tuser\n1\t30\tu1\n")
    with pytest.raises(MalformedRowError, match=r"header lacks columns \['genres'\]"):
        read_table(p, spec)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label": "y", "sparse": ()}, "must name at least one categorical column"),
        ({"label": "y", "sparse": ("a",), "multi_hot": {"b": "|"}}, r"not in sparse: \['b'\]"),
        ({"label": "y", "sparse": ("a",), "header": False}, "names is required when header=False"),
        ({"label": "a", "sparse": ("a",)}, "uses a column twice"),
    ],
)
def test_column_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColumnSpec(**kwargs)


def test_vocabulary_min_freq_oov_missing():
    v = Vocabulary.build([["a"], ["b"], ["a"], ["c", "a"], []], min_freq=2)
    assert v.encode(["a"]) == [2]
    assert v.encode(["b"]) == [OOV_ID]
    assert v.encode(["zzz"]) == [OOV_ID]
    assert v.encode([]) == [MISSING_ID]
    assert len(v) == 3
    with pytest.raises(ValueError, match="min_freq must be >= 1, got 0"):
        Vocabulary.build([], min_freq=0)


def test_transform_dense_handles_negative_and_missing():
    x = np.array([[np.nan, -5.0, 0.0, np.e - 1]], dtype=np.float32)
    np.testing.assert_allclose(transform_dense(x), [[0.0, 0.0, 0.0, 1.0]], rtol=1e-6)


def test_split_is_deterministic_by_seed():
    a = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    b = split_indices(100, (0.8, 0.1, 0.1), seed=3)
    c = split_indices(100, (0.8, 0.1, 0.1), seed=4)
    assert all((x == y).all() for x, y in zip(a, b))
    assert [len(x) for x in a] == [80, 10, 10]
    assert not (a[0] == c[0]).all()
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.1, 0.1), 0)


def test_vocabulary_is_fit_on_training_split_only(tmp_path):
    rows = [f"{i % 2}\t{i}\ttok{i}" for i in range(50)]
    p = tmp_path / "t.tsv"
    p.write_text("y\tx\tc\n" + "\n".join(rows) + "\n")
    spec = ColumnSpec(label="y", dense=("x",), sparse=("c",))
    s = encode_splits(read_table(p, spec), spec, (0.6, 0.2, 0.2), seed=0)
    # every token is unique, so no val/test token can be in the train-only vocabulary
    assert set(s.val.values["c"].tolist()) == {OOV_ID}
    assert s.schema.cardinalities == (len(s.train) + 2,)


def test_kjt_batch_layout():
    data = EncodedCTR.from_lists(
        np.array([1, 0, 1], dtype=np.float32),
        np.arange(6, dtype=np.float32).reshape(3, 2),
        {"a": [[5], [6], [7]], "g": [[1, 2], [0], [3, 4, 5]]},
    )
    b = data.batch([2, 0], ["a", "g"])
    kjt = b.sparse_features
    assert kjt.keys() == ["a", "g"]
    assert kjt.stride() == 2
    assert kjt.lengths().tolist() == [1, 1, 3, 2]  # feature-major: a[row2], a[row0], g[row2], g[row0]
    assert kjt.values().tolist() == [7, 5, 3, 4, 5, 1, 2]
    assert kjt["g"].to_dense()[0].tolist() == [3, 4, 5]
    assert torch.equal(b.dense_features, torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    assert b.labels.tolist() == [1.0, 1.0]


def test_schema_validation():
    with pytest.raises(ValueError, match="2 sparse features but 1 cardinalities"):
        CTRSchema((), ("a", "b"), (3,))
    with pytest.raises(ValueError, match="cardinalities must be >= 1"):
        CTRSchema((), ("a",), (0,))


def test_datamodule_criteo_batches_and_skip_logging(tmp_path, caplog):
    rows = [criteo_row(str(i % 2), cats=[f"{i % 5}"] * 26) for i in range(40)] + ["broken"]
    p = tmp_path / "c.txt"
    p.write_text("\n".join(rows) + "\n")
    with pytest.raises(MalformedRowError, match=r"c.txt:41: expected 40 columns, got 1"):
        CTRDataModule(str(p), cache_dir=str(tmp_path)).schema
    dm = CTRDataModule(str(p), bad_rows="skip", batch_size=8, cache_dir=str(tmp_path))
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "1 malformed rows were skipped" in caplog.text
    assert dm.skipped_rows == 1
    assert dm.schema.sparse_features == CRITEO_SPEC.sparse
    batch = next(iter(dm.train_dataloader()))
    assert batch.dense_features.shape == (8, 13)
    assert batch.sparse_features.keys() == list(CRITEO_SPEC.sparse)
    assert sum(len(b.labels) for b in dm.val_dataloader()) == 4


def test_datamodule_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        CTRDataModule("x", batch_size=0)
    with pytest.raises(ValueError, match="spec must be a ColumnSpec or 'criteo', got 'avazu'"):
        CTRDataModule("x", spec="avazu")


def test_loader_workers_give_the_same_batches(criteo_file, tmp_path):
    rows = [criteo_row(str(i % 2), cats=[f"{i % 7}"] * 26) for i in range(60)]
    p = tmp_path / "w.txt"
    p.write_text("\n".join(rows) + "\n")
    plain = list(CTRDataModule(str(p), batch_size=4, cache_dir=str(tmp_path)).train_dataloader())
    workers = list(CTRDataModule(str(p), batch_size=4, num_workers=2, cache_dir=str(tmp_path)).train_dataloader())
    assert len(plain) == len(workers) == 12
    for a, b in zip(plain, workers):
        assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
        assert torch.equal(a.dense_features, b.dense_features)
