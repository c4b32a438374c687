"""Prepare once, stream, bounded memory: delimited CTR tables -> encoded columnar shards.

``prepare_table(inputs, spec, out)`` (``lightning-des data prepare``) turns one or more
delimited files (``.gz`` allowed) into a directory that :class:`~lightning_des.data.shards.PreparedCTR`
memory-maps::

    OUT/meta.json                    written last: schema, vocabulary sizes, row counts per split,
                                     split boundaries, source checksums, skipped rows
    OUT/shards/00000/train/*.npy     label (N,) f32, dense (N, D) f32, <field>.ids (ids,) i32,
    OUT/shards/00000/val/...         <field>.offsets (N+1,) i64 for multi-hot fields
    OUT/vocab/<field>.{keys,ids}.npy token key -> id (sorted keys)

Stages, each resumable:

1. *parse*: the input is cut into blocks of about ``block_bytes`` ending at a line break;
   pyarrow's CSV reader parses a block (typed columns, multithreaded), categorical columns are
   dictionary-encoded and their distinct tokens hashed to 64-bit keys
   (:mod:`~lightning_des.data.hashing`). A block becomes one raw shard.
2. *split*: every row gets train/val/test: at random by seed (the same rows as
   :func:`~lightning_des.data.ctr.split_indices`), by a timestamp column (earliest rows train,
   latest validate/test) or by input file (all but the last file train; the last is cut into
   validation then test, Criteo's day-23 convention).
3. *vocabulary*: token counts over the training rows; ids 2.. by descending count (ties by key),
   0 = missing, 1 = OOV or rarer than ``min_freq``. With ``num_embeddings`` tokens are hashed
   into buckets instead (``id = 2 + key % (num_embeddings - 2)``), as TorchRec's Criteo
   preprocessing does for huge vocabularies.
4. *encode*: each raw shard becomes one encoded shard with a part per split.

Every shard is written to a temporary directory and renamed when complete, so an interrupted
prepare resumes at the first unfinished shard and no reader ever sees a half-written one.
Memory is bounded by the block size, except for what a vocabulary or split inherently needs:
the distinct keys of a field (16 bytes each) and one byte per row for the split (plus 8 per row
while a random or temporal split is drawn). Tokens are taken as they are (no whitespace
stripping); dense values get ``log(1 + max(x, 0))``, missing -> 0.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path
from typing import IO, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from lightning_des.data.ctr import (
    MISSING_ID,
    OOV_ID,
    BadRowPolicy,
    ColumnSpec,
    MalformedRowError,
    row_error,
    split_indices,
    transform_dense,
)
from lightning_des.data.hashing import MISSING_KEY, hash_strings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SplitBy = Literal["random", "time", "file"]


@dataclass(frozen=True)
class PrepareConfig:
    """What a prepared directory depends on besides its inputs and spec.

    Args:
        split_by: ``"random"`` (by ``seed``), ``"time"`` (by ``spec.timestamp``) or ``"file"``
            (all inputs but the last train; the last is cut into validation then test in the
            proportion ``fractions[1]:fractions[2]``).
        fractions: train/val/test fractions (random and time splits).
        seed: random-split seed.
        min_freq: tokens seen fewer times in training map to the OOV id.
        num_embeddings: hash tokens into this many ids (>= 3) instead of building vocabularies.
        bad_rows: ``"raise"`` stops at the first malformed row naming file and line; ``"skip"``
            drops such rows, counts them and reports them in ``meta.json`` and the log.
        block_bytes: size of a parse block (= one shard), in bytes of uncompressed text.
    """

    split_by: SplitBy = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    min_freq: int = 1
    num_embeddings: int | None = None
    bad_rows: BadRowPolicy = "raise"
    block_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if self.split_by not in ("random", "time", "file"):
            raise ValueError(f"PrepareConfig.split_by must be 'random', 'time' or 'file', got {self.split_by!r}")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or not np.isclose(sum(self.fractions), 1.0):
            raise ValueError(f"PrepareConfig.fractions must be 3 values >= 0 summing to 1, got {list(self.fractions)}")
        if self.min_freq < 1:
            raise ValueError(f"PrepareConfig.min_freq must be >= 1, got {self.min_freq}")
        if self.num_embeddings is not None and self.num_embeddings < 3:
            raise ValueError(f"PrepareConfig.num_embeddings must be >= 3 (ids 0 and 1 are reserved), got {self.num_embeddings}")
        if self.bad_rows not in ("raise", "skip"):
            raise ValueError(f"PrepareConfig.bad_rows must be 'raise' or 'skip', got {self.bad_rows!r}")
        if self.block_bytes < 1024:
            raise ValueError(f"PrepareConfig.block_bytes must be >= 1024, got {self.block_bytes}")


def spec_to_dict(spec: ColumnSpec) -> dict:
    d = asdict(spec)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def spec_from_dict(d: dict) -> ColumnSpec:
    return ColumnSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def prepared_dir(table: Path, spec: ColumnSpec, config: PrepareConfig, cache_root: Path) -> Path:
    """Where a raw table is prepared automatically: ``<cache_root>/prepared/<name>-<key>``, the
    key hashing the table's path, size and mtime, the spec and the config."""
    st = table.stat()
    ident = json.dumps([str(table.resolve()), st.st_size, st.st_mtime_ns, spec_to_dict(spec), repr(config)], sort_keys=True)
    return cache_root / "prepared" / f"{table.name.split('.')[0]}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"


