"""Turn whatever photo a user sends into what the edit API and the chats accept.

Pure, synchronous functions on bytes (the service runs them in a thread). Every Pillow failure is
mapped to `InvalidImage` / `ImageTooLarge` / `ImageTooSmall`, and sizes are checked from the header
before any pixel is decoded, so a decompression bomb never gets to allocate its pixels.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from PIL import ExifTags, Image, ImageCms, ImageFile

from bot.domain import MAX_SIDE, MIN_SIDE
from bot.errors import ImageTooLarge, ImageTooSmall, InvalidImage, StepEditError

NOTE_FIRST_FRAME = "note_first_frame"
NOTE_DOWNSCALED = "note_downscaled"

JPEG_MIME = "image/jpeg"
PNG_MIME = "image/png"
MAX_INPUT_PIXELS = 64_000_000
MAX_INPUT_BYTES = 50_000_000
MAX_OUTPUT_BYTES = 10_000_000  # the edit API's upload limit

# Only these decoders ever see user bytes: fewer parsers, less attack surface (no EPS/Ghostscript).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_API_QUALITIES = (95, 90, 85, 80, 70, 60, 50)
_CHAT_QUALITIES = (92, 85, 78)
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})
_SRGB = ImageCms.createProfile("sRGB")
# What each EXIF orientation needs to be shown upright (the table ImageOps.exif_transpose uses).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# warnings.catch_warnings swaps process-wide state; serialize our own uses of it.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class NormalizedImage:
    """An upload made acceptable to the edit API: RGB JPEG, sides within limits, no metadata."""

    data: bytes  # what we send to the edit API
    mime: str  # "image/jpeg" or "image/png"
    filename: str  # "image.jpg" / "image.png"
    width: int
    height: int
    notes: tuple[str, ...]  # text keys: NOTE_FIRST_FRAME, NOTE_DOWNSCALED


def normalize(
    data: bytes,
    *,
    max_side: int = MAX_SIDE,
    min_side: int = MIN_SIDE,
    max_input_pixels: int = MAX_INPUT_PIXELS,
    max_input_bytes: int = MAX_INPUT_BYTES,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> NormalizedImage:
    """Decode an upload (first frame if animated), orient it upright, flatten it onto white, fit it
    within `max_side` and encode it as a metadata-free JPEG the edit API accepts.

    Raises ImageTooLarge (too many bytes or pixels, checked before decoding), ImageTooSmall (a side
    below `min_side`, also after fitting an extreme aspect ratio) or InvalidImage.
    """
    if len(data) > max_input_bytes:
        raise ImageTooLarge(f"{len(data)} bytes > {max_input_bytes}", max_bytes=max_input_bytes)

    def fit(size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < min_side:
            raise ImageTooSmall(f"{size[0]}x{size[1]} below {min_side}", min_side=min_side)
        target = _scaled(size, max_side / max(size))
        if min(target) < min_side:  # e.g. a 100x9000 panorama: fitting it makes it too thin
            raise ImageTooSmall(
                f"{size[0]}x{size[1]} fits as {target[0]}x{target[1]}, below {min_side}",
                code="error_image_too_narrow",
                min_side=min_side,
                max_side=max_side,
            )
        return target

    with _pillow_errors():
        image, animated, downscaled = _decode_rgb(data, max_input_pixels, fit)
        encoded = _encode_jpeg(image, _API_QUALITIES, max_output_bytes)
    if len(encoded) > max_output_bytes:
        raise ImageTooLarge(
            f"no JPEG of {image.size} within {max_output_bytes} bytes", max_bytes=max_output_bytes
        )
    notes = tuple(
        note for note, on in ((NOTE_FIRST_FRAME, animated), (NOTE_DOWNSCALED, downscaled)) if on
    )
    return NormalizedImage(encoded, JPEG_MIME, "image.jpg", image.width, image.height, notes)


def for_chat(
    data: bytes, *, max_bytes: int = 10_000_000, max_side_sum: int = 10_000
) -> tuple[bytes, str]:
    """A JPEG within Telegram's photo limits (file size and width + height), as sharp as fits.

    A JPEG that already fits is returned untouched; otherwise quality is lowered a little first,
    then the picture is downscaled until it fits. Returns (bytes, mime).
    """

    def fit(size: tuple[int, int]) -> tuple[int, int]:
        if sum(size) <= max_side_sum:
            return size
        return _scaled(size, (max_side_sum - 1) / sum(size))  # - 1: each side is rounded

    with _pillow_errors():
        if _fits_chat_as_is(data, max_bytes, max_side_sum):
            return data, JPEG_MIME
        image, _, _ = _decode_rgb(data, MAX_INPUT_PIXELS, fit)
        size = image.size
        while True:
            scaled = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
            encoded = _encode_jpeg(scaled, _CHAT_QUALITIES, max_bytes)
            if len(encoded) <= max_bytes:
                return encoded, JPEG_MIME
            if max(size) <= 1:
                raise ImageTooLarge(f"no JPEG within {max_bytes} bytes", max_bytes=max_bytes)
            # File size grows about with the pixel count: aim just under the limit.
            factor = min(0.9, max(0.25, 0.95 * math.sqrt(max_bytes / len(encoded))))
            size = max(1, int(size[0] * factor)), max(1, int(size[1] * factor))  # always shrinks


def lossless_png(data: bytes) -> bytes:
    """The full-quality file to offer as a download: PNG keeps every decoded pixel.

    A PNG is returned as it is; anything else is decoded (first frame, upright) and saved as PNG,
    keeping its colour profile.
    """
    if data.startswith(_PNG_SIGNATURE):
        return data
    with _pillow_errors():
        source, _ = _open(data, MAX_INPUT_PIXELS)
        with source:
            source.load()
            image: Image.Image = source
            icc = image.info.get("icc_profile")
            if image.mode not in _PNG_MODES:  # e.g. CMYK: _to_rgb converts to sRGB itself
                image, icc = _to_rgb(image, keep_alpha=True), None
            image = _upright(image, _orientation(source))
            out = io.BytesIO()
            image.save(out, "PNG", **({"icc_profile": icc} if icc else {}))
            return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as stored, read from the header without decoding the pixels.

    EXIF orientation is not applied (images we store carry none). Raises InvalidImage.
    """
    with _pillow_errors():
        source, _ = _open(data, None)
        with source:
            return source.size


