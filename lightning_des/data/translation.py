"""Parallel corpora for neural machine translation, prepared from Debian packages.

* ``de-en``: sentence pairs from the Ding German-English dictionary (Debian ``trans-de-en``
  1.9-6, ``usr/share/trans/de-en``, GPL-2+). A line is ``de | de2 :: en | en2``; sub-entries
  at the same position are translations. Kept: pairs whose two sides are sentences (end in
  ``.?!``, >= 4 words, no ``;`` alternatives) after removing ``{...}``/``[...]`` tags.
* ``zh-en``: paragraphs of the Debian Reference (``debian-reference-en``/``-zh-cn`` 2.100,
  GPL-2+), aligned one to one per chapter (po4a translations); chapters whose paragraph
  counts differ are skipped.

``lightning-des data prepare de-en|zh-en`` fetches the package with ``apt-get download`` (the
registry's own client), extracts it with ``dpkg -x`` and writes ``<cache>/translation/<pair>.tsv``
(source TAB target). Nothing is downloaded at training time.
"""

from __future__ import annotations

import html
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lightning_des.data.prepare import default_cache_dir

log = logging.getLogger(__name__)
PAIRS = {"de-en": ("trans-de-en",), "zh-en": ("debian-reference-en", "debian-reference-zh-cn")}
_TAG = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")


def ding_pairs(lines) -> list[tuple[str, str]]:
    """Sentence pairs from Ding dictionary lines (see the module docstring); order kept,
    exact duplicates dropped."""
    out, seen = [], set()
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        de, en = line.rstrip("\n").split(" :: ", 1)
        ds, es = de.split(" | "), en.split(" | ")
        if len(ds) != len(es):
            continue
        for d, e in zip(ds, es):
            d, e = _TAG.sub("", d).strip(), _TAG.sub("", e).strip()
            if ";" in d or ";" in e or "\t" in d + e:
                continue
            if d[-1:] in ".?!" and e[-1:] in ".?!" and len(d.split()) >= 4 and len(e.split()) >= 4 and (d, e) not in seen:
                seen.add((d, e))
                out.append((d, e))
    return out


def html_paragraphs(text: str) -> list[str]:
    """Text of every ``<p>`` element, tags removed, entities decoded, whitespace collapsed."""
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", p)).split()) for p in re.findall(r"<p[^>]*>(.*?)</p>", text, flags=re.S)]


def reference_pairs(root: Path, lang: str = "zh-cn") -> list[tuple[str, str]]:
    """(``lang`` paragraph, English paragraph) pairs of the Debian Reference under ``root``."""
    out = []
    for en in sorted(root.glob("*.en.html")):
        other = en.with_name(en.name.replace(".en.html", f".{lang}.html"))
        if not other.is_file():
            continue
        a, b = html_paragraphs(en.read_text(encoding="utf-8")), html_paragraphs(other.read_text(encoding="utf-8"))
        if len(a) != len(b):
            log.info("skipping %s: %d English vs %d %s paragraphs", en.name, len(a), len(b), lang)
            continue
        out += [(y, x) for x, y in zip(a, b) if x and y and x != y and "\t" not in x + y]
    return out


def _fetch_debs(packages: tuple[str, ...], dest: Path) -> None:
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found: preparing translation data needs a Debian/Ubuntu system")
    for pkg in packages:
        proc = subprocess.run(["apt-get", "download", pkg], cwd=dest, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"apt-get download {pkg} failed (run `apt-get update` first?): {proc.stderr.strip()[-500:]}")
    for deb in sorted(dest.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(dest / "root")], check=True)


def prepare_translation(pair: str, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Write ``<cache>/translation/<pair>.tsv`` (source TAB target) once; returns its path."""
    if pair not in PAIRS:
        raise ValueError(f"unknown language pair {pair!r}; known: {sorted(PAIRS)}")
    out = Path(cache_dir or default_cache_dir()) / "translation" / f"{pair}.tsv"
    if out.is_file() and not force:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _fetch_debs(PAIRS[pair], tmp)
        if pair == "de-en":
            with open(tmp / "root" / "usr/share/trans/de-en", encoding="utf-8") as f:
                pairs = ding_pairs(f)
        else:
            pairs = reference_pairs(tmp / "root" / "usr/share/debian-reference")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".tmp")
    part.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    part.replace(out)
    log.info("%s: %d sentence pairs -> %s", pair, len(pairs), out)
    return out
