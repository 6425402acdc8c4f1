"""Exact words drawn on a picture by the bot: meme captions and speech bubbles.

Pure, synchronous Pillow code on bytes (the service runs it in a thread). No API call, no quota.

Words are never burned into the picture the service keeps: it keeps the plain base image and a
`TextLayer`, and every render starts from that base. A second /caption therefore replaces the
words instead of stacking them, and a Reroll moves the bubble without leaving the old one behind.

The default font is Noto Sans CJK JP Bold (SIL OFL 1.1), installed by the pinned PyPI package
`noto-cjk-sans-jp-bold`. Its region fonts all hold every Chinese, Japanese and Korean glyph plus
Latin and Cyrillic; the `locl` feature picks the Chinese or Korean forms when we tag the text's
language. Characters the font lacks (emoji above all) are left out rather than drawn as boxes.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, ImageStat, features

from bot.domain import MAX_SIDE
from bot.errors import ImageTooLarge, InvalidImage, UserError

Side = Literal["auto", "left", "right"]
Format = Literal["PNG", "JPEG"]
SIDES: tuple[Side, ...] = ("auto", "left", "right")
_SIDE_WORDS: dict[str, Side] = {"left": "left", "right": "right", "左": "left", "右": "right"}

MAX_TEXT_CHARS = 200  # per part: top, bottom, bubble
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # bases are normalized to MAX_SIDE, so more is not ours
MIN_FONT_PX = 10  # smaller text is unreadable: we say "no room" instead

# Text keys (bot/texts.py) of MemeTextError.code.
TEXT_EMPTY = "error_meme_text_empty"
TEXT_TOO_LONG = "error_meme_text_too_long"  # params: limit
TEXT_NO_GLYPHS = "error_meme_text_no_glyphs"  # params: dropped
TEXT_NO_ROOM = "error_meme_text_no_room"

_FONT_PACKAGE = "noto_cjk_sans_jp_bold"
_FONT_FILE = "NotoSansCJKjp-Bold.otf"
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the decoders users' bytes may reach
_RAQM = features.check_feature("raqm")  # text shaping; without it `language` is refused
_REF_PX = 100  # advances are measured once at this size and scaled
_PROBE_PX = 24  # size at which a glyph is compared with the missing-glyph box
_MISSING = "\U0010fffd"  # a private-use code point no font maps: renders as .notdef
_EXTENT_PROBE = "ÉÅÖÇgjpqy|国あ한Йй"  # tallest and deepest ink of the scripts we cover
_LINE_PITCH = 1.2  # baseline to baseline, in font sizes: tight, as memes are
_CAPTION_STROKE = 0.07  # outline width, in font sizes
_SUPERSAMPLE = 2  # Pillow's ellipses are not antialiased: draw the bubble twice as big
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
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


class MemeTextError(UserError):
    """The words cannot be drawn: none, too many, only emoji, or no room. `code` names the text."""

    code = TEXT_EMPTY


@dataclass(frozen=True)
class TextLayer:
    """The words on a result, kept apart from its pixels (store `to_json()` with the edit).

    A caption and a bubble may live on one picture; each replaces only its own kind.
    `variant` counts Rerolls: the n-th best place for the bubble.
    """

    top: str = ""
    bottom: str = ""
    bubble: str = ""
    side: Side = "auto"
    variant: int = 0

    def __post_init__(self) -> None:
        for part in (self.top, self.bottom, self.bubble):
            _check_length(part)
        if not (self.top.strip() or self.bottom.strip() or self.bubble.strip()):
            raise MemeTextError("no words", code=TEXT_EMPTY)
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {self.side!r}")
        if self.variant < 0:
            raise ValueError(f"variant must be >= 0, not {self.variant}")

    @classmethod
    def captioned(cls, top: str, bottom: str = "") -> TextLayer:
        return cls(top=_tidy(top), bottom=_tidy(bottom))

    @classmethod
    def bubbled(cls, text: str, side: Side = "auto", variant: int = 0) -> TextLayer:
        return cls(bubble=_tidy(text), side=side, variant=variant)

    @property
    def has_caption(self) -> bool:
        return bool(self.top or self.bottom)

    @property
    def has_bubble(self) -> bool:
        return bool(self.bubble)

    def with_caption(self, top: str, bottom: str = "") -> TextLayer:
        """This layer with its caption replaced (the bubble stays)."""
        if not (top.strip() or bottom.strip()):  # "/caption" alone: not a way to erase
            raise MemeTextError("no words", code=TEXT_EMPTY)
        return replace(self, top=_tidy(top), bottom=_tidy(bottom))

    def with_bubble(self, text: str, side: Side = "auto") -> TextLayer:
        """This layer with its bubble replaced (the caption stays), at the best place again."""
        if not text.strip():
            raise MemeTextError("no words", code=TEXT_EMPTY)
        return replace(self, bubble=_tidy(text), side=side, variant=0)

    def rerolled(self) -> TextLayer:
        """The bubble at the next-best place (a caption alone has only one look)."""
        return replace(self, variant=self.variant + 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, data: str) -> TextLayer:
        """Raises ValueError for anything `to_json` did not write."""
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a text layer: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) != {"top", "bottom", "bubble", "side", "variant"}:
            raise ValueError("not a text layer: wrong fields")
        texts = [raw[key] for key in ("top", "bottom", "bubble", "side")]
        if not all(isinstance(v, str) for v in texts) or type(raw["variant"]) is not int:
            raise ValueError("not a text layer: wrong types")
        side = next((s for s in SIDES if s == raw["side"]), None)
        if side is None:
            raise ValueError(f"not a text layer: side {raw['side']!r}")
        return cls(raw["top"], raw["bottom"], raw["bubble"], side, raw["variant"])


@dataclass(frozen=True)
class MemeImage:
    """A rendered picture. `dropped`: characters left out because the font lacks them."""

    data: bytes
    mime: str
    width: int
    height: int
    dropped: tuple[str, ...]


def parse_caption(argument: str) -> tuple[str, str]:
    """`/caption top | bottom` -> (top, bottom); without a bar all words go on top."""
    top, _, bottom = argument.replace("｜", "|").partition("|")  # also the full-width bar
    return top.strip(), bottom.strip()


def parse_bubble(argument: str) -> tuple[Side, str]:
    """`/bubble [left|right|左|右] text` -> (side, text)."""
    first, *rest = argument.split(maxsplit=1) or [""]
    side = _SIDE_WORDS.get(first.lower())
    return (side, "".join(rest)) if side else ("auto", argument.strip())


def caption(
    image: bytes, top: str, bottom: str = "", *, font: Path | None = None, fmt: Format = "JPEG"
) -> MemeImage:
    """Meme caption: white bold words with a black outline, top and bottom, fitted to the width."""
    return render(image, TextLayer.captioned(top, bottom), font=font, fmt=fmt)


def bubble(
    image: bytes,
    text: str,
    *,
    side: Side = "auto",
    variant: int = 0,
    font: Path | None = None,
    fmt: Format = "JPEG",
) -> MemeImage:
    """A speech bubble where it hides the least; `variant` n picks the n-th best place."""
    return render(image, TextLayer.bubbled(text, side, variant), font=font, fmt=fmt)


def render(
    base: bytes, layer: TextLayer, *, font: Path | None = None, fmt: Format = "JPEG"
) -> MemeImage:
    """Draw `layer` on the plain `base` picture.

    Raises InvalidImage / ImageTooLarge for the picture and MemeTextError for the words.
    """
    path = str(font or DEFAULT_FONT)
    dropped: list[str] = []
    top, bottom, text = (
        _drawable(path, p, dropped) for p in (layer.top, layer.bottom, layer.bubble)
    )
    if not (top or bottom or text):
        lacking = "".join(dict.fromkeys(dropped))
        raise MemeTextError(f"font lacks {lacking!r}", code=TEXT_NO_GLYPHS, dropped=lacking)
    image = _decode(base)
    if top or bottom:
        _draw_caption(image, path, top, bottom)
    if text:  # after the caption, so the bubble also avoids the caption's words
        _draw_bubble(image, path, text, layer.side, layer.variant)
    data, mime = _encode(image, fmt)
    return MemeImage(data, mime, image.width, image.height, tuple(dict.fromkeys(dropped)))


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
    if not all(_has_glyph(str(path), ch) for ch in "Aa"):
        raise ValueError(f"font has no Latin letters: {path}")


# --- words -----------------------------------------------------------------------------------


def _tidy(text: str) -> str:
    lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(" ".join(line.split()) for line in lines.split("\n")).strip()


def _check_length(text: str) -> None:
    if len(text.strip()) > MAX_TEXT_CHARS:
        raise MemeTextError(
            f"{len(text)} characters > {MAX_TEXT_CHARS}", code=TEXT_TOO_LONG, limit=MAX_TEXT_CHARS
        )


def _drawable(path: str, text: str, dropped: list[str]) -> str:
    """`text` without the characters the font lacks, and without the gaps they leave."""
    lines = []
    for line in _tidy(text).split("\n"):
        kept = []
        for ch in line:
            if ch.isspace() or _has_glyph(path, ch):
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
def _has_glyph(path: str, ch: str) -> bool:
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
    ImageDraw.Draw(canvas).text((_PROBE_PX, _PROBE_PX), ch, font=_font(path, _PROBE_PX), fill=255)
    return canvas.tobytes()


def _language(text: str) -> str | None:
    """The language tag that makes the font's `locl` pick the right forms of shared characters."""
    if not _RAQM:
        return None
    if _HANGUL.search(text):
        return "ko"
    if _KANA.search(text):
        return "ja"
    return "zh-Hans" if _HAN.search(text) else None  # our CJK users write Simplified Chinese


