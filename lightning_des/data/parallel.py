"""Large parallel corpora (de-en, zh-en) from Debian documentation and localisation packages.

Sources (``SOURCES``; bookworm packages fetched with ``apt-get download`` at set-up, never
committed), each a *domain* with its own test set:

* ``lo-help``: LibreOffice help (``libreoffice-help-{en-us,de,zh-cn}``, MPL-2.0), paragraphs and
  headings paired by file and ``id`` attribute.
* ``lo-ui``: LibreOffice UI catalogs (``libreoffice-l10n-{de,zh-cn}``, MPL-2.0), ``msgid ->
  msgstr`` of every ``.mo`` file (context prefixes dropped, ``~`` accelerators removed).
* ``gcc``: ``gcc-12-locales`` (GPL-3+), ``gcc-12.mo`` and ``cpplib-12.mo``.
* ``util-linux``: ``util-linux-locales`` (GPL-2), ``util-linux.mo``.
* ``debian-reference``: the Debian Reference (GPL-2+), paragraphs aligned per chapter.
* ``ding`` (de-en only): sentence pairs of the Ding dictionary (``trans-de-en``, GPL-2+).

Cleaning (``clean``; every drop is counted by reason in ``stats.json``): whitespace collapsed;
multi-line messages are split into lines when both sides have as many lines, else dropped;
untranslated entries (target equal to the English, or no Chinese character in a zh target);
English side of 3..100 words; character-length ratio (de/en 0.5..2.5, zh/en 0.12..1.5);
placeholders (``%s``, ``%1$s``, ``%qD``, ``%1``, ``$ARG$``, ``%PRODUCTNAME``) kept verbatim, and a
pair whose two sides do not carry the same placeholders is dropped; Chinese converted to
Simplified with OpenCC (``t2s``); exact duplicates of (source, target) removed across sources.

Splits (``split``): per domain, pairs are ordered by a hash of their English side; the first
``test_per_domain`` go to test and the next ``valid_per_domain`` to validation (a domain with
fewer than 10x that gives 5% each). Then every training pair that shares its source or its
target string with a test or validation pair is removed (UI catalogs repeat strings across
packages), so no test string occurs in training.

Files: ``<cache>/translation/<pair>/{train,valid,test}.tsv`` with columns source, target,
domain, key (the provenance: package file and message id or paragraph id), and ``stats.json``.
"""

from __future__ import annotations

import gettext
import hashlib
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, NamedTuple

LANG = {"de-en": ("de", "de", "de"), "zh-en": ("zh-cn", "zh_CN", "zh-CN")}  # debian suffix, locale, help dir


class Pair(NamedTuple):
    src: str  # German or Chinese
    tgt: str  # English
    domain: str
    key: str  # provenance inside the domain


def sources(pair: str) -> dict[str, tuple[str, ...]]:
    """Debian packages per domain for ``pair``."""
    deb = LANG[pair][0]
    out = {
        "lo-help": ("libreoffice-help-en-us", f"libreoffice-help-{deb}"),
        "lo-ui": (f"libreoffice-l10n-{deb}",),
        "gcc": ("gcc-12-locales",),
        "util-linux": ("util-linux-locales",),
        "debian-reference": ("debian-reference-en", f"debian-reference-{deb}"),
    }
    if pair == "de-en":
        out["ding"] = ("trans-de-en",)
    return out


# --- readers --------------------------------------------------------------------------------

def mo_messages(path: Path) -> dict[str, str]:
    """``{English msgid: translation}`` of a gettext ``.mo`` file: header and plural forms
    skipped, ``msgctxt`` prefixes removed (the first translation of a repeated msgid is kept)."""
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # the stdlib's parsed table
    out: dict[str, str] = {}
    for k, v in catalog.items():
        if not isinstance(k, str) or not k:  # plural entries are (msgid, n) tuples; "" is the header
            continue
        msgid = k.split("\x04", 1)[-1]
        out.setdefault(msgid, v)
    return out