# --- internals ---------------------------------------------------------------------------------


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Map whatever a broken file makes Pillow raise to our errors.

    Pillow's decoders raise many types for corrupt input (OSError, SyntaxError, ValueError,
    EOFError, struct.error, IndexError...), so anything that is not already ours counts as
    "not an image".
    """
    try:
        yield
    except StepEditError:
        raise
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise ImageTooLarge(str(exc)) from exc
    except Exception as exc:
        raise InvalidImage(f"cannot decode: {type(exc).__name__}: {exc}") from exc


def _open(data: bytes, max_pixels: int | None) -> tuple[ImageFile.ImageFile, bool]:
    """Open lazily (header only), refuse too many pixels, and move to the first frame.

    Returns (image, whether frames were dropped). Pillow's DecompressionBombWarning is silenced
    here because we check the size ourselves; its DecompressionBombError still propagates.
    """
    if not data:
        raise InvalidImage("empty file")
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        try:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InvalidImage(f"bad size {width}x{height}")
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"{width}x{height} > {max_pixels} pixels",
                    max_pixels=max_pixels,
                    width=width,
                    height=height,
                )
            # Seeking to frame 1 (done by is_animated) can meet a bomb-sized GIF frame too.
            # MPO is a camera JPEG with extra pictures (e.g. a depth map): frame 0 is the photo.
            animated = bool(getattr(image, "is_animated", False)) and image.format != "MPO"
            if animated:
                image.seek(0)
        except BaseException:
            image.close()
            raise
    return image, animated


def _decode_rgb(
    data: bytes, max_pixels: int, fit: Callable[[tuple[int, int]], tuple[int, int]]
) -> tuple[Image.Image, bool, bool]:
    """Decode to an upright sRGB "RGB" image of the size `fit` picks from the stored size (it may
    raise, or return the size itself; it must not depend on orientation).

    Returns (image, whether frames were dropped, whether it was downscaled).
    """
    source, animated = _open(data, max_pixels)
    with source:
        original = source.size
        target = fit(original)
        if target[0] > original[0] or target[1] > original[1]:
            target = original  # never upscale
        if target != original and source.format in ("JPEG", "MPO"):
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale: far less memory and time for a big
            # photo; Pillow keeps the result at least as large as `target`, we resize exactly.
            source.draft(None, target)
        source.load()
        image = _to_rgb(source, keep_alpha=True)
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        image = _upright(image, _orientation(source))
        return _flatten(image), animated, target != original


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 when absent or unreadable. Call after load() (PNG eXIf)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block is no reason to refuse the photo
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION else 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation; done after downscaling, when it is cheap."""
    method = _ORIENTATION.get(orientation)
    return image if method is None else image.transpose(method)


