"""CTR tables: column specs, schema, encoding rules, and a plain Python reference reader.

The data path itself streams (:mod:`lightning_des.data.ingest` prepares shards,
:mod:`lightning_des.data.shards` reads them); :func:`read_table` + :func:`encode_splits` keep
the same rules in plain Python lists, for small tables and as the reference the tests compare
the streaming prepare against.

Formats:

* the Criteo display-advertising format (``spec="criteo"``): tab-separated, no header,
  ``label, I1..I13, C1..C26``, empty fields allowed;
* a generic :class:`ColumnSpec` (label column, dense columns, categorical columns, multi-hot
  columns with a separator) for any delimited table with or without a header.

Encoding (fitted on the training split only):

* categorical ids: id 0 = missing (empty field), id 1 = out-of-vocabulary (unseen in training or
  rarer than ``min_freq``), ids 2.. = tokens by descending training frequency (ties by token);
* dense values: ``log(1 + max(x, 0))``; missing -> 0 (the DLRM/Criteo convention: the few
  negative Criteo counts are clipped to 0).
"""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from torchrec.datasets.utils import Batch

log = logging.getLogger(__name__)

MISSING_ID = 0
OOV_ID = 1
BadRowPolicy = Literal["raise", "skip"]


class MalformedRowError(ValueError):
    """A row of a CTR table that cannot be parsed; names the file and 1-based line."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass(frozen=True)
class ColumnSpec:
    """Which columns of a delimited CTR table mean what.

    Args:
        label: name of the 0/1 label column.
        dense: names of numeric columns (empty field = missing).
        sparse: names of categorical columns, single- or multi-hot.
        multi_hot: ``{column: separator}`` for the sparse columns that hold several tokens.
        names: all column names in file order; required when ``header`` is False.
        header: whether the first line holds the column names.
        delimiter: field separator.
        timestamp: optional numeric column used only for temporal splits (not a feature).
    """

    label: str
    dense: tuple[str, ...] = ()
    sparse: tuple[str, ...] = ()
    multi_hot: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] | None = None
    header: bool = True
    delimiter: str = "\t"
    timestamp: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense", tuple(self.dense))
        object.__setattr__(self, "sparse", tuple(self.sparse))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))
        if not self.sparse:
            raise ValueError("ColumnSpec.sparse must name at least one categorical column, got none")
        if not self.header and self.names is None:
            raise ValueError("ColumnSpec.names is required when header=False")
        unknown = sorted(set(self.multi_hot) - set(self.sparse))
        if unknown:
            raise ValueError(f"ColumnSpec.multi_hot names columns that are not in sparse: {unknown}")
        used = self.columns
        if len(set(used)) != len(used):
            raise ValueError(f"ColumnSpec uses a column twice: {used}")
        if self.names is not None:
            missing = sorted(set(used) - set(self.names))
            if missing:
                raise ValueError(f"ColumnSpec refers to columns not in names: {missing}")

    @property
    def columns(self) -> list[str]:
        """The columns this spec reads: label, dense, sparse, then the timestamp (if any)."""
        return [self.label, *self.dense, *self.sparse, *([self.timestamp] if self.timestamp else [])]


CRITEO_SPEC = ColumnSpec(
    label="label",
    dense=tuple(f"I{i}" for i in range(1, 14)),
    sparse=tuple(f"C{i}" for i in range(1, 27)),
    names=("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))),
    header=False,
)


@dataclass
class RawTable:
    """Parsed but not yet encoded rows: labels ``(N,)``, dense ``(N, D)`` with NaN for missing,
    ``tokens[field][row]`` = list of string tokens (empty list = missing)."""

    labels: np.ndarray
    dense: np.ndarray
    tokens: dict[str, list[list[str]]]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "RawTable":
        return RawTable(
            self.labels[idx],
            self.dense[idx],
            {f: [col[i] for i in idx] for f, col in self.tokens.items()},
        )


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def row_error(cols: Sequence[str], ncol: int, label_i: int, dense_i: Sequence[int], names: Sequence[str]) -> str | None:
    """Why a split row is malformed (wrong column count, label not 0/1, non-numeric dense
    value), or None if it is good. Shared by :func:`read_table` and the streaming prepare."""
    if len(cols) != ncol:
        return f"expected {ncol} columns, got {len(cols)}"
    lab = cols[label_i].strip()
    if lab not in ("0", "1", "0.0", "1.0"):
        return f"label must be 0 or 1, got {lab!r}"
    for c in dense_i:
        v = cols[c].strip()
        if v:
            try:
                float(v)
            except ValueError:
                return f"dense column {names[c]!r} is not numeric: {v!r}"
    return None


def read_table(path: str | Path, spec: ColumnSpec, bad_rows: BadRowPolicy = "raise") -> RawTable:
    """Parse a delimited CTR table.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        MalformedRowError: a row has the wrong column count, a non-numeric dense value or a
            label other than 0/1, and ``bad_rows="raise"``. With ``"skip"`` such rows are
            counted in ``RawTable.skipped`` instead (and logged by the caller).
    """
    if bad_rows not in ("raise", "skip"):
        raise ValueError(f"bad_rows must be 'raise' or 'skip', got {bad_rows!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CTR table not found: {path}")
    labels: list[float] = []
    dense: list[list[float]] = []
    tokens: dict[str, list[list[str]]] = {f: [] for f in spec.sparse}
    skipped = 0
    with _open_text(path) as fh:
        first = 1
        names = spec.names
        if spec.header:
            header_line = fh.readline().rstrip("\r\n")
            file_names = tuple(header_line.split(spec.delimiter))
            if names is not None and file_names != names:
                raise MalformedRowError(path, 1, f"header {file_names} differs from spec.names {names}")
            names = file_names
            missing = sorted({spec.label, *spec.dense, *spec.sparse} - set(names))
            if missing:
                raise MalformedRowError(path, 1, f"header lacks columns {missing}; it has {list(names)}")
            first = 2
        assert names is not None
        pos = {n: i for i, n in enumerate(names)}
        label_i = pos[spec.label]
        dense_i = [pos[c] for c in spec.dense]
        sparse_i = [(f, pos[f], spec.multi_hot.get(f)) for f in spec.sparse]
        ncol = len(names)
        for lineno, line in enumerate(fh, start=first):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split(spec.delimiter)
            reason = row_error(cols, ncol, label_i, dense_i, names)
            if reason is not None:
                if bad_rows == "raise":
                    raise MalformedRowError(path, lineno, reason)
                skipped += 1
                continue
            labels.append(float(cols[label_i].strip()))
            dense.append([float(v) if (v := cols[c].strip()) else float("nan") for c in dense_i])
            for f, c, sep in sparse_i:
                v = cols[c].strip()
                if sep is None:
                    tokens[f].append([v] if v else [])
                else:
                    tokens[f].append([t for t in v.split(sep) if t])
    return RawTable(
        np.asarray(labels, dtype=np.float32),
        np.asarray(dense, dtype=np.float32).reshape(len(labels), len(spec.dense)),
        tokens,
        skipped,
    )


class Vocabulary:
    """Token -> id map for one field; 0 = missing, 1 = out-of-vocabulary, 2.. = tokens.

    Example::

        >>> v = Vocabulary.build([["a"], ["b"], ["a"], []], min_freq=2)
        >>> v.encode(["a"]), v.encode(["b"]), v.encode([]), len(v)
        ([2], [1], [0], 3)
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.itos = list(tokens)
        self.stoi = {t: i + 2 for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, rows: Iterable[list[str]], min_freq: int = 1) -> "Vocabulary":
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(t for row in rows for t in row)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos) + 2

    def encode(self, row: list[str]) -> list[int]:
        if not row:
            return [MISSING_ID]
        return [self.stoi.get(t, OOV_ID) for t in row]


