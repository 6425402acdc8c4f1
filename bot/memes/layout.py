"""Words fitted into a box and drawn: the largest readable size, lines balanced and broken where
the script allows, meme captions (white with a black outline, top and bottom) and speech bubbles
(placed where they hide the least detail; a Reroll picks the next-best place)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageStat

from bot.memes import glyphs
from bot.memes.layer import TEXT_NO_ROOM, MemeTextError, Side

MIN_FONT_PX = 10  # smaller text is unreadable: we say "no room" instead
_LINE_PITCH = 1.2  # baseline to baseline, in font sizes: tight, as memes are
_CAPTION_STROKE = 0.07  # outline width, in font sizes
_SUPERSAMPLE = 2  # Pillow's ellipses are not antialiased: draw the bubble twice as big
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


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
    paragraphs = [glyphs.word_units(line) for line in text.split("\n")]
    best = _largest_size(path, paragraphs, box, max_size, stroke)
    for size in range(best, MIN_FONT_PX - 1, -1):
        lines = _balanced(path, paragraphs, size, box[0] - 2 * _stroke(size, stroke))
        block = _measure(path, lines, size, stroke, glyphs.language(text))
        if block.width <= box[0] and block.height <= box[1]:  # kerning can differ from the sum
            return block
    raise MemeTextError(f"{len(text)} characters do not fit {box}", code=TEXT_NO_ROOM)


def _balanced(path: str, paragraphs: list[list[glyphs.Unit]], size: int, width: int) -> list[str]:
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
    path: str,
    paragraphs: list[list[glyphs.Unit]],
    box: tuple[int, int],
    max_size: int,
    stroke: float,
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
    above, below = glyphs.extents(path)
    pitch = round(size * _LINE_PITCH)
    return math.ceil((above + below) * size) + (lines - 1) * pitch + 2 * _stroke(size, stroke)


def _wrap(
    path: str, paragraphs: list[list[glyphs.Unit]], size: int, width: int
) -> tuple[list[str], float]:
    """Greedy line breaking on advances summed at the reference size; returns the lines and the
    widest line's estimated width in pixels."""
    scale = size / glyphs.REF_PX
    limit = width / scale
    lines: list[tuple[str, float]] = []
    for units in paragraphs:
        lines.extend(_wrap_paragraph(path, units, limit))
    widest = max((w for _, w in lines), default=0.0)
    return [text for text, _ in lines], widest * scale


def _wrap_paragraph(
    path: str, units: list[glyphs.Unit], limit: float
) -> Iterator[tuple[str, float]]:
    line, line_w = "", 0.0
    space_w = glyphs.advance(path, " ")
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
    return sum(glyphs.advance(path, ch) for ch in text)


def _split_word(path: str, word: str, limit: float) -> list[tuple[str, float]]:
    """A word wider than a line, broken between characters (never before a combining mark)."""
    pieces: list[tuple[str, float]] = []
    piece, piece_w = "", 0.0
    for ch in word:
        ch_w = glyphs.advance(path, ch)
        if piece and piece_w + ch_w > limit and not unicodedata.combining(ch):
            pieces.append((piece, piece_w))
            piece, piece_w = "", 0.0
        piece, piece_w = piece + ch, piece_w + ch_w
    pieces.append((piece, piece_w))
    return pieces


def _measure(path: str, lines: list[str], size: int, ratio: float, language: str | None) -> _Block:
    font, stroke = glyphs.font(path, size), _stroke(size, ratio)
    widths = [font.getlength(line, language=language) for line in lines]
    above, _ = glyphs.extents(path)
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
    font = glyphs.font(path, block.size)
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


def draw_caption(image: Image.Image, path: str, top: str, bottom: str) -> None:
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


def draw_bubble(image: Image.Image, path: str, text: str, side: Side, variant: int) -> None:
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