class _Unit(NamedTuple):
    text: str  # never broken, unless wider than a whole line
    space: bool  # a space stands before it


def _units(line: str) -> list[_Unit]:
    """Words, and single CJK characters; punctuation stays with its neighbour (no line starts
    with "，" or ends with "「")."""
    units: list[_Unit] = []
    space = False
    for token in _TOKEN.findall(line):
        if token.isspace():
            space = True
            continue
        glued = bool(units) and not space
        if glued and (unicodedata.category(token[0]) in _CLINGS_LEFT or _opens(units[-1].text)):
            units[-1] = _Unit(units[-1].text + token, units[-1].space)
        else:
            units.append(_Unit(token, space))
        space = False
    return units


def _opens(text: str) -> bool:
    return all(unicodedata.category(ch) in _CLINGS_RIGHT for ch in text)


# --- fonts and measuring ----------------------------------------------------------------------


class _Fonts(threading.local):
    """One FreeType face per thread: a face must not be used by two threads at once."""

    def __init__(self) -> None:
        self.faces: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


_FONTS = _Fonts()


def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    faces = _FONTS.faces
    face = faces.get((path, size))
    if face is None:
        if len(faces) >= 128:  # fitting tries many sizes; keep the cache bounded
            faces.clear()
        face = faces[(path, size)] = ImageFont.truetype(path, size)
    return face