def transform_dense(x: np.ndarray) -> np.ndarray:
    """``log(1 + max(x, 0))`` elementwise; NaN (missing) -> 0."""
    return np.log1p(np.clip(np.nan_to_num(x, nan=0.0), 0.0, None)).astype(np.float32)


@dataclass(frozen=True)
class CTRSchema:
    """What a recommender needs to know about its input.

    Attributes:
        dense_features: names of the dense inputs, in column order of ``Batch.dense_features``.
        sparse_features: KJT keys, one embedding table per key.
        cardinalities: number of ids per sparse feature (including the missing and OOV ids).
        multi_hot: the sparse features that may hold several ids per sample.
    """

    dense_features: tuple[str, ...]
    sparse_features: tuple[str, ...]
    cardinalities: tuple[int, ...]
    multi_hot: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sparse_features) != len(self.cardinalities):
            raise ValueError(
                f"CTRSchema: {len(self.sparse_features)} sparse features but "
                f"{len(self.cardinalities)} cardinalities"
            )
        bad = [(f, c) for f, c in zip(self.sparse_features, self.cardinalities) if c < 1]
        if bad:
            raise ValueError(f"CTRSchema.cardinalities must be >= 1, got {bad}")

    @property
    def num_dense(self) -> int:
        return len(self.dense_features)


