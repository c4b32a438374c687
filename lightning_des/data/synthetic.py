"""Synthetic Criteo-like CTR data for scale benchmarks and tests (never for quality figures).

Ids are Zipf-skewed per field; labels come from a planted logistic model so AUC is
meaningful: ``logit = sum_f mean_{id in bag f} w_f[id] + beta . dense + b`` with
``w_f[id] ~ N(0, signal^2 / F)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lightning_des.data.ctr import CTRSchema, EncodedCTR


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of a synthetic CTR table.

    Args:
        num_rows: number of samples.
        num_dense: dense features (log-normal, already transformed scale).
        cardinalities: ids per sparse field (one entry per field).
        multi_hot: ids per sample per field (bag length; 1 = single-hot).
        zipf: Zipf exponent of the id distribution (> 1; larger = more skew).
        signal: scale of the planted logit (0 = labels are coin flips).
        seed: RNG seed; the same spec and seed give the same table.
        intrinsic_dims: planted-truth testbed for embedding-size search: one ``r_f`` per field.
            Field 0 is the context (e.g. the user): each of its ids gets a latent vector
            ``z in R^R`` with ``R = r_0 = max r_f``; every other field f contributes
            ``<z_ctx[:r_f], v_f[id]>`` with ``v_f[id] in R^{r_f}`` (mean over bags), so its
            (context x id) logit matrix has rank exactly ``r_f`` and an embedding narrower than
            ``r_f`` cannot represent it; ``r_f = 0`` makes field f pure noise. None (default):
            the additive model above.
    """

    num_rows: int = 10_000
    num_dense: int = 13
    cardinalities: Sequence[int] = (1000,) * 26
    multi_hot: int = 1
    zipf: float = 1.2
    signal: float = 3.0
    seed: int = 0
    intrinsic_dims: Sequence[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cardinalities", tuple(int(c) for c in self.cardinalities))
        if self.intrinsic_dims is not None:
            dims = tuple(int(r) for r in self.intrinsic_dims)
            object.__setattr__(self, "intrinsic_dims", dims)
            if len(dims) != len(self.cardinalities) or min(dims) < 0:
                raise ValueError(f"SyntheticSpec.intrinsic_dims needs one r_f >= 0 per field ({len(self.cardinalities)}), got {list(dims)}")
            if len(dims) < 2 or dims[0] < max(dims[1:]) or dims[0] < 1:
                raise ValueError(f"SyntheticSpec.intrinsic_dims[0] is the context field's latent size: it must be >= 1 and "
                                 f">= every other r_f, got {list(dims)}")
        for name, val, low in (("num_rows", self.num_rows, 1), ("num_dense", self.num_dense, 0), ("multi_hot", self.multi_hot, 1)):
            if val < low:
                raise ValueError(f"SyntheticSpec.{name} must be >= {low}, got {val}")
        if not self.cardinalities or min(self.cardinalities) < 1:
            raise ValueError(f"SyntheticSpec.cardinalities must be non-empty and >= 1, got {self.cardinalities}")
        if self.zipf <= 1.0:
            raise ValueError(f"SyntheticSpec.zipf must be > 1, got {self.zipf}")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f"C{i + 1}" for i in range(len(self.cardinalities)))

    def schema(self) -> CTRSchema:
        return CTRSchema(
            dense_features=tuple(f"I{i + 1}" for i in range(self.num_dense)),
            sparse_features=self.fields,
            cardinalities=self.cardinalities,
            multi_hot=self.fields if self.multi_hot > 1 else (),
        )


