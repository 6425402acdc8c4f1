"""A picture with words on it: the plain base decoded (refused over MAX_PIXELS before any
pixel is decoded), the layer drawn on it, the result encoded."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from bot.domain import MAX_SIDE
from bot.errors import ImageTooLarge, InvalidImage
from bot.memes.glyphs import DEFAULT_FONT, drawable
from bot.memes.layer import TEXT_NO_GLYPHS, Format, MemeImage, MemeTextError, Side, TextLayer
from bot.memes.layout import draw_bubble, draw_caption

MAX_PIXELS = MAX_SIDE * MAX_SIDE  # bases are normalized to MAX_SIDE, so more is not ours
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the decoders users' bytes may reach
_WHITE = (255, 255, 255)


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
        drawable(path, p, dropped) for p in (layer.top, layer.bottom, layer.bubble)
    )
    if not (top or bottom or text):
        lacking = "".join(dict.fromkeys(dropped))
        raise MemeTextError(f"font lacks {lacking!r}", code=TEXT_NO_GLYPHS, dropped=lacking)
    image = decode(base)
    if top or bottom:
        draw_caption(image, path, top, bottom)
    if text:  # after the caption, so the bubble also avoids the caption's words
        draw_bubble(image, path, text, layer.side, layer.variant)
    data, mime = encode(image, fmt)
    return MemeImage(data, mime, image.width, image.height, tuple(dict.fromkeys(dropped)))


def decode(data: bytes) -> Image.Image:
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


def encode(image: Image.Image, fmt: Format) -> tuple[bytes, str]:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=92)
        return out.getvalue(), "image/jpeg"
    # Speed first (a photo's PNG takes 100+ ms even so): ask for PNG only for "Full quality".
    image.save(out, "PNG", compress_level=1)
    return out.getvalue(), "image/png"