class _IdText(HTMLParser):
    """Text of every ``p``/``h1``-``h6`` element with an ``id`` (nested markup flattened)."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, str] = {}
        self._open: list[tuple[str, str, list[str]]] = []  # (tag, id, text parts)

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        if tag in self.BLOCKS and ident and not self._open:
            self._open.append((tag, ident, []))

    def handle_endtag(self, tag):
        if self._open and tag == self._open[-1][0]:
            _, ident, parts = self._open.pop()
            self.texts.setdefault(ident, " ".join("".join(parts).split()))

    def handle_data(self, data):
        if self._open:
            self._open[-1][2].append(data)


def id_paragraphs(html_text: str) -> dict[str, str]:
    """``{id: text}`` of the paragraphs and headings of one HTML page."""
    p = _IdText()
    p.feed(html_text)
    p.close()
    return p.texts


def help_pairs(en_dir: Path, xx_dir: Path) -> Iterable[Pair]:
    """LibreOffice help: pages present in both trees, paragraphs paired by ``id``."""
    for en in sorted(en_dir.rglob("*.html")):
        rel = en.relative_to(en_dir)
        xx = xx_dir / rel
        if not xx.is_file():
            continue
        a, b = id_paragraphs(en.read_text(encoding="utf-8")), id_paragraphs(xx.read_text(encoding="utf-8"))
        for ident, text in a.items():
            if ident in b:
                yield Pair(b[ident], text, "lo-help", f"{rel}#{ident}")


def catalog_pairs(files: Iterable[Path], domain: str, root: Path) -> Iterable[Pair]:
    for f in sorted(files):
        for msgid, msgstr in mo_messages(f).items():
            yield Pair(msgstr, msgid, domain, f"{f.relative_to(root)}:{' '.join(msgid[:40].split())}")


def raw_pairs(pair: str, root: Path) -> list[Pair]:
    """Every candidate pair of ``pair`` from the extracted packages under ``root``."""
    from lightning_des.data.translation import ding_pairs, reference_pairs

    deb, loc, helpdir = LANG[pair]
    out: list[Pair] = []
    h = root / "usr/share/libreoffice/help"
    out += help_pairs(h / "en-US", h / helpdir)
    out += catalog_pairs((root / f"usr/lib/libreoffice/program/resource/{loc}/LC_MESSAGES").glob("*.mo"), "lo-ui", root)
    lc = root / f"usr/share/locale/{loc}/LC_MESSAGES"
    out += catalog_pairs([lc / "gcc-12.mo", lc / "cpplib-12.mo"], "gcc", root)
    out += catalog_pairs([lc / "util-linux.mo"], "util-linux", root)
    out += [Pair(s, t, "debian-reference", f"p{i}") for i, (s, t) in enumerate(reference_pairs(root / "usr/share/debian-reference", deb))]
    if pair == "de-en":
        with open(root / "usr/share/trans/de-en", encoding="utf-8") as f:
            out += [Pair(s, t, "ding", f"l{i}") for i, (s, t) in enumerate(ding_pairs(f))]
    return out


# --- cleaning -------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"%\d+\$[-+ #0-9.]*[a-zA-Z]+|%[-+ #0-9.]*[qlhzjt]*[a-zA-Z<>]|%\d+|%[A-Z][A-Z_]+%?|\$[A-Z][A-Z0-9_]*\$?")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_ACCEL = re.compile(r"\s*\((?:~|_)[A-Za-z0-9]\)")  # Chinese UI "打开(~O)"
RATIO = {"de-en": (0.5, 2.5), "zh-en": (0.12, 1.5)}


def clean(pairs: Iterable[Pair], pair: str, stats: Counter) -> list[Pair]:
    """Apply the module docstring's filters; ``stats`` counts kept pairs and each drop reason."""
    to_simplified = None
    if pair == "zh-en":
        import opencc  # opencc-python-reimplemented (the `nmt` extra)

        to_simplified = opencc.OpenCC("t2s").convert
    lo, hi = RATIO[pair]
    out, seen = [], set()
    for p in pairs:
        s, t = p.src.strip("\n"), p.tgt.strip("\n")
        if p.domain == "lo-ui":
            s, t = _ACCEL.sub("", s).replace("~", ""), t.replace("~", "")
        s_lines, t_lines = s.split("\n"), t.split("\n")
        if len(s_lines) != len(t_lines):
            stats["drop: line counts differ"] += 1
            continue
        for i, (a, b) in enumerate(zip(s_lines, t_lines)):
            a, b = " ".join(a.split()), " ".join(b.split())
            if to_simplified is not None:
                a = to_simplified(a)
            reason = None
            if not a or a == b or (pair == "zh-en" and not _CJK.search(a)):
                reason = "untranslated"
            elif not 3 <= len(b.split()) <= 100:
                reason = "English not 3..100 words"
            elif not lo <= len(a) / len(b) <= hi:
                reason = "length ratio"
            elif Counter(PLACEHOLDER.findall(a)) != Counter(PLACEHOLDER.findall(b)):
                reason = "placeholders differ"
            elif (a, b) in seen:
                reason = "duplicate"
            if reason:
                stats[f"drop: {reason}"] += 1
                continue
            seen.add((a, b))
            out.append(Pair(a, b, p.domain, p.key if len(s_lines) == 1 else f"{p.key}:line{i}"))
    stats["kept"] += len(out)
    return out


