"""Streaming prepare against the plain Python reference (read_table + encode_splits)."""

import gzip
import json

import numpy as np
import pytest

from lightning_des.data import ingest
from lightning_des.data.ctr import MISSING_ID, OOV_ID, ColumnSpec, MalformedRowError, encode_splits, read_table
from lightning_des.data.ingest import PrepareConfig, prepare_table
from lightning_des.data.shards import PreparedCTR

SPEC = ColumnSpec(label="y", dense=("rid", "x"), sparse=("u", "c", "g"), multi_hot={"g": "|"}, timestamp="ts")


def write_table(path, n=600, seed=0, header=True, ts=None):
    """Rows with a row id (dense ``rid``), a Zipf user, a categorical with empties, a multi-hot
    field with empty rows and empty tokens, and a timestamp."""
    rng = np.random.default_rng(seed)
    lines = ["y\trid\tx\tu\tc\tg\tts"] if header else []
    ts = rng.permutation(n) if ts is None else ts
    for i in range(n):
        g = "|".join(f"g{t}" for t in rng.integers(0, 9, rng.integers(0, 4)))
        if i % 17 == 0:
            g = "g1||g2"
        c = "" if i % 5 == 0 else f"c{rng.zipf(1.5) % 40}"
        x = "" if i % 7 == 0 else f"{rng.integers(-3, 50)}"
        lines.append(f"{int(rng.random() < 0.4)}\t{i}\t{x}\tu{rng.zipf(1.3) % 60}\t{c}\t{g}\t{ts[i]}")
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def read_split(root, split):
    """All rows of a prepared split: row ids, labels, dense, per-field id lists."""
    data = PreparedCTR(root)
    out = {"rid": [], "y": [], "x": [], **{f: [] for f in data.schema.sparse_features}}
    for s in range(len(data.sizes(split))):
        sh = data.shard(split, s)
        out["rid"] += np.rint(np.expm1(sh.dense[:, 0])).astype(int).tolist()
        out["y"] += sh.labels.tolist()
        out["x"] += sh.dense[:, 1].tolist()
        for f in data.schema.sparse_features:
            off = sh.offsets[f] if sh.offsets[f] is not None else np.arange(len(sh.labels) + 1)
            out[f] += [tuple(sh.values[f][off[i]:off[i + 1]].tolist()) for i in range(len(sh.labels))]
    return out


def assert_same_as_reference(root, ref, spec, min_freq):
    """Same rows per split, labels, dense values; per field the ids equal the reference's up to
    one bijection that fixes missing/OOV and keeps the frequency order."""
    assert PreparedCTR(root).schema.cardinalities == ref.schema.cardinalities
    maps = {f: {} for f in spec.sparse}
    for split in ("train", "val", "test"):
        got = read_split(root, split)
        part = getattr(ref, split)
        assert got["rid"] == np.rint(np.expm1(part.dense[:, 0])).astype(int).tolist()
        assert got["y"] == part.labels.tolist()
        np.testing.assert_allclose(got["x"], part.dense[:, 1], rtol=1e-6)
        for f in spec.sparse:
            off = part.offsets[f]
            want = [tuple(part.values[f][off[i]:off[i + 1]].tolist()) for i in range(len(part))]
            assert [len(r) for r in got[f]] == [len(r) for r in want]
            for a, b in zip(got[f], want):
                for i, j in zip(a, b):
                    assert maps[f].setdefault(j, i) == i, f"{f}: reference id {j} maps to two ids"
    for f, m in maps.items():
        assert len(set(m.values())) == len(m), f"{f}: two reference ids map to one id"
        for special in (MISSING_ID, OOV_ID):
            assert m.get(special, special) == special
        vocab = PreparedCTR(root).schema.cardinalities[spec.sparse.index(f)]
        assert set(m) <= set(range(vocab))


