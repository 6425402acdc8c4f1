"""The font and the characters it draws: the bundled default font, which characters have a
glyph (the rest are left out, not drawn as boxes), the language tag that picks regional forms,
the units a line may break between, and one FreeType face per thread with cached advances."""

from __future__ import annotations

import importlib.util
import re
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont, features

from bot.memes.layer import tidy

_FONT_PACKAGE = "noto_cjk_sans_jp_bold"
_FONT_FILE = "NotoSansCJKjp-Bold.otf"
RAQM = features.check_feature("raqm")  # text shaping; without it `language` is refused
REF_PX = 100  # advances are measured once at this size and scaled
_PROBE_PX = 24  # size at which a glyph is compared with the missing-glyph box
_MISSING = "\U0010fffd"  # a private-use code point no font maps: renders as .notdef
_EXTENT_PROBE = "ÉÅÖÇgjpqy|国あ한Йй"  # tallest and deepest ink of the scripts we cover
# Characters that never draw anything by themselves; a font lacking them is no reason for a box.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Scripts written without spaces, where a line may break between any two characters.
_ANYWHERE = (
    "\u2e80-\u2fff\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
)
_TOKEN = re.compile(rf"\s+|[{_ANYWHERE}]|[^\s{_ANYWHERE}]+")
_CLINGS_LEFT = frozenset({"Pe", "Pf", "Po", "Mn", "Mc", "Me"})  # never starts a line
_CLINGS_RIGHT = frozenset({"Ps", "Pi"})  # never ends a line
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")


def _bundled_font() -> Path:
    # find_spec locates the package without running it: we only need its data file.
    spec = importlib.util.find_spec(_FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return Path(_FONT_FILE)  # not installed: check_font() says which package to install
    return Path(next(iter(spec.submodule_search_locations))) / _FONT_FILE


DEFAULT_FONT: Path = _bundled_font()


def check_font(path: Path) -> None:
    """Raise ValueError naming `path` unless it is a font that draws Latin letters (for MEME_FONT
    at start-up, so a bad file stops the bot instead of failing the first /caption)."""
    if not path.is_file():
        hint = f" (pip install {_FONT_PACKAGE.replace('_', '-')})" if path == DEFAULT_FONT else ""
        raise ValueError(f"font file not found: {path}{hint}")
    try:
        ImageFont.truetype(str(path), _PROBE_PX)
    except OSError as exc:
        raise ValueError(f"not a font file Pillow can read: {path}") from exc
    if not all(has_glyph(str(path), ch) for ch in "Aa"):
        raise ValueError(f"font has no Latin letters: {path}")


def drawable(path: str, text: str, dropped: list[str]) -> str:
    """`text` without the characters the font lacks, and without the gaps they leave."""
    lines = []
    for line in tidy(text).split("\n"):
        kept = []
        for ch in line:
            if ch.isspace() or has_glyph(path, ch):
                kept.append(ch)
            elif unicodedata.category(ch) not in _INVISIBLE and not _is_selector(ch):
                dropped.append(ch)
                kept.append(" ")  # "cat😂dog" is two words, not "catdog"
        lines.append(" ".join("".join(kept).split()))
    return "\n".join(line for line in lines if line)


def _is_selector(ch: str) -> bool:
    # Variation selectors (emoji presentation, U+FE0F) are marks, not format characters.
    return "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef"


@lru_cache(maxsize=16384)
def has_glyph(path: str, ch: str) -> bool:
    """Whether the font draws `ch` as something other than its missing-glyph box.

    Pillow has no cmap look-up, so compare pixels: an unmapped character renders as .notdef.
    """
    if unicodedata.category(ch) in _INVISIBLE or _is_selector(ch):
        return False
    return _pixels(path, ch) != _notdef(path)


@lru_cache(maxsize=16)
def _notdef(path: str) -> bytes:
    return _pixels(path, _MISSING)


def _pixels(path: str, ch: str) -> bytes:
    canvas = Image.new("L", (_PROBE_PX * 3, _PROBE_PX * 2))
    ImageDraw.Draw(canvas).text((_PROBE_PX, _PROBE_PX), ch, font=font(path, _PROBE_PX), fill=255)
    return canvas.tobytes()


def language(text: str) -> str | None:
    """The language tag that makes the font's `locl` pick the right forms of shared characters."""
    if not RAQM:
        return None
    if _HANGUL.search(text):
        return "ko"
    if _KANA.search(text):
        return "ja"
    return "zh-Hans" if _HAN.search(text) else None  # our CJK users write Simplified Chinese


class Unit(NamedTuple):
    text: str  # never broken, unless wider than a whole line
    space: bool  # a space stands before it


def word_units(line: str) -> list[Unit]:
    """Words, and single CJK characters; punctuation stays with its neighbour (no line starts
    with "，" or ends with "「")."""
    units: list[Unit] = []
    space = False
    for token in _TOKEN.findall(line):
        if token.isspace():
            space = True
            continue
        glued = bool(units) and not space
        if glued and (unicodedata.category(token[0]) in _CLINGS_LEFT or _opens(units[-1].text)):
            units[-1] = Unit(units[-1].text + token, units[-1].space)
        else:
            units.append(Unit(token, space))
        space = False
    return units


def _opens(text: str) -> bool:
    return all(unicodedata.category(ch) in _CLINGS_RIGHT for ch in text)


class _Fonts(threading.local):
    """One FreeType face per thread: a face must not be used by two threads at once."""

    def __init__(self) -> None:
        self.faces: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


_FONTS = _Fonts()


def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    faces = _FONTS.faces
    face = faces.get((path, size))
    if face is None:
        if len(faces) >= 128:  # fitting tries many sizes; keep the cache bounded
            faces.clear()
        face = faces[(path, size)] = ImageFont.truetype(path, size)
    return face


@lru_cache(maxsize=16384)
def advance(path: str, text: str) -> float:
    return font(path, REF_PX).getlength(text)


@lru_cache(maxsize=16)
def extents(path: str) -> tuple[float, float]:
    """Ink above and below the baseline, in font sizes, of the tallest and deepest letters."""
    _, top, _, bottom = font(path, REF_PX).getbbox(_EXTENT_PROBE, anchor="ls")
    return -top / REF_PX, bottom / REF_PX