@lru_cache(maxsize=16384)
def _advance(path: str, text: str) -> float:
    return _font(path, _REF_PX).getlength(text)


@lru_cache(maxsize=16)
def _extents(path: str) -> tuple[float, float]:
    """Ink above and below the baseline, in font sizes, of the tallest and deepest letters."""
    _, top, _, bottom = _font(path, _REF_PX).getbbox(_EXTENT_PROBE, anchor="ls")
    return -top / _REF_PX, bottom / _REF_PX


@dataclass(frozen=True)
class _Block:
    """Wrapped lines at one size, with their measured box (outline included)."""

    lines: tuple[str, ...]
    size: int
    stroke: int
    ascent: int  # from the block's top to the first baseline
    pitch: int
    width: int
    height: int
    language: str | None


def _fit(path: str, text: str, box: tuple[int, int], max_size: int, stroke: float) -> _Block:
    """The biggest block of `text` that fits `box`, or MemeTextError(no room)."""
    paragraphs = [_units(line) for line in text.split("\n")]
    best = _largest_size(path, paragraphs, box, max_size, stroke)
    for size in range(best, MIN_FONT_PX - 1, -1):
        lines = _balanced(path, paragraphs, size, box[0] - 2 * _stroke(size, stroke))
        block = _measure(path, lines, size, stroke, _language(text))
        if block.width <= box[0] and block.height <= box[1]:  # kerning can differ from the sum
            return block
    raise MemeTextError(f"{len(text)} characters do not fit {box}", code=TEXT_NO_ROOM)


def _balanced(path: str, paragraphs: list[list[_Unit]], size: int, width: int) -> list[str]:
    """As few lines as at full `width`, but as even as they get: no lone last word."""
    lines, _ = _wrap(path, paragraphs, size, width)
    low, high = 1, width
    while low < high:  # the narrowest width that still needs no more lines
        middle = (low + high) // 2
        if len(_wrap(path, paragraphs, size, middle)[0]) <= len(lines):
            high = middle
        else:
            low = middle + 1
    return _wrap(path, paragraphs, size, high)[0]