# -- small file helpers -----------------------------------------------------------------------
def _save_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _commit_dir(tmp: Path, final: Path) -> None:
    """Rename a fully written temporary directory into place (atomic on one file system)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _HashingReader:
    """A binary file object that feeds everything read through it into a SHA-256."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.sha = fh, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        b = self.fh.read(n)
        self.sha.update(b)
        return b

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.fh.close()


@contextmanager
def _open_stream(path: Path) -> Iterator[tuple[IO[bytes], _HashingReader]]:
    raw = _HashingReader(open(path, "rb"))
    try:
        if path.suffix == ".gz":
            gz = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
            yield gz, raw
        else:
            yield raw, raw  # type: ignore[misc]
    finally:
        raw.close()


def _read(stream: IO[bytes], n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({err})") from None


def _blocks(stream: IO[bytes], path: Path, block_bytes: int) -> Iterator[bytes]:
    """Cut the rest of ``stream`` into blocks: ``block_bytes`` cut back to their last line break
    (extended to the next one when a line is longer). Boundaries depend only on where the
    stream starts, so a resumed prepare cuts the same blocks."""
    pending = b""
    eof = False
    while True:
        while not eof and len(pending) < block_bytes:
            chunk = _read(stream, block_bytes - len(pending), path)
            eof = not chunk
            pending += chunk
        if not pending:
            return
        cut = pending.rfind(b"\n", 0, block_bytes) + 1
        while cut == 0:  # one line longer than a block
            nl = pending.find(b"\n", block_bytes)
            if nl >= 0:
                cut = nl + 1
            elif eof:
                cut = len(pending)
            else:
                chunk = _read(stream, block_bytes, path)
                eof = not chunk
                pending += chunk
        yield pending[:cut]
        pending = pending[cut:]


def _skip(stream: IO[bytes], n: int, path: Path) -> None:
    while n > 0:
        b = _read(stream, min(n, 16 << 20), path)
        if not b:
            raise ValueError(f"{path} is shorter than when its prepare started: the input changed; use force")
        n -= len(b)


# -- stage 1: parse ---------------------------------------------------------------------------
@dataclass
class _Layout:
    """Column positions of one input file (after its header, if any)."""

    names: tuple[str, ...]
    label: int
    dense: list[int]
    timestamp: int | None


def _layout(spec: ColumnSpec, path: Path, header_line: bytes | None) -> _Layout:
    names = spec.names
    if spec.header:
        if header_line is None or not header_line.strip():
            raise ValueError(f"{path} is empty: expected a header line naming the columns")
        file_names = tuple(header_line.decode("utf-8").rstrip("\r\n").split(spec.delimiter))
        if names is not None and file_names != names:
            raise MalformedRowError(path, 1, f"header {file_names} differs from spec.names {names}")
        names = file_names
        missing = sorted(set(spec.columns) - set(names))
        if missing:
            raise MalformedRowError(path, 1, f"header lacks columns {missing}; it has {list(names)}")
    assert names is not None
    pos = {n: i for i, n in enumerate(names)}
    return _Layout(names, pos[spec.label], [pos[c] for c in spec.dense], pos[spec.timestamp] if spec.timestamp else None)


def _column_types(spec: ColumnSpec) -> dict[str, pa.DataType]:
    """The Arrow type each column of ``spec.columns`` is parsed as (and stored from)."""
    types = {spec.label: pa.float32(), **{c: pa.float32() for c in spec.dense}, **{c: pa.string() for c in spec.sparse}}
    if spec.timestamp:
        types[spec.timestamp] = pa.float64()
    return types


def _arrow_parse(block: bytes, spec: ColumnSpec, lay: _Layout) -> tuple[pa.Table | None, str | None]:
    """Parse a block with pyarrow; returns (table, None) or (None, why it needs a closer look)."""
    invalid: list[int] = []

    def handler(row) -> str:  # pyarrow.csv.InvalidRow: wrong column count
        invalid.append(1)
        return "skip"

    types = _column_types(spec)
    try:
        table = pcsv.read_csv(
            pa.py_buffer(block),
            pcsv.ReadOptions(column_names=list(lay.names), block_size=1 << 20),
            pcsv.ParseOptions(delimiter=spec.delimiter, quote_char=False, invalid_row_handler=handler),
            pcsv.ConvertOptions(column_types=types, include_columns=spec.columns, null_values=[""],
                                strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        return None, str(err)
    if invalid:
        return None, f"{len(invalid)} rows with a wrong column count"
    lab = table.column(spec.label)
    if lab.null_count or not pc.all(pc.is_in(lab, pa.array([0.0, 1.0], pa.float32()))).as_py():
        return None, "labels other than 0 or 1"
    if spec.timestamp and table.column(spec.timestamp).null_count:
        return None, f"missing values in the timestamp column {spec.timestamp!r}"
    return table, None


def _check_lines(block: bytes, first_line: int, spec: ColumnSpec, lay: _Layout) -> tuple[list[tuple[int, str]], bytes]:
    """Row-by-row check of a block that pyarrow flagged: the bad lines (number, reason) and the
    block without them."""
    bad: list[tuple[int, str]] = []
    good: list[bytes] = []
    ncol = len(lay.names)
    extra = [lay.timestamp] if lay.timestamp is not None else []
    for i, raw in enumerate(block.split(b"\n")):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.append((first_line + i, f"not UTF-8 ({err})"))
            continue
        cols = text.split(spec.delimiter)
        reason = row_error(cols, ncol, lay.label, lay.dense + extra, lay.names)
        if reason is None and lay.timestamp is not None and not cols[lay.timestamp].strip():
            reason = f"timestamp column {spec.timestamp!r} is empty"
        if reason is None:
            good.append(raw)
        else:
            bad.append((first_line + i, reason))
    return bad, b"\n".join(good) + (b"\n" if good else b"")


def _encode_sparse(col: pa.ChunkedArray, sep: str | None) -> dict[str, np.ndarray]:
    """Dictionary keys + per-token indices (+ row offsets for multi-hot) of one column."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    out: dict[str, np.ndarray] = {}
    if sep is not None:
        lists = pc.split_pattern(arr, sep)
        flat = lists.flatten()
        row_off = lists.offsets.to_numpy().astype(np.int64)
        nonempty = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
        per_row = np.add.reduceat(nonempty.astype(np.int64), row_off[:-1]) if len(flat) else np.zeros(0, np.int64)
        first = np.zeros(len(flat), bool)
        first[row_off[:-1]] = True
        keep = nonempty | (first & np.repeat(per_row == 0, np.diff(row_off)))  # an empty row keeps one "" = missing
        arr = flat.filter(pa.array(keep))
        out["offsets"] = np.concatenate([[0], np.cumsum(np.maximum(per_row, 1))]).astype(np.int64)
    enc = pc.dictionary_encode(arr)
    out["keys"] = hash_strings(enc.dictionary)
    out["idx"] = enc.indices.to_numpy().astype(np.int32)
    return out


def _save_raw(dst: Path, table: pa.Table, spec: ColumnSpec) -> int:
    dst.mkdir(parents=True)
    n = table.num_rows
    np.save(dst / "label.npy", table.column(spec.label).to_numpy().astype(np.float32))
    dense = np.empty((n, len(spec.dense)), np.float32)
    for j, c in enumerate(spec.dense):
        dense[:, j] = table.column(c).to_numpy(zero_copy_only=False)
    np.save(dst / "dense.npy", transform_dense(dense))
    if spec.timestamp:
        np.save(dst / "ts.npy", table.column(spec.timestamp).to_numpy().astype(np.float64))
    for f in spec.sparse:
        for part, a in _encode_sparse(table.column(f), spec.multi_hot.get(f)).items():
            np.save(dst / f"{f}.{part}.npy", a)
    return n


def _parse_inputs(inputs: list[Path], spec: ColumnSpec, cfg: PrepareConfig, out: Path, progress: bool) -> list[dict]:
    """Stage 1; returns the raw shards' info (in order). Resumes after the last finished shard."""
    raw_dir = out / "raw"
    raw_dir.mkdir(exist_ok=True)
    for tmp in raw_dir.glob("*.tmp"):
        shutil.rmtree(tmp)
    done_path = raw_dir / "files.json"
    files_done: list[dict] = json.loads(done_path.read_text()) if done_path.is_file() else []
    infos = [json.loads((d / "info.json").read_text()) for d in sorted(raw_dir.iterdir()) if (d / "info.json").is_file()]
    from tqdm.auto import tqdm

    bar = tqdm(desc="prepare: parse", unit=" rows", unit_scale=True, disable=not progress, smoothing=0.1)
    bar.update(sum(i["rows"] for i in infos))
    for fi, path in enumerate(inputs):
        if fi < len(files_done):
            continue
        mine = [i for i in infos if i["file"] == fi]
        with _open_stream(path) as (stream, hasher):
            header = _read_header(stream, path) if spec.header else None
            start = len(header) if header is not None else 0
            lay = _layout(spec, path, header)
            line = 2 if spec.header else 1
            if mine:  # resume after this file's last finished shard
                _skip(stream, mine[-1]["end"] - start, path)
                start, line = mine[-1]["end"], mine[-1]["end_line"]
            rows_in_file = sum(i["rows"] for i in mine)
            pool = ThreadPoolExecutor(max_workers=2)  # parse/encode one block while the next is read
            pending: deque = deque()

            def commit(fut) -> None:
                nonlocal rows_in_file
                info = fut.result()
                _commit_dir(raw_dir / f"{info['index']:05d}.tmp", raw_dir / f"{info['index']:05d}")
                infos.append(info)
                rows_in_file += info["rows"]
                bar.update(info["rows"])

            try:
                k = len(infos)
                for block in _blocks(stream, path, cfg.block_bytes):
                    end, end_line = start + len(block), line + block.count(b"\n")
                    meta = {"index": k, "file": fi, "start": start, "end": end, "line": line, "end_line": end_line}
                    pending.append(pool.submit(_parse_block, block, path, spec, lay, cfg, raw_dir, meta))
                    k += 1
                    start, line = end, end_line
                    while len(pending) >= 2:
                        commit(pending.popleft())
                while pending:
                    commit(pending.popleft())
            finally:
                for fut in pending:
                    fut.cancel()
                pool.shutdown(wait=True)
            skipped = sum(i["skipped"] for i in infos if i["file"] == fi)
            if rows_in_file == 0:
                what = f"all {skipped} rows are malformed (bad_rows='skip')" if skipped else "it holds no rows"
                raise ValueError(f"{path} is empty: {what}" + (" after its header" if spec.header and not skipped else ""))
            files_done.append({**_identity(path), "sha256": hasher.sha.hexdigest(), "rows": rows_in_file,
                               "lines": line - 1, "skipped": skipped})
            _save_json(done_path, files_done)
    bar.close()
    return infos


def _parse_block(block: bytes, path: Path, spec: ColumnSpec, lay: _Layout, cfg: PrepareConfig, raw_dir: Path, meta: dict) -> dict:
    """Parse one block into the temporary raw shard ``<index>.tmp``; returns its info."""
    line, end_line = meta["line"], meta["end_line"]
    table, why = _arrow_parse(block, spec, lay)
    bad: list[tuple[int, str]] = []
    if table is None:
        bad, cleaned = _check_lines(block, line, spec, lay)
        if bad and cfg.bad_rows == "raise":
            raise MalformedRowError(path, *bad[0])
        table, why2 = _arrow_parse(cleaned, spec, lay) if cleaned else (pa.table({}), None)
        if table is None or not bad:
            raise MalformedRowError(path, line, f"lines {line}-{end_line - 1} could not be parsed: {why2 or why}")
    tmp = raw_dir / f"{meta['index']:05d}.tmp"
    n = _save_raw(tmp, table, spec) if table.num_rows else _save_empty_raw(tmp, spec)
    info = {**meta, "rows": n, "skipped": len(bad), "bad": bad[:20]}
    (tmp / "info.json").write_text(json.dumps(info))
    return info


def _read_header(stream: IO[bytes], path: Path) -> bytes:
    buf = b""
    while b"\n" not in buf:
        b = _read(stream, 1, path)
        if not b:
            break
        buf += b
    return buf


def _save_empty_raw(dst: Path, spec: ColumnSpec) -> int:
    return _save_raw(dst, pa.table({c: pa.array([], t) for c, t in _column_types(spec).items()}), spec)


class _Raw:
    """Memory-mapped view of one raw shard."""

    def __init__(self, root: Path, info: dict) -> None:
        self.dir, self.info = root / f"{info['index']:05d}", info

    def load(self, name: str) -> np.ndarray:
        return np.load(self.dir / f"{name}.npy", mmap_mode="r")


# -- stage 2: split ---------------------------------------------------------------------------
def _assign_splits(raws: list[_Raw], spec: ColumnSpec, cfg: PrepareConfig, n_files: int) -> tuple[np.ndarray, dict]:
    """Split code per row (0 train, 1 val, 2 test) in input order, and a description."""
    n = sum(r.info["rows"] for r in raws)
    codes = np.zeros(n, np.int8)
    cuts = np.round(np.cumsum(cfg.fractions)[:-1] * n).astype(np.int64)
    if cfg.split_by == "random":
        for code, idx in enumerate(split_indices(n, cfg.fractions, cfg.seed)):
            codes[idx] = code
        return codes, {"by": "random", "seed": cfg.seed, "fractions": list(cfg.fractions)}
    if cfg.split_by == "time":
        ts = np.concatenate([np.asarray(r.load("ts")) for r in raws]) if raws else np.zeros(0)
        order = np.argsort(ts, kind="stable")  # ties keep input order
        codes[order[cuts[0]:cuts[1]]] = 1
        codes[order[cuts[1]:]] = 2
        at = [float(ts[order[c]]) if c < n else None for c in cuts]
        return codes, {"by": "time", "column": spec.timestamp, "fractions": list(cfg.fractions),
                       "val_from": at[0], "test_from": at[1]}
    last = n_files - 1
    first_last = sum(r.info["rows"] for r in raws if r.info["file"] < last)
    n_last = n - first_last
    fv, ft = cfg.fractions[1], cfg.fractions[2]
    n_val = int(round(n_last * fv / (fv + ft))) if fv + ft > 0 else 0
    codes[first_last:first_last + n_val] = 1
    codes[first_last + n_val:] = 2
    return codes, {"by": "file", "train_files": last, "val_rows_of_last_file": n_val, "test_rows_of_last_file": n_last - n_val}


# -- stage 3: vocabulary ----------------------------------------------------------------------
def _merge_counts(keys: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    k = np.concatenate(keys)
    c = np.concatenate(counts)
    uk, inv = np.unique(k, return_inverse=True)
    return uk, np.bincount(inv, weights=c, minlength=len(uk)).astype(np.int64)


def _build_vocab(raws: list[_Raw], f: str, multi_hot: bool, codes: np.ndarray, min_freq: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, their ids) of field ``f`` from its training rows."""
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    pending = 0
    row0 = 0
    for r in raws:
        n = r.info["rows"]
        train = codes[row0:row0 + n] == 0
        row0 += n
        idx, k = np.asarray(r.load(f"{f}.idx")), np.asarray(r.load(f"{f}.keys"))
        if multi_hot:
            train = np.repeat(train, np.diff(np.asarray(r.load(f"{f}.offsets"))))
        c = np.bincount(idx[train], minlength=len(k))
        keep = (c > 0) & (k != MISSING_KEY)
        keys.append(k[keep])
        counts.append(c[keep])
        pending += int(keep.sum())
        if len(keys) > 1 and pending > 4 * len(keys[0]) + (1 << 20):  # fold to bound memory
            keys, counts = map(lambda x: [x], _merge_counts(keys, counts))
            pending = len(keys[0])
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    uk, uc = _merge_counts(keys, counts)
    kept = uc >= min_freq
    uk, uc = uk[kept], uc[kept]
    order = np.lexsort((uk, -uc))  # descending count, ties by key
    ids = np.empty(len(uk), np.int32)
    ids[order] = np.arange(2, len(uk) + 2, dtype=np.int32)
    return uk, ids


def _lookup(keys: np.ndarray, vocab: tuple[np.ndarray, np.ndarray] | int) -> np.ndarray:
    """Ids of ``keys``: from a (sorted keys, ids) vocabulary or hashed into ``vocab`` buckets."""
    if isinstance(vocab, int):
        ids = (2 + keys % np.uint64(vocab - 2)).astype(np.int32)
    else:
        vk, vid = vocab
        ids = np.full(len(keys), OOV_ID, np.int32)
        if len(vk) <= 8 * len(keys):  # Arrow's hash lookup: ~2x faster than a binary search here
            pos = pc.index_in(pa.array(keys), value_set=pa.array(vk)).to_numpy(zero_copy_only=False)
            found = ~np.isnan(pos) if pos.dtype.kind == "f" else pos >= 0
            ids[found] = vid[pos[found].astype(np.int64)]
        else:  # a huge vocabulary: building its hash table per shard would cost more than searching
            pos = np.searchsorted(vk, keys)
            found = pos < len(vk)
            found[found] = vk[pos[found]] == keys[found]
            ids[found] = vid[pos[found]]
    ids[keys == MISSING_KEY] = MISSING_ID
    return ids


# -- stage 4: encode --------------------------------------------------------------------------
def _encode_shard(raw: _Raw, spec: ColumnSpec, vocabs: dict, codes: np.ndarray, dst: Path) -> dict[str, int]:
    label, dense = np.asarray(raw.load("label")), np.asarray(raw.load("dense"))
    masks = {s: codes == i for i, s in enumerate(SPLITS)}
    rows = {s: int(m.sum()) for s, m in masks.items()}
    for s in SPLITS:
        if rows[s]:
            (dst / s).mkdir(parents=True)
            np.save(dst / s / "label.npy", label[masks[s]])
            np.save(dst / s / "dense.npy", dense[masks[s]])
    for f in spec.sparse:
        ids = _lookup(np.asarray(raw.load(f"{f}.keys")), vocabs[f])[np.asarray(raw.load(f"{f}.idx"))]
        off = np.asarray(raw.load(f"{f}.offsets")) if f in spec.multi_hot else None
        for s in SPLITS:
            m = masks[s]
            if not rows[s]:
                continue
            if off is None:
                np.save(dst / s / f"{f}.ids.npy", ids[m])
            else:
                lengths = np.diff(off)
                np.save(dst / s / f"{f}.ids.npy", ids[np.repeat(m, lengths)])
                np.save(dst / s / f"{f}.offsets.npy", np.concatenate([[0], np.cumsum(lengths[m])]).astype(np.int64))
    dst.mkdir(parents=True, exist_ok=True)
    return rows


# -- the pipeline -----------------------------------------------------------------------------
def _state(inputs: list[Path], spec: ColumnSpec, cfg: PrepareConfig) -> dict:
    return {"version": FORMAT_VERSION, "inputs": [_identity(p) for p in inputs], "spec": spec_to_dict(spec),
            "config": {**asdict(cfg), "fractions": list(cfg.fractions)}}


def _differences(old: dict, new: dict) -> list[str]:
    out = [f"version: {old.get('version')!r} -> {new['version']!r}"] if old.get("version") != new["version"] else []
    for key in ("spec", "config"):
        a, b = old.get(key, {}), new[key]
        out += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for i, (a, b) in enumerate(zip_longest(old.get("inputs", []), new["inputs"])):
        if a != b:
            out.append(f"input {i}: {a} -> {b}")
    return out


def prepare_table(
    inputs: Sequence[str | Path],
    spec: ColumnSpec,
    out: str | Path,
    config: PrepareConfig | None = None,
    *,
    force: bool = False,
    keep_raw: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare ``inputs`` (in order) into ``out``; returns ``out``. Idempotent and resumable.

    A second call with the same inputs (path, size, mtime), spec and config returns at once;
    after an interruption it continues with the first unfinished shard. Different inputs, spec
    or config in an existing ``out`` are refused (naming the difference) unless ``force``.

    Raises:
        FileNotFoundError: an input is missing.
        MalformedRowError: a malformed row with ``bad_rows="raise"`` (file and line named).
        ValueError: an empty input, a truncated gzip file, a header that does not fit the
            spec, a split the inputs cannot make, or ``out`` prepared differently.
    """
    cfg = config or PrepareConfig()
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("prepare_table needs at least one input file")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"CTR table not found: {p}")
    if cfg.split_by == "time" and not spec.timestamp:
        raise ValueError("split_by='time' needs a ColumnSpec with a timestamp column; this spec has none")
    if cfg.split_by == "file" and len(paths) < 2:
        raise ValueError(f"split_by='file' needs at least 2 input files (train files, then the val/test file), got {len(paths)}")
    root = Path(out)
    state = _state(paths, spec, cfg)
    with _locked(root):
        state_path = root / "state.json"
        if state_path.is_file() and not force:
            diff = _differences(json.loads(state_path.read_text()), state)
            if diff:
                raise ValueError(f"{root} was prepared (or started) with other settings: {'; '.join(diff)}. "
                                 "Use another output directory, or force=True (--force) to start over")
            if (root / "meta.json").is_file():
                log.info("%s is already prepared", root)
                return root
        elif force or not state_path.is_file():
            for child in ("raw", "vocab", "shards", "meta.json", "split.npy"):
                target = root / child
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            _save_json(state_path, state)
        t0 = time.perf_counter()
        infos = _parse_inputs(paths, spec, cfg, root, progress)
        files = json.loads((root / "raw" / "files.json").read_text())
        raws = [_Raw(root / "raw", i) for i in infos]
        split_path = root / "split.npy"
        if split_path.is_file():
            codes = np.load(split_path)
            split_info = json.loads((root / "split.json").read_text())
        else:
            codes, split_info = _assign_splits(raws, spec, cfg, len(paths))
            tmp = root / "split.tmp.npy"
            np.save(tmp, codes)
            _save_json(root / "split.json", split_info)
            os.replace(tmp, split_path)
        n_train = int((codes == 0).sum())
        if n_train == 0:
            raise ValueError(f"the {cfg.split_by} split leaves no training rows ({len(codes)} rows in all)")
        vocabs = _vocabularies(raws, spec, cfg, codes, root)
        shards = root / "shards"
        shards.mkdir(exist_ok=True)
        for tmp in shards.glob("*.tmp"):
            shutil.rmtree(tmp)
        from tqdm.auto import tqdm

        per_split: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
        starts = np.cumsum([0] + [r.info["rows"] for r in raws])

        def encode(j: int) -> dict:
            r = raws[j]
            name = f"{r.info['index']:05d}"
            final = shards / name
            if not (final / "rows.json").is_file():
                tmp = shards / f"{name}.tmp"
                rows = _encode_shard(r, spec, vocabs, codes[starts[j]:starts[j + 1]], tmp)
                (tmp / "rows.json").write_text(json.dumps(rows))
                _commit_dir(tmp, final)
            return json.loads((final / "rows.json").read_text())

        with ThreadPoolExecutor(max_workers=2) as pool:
            for r, rows in zip(raws, tqdm(pool.map(encode, range(len(raws))), total=len(raws), desc="prepare: encode",
                                          unit=" shards", disable=not progress)):
                for s in SPLITS:
                    if rows[s]:
                        per_split[s].append([r.info["index"], rows[s]])
        cards = [cfg.num_embeddings if cfg.num_embeddings else len(vocabs[f][0]) + 2 for f in spec.sparse]
        skipped = sum(i["skipped"] for i in infos)
        bad = [[str(paths[i["file"]]), line, why] for i in infos for line, why in i["bad"]][:20]
        meta = {
            "version": FORMAT_VERSION,
            "schema": {"dense_features": list(spec.dense), "sparse_features": list(spec.sparse),
                       "cardinalities": cards, "multi_hot": [f for f in spec.sparse if f in spec.multi_hot]},
            "splits": {s: {"rows": sum(x[1] for x in per_split[s]), "shards": per_split[s]} for s in SPLITS},
            "split": split_info,
            "spec": state["spec"],
            "config": state["config"],
            "inputs": files,
            "skipped_rows": skipped,
            "bad_row_examples": bad,
            "prepare_seconds": round(time.perf_counter() - t0, 3),
        }
        _save_json(root / "meta.json", meta)
        if skipped:
            log.warning("%s: skipped %d malformed rows (bad_rows='skip'); first: %s", root, skipped,
                        "; ".join(f"{p}:{line}: {why}" for p, line, why in bad[:3]))
        if not keep_raw:
            shutil.rmtree(root / "raw")
        log.info("%s: %s", root, ", ".join(f"{s} {meta['splits'][s]['rows']}" for s in SPLITS))
    return root


def _vocabularies(raws: list[_Raw], spec: ColumnSpec, cfg: PrepareConfig, codes: np.ndarray, root: Path) -> dict:
    """Stage 3 (or its saved result): per field (sorted keys, ids), or the bucket count."""
    if cfg.num_embeddings:
        return {f: int(cfg.num_embeddings) for f in spec.sparse}
    vdir = root / "vocab"
    if not vdir.is_dir():
        tmp = root / "vocab.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        def build(f: str) -> None:
            k, i = _build_vocab(raws, f, f in spec.multi_hot, codes, cfg.min_freq)
            np.save(tmp / f"{f}.keys.npy", k)
            np.save(tmp / f"{f}.ids.npy", i)

        with ThreadPoolExecutor(max_workers=2) as pool:  # numpy's sorts release the GIL
            list(pool.map(build, spec.sparse))
        _commit_dir(tmp, vdir)
    return {f: (np.load(vdir / f"{f}.keys.npy"), np.load(vdir / f"{f}.ids.npy")) for f in spec.sparse}
