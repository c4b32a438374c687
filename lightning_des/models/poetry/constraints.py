"""Format constraints for decoding quatrains: line length, no special/unknown tokens, rhyme on
lines 2 and 4, level tone at the rhyme positions, and (in the search) no character more than
twice in a line.

Rhyme groups are the thirteen *zhe* (十三辙) of modern Mandarin, from each character's final as
given by pypinyin (its most common reading). "Level tone" (平) is approximated by modern tones
1 and 2. Both are approximations of Middle Chinese rhyme books: documented, not hidden.
"""

from __future__ import annotations

import torch

from lightning_des.data.poems import SPECIALS

_GROUPS = {
    "a": "fahua", "ia": "fahua", "ua": "fahua",
    "o": "suobo", "e": "suobo", "uo": "suobo",
    "ie": "miexie", "ve": "miexie", "üe": "miexie",
    "i": "yiqi", "v": "yiqi", "ü": "yiqi", "er": "yiqi",
    "u": "gusu",
    "ai": "huailai", "uai": "huailai",
    "ei": "huidui", "ui": "huidui", "uei": "huidui",
    "ao": "yaotiao", "iao": "yaotiao",
    "ou": "youqiu", "iu": "youqiu", "iou": "youqiu",
    "an": "yanqian", "ian": "yanqian", "uan": "yanqian", "van": "yanqian", "üan": "yanqian",
    "en": "renchen", "in": "renchen", "un": "renchen", "uen": "renchen", "vn": "renchen", "ün": "renchen",
    "ang": "jiangyang", "iang": "jiangyang", "uang": "jiangyang",
    "eng": "zhongdong", "ing": "zhongdong", "ong": "zhongdong", "iong": "zhongdong", "ueng": "zhongdong",
}


def rhyme_and_tone(char: str) -> tuple[str | None, bool]:
    """(rhyme group or None, level tone?) of a Chinese character."""
    from lightning_des._extras import require

    pypinyin = require("pypinyin", "poetry")
    Style, pinyin = pypinyin.Style, pypinyin.pinyin

    p = pinyin(char, style=Style.FINALS_TONE3, strict=True, errors="ignore")
    if not p or not p[0] or not p[0][0]:
        return None, False
    s = p[0][0]
    tone = s[-1] if s[-1].isdigit() else "5"
    final = s.rstrip("012345")
    return _GROUPS.get(final), tone in "12"


def rhymes(a: str, b: str) -> bool:
    ga, gb = rhyme_and_tone(a)[0], rhyme_and_tone(b)[0]
    return ga is not None and ga == gb


class QuatrainConstraints:
    """Allowed-token masks per position of a line, for a character vocabulary ``itos``."""

    def __init__(self, itos: list[str]) -> None:
        n = len(itos)
        self.chars = torch.zeros(n, dtype=torch.bool)
        self.chars[len(SPECIALS):] = True
        self.level = torch.zeros(n, dtype=torch.bool)
        self.group: list[str | None] = [None] * n
        for i in range(len(SPECIALS), n):
            self.group[i], self.level[i] = rhyme_and_tone(itos[i])
        self.stoi = {c: i for i, c in enumerate(itos)}

    def masks(self, length: int, line: int, previous: list[str], rhyme: bool = True, tone: bool = True) -> list[torch.Tensor]:
        """Masks for the ``length`` characters of line ``line`` (0-based) given the lines before.
        Line 2 ends on a level tone; line 4 rhymes with line 2 (same group, another character)
        and ends on a level tone. Falls back to any character if a constraint leaves nothing."""
        masks = [self.chars] * length
        last = self.chars.clone()
        if line == 1 and tone:
            last &= self.level
        if line == 3 and rhyme and len(previous) >= 2:
            ref = self.stoi.get(previous[1][-1])
            g = self.group[ref] if ref is not None else None
            if g is not None:
                last &= torch.tensor([x == g for x in self.group])
                last[ref] = False
            if tone:
                last &= self.level
        masks[-1] = last if last.any() else self.chars
        return masks