def _largest_size(
    path: str, paragraphs: list[list[_Unit]], box: tuple[int, int], max_size: int, stroke: float
) -> int:
    """Binary search on estimated widths, cheap enough to try every size it wants;
    0 if not even MIN_FONT_PX fits."""
    low, high, best = MIN_FONT_PX, max(MIN_FONT_PX, max_size), 0
    while low <= high:
        size = (low + high) // 2
        outline = 2 * _stroke(size, stroke)
        lines, width = _wrap(path, paragraphs, size, box[0] - outline)
        if width + outline <= box[0] and _height(path, len(lines), size, stroke) <= box[1]:
            best, low = size, size + 1
        else:
            high = size - 1
    return best


def _fit_first(
    path: str, text: str, boxes: list[tuple[int, int]], max_size: int, stroke: float
) -> _Block:
    """The block for the first of `boxes` that `text` fits at a readable size."""
    for box in boxes[:-1]:
        try:
            return _fit(path, text, box, max_size, stroke)
        except MemeTextError:
            continue
    return _fit(path, text, boxes[-1], max_size, stroke)


def _stroke(size: int, ratio: float) -> int:
    return max(1, round(size * ratio)) if ratio else 0


def _height(path: str, lines: int, size: int, stroke: float) -> int:
    above, below = _extents(path)
    pitch = round(size * _LINE_PITCH)
    return math.ceil((above + below) * size) + (lines - 1) * pitch + 2 * _stroke(size, stroke)


def _wrap(
    path: str, paragraphs: list[list[_Unit]], size: int, width: int
) -> tuple[list[str], float]:
    """Greedy line breaking on advances summed at the reference size; returns the lines and the
    widest line's estimated width in pixels."""
    scale = size / _REF_PX
    limit = width / scale
    lines: list[tuple[str, float]] = []
    for units in paragraphs:
        lines.extend(_wrap_paragraph(path, units, limit))
    widest = max((w for _, w in lines), default=0.0)
    return [text for text, _ in lines], widest * scale


def _wrap_paragraph(path: str, units: list[_Unit], limit: float) -> Iterator[tuple[str, float]]:
    line, line_w = "", 0.0
    space_w = _advance(path, " ")
    for unit in units:
        unit_w = _width(path, unit.text)
        gap = space_w if line and unit.space else 0.0
        if line_w + gap + unit_w <= limit:
            line, line_w = line + (" " if gap else "") + unit.text, line_w + gap + unit_w
            continue
        if line:
            yield line, line_w
        *full, (line, line_w) = _split_word(path, unit.text, limit)
        yield from full
    if line:
        yield line, line_w


def _width(path: str, text: str) -> float:
    return sum(_advance(path, ch) for ch in text)


def _split_word(path: str, word: str, limit: float) -> list[tuple[str, float]]:
    """A word wider than a line, broken between characters (never before a combining mark)."""
    pieces: list[tuple[str, float]] = []
    piece, piece_w = "", 0.0
    for ch in word:
        ch_w = _advance(path, ch)
        if piece and piece_w + ch_w > limit and not unicodedata.combining(ch):
            pieces.append((piece, piece_w))
            piece, piece_w = "", 0.0
        piece, piece_w = piece + ch, piece_w + ch_w
    pieces.append((piece, piece_w))
    return pieces


def _measure(path: str, lines: list[str], size: int, ratio: float, language: str | None) -> _Block:
    font, stroke = _font(path, size), _stroke(size, ratio)
    widths = [font.getlength(line, language=language) for line in lines]
    above, _ = _extents(path)
    return _Block(
        lines=tuple(lines),
        size=size,
        stroke=stroke,
        ascent=math.ceil(above * size),
        pitch=round(size * _LINE_PITCH),
        width=math.ceil(max(widths, default=0.0)) + 2 * stroke,
        height=_height(path, len(lines), size, ratio),
        language=language,
    )


def _draw_block(
    draw: ImageDraw.ImageDraw, path: str, block: _Block, center_x: float, top: int, fill: str
) -> None:
    """Lines centred on `center_x`; with an outline, all outlines first, so that no outline of a
    lower line cuts into the letters above it."""
    font = _font(path, block.size)
    baselines = [
        top + block.stroke + block.ascent + i * block.pitch for i in range(len(block.lines))
    ]
    language = block.language  # None without raqm, which refuses any language
    if block.stroke:
        for line, y in zip(block.lines, baselines, strict=True):
            draw.text(
                (center_x, y),
                line,
                "black",
                font,
                "ms",
                stroke_width=block.stroke,
                language=language,
            )
    for line, y in zip(block.lines, baselines, strict=True):
        draw.text((center_x, y), line, fill, font, "ms", language=language)