def _rank(text: str) -> str:
    return hashlib.sha1(text.lower().encode("utf-8")).hexdigest()


def split(pairs: list[Pair], test_per_domain: int = 500, valid_per_domain: int = 300) -> tuple[dict[str, list[Pair]], Counter]:
    """Train / valid / test per the module docstring; returns the splits and what was removed."""
    splits: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    for domain in sorted({p.domain for p in pairs}):
        mine = sorted((p for p in pairs if p.domain == domain), key=lambda p: (_rank(p.tgt), p.key))
        n_test, n_valid = test_per_domain, valid_per_domain
        if len(mine) < 10 * (n_test + n_valid):
            n_test = n_valid = len(mine) // 20
        splits["test"] += mine[:n_test]
        splits["valid"] += mine[n_test:n_test + n_valid]
        splits["train"] += mine[n_test + n_valid:]
    held = {x for name in ("valid", "test") for p in splits[name] for x in (p.src, p.tgt)}
    removed = Counter()
    train = []
    for p in splits["train"]:
        if p.src in held or p.tgt in held:
            removed[p.domain] += 1
        else:
            train.append(p)
    splits["train"] = train
    return splits, removed


def write_tsv(path: Path, pairs: list[Pair]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for p in pairs:
            if any("\t" in x or "\n" in x for x in p):
                raise ValueError(f"tab or newline inside a field of {p}")
            f.write("\t".join(p) + "\n")
    tmp.replace(path)


def read_tsv(path: Path) -> list[Pair]:
    """A split file; a line without 4 tab-separated fields raises naming the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run `lightning-des data prepare de-en|zh-en`)")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4 or not parts[0] or not parts[1]:
                raise ValueError(f"{path}:{i}: expected 'source<TAB>target<TAB>domain<TAB>key', got {line.rstrip()[:80]!r}")
            out.append(Pair(*parts))
    return out


def build(pair: str, root: Path, out_dir: Path) -> dict:
    """Raw pairs from ``root`` -> cleaned -> split -> ``out_dir``; returns the statistics."""
    stats: Counter = Counter()
    raw = raw_pairs(pair, root)
    per_domain_raw = Counter(p.domain for p in raw)
    kept = clean(raw, pair, stats)
    splits, removed = split(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, ps in splits.items():
        write_tsv(out_dir / f"{name}.tsv", ps)
    info = {
        "pair": pair,
        "raw": dict(sorted(per_domain_raw.items())),
        "cleaning": dict(sorted(stats.items())),
        "removed_from_train_for_overlap": dict(sorted(removed.items())),
        "splits": {name: dict(sorted(Counter(p.domain for p in ps).items())) | {"total": len(ps)} for name, ps in splits.items()},
        "packages": sources(pair),
    }
    (out_dir / "stats.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))
    return info