@dataclass
class EncodedCTR:
    """Encoded rows: labels (N,), dense (N, D), per-field flat ids ``values[f]`` with
    ``offsets[f]`` (N + 1,) marking each row's ids (jagged, CSR-style)."""

    labels: np.ndarray
    dense: np.ndarray
    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_lists(cls, labels: np.ndarray, dense: np.ndarray, ids: dict[str, list[list[int]]]) -> "EncodedCTR":
        values, offsets = {}, {}
        for f, rows in ids.items():
            lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
            offsets[f] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            values[f] = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(offsets[f][-1]))
        return cls(labels.astype(np.float32), dense.astype(np.float32), values, offsets)

    def take(self, idx: np.ndarray | Sequence[int]) -> "EncodedCTR":
        """Rows ``idx`` as a new :class:`EncodedCTR`."""
        idx = np.asarray(idx, dtype=np.int64)
        values, offsets = {}, {}
        for f, off in self.offsets.items():
            values[f], lengths = jagged_take(self.values[f], off, idx)
            offsets[f] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return EncodedCTR(self.labels[idx], self.dense[idx], values, offsets)

    def batch(self, idx: np.ndarray | Sequence[int], keys: Sequence[str]) -> Batch:
        """Gather rows ``idx`` into a TorchRec ``Batch`` (KJT keys in ``keys`` order)."""
        from torchrec.datasets.utils import Batch
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
        idx = np.asarray(idx, dtype=np.int64)
        all_lengths, all_values = [], []
        for f in keys:
            vals, lengths = jagged_take(self.values[f], self.offsets[f], idx)
            all_values.append(vals)
            all_lengths.append(lengths)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(keys),
            values=torch.from_numpy(np.concatenate(all_values)),
            lengths=torch.from_numpy(np.concatenate(all_lengths).astype(np.int32)),
        )
        return Batch(
            dense_features=torch.from_numpy(self.dense[idx]),
            sparse_features=kjt,
            labels=torch.from_numpy(self.labels[idx]),
        )


def jagged_take(values: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a jagged column (CSR: ``values`` with row ``offsets``): their ids,
    concatenated in ``idx`` order, and each row's length."""
    starts, lengths = offsets[idx], offsets[idx + 1] - offsets[idx]
    # position of each gathered id: its row's start + rank within the row
    base = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return values[base + np.arange(int(lengths.sum()))], lengths


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Deterministic random split of ``range(n)`` into ``len(fractions)`` parts (seeded)."""
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return [np.sort(p) for p in np.split(perm, cuts)]


@dataclass
class EncodedSplits:
    schema: CTRSchema
    train: EncodedCTR
    val: EncodedCTR
    test: EncodedCTR
    vocabularies: dict[str, Vocabulary]
    skipped_rows: int = 0


def encode_splits(
    table: RawTable,
    spec: ColumnSpec,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    min_freq: int = 1,
) -> EncodedSplits:
    """Split ``table`` by seed, fit vocabularies on the training part, encode all parts."""
    parts = [table.take(i) for i in split_indices(len(table), fractions, seed)]
    vocabs = {f: Vocabulary.build(parts[0].tokens[f], min_freq) for f in spec.sparse}

    def enc(t: RawTable) -> EncodedCTR:
        ids = {f: [vocabs[f].encode(r) for r in t.tokens[f]] for f in spec.sparse}
        return EncodedCTR.from_lists(t.labels, transform_dense(t.dense), ids)

    schema = CTRSchema(
        dense_features=spec.dense,
        sparse_features=spec.sparse,
        cardinalities=tuple(len(vocabs[f]) for f in spec.sparse),
        multi_hot=tuple(f for f in spec.sparse if f in spec.multi_hot),
    )
    return EncodedSplits(schema, enc(parts[0]), enc(parts[1]), enc(parts[2]), vocabs, table.skipped)