# --- captions ---------------------------------------------------------------------------------


def _margin(width: int, height: int) -> int:
    return max(2, round(min(width, height) * 0.03))


def _draw_caption(image: Image.Image, path: str, top: str, bottom: str) -> None:
    width, height = image.size
    margin = _margin(width, height)
    # A third of the height each; long words may take almost half rather than be refused.
    boxes = [(width - 2 * margin, round(height * share)) for share in (0.3, 0.46)]
    max_size = round(min(width, height) * 0.11)
    draw = ImageDraw.Draw(image)
    if top:
        block = _fit_first(path, top, boxes, max_size, _CAPTION_STROKE)
        _draw_block(draw, path, block, width / 2, margin, "white")
    if bottom:
        block = _fit_first(path, bottom, boxes, max_size, _CAPTION_STROKE)
        _draw_block(draw, path, block, width / 2, height - margin - block.height, "white")


# --- bubbles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bubble:
    block: _Block
    rx: float  # ellipse half-axes, outline excluded
    ry: float
    outline: int
    tail: int  # tail length below (or above) the ellipse

    @property
    def size(self) -> tuple[int, int]:
        """The footprint: ellipse, outline and tail."""
        return math.ceil(2 * (self.rx + self.outline)), math.ceil(
            2 * (self.ry + self.outline) + self.tail
        )


def _draw_bubble(image: Image.Image, path: str, text: str, side: Side, variant: int) -> None:
    shape = _shape(path, text, image.size)
    spots = _ranked_spots(image, shape.size, side)
    _paint(image, path, shape, spots[variant % len(spots)])


def _shape(path: str, text: str, image_size: tuple[int, int]) -> _Bubble:
    width, height = image_size
    short = min(width, height)
    outline, pad = max(2, round(short * 0.005)), round(short * 0.015)
    # Text boxes whose circumscribed ellipse (sqrt 2 wider and taller) fits a share of the
    # picture: a small bubble first, a bigger one only when the words need it.
    boxes = [
        (
            int((width * w / 2 - outline - pad) * math.sqrt(2)),
            int((height * h / 2 - outline - pad) * math.sqrt(2)),
        )
        for w, h in ((0.46, 0.34), (0.7, 0.5), (0.94, 0.62))
    ]
    block = _fit_first(path, text, boxes, round(short * 0.065), 0.0)
    rx = block.width / math.sqrt(2) + pad
    ry = block.height / math.sqrt(2) + pad
    room = height - 2 * _margin(width, height) - math.ceil(2 * (ry + outline))
    return _Bubble(block, rx, ry, outline, max(0, min(room, max(block.size, round(ry * 0.8)))))


def _ranked_spots(image: Image.Image, size: tuple[int, int], side: Side) -> list[tuple[int, int]]:
    """Top-left corners for the bubble's footprint, quietest first (least edge detail covered,
    top corners preferred on a tie), each at least half off the ones before it."""
    width, height = image.size
    margin = _margin(width, height)
    edges, scale = _edge_map(image)
    spots: list[tuple[float, int, int]] = []
    for x in _spread(margin, width - size[0] - margin, 5):
        center = x + size[0] / 2
        if (side == "left" and center >= width / 2) or (side == "right" and center <= width / 2):
            continue
        for y in _spread(margin, height - size[1] - margin, 4):
            busy = _mean(edges, (x, y, x + size[0], y + size[1]), scale)
            # A tie-break worth a few grey levels: upper corners, where bubbles usually sit.
            lean = 2 * (y + size[1] / 2) / height + 1 - 2 * abs(center / width - 0.5)
            spots.append((busy + lean, x, y))
    if not spots:  # a bubble as wide as the picture has no left or right
        return _ranked_spots(image, size, "auto")
    chosen: list[tuple[int, int]] = []
    for _, x, y in sorted(spots):
        if all(_overlap((x, y), other, size) < 0.5 for other in chosen):
            chosen.append((x, y))
    return chosen


