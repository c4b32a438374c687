"""The large parallel corpora: readers of each package format, cleaning rules, splits free of
test strings, provenance, and the data module on a prepared corpus (tiny fixtures built here
in the packages' own layouts)."""

import json
import struct
from collections import Counter
from pathlib import Path

import pytest

from lightning_des.data.parallel import (QM_MAGIC, Pair, blocks, build, clean, id_paragraphs, mo_messages, qm_messages, read_tsv,
                                         split)
from lightning_des.data.translation import TranslationDataModule


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU ``.mo`` file (the format msgfmt writes: magic, two sorted string tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = sorted((k.encode(), v.encode()) for k, v in {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}.items())
    n = len(items)
    ids = strs = b""
    offsets = []
    for k, v in items:
        offsets.append((len(k), len(ids), len(v), len(strs)))
        ids += k + b"\0"
        strs += v + b"\0"
    start = 7 * 4 + 16 * n
    table_ids = b"".join(struct.pack("<2I", ln, start + off) for ln, off, _, _ in offsets)
    table_strs = b"".join(struct.pack("<2I", ln, start + len(ids) + off) for _, _, ln, off in offsets)
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    path.write_bytes(header + table_ids + table_strs + ids + strs)


def test_mo_reader_drops_header_plurals_and_context(tmp_path):
    f = tmp_path / "x.mo"
    write_mo(f, {"Open the file now": "Die Datei jetzt öffnen", "MENU\x04Save all files": "Alle Dateien speichern",
                 "one file\x00%d files": "eine Datei\x00%d Dateien"})
    assert mo_messages(f) == {"Open the file now": "Die Datei jetzt öffnen", "Save all files": "Alle Dateien speichern"}


def write_qm(path: Path, messages: list[tuple[str, str, str]]) -> None:
    """A Qt ``.qm`` file: magic, a hash section and the messages section (tagged fields)."""
    def field(tag, raw):
        return bytes([tag]) + struct.pack(">I", len(raw)) + raw

    body = b"".join(field(7, ctx.encode()) + field(6, src.encode()) + field(3, tr.encode("utf-16-be")) + b"\x05\0\0\0\0" + b"\x01"
                    for ctx, src, tr in messages)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(QM_MAGIC + b"\x42" + struct.pack(">I", 8) + b"\0" * 8 + b"\x69" + struct.pack(">I", len(body)) + body)


def test_qm_reader_against_written_messages(tmp_path):
    msgs = [("QFileDialog", "&Open the selected file", "Ausgewählte Datei ö&ffnen"), ("QDtls", "Handshake done", "Handshake fertig")]
    write_qm(tmp_path / "qtbase_de.qm", msgs)
    assert qm_messages(tmp_path / "qtbase_de.qm") == msgs
    (tmp_path / "bad.qm").write_bytes(b"\0" * 32)
    with pytest.raises(ValueError, match="not a Qt .qm file"):
        qm_messages(tmp_path / "bad.qm")


def test_help_paragraphs_by_id_flatten_nested_markup():
    page = ('<html><body><h1 id="hd_1">Insert <span id="bm_x">Table</span></h1><p id="par_2" class="paragraph">'
            'Choose <emph>Table - Insert</emph> &amp; click.</p><p>no id</p><div id="d">not a block</div></body></html>')
    assert id_paragraphs(page) == {"hd_1": "Insert Table", "par_2": "Choose Table - Insert & click."}
    mallard = '<page xmlns="http://projectmallard.org/1.0/"><title>Copy files</title><p>Select <gui>Copy</gui>.</p></page>'
    assert blocks(mallard) == [(None, "Copy files"), (None, "Select Copy.")]


def P(src, tgt, domain="lo-ui", key="k"):
    return Pair(src, tgt, domain, key)


def test_cleaning_rules_each_counted():
    stats = Counter()
    kept = clean([
        P("Die Datei ~öffnen und lesen", "~Open and read the file"),          # accelerators removed, kept
        P("Open and read the file", "Open and read the file"),               # untranslated
        P("Öffnen", "Open"),                                                 # English under 3 words
        P("Kopiere %s nach %d Stellen", "Copy %s to %d places", "gcc"),      # placeholders match, kept
        P("Kopiere nach %d Stellen", "Copy %s to %d places", "gcc"),         # placeholder lost
        P("Die Datei öffnen und lesen", "Open and read the file", "lo-help"),  # duplicate of the first
        P("Zeile eins hier\nZeile zwei hier", "Line one is here\nLine two is here", "util-linux"),  # split
        P("Nur eine Zeile", "Line one is here\nLine two is here", "util-linux"),  # line counts differ
        P("Ja", "A much longer English sentence with many words", "ding"),    # length ratio
        P("Ö&ffnen && lesen der Datei", "&Open && read the file", "qt"),       # Qt accelerators, && is a literal &
    ], "de-en", stats)
    assert [(p.src, p.tgt) for p in kept] == [
        ("Die Datei öffnen und lesen", "Open and read the file"), ("Kopiere %s nach %d Stellen", "Copy %s to %d places"),
        ("Zeile eins hier", "Line one is here"), ("Zeile zwei hier", "Line two is here"), ("Öffnen & lesen der Datei", "Open & read the file")]
    assert kept[2].key == "k:line0"
    assert stats == Counter({"kept": 5, "drop: untranslated": 1, "drop: English not 3..100 words": 1, "drop: placeholders differ": 1,
                             "drop: duplicate": 1, "drop: line counts differ": 1, "drop: length ratio": 1})


def test_chinese_side_is_simplified_and_must_be_chinese():
    stats = Counter()
    kept = clean([P("開啟檔案(~O)", "Open the file"), P("Open the file now", "Open the file now please"),
                  P("打开文件(_O)", "Open a file here"), P("图 8.17. Example for layer mode Screen", "Figure 8.17. Example for layer mode Screen"),
                  P("使用 --verbose 显示更多细节", "Use --verbose for more details")], "zh-en", stats)
    assert [p.src for p in kept] == ["开启档案", "打开文件", "使用 --verbose 显示更多细节"]
    assert stats["drop: untranslated"] == 2  # no Chinese; Chinese under a quarter of the Latin letters


def test_split_keeps_every_test_and_valid_string_out_of_training():
    pairs = [P(f"de {i % 700}", f"en {i}", domain=("a" if i % 2 else "b"), key=str(i)) for i in range(4000)]
    splits, removed = split(pairs, test_per_domain=100, valid_per_domain=50)
    assert Counter(p.domain for p in splits["test"]) == {"a": 100, "b": 100}
    assert Counter(p.domain for p in splits["valid"]) == {"a": 50, "b": 50}
    held = {x for n in ("valid", "test") for p in splits[n] for x in (p.src, p.tgt)}
    assert not any(p.src in held or p.tgt in held for p in splits["train"])
    assert len(splits["train"]) + sum(removed.values()) + 300 == len(pairs)
    assert sum(removed.values()) > 0  # the repeated German strings
    again, _ = split(list(reversed(pairs)), test_per_domain=100, valid_per_domain=50)
    assert again["test"] == splits["test"]  # fixed: independent of input order
    small, _ = split(pairs[:400], test_per_domain=100, valid_per_domain=50)
    assert len(small["test"]) == 2 * 10  # under 10x (test + valid): 5% each


def test_read_tsv_names_the_bad_line(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("a\tb\tgcc\tk1\nonly\ttwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.tsv:2: expected 'source<TAB>target<TAB>domain<TAB>key'"):
        read_tsv(f)
    with pytest.raises(FileNotFoundError, match="lightning-des data prepare"):
        read_tsv(tmp_path / "missing.tsv")


def package_root(root: Path) -> None:
    """Every source of the de-en corpus, a few entries each, in the packages' file layout."""
    help_en, help_de = root / "usr/share/libreoffice/help/en-US/text", root / "usr/share/libreoffice/help/de/text"
    for i in range(30):
        (help_en / f"p{i}.html").parent.mkdir(parents=True, exist_ok=True)
        help_de.mkdir(parents=True, exist_ok=True)
        (help_en / f"p{i}.html").write_text(f'<p id="par_{i}">Select the cell number {i} first.</p><p id="par_only_en">English only here.</p>')
        (help_de / f"p{i}.html").write_text(f'<p id="par_{i}">Zuerst die Zelle Nummer {i} auswählen.</p>')
    (help_en / "untranslated.html").write_text('<p id="x">No German page for this.</p>')
    write_mo(root / "usr/lib/libreoffice/program/resource/de/LC_MESSAGES/sw.mo",
             {f"CTX\x04Insert table row {i} now": f"Tabellenzeile {i} jetzt einfügen" for i in range(30)})
    lc = root / "usr/share/locale/de/LC_MESSAGES"
    write_mo(lc / "gcc-12.mo", {f"%qD declared here {i} times": f"%qD hier {i} mal deklariert" for i in range(30)})
    write_mo(lc / "cpplib-12.mo", {"missing terminating character": "fehlendes abschließendes Zeichen"})
    write_mo(lc / "util-linux.mo", {f"cannot open device {i} now": f"Gerät {i} kann nicht geöffnet werden" for i in range(30)})
    ref = root / "usr/share/debian-reference"
    ref.mkdir(parents=True)
    (ref / "ch01.en.html").write_text("".join(f"<p>Install package number {i} with apt.</p>" for i in range(30)))
    (ref / "ch01.de.html").write_text("".join(f"<p>Paket Nummer {i} mit apt installieren.</p>" for i in range(30)))
    write_qm(root / "usr/share/qt5/translations/designer_de.qm", [("Form", f"Unexpected element number {i}", f"Unerwartetes Element Nummer {i}")
                                                                  for i in range(30)])
    write_qm(root / "usr/share/qt5/translations/designer_fr.qm", [("Form", "Unexpected element here", "Élément inattendu ici")])
    for sub, de in (("gimp/2.0/help/en", "gimp/2.0/help/de"), ("help/C/gnome-help", "help/de/gnome-help")):
        for i in range(15):
            ext = "html" if "gimp" in sub else "page"
            (root / "usr/share" / sub).mkdir(parents=True, exist_ok=True)
            (root / "usr/share" / de).mkdir(parents=True, exist_ok=True)
            (root / "usr/share" / sub / f"t{i}.{ext}").write_text(f"<title>Layer tool number {i}</title><p>Move the layer {i} away.</p>")
            (root / "usr/share" / de / f"t{i}.{ext}").write_text(f"<title>Ebenenwerkzeug Nummer {i}</title><p>Die Ebene {i} wegschieben.</p>")
        (root / "usr/share" / sub / f"odd.{ext}").write_text("<p>One block in English only.</p><p>And another one here.</p>")
        (root / "usr/share" / de / f"odd.{ext}").write_text("<p>Nur ein Block auf Deutsch.</p>")
    (root / "usr/share/trans").mkdir(parents=True)
    (root / "usr/share/trans/de-en").write_text("".join(f"Er kam um {i} Uhr nach Hause. :: He came home at {i} o'clock.\n" for i in range(30)))


def test_build_end_to_end_with_provenance_and_the_data_module(tmp_path):
    package_root(tmp_path / "root")
    info = build("de-en", tmp_path / "root", tmp_path / "out")
    assert info["raw"] == {"debian-reference": 30, "ding": 30, "gcc": 31, "lo-help": 30, "lo-ui": 30, "util-linux": 30, "qt": 30,
                           "gimp-help": 30, "gnome-help": 30}
    # the GNOME pages repeat the GIMP ones word for word: dropped as duplicates across sources
    assert info["cleaning"]["kept"] == 30 * 8 + 1 and info["cleaning"]["drop: duplicate"] == 30
    assert info["cleaning"]["gimp-help: pages with other block counts"] == info["cleaning"]["gnome-help: pages with other block counts"] == 1
    assert json.loads((tmp_path / "out/stats.json").read_text())["splits"] == info["splits"]
    train = read_tsv(tmp_path / "out/train.tsv")
    test = read_tsv(tmp_path / "out/test.tsv")
    assert {p.domain for p in test} == {"lo-help", "lo-ui", "gcc", "util-linux", "debian-reference", "ding", "qt", "gimp-help"}
    row = next(p for p in train + test if p.tgt == "Select the cell number 3 first.")
    assert (row.src, row.domain, row.key) == ("Zuerst die Zelle Nummer 3 auswählen.", "lo-help", "text/p3.html#par_3")
    assert next(p for p in train + test if p.domain == "lo-ui").key.startswith("usr/lib/libreoffice/program/resource/de/LC_MESSAGES/sw.mo:")
    dm = TranslationDataModule(path=str(tmp_path / "out"), vocab_size=60)
    assert [s for s, _ in dm.test_pairs] == [p.src for p in test] and dm.test_domains == [p.domain for p in test]
    assert len(dm.train_pairs) == len(train) and len(dm.val_pairs) == info["splits"]["valid"]["total"]
