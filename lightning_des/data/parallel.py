"""Large parallel corpora (de-en, zh-en) from Debian documentation and localisation packages.

Sources (``SOURCES``; bookworm packages fetched with ``apt-get download`` at set-up, never
committed), each a *domain* with its own test set:

* ``lo-help``: LibreOffice help (``libreoffice-help-{en-us,de,zh-cn}``, MPL-2.0), paragraphs and
  headings paired by file and ``id`` attribute.
* ``lo-ui``: LibreOffice UI catalogs (``libreoffice-l10n-{de,zh-cn}``, MPL-2.0), ``msgid ->
  msgstr`` of every ``.mo`` file (context prefixes dropped, ``~`` accelerators removed).
* ``gcc``: ``gcc-12-locales`` (GPL-3+), ``gcc-12.mo`` and ``cpplib-12.mo``.
* ``util-linux``: ``util-linux-locales`` (GPL-2), ``util-linux.mo``.
* ``qt``: Qt 5 catalogs (``qttranslations5-l10n``, LGPL-2.1/GPL-3), every ``*_<locale>.qm``
  (Qt's binary format, read by ``qm_messages``; ``&`` accelerators removed).
* ``gimp-help`` (GIMP manual, ``gimp-help-{en,de,zh-cn}``, GFDL-1.2+ without invariant
  sections), ``debian-handbook`` (``debian-handbook``, GPL-2+ or CC-BY-SA-3.0) and
  ``gnome-help`` (``gnome-user-docs``, CC-BY-SA-3.0, Mallard pages): translated with the same
  document structure, so the i-th paragraph/heading of a page pairs with the i-th of its
  translation (pages whose block counts differ are skipped and counted).
* ``debian-reference``: the Debian Reference (GPL-2+), paragraphs aligned per chapter.
* ``ding`` (de-en only): sentence pairs of the Ding dictionary (``trans-de-en``, GPL-2+).

Cleaning (``clean``; every drop is counted by reason in ``stats.json``): whitespace collapsed;
multi-line messages are split into lines when both sides have as many lines, else dropped;
untranslated entries (target equal to the English; a Chinese side with fewer Chinese characters
than a quarter of its Latin letters, as in GIMP's partly translated manual);
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
import html
import json
import logging
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, NamedTuple

class Lang(NamedTuple):
    deb: str  # Debian package suffix
    locale: str  # gettext / Qt / GNOME / GIMP directory
    lo_help: str  # LibreOffice help directory
    handbook: str  # Debian Administrator's Handbook directory


log = logging.getLogger(__name__)
LANG = {"de-en": Lang("de", "de", "de", "de-DE"), "zh-en": Lang("zh-cn", "zh_CN", "zh-CN", "zh-CN")}


class Pair(NamedTuple):
    src: str  # German or Chinese
    tgt: str  # English
    domain: str
    key: str  # provenance inside the domain


def sources(pair: str) -> dict[str, tuple[str, ...]]:
    """Debian packages per domain for ``pair``."""
    deb = LANG[pair].deb
    out = {
        "lo-help": ("libreoffice-help-en-us", f"libreoffice-help-{deb}"),
        "lo-ui": (f"libreoffice-l10n-{deb}",),
        "gcc": ("gcc-12-locales",),
        "util-linux": ("util-linux-locales",),
        "qt": ("qttranslations5-l10n",),
        "gimp-help": ("gimp-help-en", f"gimp-help-{deb}"),
        "debian-handbook": ("debian-handbook",),
        "gnome-help": ("gnome-user-docs",),
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


class _Blocks(HTMLParser):
    """``(id or None, text)`` of every outermost ``p``/``h1``-``h6``/``title`` element, in
    document order (nested markup flattened, entities decoded, whitespace collapsed); works on
    HTML and on Mallard XML alike."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str | None, str]] = []
        self._open: tuple[str, str | None, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCKS and self._open is None:
            self._open = (tag, dict(attrs).get("id"), [])

    def handle_endtag(self, tag):
        if self._open is not None and tag == self._open[0]:
            _, ident, parts = self._open
            self.blocks.append((ident, " ".join("".join(parts).split())))
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open[2].append(data)


def blocks(text: str) -> list[tuple[str | None, str]]:
    p = _Blocks()
    p.feed(text)
    p.close()
    return p.blocks


def id_paragraphs(html_text: str) -> dict[str, str]:
    """``{id: text}`` of the paragraphs and headings of one HTML page that have an ``id``."""
    out: dict[str, str] = {}
    for ident, text in blocks(html_text):
        if ident:
            out.setdefault(ident, text)
    return out


def parallel_pages(en_dir: Path, xx_dir: Path, glob: str, domain: str, skipped: Counter) -> Iterable[Pair]:
    """Pages translated with the same DOM (GIMP help, the Debian Handbook, GNOME help): the
    i-th block of a page pairs with the i-th block of its translation; a page whose block
    counts differ is skipped (counted in ``skipped``)."""
    for en in sorted(en_dir.glob(glob)):
        rel = en.relative_to(en_dir)
        xx = xx_dir / rel
        if not xx.is_file():
            continue
        a, b = blocks(en.read_text(encoding="utf-8")), blocks(xx.read_text(encoding="utf-8"))
        if len(a) != len(b):
            skipped[f"{domain}: pages with other block counts"] += 1
            continue
        for i, ((_, x), (_, y)) in enumerate(zip(a, b)):
            yield Pair(y, x, domain, f"{rel}#{i}")


QM_MAGIC = bytes.fromhex("3cb86418caef9c95cd211cbf60a1bddd")


def qm_messages(path: Path) -> list[tuple[str, str, str]]:
    """``(context, English source, translation)`` of a Qt ``.qm`` catalog (its ``Messages``
    section; entries without source text or translation skipped, plural forms: the first)."""
    data = path.read_bytes()
    if data[:16] != QM_MAGIC:
        raise ValueError(f"{path}: not a Qt .qm file (bad magic)")
    i, messages = 16, b""
    while i + 5 <= len(data):
        tag, n = data[i], int.from_bytes(data[i + 1:i + 5], "big")
        if tag == 0x69:
            messages = data[i + 5:i + 5 + n]
        i += 5 + n
    out, cur, j = [], {}, 0
    while j < len(messages):
        t = messages[j]
        j += 1
        if t == 1:  # end of a message
            if cur.get(6) and cur.get(3):
                out.append((cur.get(7, ""), cur[6], cur[3]))
            cur = {}
        elif t in (3, 6, 7, 8):  # translation (UTF-16BE), source, context, comment (UTF-8)
            n = int.from_bytes(messages[j:j + 4], "big")
            n = 0 if n == 0xFFFFFFFF else n
            raw = messages[j + 4:j + 4 + n]
            j += 4 + n
            cur.setdefault(t, raw.decode("utf-16-be") if t == 3 else raw.decode("utf-8", "replace"))
        elif t == 5:  # obsolete hash
            j += 4
        else:
            raise ValueError(f"{path}: unknown message field tag {t} at byte {j}")
    return out


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


def raw_pairs(pair: str, root: Path, skipped: Counter | None = None) -> list[Pair]:
    """Every candidate pair of ``pair`` from the extracted packages under ``root`` (pages
    that cannot be aligned are counted in ``skipped``)."""
    skipped = Counter() if skipped is None else skipped
    lang = LANG[pair]
    deb, loc = lang.deb, lang.locale
    out: list[Pair] = []
    h = root / "usr/share/libreoffice/help"
    out += help_pairs(h / "en-US", h / lang.lo_help)
    out += catalog_pairs((root / f"usr/lib/libreoffice/program/resource/{loc}/LC_MESSAGES").glob("*.mo"), "lo-ui", root)
    lc = root / f"usr/share/locale/{loc}/LC_MESSAGES"
    out += catalog_pairs([lc / "gcc-12.mo", lc / "cpplib-12.mo"], "gcc", root)
    out += catalog_pairs([lc / "util-linux.mo"], "util-linux", root)
    for f in sorted((root / "usr/share/qt5/translations").glob(f"*_{loc}.qm")):
        out += [Pair(tr, src, "qt", f"{f.name}:{ctx}:{' '.join(src[:40].split())}") for ctx, src, tr in qm_messages(f)]
    share = root / "usr/share"
    out += parallel_pages(share / "gimp/2.0/help/en", share / f"gimp/2.0/help/{loc}", "*.html", "gimp-help", skipped)
    hb = share / "doc/debian-handbook/html"
    out += parallel_pages(hb / "en-US", hb / lang.handbook, "*.html", "debian-handbook", skipped)
    out += parallel_pages(share / "help/C", share / f"help/{loc}", "**/*.page", "gnome-help", skipped)
    out += [Pair(s, t, "debian-reference", f"p{i}") for i, (s, t) in enumerate(reference_pairs(root / "usr/share/debian-reference", deb))]
    if pair == "de-en":
        with open(root / "usr/share/trans/de-en", encoding="utf-8") as f:
            out += [Pair(s, t, "ding", f"l{i}") for i, (s, t) in enumerate(ding_pairs(f))]
    return out


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


# --- cleaning -------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"%\d+\$[-+ #0-9.]*[a-zA-Z]+|%[-+ #0-9.]*[qlhzjt]*[a-zA-Z<>]|%\d+|%[A-Z][A-Z_]+%?|\$[A-Z][A-Z0-9_]*\$?")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_ACCEL = re.compile(r"\s*\((?:~|_|&)[A-Za-z0-9]\)")  # Chinese UI "打开(~O)", "作者(&A)"
_QT_AMP = re.compile(r"&(?=\S)")
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
        elif p.domain == "qt":
            s, t = (_QT_AMP.sub("", _ACCEL.sub("", x).replace("&&", "\0")).replace("\0", "&") for x in (s, t))
        s_lines, t_lines = s.split("\n"), t.split("\n")
        if len(s_lines) != len(t_lines):
            stats["drop: line counts differ"] += 1
            continue
        for i, (a, b) in enumerate(zip(s_lines, t_lines)):
            a, b = " ".join(a.split()), " ".join(b.split())
            if to_simplified is not None:
                a = to_simplified(a)
            reason = None
            if not a or a == b or (pair == "zh-en" and len(_CJK.findall(a)) < max(1, 0.25 * len(_LATIN.findall(a)))):
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


def read_fields(path: str | Path, names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Tab-separated lines of exactly ``len(names)`` fields, the first two non-blank; any other
    line raises naming the file, line and expected layout."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parallel corpus {path} not found (run `lightning-des data prepare de-en|zh-en`)")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(names) or not parts[0].strip() or not parts[1].strip():
                raise ValueError(f"{path}:{i}: expected '{'<TAB>'.join(names)}', got {line.rstrip()[:80]!r}")
            out.append(tuple(parts))
    return out


def read_tsv(path: Path) -> list[Pair]:
    """A split file (source, target, domain, key)."""
    return [Pair(*p) for p in read_fields(path, ("source", "target", "domain", "key"))]


def build(pair: str, root: Path, out_dir: Path) -> dict:
    """Raw pairs from ``root`` -> cleaned -> split -> ``out_dir``; returns the statistics."""
    stats: Counter = Counter()
    raw = raw_pairs(pair, root, stats)
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