@pytest.mark.parametrize("suffix, block, min_freq", [(".tsv", 1 << 20, 1), (".tsv.gz", 2048, 2)])
def test_prepare_equals_reference(tmp_path, suffix, block, min_freq):
    path = write_table(tmp_path / f"t{suffix}")
    cfg = PrepareConfig(seed=3, min_freq=min_freq, block_bytes=block)
    root = prepare_table([path], SPEC, tmp_path / "out", cfg, progress=False)
    ref = encode_splits(read_table(path, SPEC), SPEC, cfg.fractions, seed=3, min_freq=min_freq)
    assert_same_as_reference(root, ref, SPEC, min_freq)
    meta = json.loads((root / "meta.json").read_text())
    assert len(meta["splits"]["train"]["shards"]) > (5 if block == 2048 else 0)
    assert meta["inputs"][0]["rows"] == 600 and len(meta["inputs"][0]["sha256"]) == 64
    assert not (root / "raw").exists()


def test_vocabulary_counts_training_rows_only(tmp_path):
    lines = ["y\trid\tx\tu\tc\tg\tts"] + [f"{i % 2}\t{i}\t1\tu{i}\tc\tg\t{i}" for i in range(50)]
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    root = prepare_table([tmp_path / "t.tsv"], SPEC, tmp_path / "o", PrepareConfig(fractions=(0.6, 0.2, 0.2)), progress=False)
    assert set(sum(read_split(root, "val")["u"], ())) == {OOV_ID}  # every user is unique: unseen in training
    assert PreparedCTR(root).schema.cardinalities[0] == 30 + 2


def test_time_split_orders_by_timestamp(tmp_path):
    path = write_table(tmp_path / "t.tsv", n=500, ts=np.arange(500)[::-1] * 10)  # newest rows first
    root = prepare_table([path], SPEC, tmp_path / "o", PrepareConfig(split_by="time"), progress=False)
    rid = {s: read_split(root, s)["rid"] for s in ("train", "val", "test")}
    assert [len(rid[s]) for s in rid] == [400, 50, 50]
    assert min(rid["train"]) == 100 and set(rid["test"]) == set(range(50))  # the 50 latest ratings
    meta = json.loads((root / "meta.json").read_text())
    assert meta["split"]["by"] == "time" and meta["split"]["test_from"] == 4500.0


def test_file_split_last_file_is_val_then_test(tmp_path):
    a, b = write_table(tmp_path / "d0.tsv", n=300, seed=1), write_table(tmp_path / "d1.tsv", n=100, seed=2)
    root = prepare_table([a, b], SPEC, tmp_path / "o", PrepareConfig(split_by="file"), progress=False)
    rid = {s: read_split(root, s)["rid"] for s in ("train", "val", "test")}
    assert rid["train"] == list(range(300)) and rid["val"] == list(range(50)) and rid["test"] == list(range(50, 100))
    with pytest.raises(ValueError, match="split_by='file' needs at least 2 input files"):
        prepare_table([a], SPEC, tmp_path / "o2", PrepareConfig(split_by="file"), progress=False)


def test_hashed_ids_stay_in_buckets(tmp_path):
    path = write_table(tmp_path / "t.tsv")
    root = prepare_table([path], SPEC, tmp_path / "o", PrepareConfig(num_embeddings=16), progress=False)
    assert PreparedCTR(root).schema.cardinalities == (16, 16, 16)
    c = read_split(root, "train")["c"]
    assert {i for r in c for i in r} <= set(range(16)) - {OOV_ID}
    assert (MISSING_ID,) in c  # empty fields stay missing


