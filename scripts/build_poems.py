"""Build lightning_des/data/assets/tang_quatrains.tsv.gz from the npm package chinese-poetry.

    npm pack chinese-poetry@2.0.1            # registry package, MIT
    python scripts/build_poems.py chinese-poetry-2.0.1.tgz

Reads ``package/dist/quantangshi/poet.tang.*.json`` straight from the tarball, keeps quatrains
(exactly 4 lines, all 5 or all 7 Chinese characters, lines ended by ，。！？；), converts them
from Traditional to Simplified with OpenCC (``t2s``), drops exact duplicates, and writes
``id<TAB>author<TAB>title<TAB>line1|line2|line3|line4`` sorted by id. Deterministic.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import tarfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "lightning_des" / "data" / "assets" / "tang_quatrains.tsv.gz"
HAN = re.compile(r"^[\u4e00-\u9fff]+$")


def quatrain(paragraphs: list[str]) -> list[str] | None:
    text = "".join(paragraphs).strip()
    parts = re.split(r"[，。！？；]", text)
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if len(parts) != 4 or not all(HAN.match(p) for p in parts):
        return None
    n = len(parts[0])
    return parts if n in (5, 7) and all(len(p) == n for p in parts) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tarball", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    from opencc import OpenCC

    t2s = OpenCC("t2s")
    rows, seen = [], set()
    with tarfile.open(args.tarball) as tar:
        names = sorted(m.name for m in tar.getmembers() if re.search(r"dist/quantangshi/poet\.tang\.\d+\.json$", m.name))
        if not names:
            raise SystemExit(f"{args.tarball}: no package/dist/quantangshi/poet.tang.*.json inside")
        for name in names:
            for poem in json.load(tar.extractfile(name)):
                lines = quatrain(poem.get("paragraphs") or [])
                if lines is None:
                    continue
                lines = [t2s.convert(x) for x in lines]
                if tuple(lines) in seen:
                    continue
                seen.add(tuple(lines))
                clean = lambda s: " ".join(t2s.convert(s or "").split()).replace("\t", " ")  # noqa: E731
                rows.append((poem["id"], clean(poem.get("author")), clean(poem.get("title")), "|".join(lines)))
    rows.sort()
    with gzip.GzipFile(args.out, "wb", mtime=0) as f:
        f.write("".join("\t".join(r) + "\n" for r in rows).encode("utf-8"))
    five = sum(len(r[3]) == 23 for r in rows)
    print(f"wrote {args.out}: {len(rows)} quatrains ({five} five-character, {len(rows) - five} seven-character)")


if __name__ == "__main__":
    main()