def _spread(low: int, high: int, count: int) -> list[int]:
    if high <= low:
        return [max(0, (low + high) // 2)]
    return sorted({round(low + (high - low) * i / (count - 1)) for i in range(count)})


def _edge_map(image: Image.Image) -> tuple[Image.Image, float]:
    """Edge strength of a small grey copy (detail is what a bubble would hide)."""
    scale = min(1.0, 200 / max(image.size))
    small_size = (max(3, round(image.width * scale)), max(3, round(image.height * scale)))
    small = image.convert("L").resize(small_size, Image.Resampling.BOX)
    edges = small.filter(ImageFilter.FIND_EDGES)
    # Pillow's 3x3 filters copy the border pixels unfiltered: they are not edges.
    ImageDraw.Draw(edges).rectangle((0, 0, small_size[0] - 1, small_size[1] - 1), outline=0)
    return edges, scale


def _mean(edges: Image.Image, box: tuple[int, int, int, int], scale: float) -> float:
    small = tuple(round(v * scale) for v in box)
    region = (small[0], small[1], max(small[2], small[0] + 1), max(small[3], small[1] + 1))
    return float(ImageStat.Stat(edges.crop(region)).mean[0])


def _overlap(a: tuple[int, int], b: tuple[int, int], size: tuple[int, int]) -> float:
    dx = max(0, size[0] - abs(a[0] - b[0]))
    dy = max(0, size[1] - abs(a[1] - b[1]))
    return dx * dy / max(1, size[0] * size[1])


def _paint(image: Image.Image, path: str, shape: _Bubble, spot: tuple[int, int]) -> None:
    """Ellipse and tail as one white shape with one black outline, then the words."""
    (fw, fh), (x, y) = shape.size, spot
    down = y + fh / 2 < image.height / 2  # the tail points towards the middle of the picture
    toward = 1 if x + fw / 2 < image.width / 2 else -1
    cx = fw / 2
    cy = shape.outline + shape.ry if down else fh - shape.outline - shape.ry
    ellipse = (cx - shape.rx, cy - shape.ry, cx + shape.rx, cy + shape.ry)
    dy = 1 if down else -1
    tail = [  # base inside the ellipse, so the white ellipse covers its third side
        (cx + toward * 0.15 * shape.rx, cy + dy * 0.6 * shape.ry),
        (cx + toward * 0.6 * shape.rx, cy + dy * (shape.ry + shape.tail)),
        (cx + toward * 0.45 * shape.rx, cy + dy * 0.6 * shape.ry),
    ]
    outer, inner = _masks((fw, fh), ellipse, tail, shape.outline)
    box = (x, y, x + fw, y + fh)
    image.paste(_BLACK, box, outer)
    image.paste(_WHITE, box, inner)
    block = shape.block
    top = round(y + cy - block.height / 2)
    _draw_block(ImageDraw.Draw(image), path, block, x + cx, top, "black")


def _masks(
    size: tuple[int, int],
    ellipse: tuple[float, float, float, float],
    tail: list[tuple[float, float]],
    outline: int,
) -> tuple[Image.Image, Image.Image]:
    """Antialiased masks: the shape grown by the outline, and the shape itself."""
    k = _SUPERSAMPLE
    big = (size[0] * k, size[1] * k)
    tail_k = [(px * k, py * k) for px, py in tail]
    e = [v * k for v in ellipse]
    o = outline * k
    outer, inner = Image.new("L", big), Image.new("L", big)
    draw = ImageDraw.Draw(outer)
    draw.ellipse((e[0] - o, e[1] - o, e[2] + o, e[3] + o), fill=255)
    draw.polygon(tail_k, fill=255)
    draw.line(tail_k, fill=255, width=2 * o, joint="curve")
    draw = ImageDraw.Draw(inner)
    draw.ellipse(e, fill=255)
    draw.polygon(tail_k, fill=255)
    return outer.reduce(k), inner.reduce(k)


# --- pictures ---------------------------------------------------------------------------------


def _decode(data: bytes) -> Image.Image:
    """RGB pixels of the first frame, upright; refuses more than MAX_PIXELS before decoding."""
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageTooLarge(f"{opened.size} > {MAX_PIXELS} pixels", max_side=MAX_SIDE)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)
            return _flatten(opened)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc), max_side=MAX_SIDE) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"cannot decode: {exc}") from exc


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _encode(image: Image.Image, fmt: Format) -> tuple[bytes, str]:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=92)
        return out.getvalue(), "image/jpeg"
    # Speed first (a photo's PNG takes 100+ ms even so): ask for PNG only for "Full quality".
    image.save(out, "PNG", compress_level=1)
    return out.getvalue(), "image/png"
