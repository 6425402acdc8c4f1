"""Before and after in one picture (the Compare button): the source and the result side by side
at the same height (portraits, squares), or one above the other at the same width when side by
side would be more than twice as wide as high (landscapes), each with a small label in the
user's language. Drawn here, like the memes: no API call, no unit."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from bot.memes import glyphs
from bot.memes.layer import MemeImage
from bot.memes.picture import decode, encode

MAX_PART_SIDE = 1280  # each half's common side: sharp in a chat, small to send
WIDEST = 2.0  # side by side no wider than this times their height; else one above the other
_GAP_SHARE = 0.01  # the line between the two, in parts of the common side
_LABEL_SHARE = 0.045  # the labels' font size, in parts of the common side
_MIN_LABEL_PX = 12
_LABEL_BACK = (0, 0, 0, 150)  # a dark box under white words: readable on any picture
_WHITE = (255, 255, 255)


def compare(
    before: bytes, after: bytes, labels: tuple[str, str], *, font: Path | None = None
) -> MemeImage:
    """`before` and `after` in one JPEG, labelled `labels` (before's, after's)."""
    first, second = decode(before), decode(after)
    stacked = first.width / first.height + second.width / second.height > WIDEST
    side = min(
        MAX_PART_SIDE,
        *((first.width, second.width) if stacked else (first.height, second.height)),
    )
    parts = [_scaled(image, side, by_width=stacked) for image in (first, second)]
    gap = max(2, round(side * _GAP_SHARE))
    if stacked:
        size = (side, parts[0].height + gap + parts[1].height)
        spots = [(0, 0), (0, parts[0].height + gap)]
    else:
        size = (parts[0].width + gap + parts[1].width, side)
        spots = [(0, 0), (parts[0].width + gap, 0)]
    canvas = Image.new("RGB", size, _WHITE)
    label_px = max(_MIN_LABEL_PX, round(side * _LABEL_SHARE))
    for part, spot, label in zip(parts, spots, labels, strict=True):
        canvas.paste(part, spot)
        _label(canvas, str(font or glyphs.DEFAULT_FONT), label, spot, label_px)
    data, mime = encode(canvas, "JPEG")
    return MemeImage(data, mime, canvas.width, canvas.height, ())


def _scaled(image: Image.Image, side: int, *, by_width: bool) -> Image.Image:
    """`image` with its width (or height) made `side`, its ratio kept."""
    long, short = (image.width, image.height) if by_width else (image.height, image.width)
    if long == side:
        return image
    other = max(1, round(short * side / long))
    size = (side, other) if by_width else (other, side)
    return image.resize(size, Image.Resampling.LANCZOS)


def _label(canvas: Image.Image, path: str, text: str, spot: tuple[int, int], px: int) -> None:
    """`text` in a dark box at the top left corner of the part at `spot`."""
    text = glyphs.drawable(path, text, [])
    if not text:
        return
    face = glyphs.font(path, px)
    left, top, right, bottom = (round(edge) for edge in face.getbbox(text))
    pad = max(3, px // 3)
    x, y = spot[0] + pad, spot[1] + pad
    box = (x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad)
    overlay = Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), _LABEL_BACK)
    canvas.paste(overlay, box[:2], overlay)
    ImageDraw.Draw(canvas).text((x + pad - left, y + pad - top), text, font=face, fill=_WHITE)