def make_synthetic(spec: SyntheticSpec, return_logits: bool = False, return_factors: bool = False):
    """Generate an encoded synthetic table (see module docstring for the planted model);
    with ``return_logits`` also the planted logit of each row (for tests), with
    ``return_factors`` also the planted latent factors of an ``intrinsic_dims`` table
    (``{"context": z, field: v_f}``), as a last element."""
    rng = np.random.default_rng(spec.seed)
    n, nf, L = spec.num_rows, len(spec.cardinalities), spec.multi_hot
    dense = np.log1p(rng.lognormal(0.0, 1.0, size=(n, spec.num_dense))).astype(np.float32)
    logit = dense @ rng.normal(0.0, 0.3, size=spec.num_dense) - 0.3 * dense.sum(1) / max(spec.num_dense, 1)
    values, offsets = {}, {}
    factors: dict[str, np.ndarray] = {}
    ctx = None
    for i, (f, card) in enumerate(zip(spec.fields, spec.cardinalities)):
        # Zipf ranks folded into [0, card), then a fixed random relabelling so hot ids are spread
        ids = (rng.zipf(spec.zipf, size=n * L) - 1) % card
        ids = rng.permutation(card)[ids]
        if spec.intrinsic_dims is None:
            w = rng.normal(0.0, spec.signal / np.sqrt(nf), size=card)
            logit = logit + w[ids].reshape(n, L).mean(1)
        elif i == 0:
            factors["context"] = rng.normal(0.0, 1.0, size=(card, spec.intrinsic_dims[0]))
            ctx = factors["context"][ids].reshape(n, L, -1).mean(1)  # (n, R)
        else:
            r = spec.intrinsic_dims[i]
            factors[f] = v = rng.normal(0.0, spec.signal / np.sqrt(max(r, 1) * (nf - 1)), size=(card, r))
            if r:
                logit = logit + (ctx[:, :r] * v[ids].reshape(n, L, r).mean(1)).sum(1)
        values[f] = ids.astype(np.int64)
        offsets[f] = np.arange(0, n * L + 1, L, dtype=np.int64)
    logit = logit - np.median(logit)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    data = EncodedCTR(labels, dense, values, offsets)
    out = (data,) + ((logit,) if return_logits else ()) + ((factors,) if return_factors else ())
    return out if len(out) > 1 else data


def write_criteo_tsv(path: str | Path, num_rows: int, seed: int = 0, cardinality: int = 100_000, zipf: float = 1.1,
                     missing: float = 0.1, chunk_rows: int = 500_000) -> Path:
    """Write a synthetic Criteo-format TSV (no header: label, I1..I13, C1..C26), vectorised with
    pyarrow: labels 25% positive, log-normal integer counts, Zipf-distributed 8-hex-digit tokens
    from a fixed table of ``cardinality`` tokens per field, ``missing`` of each column empty.
    For scale benchmarks and tests only. Written to ``path + ".tmp"`` and renamed when complete."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if num_rows < 1 or cardinality < 1 or not 0 <= missing < 1 or zipf <= 1:
        raise ValueError(f"write_criteo_tsv: bad sizes num_rows={num_rows}, cardinality={cardinality}, "
                         f"missing={missing}, zipf={zipf}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    tables = [pa.array([f"{x:08x}" for x in rng.integers(0, 2**32, size=cardinality)]) for _ in range(26)]
    tmp = path.with_name(path.name + ".tmp")
    opts = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with open(tmp, "wb") as fh:
        for start in range(0, num_rows, chunk_rows):
            m = min(chunk_rows, num_rows - start)
            cols = {"label": pa.array((rng.random(m) < 0.25).astype(np.int8))}
            for i in range(13):
                v = np.floor(rng.lognormal(1.0, 1.5, m)).astype(np.int64)
                cols[f"I{i + 1}"] = pa.array(v, mask=rng.random(m) < missing)
            for i, table in enumerate(tables):
                ids = ((rng.zipf(zipf, m) - 1) % cardinality).astype(np.int32)
                cols[f"C{i + 1}"] = pa.DictionaryArray.from_arrays(pa.array(ids, mask=rng.random(m) < missing), table)
            pcsv.write_csv(pa.table(cols), fh, opts)
    tmp.replace(path)
    return path