def test_resume_after_interruption_continues_and_matches(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.tsv.gz", n=800)
    cfg = PrepareConfig(block_bytes=2048)
    full = prepare_table([path], SPEC, tmp_path / "full", cfg, progress=False)
    calls = []
    real = ingest._parse_block

    def dies_at_block_5(block, path, spec, lay, cfg, raw_dir, meta):
        calls.append(meta["index"])
        if meta["index"] == 5:
            (raw_dir / "00005.tmp").mkdir()  # a half-written shard left behind
            raise KeyboardInterrupt
        return real(block, path, spec, lay, cfg, raw_dir, meta)

    monkeypatch.setattr(ingest, "_parse_block", dies_at_block_5)
    with pytest.raises(KeyboardInterrupt):
        prepare_table([path], SPEC, tmp_path / "cut", cfg, progress=False)
    assert not (tmp_path / "cut" / "meta.json").exists()
    finished = sorted(p.name for p in (tmp_path / "cut" / "raw").iterdir() if not p.name.endswith((".tmp", ".json")))
    monkeypatch.setattr(ingest, "_parse_block", lambda *a: calls.append(a[-1]["index"]) or real(*a))
    calls.clear()
    prepare_table([path], SPEC, tmp_path / "cut", cfg, progress=False)
    assert min(calls) == len(finished)  # finished shards are not parsed again
    for split in ("train", "val", "test"):
        assert read_split(tmp_path / "cut", split) == read_split(full, split)
    assert json.loads((tmp_path / "cut" / "meta.json").read_text())["inputs"] == json.loads((full / "meta.json").read_text())["inputs"]


def test_prepare_is_idempotent_and_refuses_other_settings(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.tsv")
    prepare_table([path], SPEC, tmp_path / "o", progress=False)
    monkeypatch.setattr(ingest, "_parse_block", lambda *a: pytest.fail("parsed again"))
    prepare_table([path], SPEC, tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match=r"other settings: config.min_freq: 1 -> 3"):
        prepare_table([path], SPEC, tmp_path / "o", PrepareConfig(min_freq=3), progress=False)


def test_bad_rows_raise_with_file_and_line_or_are_counted(tmp_path):
    path = write_table(tmp_path / "t.tsv", n=300)
    lines = path.read_text().splitlines()
    lines[250] = lines[250].replace("\t", "\t\t", 1)  # file line 251: one column too many
    lines[120] = "7" + lines[120][1:]  # line 121: label 7
    path.write_text("\n".join(lines) + "\n")
    cfg = PrepareConfig(block_bytes=2048)
    with pytest.raises(MalformedRowError) as err:
        prepare_table([path], SPEC, tmp_path / "a", cfg, progress=False)
    assert str(err.value) == f"{path}:121: label must be 0 or 1, got '7'"
    root = prepare_table([path], SPEC, tmp_path / "b", PrepareConfig(block_bytes=2048, bad_rows="skip"), progress=False)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["skipped_rows"] == 2
    assert [e[1:] for e in meta["bad_row_examples"]] == [[121, "label must be 0 or 1, got '7'"], [251, "expected 7 columns, got 8"]]
    assert sum(meta["splits"][s]["rows"] for s in ("train", "val", "test")) == 298
    ref = read_table(path, SPEC, bad_rows="skip")
    assert ref.skipped == 2 and len(ref) == 298


@pytest.mark.parametrize("content, message", [
    (b"", "is empty: expected a header line"),
    (b"y\trid\tx\tu\tc\tg\tts\n", "is empty: it holds no rows after its header"),
    (b"y\trid\tu\n1\t2\t3\n", r"header lacks columns \['c', 'g', 'ts', 'x'\]"),
    (b"y\trid\tx\tu\tc\tg\tts\n1\t1\t1\n", "t.tsv:2: expected 7 columns, got 3"),
    (b"y\trid\tx\tu\tc\tg\tts\n1\t1\tzz\tu\tc\tg\t1\n", "t.tsv:2: dense column 'x' is not numeric: 'zz'"),
    (b"y\trid\tx\tu\tc\tg\tts\n1\t1\t1\tu\tc\tg\t\n", "t.tsv:2: timestamp column 'ts' is empty"),
])
def test_bad_files_fail_clearly(tmp_path, content, message):
    (tmp_path / "t.tsv").write_bytes(content)
    with pytest.raises((ValueError, MalformedRowError), match=message):
        prepare_table([tmp_path / "t.tsv"], SPEC, tmp_path / "o", progress=False)


def test_truncated_gzip_and_missing_file(tmp_path):
    path = write_table(tmp_path / "t.tsv.gz", n=3000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt gzip file"):
        prepare_table([path], SPEC, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        prepare_table([tmp_path / "nope.tsv"], SPEC, tmp_path / "o2", progress=False)
    with pytest.raises(ValueError, match="split_by='time' needs a ColumnSpec with a timestamp"):
        prepare_table([path], ColumnSpec(label="y", sparse=("u",)), tmp_path / "o3", PrepareConfig(split_by="time"))


@pytest.mark.parametrize("kwargs, message", [
    ({"split_by": "day"}, "split_by must be 'random', 'time' or 'file', got 'day'"),
    ({"fractions": (0.5, 0.5, 0.5)}, "fractions must be 3 values >= 0 summing to 1"),
    ({"min_freq": 0}, "min_freq must be >= 1, got 0"),
    ({"num_embeddings": 2}, "num_embeddings must be >= 3"),
    ({"bad_rows": "ignore"}, "bad_rows must be 'raise' or 'skip', got 'ignore'"),
])
def test_prepare_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrepareConfig(**kwargs)


def test_criteo_cli_on_generated_days_matches_reference(tmp_path, capsys):
    from lightning_des.cli import main
    from lightning_des.data.ctr import CRITEO_SPEC
    from lightning_des.data.synthetic import write_criteo_tsv

    days = [write_criteo_tsv(tmp_path / f"day_{i}.tsv", 400, seed=i, cardinality=50) for i in range(3)]
    out = tmp_path / "criteo"
    assert main(["data", "prepare", "criteo", "--input", *map(str, days), "--out", str(out), "--block-mb", "1"]) == 0
    assert "train 800, val 200, test 200 rows" in capsys.readouterr().out
    data = PreparedCTR(out)
    assert data.schema.sparse_features == CRITEO_SPEC.sparse and data.schema.num_dense == 13
    # day 2 is split into validation (first half) and test: the same rows as the Python reader's
    ref = read_table(days[2], CRITEO_SPEC)
    got = np.concatenate([data.shard("val", 0).labels, data.shard("test", 0).labels])
    assert got.tolist() == ref.labels.tolist()
    np.testing.assert_allclose(data.shard("test", 0).dense, ingest.transform_dense(ref.dense[200:]), rtol=1e-6)
    with pytest.raises(SystemExit):
        main(["data", "prepare", "criteo", "--out", str(out)])  # no --input


def test_table_cli_needs_a_spec_and_rejects_unknown_keys(tmp_path, capsys):
    from lightning_des.cli import main

    path = write_table(tmp_path / "t.tsv")
    with pytest.raises(SystemExit):
        main(["data", "prepare", "table", "--input", str(path), "--out", str(tmp_path / "o")])
    assert "'table' needs --spec" in capsys.readouterr().err
    spec = tmp_path / "spec.yaml"
    spec.write_text("label: y\ndense: [rid, x]\nsparse: [u, c, g]\nmulti_hot: {g: '|'}\nlabels: y\n")
    assert main(["data", "prepare", "table", "--input", str(path), "--out", str(tmp_path / "o"), "--spec", str(spec)]) == 1
    assert "unknown ColumnSpec keys ['labels']" in capsys.readouterr().err
    spec.write_text("label: y\ndense: [rid, x]\nsparse: [u, c, g]\nmulti_hot: {g: '|'}\ntimestamp: ts\n")
    assert main(["data", "prepare", "table", "--input", str(path), "--out", str(tmp_path / "o"), "--spec", str(spec),
                 "--split-by", "time"]) == 0
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["split"]["by"] == "time"