def _to_rgb(image: Image.Image, *, keep_alpha: bool = False) -> Image.Image:
    """Any mode -> sRGB "RGB" ("RGBA" when `keep_alpha` and it has transparency, so resizing
    happens before flattening and transparent pixels do not bleed into the edges)."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    transparent = image.mode in _ALPHA_MODES or "transparency" in image.info
    mode = "RGBA" if transparent else "RGB"
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "RGBA", "CMYK"):
        converted = _icc_to_srgb(image, icc, "RGBA" if image.mode == "RGBA" else "RGB")
        if converted is not None:
            image = converted
    if image.mode != mode:
        image = image.convert(mode)
    return image if keep_alpha else _flatten(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit grey and float -> "L"; a plain convert() would clip 16-bit values to white."""
    low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
    if image.mode == "F":
        scale = 255.0 if low >= 0 and high <= 1 else 1.0
    else:
        scale = 1 / 256 if image.mode.startswith("I;16") or high > 255 else 1.0
    return image.point(lambda value: value * scale).convert("L")


def _icc_to_srgb(image: Image.Image, icc: bytes, mode: str) -> Image.Image | None:
    """Convert from an embedded colour profile (e.g. an iPhone's Display P3, a print CMYK) to
    sRGB, because the profile is dropped with the rest of the metadata. None if not needed or
    the profile is unusable (then the pixels are taken as sRGB)."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if image.mode != "CMYK" and "sRGB" in ImageCms.getProfileDescription(profile):
            return None
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _flatten(image: Image.Image) -> Image.Image:
    """Transparency onto white (the edit API and JPEG take no alpha); RGB stays as it is."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*_WHITE, 255)), rgba).convert("RGB")


def _scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """`size` times `factor` (capped at 1: never upscale), keeping the aspect ratio."""
    factor = min(factor, 1.0)
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _encode(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()


def _encode_jpeg(image: Image.Image, qualities: tuple[int, ...], max_bytes: int) -> bytes:
    """JPEG at the first of `qualities` (highest first) that fits in `max_bytes`, else at the
    last one (the caller checks the length)."""
    encoded = b""
    for quality in qualities:
        encoded = _encode(image, quality)
        if len(encoded) <= max_bytes:
            break
    return encoded


def _fits_chat_as_is(data: bytes, max_bytes: int, max_side_sum: int) -> bool:
    """A plain upright RGB/grey JPEG within the limits needs no re-encoding (nor quality loss)."""
    if len(data) > max_bytes or not data.startswith(b"\xff\xd8"):
        return False
    source, _ = _open(data, MAX_INPUT_PIXELS)
    with source:
        return (
            source.format == "JPEG"
            and source.mode in ("RGB", "L")
            and sum(source.size) <= max_side_sum
            and _orientation(source) == 1
        )
