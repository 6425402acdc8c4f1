"""Turn whatever photo a user sends into what the edit API and the chats accept.

Pure, synchronous functions on bytes (the service runs them in threads). Every file is hostile
until its header is checked: `bot.image_headers` reads format, size, frames and orientation from
the bytes with capped, O(1)-per-step walks and refuses what no honest photo looks like, before
Pillow parses anything; Pillow then opens only the one format found, and never parses EXIF. Every
Pillow failure is mapped to `InvalidImage` / `ImageTooLarge` / `ImageTooSmall`.

No global lock: pixels are bounded by the header check (below Pillow's own bomb threshold, so its
warning cannot fire), and Pillow's decoders release the GIL, so slots run side by side.

The sizes a picture may have (`check_claims`, `PictureLimits` and the chats' limits,
`MAX_INPUT_PIXELS`) live in bot/image_limits.py and are re-exported here.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, cast

from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from bot.domain import MAX_SIDE, MIN_SIDE
from bot.errors import ImageTooLarge, InvalidImage, StepEditError
from bot.image_headers import Header, read_header
from bot.image_limits import DISCORD_FILE as DISCORD_FILE
from bot.image_limits import MAX_INPUT_PIXELS as MAX_INPUT_PIXELS
from bot.image_limits import TELEGRAM_PHOTO as TELEGRAM_PHOTO
from bot.image_limits import PictureLimits as PictureLimits
from bot.image_limits import check_claims as check_claims
from bot.image_limits import fitted, scaled

NOTE_FIRST_FRAME = "note_first_frame"
NOTE_DOWNSCALED = "note_downscaled"

JPEG_MIME = "image/jpeg"
PNG_MIME = "image/png"
MAX_INPUT_BYTES = 50_000_000
MAX_OUTPUT_BYTES = 10_000_000  # the edit API's upload limit

# Only these decoders ever see user bytes (and each file only the one its header names): fewer
# parsers, less attack surface (no EPS/Ghostscript).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Our pixel limit is below Pillow's bomb warning threshold (89 Mpx), so the warning cannot fire
# for our calls; silenced once here anyway (not with catch_warnings per call: that swaps
# process-wide state, and needed a lock that made every Pillow slot wait for one slow open).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Text chunks are no use to us: Pillow's default allows 64 MB of them inflated per file.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * PngImagePlugin.MAX_TEXT_CHUNK

# JPEGs decode at a reduced scale; other formats decode in full, at several bytes per pixel at
# once (a 64 Mpx RGBA PNG peaked at 678 MiB and 3.9 s; WebP goes through an RGBA canvas and took
# 260 MiB for 16.8 Mpx). These caps keep any one file near 250 MiB and a few seconds of CPU.
_FULL_DECODE_PIXELS = {"WEBP": 4096 * 4096, "GIF": 4096 * 4096}
_FULL_DECODE_DEFAULT = 24_000_000  # PNG, TIFF, BMP: a 6000x4000 camera picture
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_API_QUALITIES = (90, 85, 80, 70, 60, 50)
_CHAT_QUALITIES = (90, 85, 78)
# A JPEG decoded at 1/2, 1/4 or 1/8 scale (far less time and memory) may end up this much below
# the target size rather than be decoded in full: 8000x6000 gives 4000x3000 instead of 4096x3072.
_DRAFT_SLACK = 0.9
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

Fit = Callable[[tuple[int, int]], tuple[int, int]]

# Pillow hands its codecs 64 KiB at a time and takes the GIL back after each piece; while the
# event loop runs Python, each of those waits up to the switch interval (5 ms). A 12 MP photo's
# decode and encode made ~130 such hand-offs: with a busy Python thread beside it, normalize took
# 500 ms instead of 125. In 4 MiB pieces it took 158 ms. (A PNG is read one pixel chunk at a
# time whatever the piece size: _OneIdat shows its chunks as one.)
ImageFile.MAXBLOCK = 4 * 1024 * 1024


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
    within `max_side` and encode it as a metadata-free JPEG the edit API accepts. An upright
    baseline sRGB JPEG that fits is sent as it is, its metadata cut out at the byte level.

    Raises ImageTooLarge (too many bytes or pixels, checked before decoding), ImageTooSmall (a side
    below `min_side`, also after fitting an extreme aspect ratio) or InvalidImage.
    """
    if len(data) > max_input_bytes:
        raise ImageTooLarge(f"{len(data)} bytes > {max_input_bytes}", max_bytes=max_input_bytes)

    def fit(size: tuple[int, int]) -> tuple[int, int]:
        return fitted(size, max_side, min_side)

    with _pillow_errors():
        header = _header(data, max_input_pixels)
        size = (header.width, header.height)
        if fit(size) == size and _sendable_as_is(header, max_output_bytes):
            return NormalizedImage(header.data, JPEG_MIME, "image.jpg", *size, ())
        image, downscaled = _decode_rgb(header, fit)
        encoded = _encode_jpeg(image, _API_QUALITIES, max_output_bytes)
    if len(encoded) > max_output_bytes:
        raise ImageTooLarge(
            f"no JPEG of {image.size} within {max_output_bytes} bytes", max_bytes=max_output_bytes
        )
    flags = ((NOTE_FIRST_FRAME, header.animated), (NOTE_DOWNSCALED, downscaled))
    notes = tuple(note for note, on in flags if on)
    return NormalizedImage(encoded, JPEG_MIME, "image.jpg", image.width, image.height, notes)


def for_chat(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_side_sum: int | None = None,
    limits: PictureLimits = TELEGRAM_PHOTO,
) -> tuple[bytes, str]:
    """A JPEG within a platform's picture limits (`limits`; `max_bytes` and `max_side_sum`
    override its fields), as sharp as fits.

    A JPEG that already fits is returned untouched; otherwise quality is lowered a little first,
    then the picture is downscaled until it fits. The ratio is left as it is (see
    `PictureLimits.shows_as_picture`). Returns (bytes, mime).
    """
    max_bytes = limits.max_bytes if max_bytes is None else max_bytes
    side_sum = limits.max_side_sum if max_side_sum is None else max_side_sum

    def fit(size: tuple[int, int]) -> tuple[int, int]:
        if side_sum is None or sum(size) <= side_sum:
            return size
        return scaled(size, (side_sum - 1) / sum(size))  # - 1: each side is rounded

    with _pillow_errors():
        header = _header(data, MAX_INPUT_PIXELS)
        if _fits_chat_as_is(header, data, max_bytes, side_sum):
            return data, JPEG_MIME
        image, _ = _decode_rgb(header, fit)
        return _shrink_to_bytes(image, max_bytes), JPEG_MIME


def full_quality(data: bytes) -> tuple[bytes, str]:
    """The file to offer as Full quality for a stored result: a PNG or a JPEG as it is (the
    edit API's own file, never decoded; a JPEG stays as lossy as it came), anything else (e.g.
    WebP) as a lossless PNG. Returns (bytes, mime)."""
    if data.startswith(_JPEG_SIGNATURE):
        return data, JPEG_MIME
    return lossless_png(data), PNG_MIME


def full_quality_mime(data: bytes) -> str:
    """The mime of `full_quality(data)`, from the first bytes alone."""
    return JPEG_MIME if data.startswith(_JPEG_SIGNATURE) else PNG_MIME


def lossless_png(data: bytes) -> bytes:
    """The full-quality file to offer as a download: PNG keeps every decoded pixel.

    A PNG is returned as it is; anything else is decoded (first frame, upright) and saved as PNG,
    keeping its colour profile.
    """
    if data.startswith(_PNG_SIGNATURE):
        return data
    with _pillow_errors():
        header = _header(data, MAX_INPUT_PIXELS)
        with _open(header) as source:
            source.load()
            image: Image.Image = source
            icc = header.icc or image.info.get("icc_profile")
            if image.mode not in _PNG_MODES:  # e.g. CMYK: converted to sRGB here
                image, icc = _to_rgb(image, icc, keep_alpha=True)
                image, icc = _icc_to_srgb(image, icc) or image, None
            image = _upright(image, header.orientation)
            out = io.BytesIO()
            image.save(out, "PNG", **({"icc_profile": icc} if icc else {}))
            return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as stored, read from the header without decoding the pixels.

    EXIF orientation is not applied (images we store carry none). Raises InvalidImage.
    """
    header = _header(data, None)
    return header.width, header.height


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


def _header(data: bytes, max_pixels: int | None) -> Header:
    """The checked header; with `max_pixels` (we will decode it), also within its format's cap."""
    if not data:
        raise InvalidImage("empty file")
    header = read_header(data, max_pixels)
    cap = _FULL_DECODE_PIXELS.get(header.format, _FULL_DECODE_DEFAULT)
    if max_pixels is not None and header.format != "JPEG" and header.width * header.height > cap:
        raise ImageTooLarge(
            f"{header.format} of {header.width}x{header.height} > {cap} pixels",
            max_pixels=cap,
            width=header.width,
            height=header.height,
        )
    return header


def _open(header: Header) -> ImageFile.ImageFile:
    """Open lazily (header only) with the one decoder the checked header names. Never seeks
    beyond the first frame: we know from the header whether there are more."""
    source: IO[bytes] = io.BytesIO(header.data)
    if header.pixel_chunks:
        source = io.BufferedReader(_OneIdat(header))
    image = Image.open(source, formats=(header.format,))
    if image.size != (header.width, header.height):  # our check must be about what Pillow reads
        image.close()
        raise InvalidImage(f"header says {header.width}x{header.height}, Pillow {image.size}")
    return image


class _OneIdat(io.RawIOBase):
    """A PNG as Pillow reads it, its consecutive pixel (IDAT) chunks shown as one, without a
    copy. Pillow decodes one chunk per call and takes the GIL back after each: with 64 KB chunks
    and a busy Python thread beside it, a 16 MP result took 3 s instead of 0.35 s, each of its
    ~500 hand-offs waiting up to a switch interval (5 ms). The joined chunk's checksum reads as
    zero: Pillow never checks IDAT checksums (tests/test_imaging.py decodes through this)."""

    def __init__(self, header: Header) -> None:
        super().__init__()
        view, chunks = memoryview(header.data), header.pixel_chunks
        pixels = [view[start + 8 : end - 4] for start, end in chunks]
        joined = struct.pack(">I4s", sum(len(part) for part in pixels), b"IDAT")
        first, last = chunks[0][0], chunks[-1][1]
        self._parts = [view[:first], memoryview(joined), *pixels, memoryview(bytes(4)), view[last:]]
        self._starts = list(itertools.accumulate((len(part) for part in self._parts), initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out, done = memoryview(buffer).cast("B"), 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        while done < len(out) and index < len(self._parts):
            part, skip = self._parts[index], self._pos - self._starts[index]
            piece = part[skip : skip + len(out) - done]
            out[done : done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
            index += 1
        return done


def _sendable_as_is(header: Header, max_bytes: int) -> bool:
    """An upright baseline sRGB JPEG needs no decoding: its cleaned stream is what the API
    wants."""
    return (
        header.plain_jpeg
        and header.orientation == 1
        and len(header.data) <= max_bytes
        and (header.icc is None or _is_srgb(header.icc))
    )


def _decode_rgb(header: Header, fit: Fit) -> tuple[Image.Image, bool]:
    """Decode to an upright sRGB "RGB" image of the size `fit` picks from the stored size (it may
    raise, or return the size itself; it must not depend on orientation). Downscaling comes
    before the colour conversion and the rotation, where they are cheap.

    Returns (image, whether it was downscaled).
    """
    original = (header.width, header.height)
    target = fit(original)
    with _open(header) as source:
        if header.format == "JPEG" and target != original:
            target = _draft(source, target)
        source.load()
        icc = header.icc or source.info.get("icc_profile")
        # Flattened before resizing: the same result (both are linear, and Pillow resizes RGBA
        # premultiplied) for far less memory than resizing RGBA, which copies it twice.
        image, icc = _to_rgb(source, icc)
        if image is not source:
            source.close()  # frees its pixels now (leaving `with` only closes the file)
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            source.close()
    image = _icc_to_srgb(image, icc) or image
    return _upright(image, header.orientation), target != original


def _draft(source: ImageFile.ImageFile, target: tuple[int, int]) -> tuple[int, int]:
    """Have libjpeg decode at 1/8, 1/4 or 1/2 scale when that is at least nearly `target`;
    returns the size to resize to (the reduced size itself when it is just below target)."""
    width, height = source.size
    for scale in (8, 4, 2):
        if width / scale >= target[0] * _DRAFT_SLACK and height / scale >= target[1] * _DRAFT_SLACK:
            source.draft(None, (width // scale, height // scale))
            reduced = source.size
            return target if reduced[0] >= target[0] and reduced[1] >= target[1] else reduced
    return target


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation; done after downscaling, when it is cheap."""
    method = _ORIENTATION.get(orientation)
    return image if method is None else image.transpose(method)


def _to_rgb(
    image: Image.Image, icc: bytes | None, *, keep_alpha: bool = False
) -> tuple[Image.Image, bytes | None]:
    """Any mode -> "RGB", transparency flattened onto white ("RGBA" when `keep_alpha` and it has
    transparency). A CMYK image with a
    profile is converted through it here (it cannot wait for after the resize).

    Returns (image, the profile still to apply to it: None once applied)."""
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "CMYK" and icc:
        image, icc = _icc_to_srgb(image, icc) or image, None
    transparent = image.mode in _ALPHA_MODES or "transparency" in image.info
    mode = "RGBA" if transparent else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    return (image if keep_alpha else _flatten(image)), icc


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit grey and float -> "L"; a plain convert() would clip 16-bit values to white."""
    sixteen = image.mode.startswith("I;16")
    if image.mode not in ("I", "F", "I;16"):  # e.g. big-endian "I;16B": getextrema() refuses it
        image = image.convert("I")
    low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
    if image.mode == "F":
        scale = 255.0 if low >= 0 and high <= 1 else 1.0
    else:
        scale = 1 / 256 if sixteen or high > 255 else 1.0
    return image.point(lambda value: value * scale).convert("L")


def _is_srgb(icc: bytes) -> bool:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return "sRGB" in ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return True  # an unusable profile: the pixels are taken as sRGB


def _icc_to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image | None:
    """Convert from an embedded colour profile (e.g. an iPhone's Display P3, a print CMYK) to
    sRGB, because the profile is dropped with the rest of the metadata. None if not needed or
    the profile is unusable (then the pixels are taken as sRGB)."""
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    if image.mode != "CMYK" and _is_srgb(icc):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _flatten(image: Image.Image) -> Image.Image:
    """Transparency onto white (the edit API and JPEG take no alpha); RGB stays as it is. Pasting
    through the alpha band needs one new image, where alpha_composite needed three."""
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        image = image.convert("RGBA")
    canvas = Image.new("RGB", image.size, _WHITE)
    canvas.paste(image, mask=image)
    return canvas


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


def _shrink_to_bytes(image: Image.Image, max_bytes: int) -> bytes:
    """A JPEG of `image` within `max_bytes`: lower quality a little first, then downscale."""
    size = image.size
    while True:
        scaled = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        encoded = _encode_jpeg(scaled, _CHAT_QUALITIES, max_bytes)
        if len(encoded) <= max_bytes:
            return encoded
        if max(size) <= 1:
            raise ImageTooLarge(f"no JPEG within {max_bytes} bytes", max_bytes=max_bytes)
        # File size grows about with the pixel count: aim just under the limit.
        factor = min(0.9, max(0.25, 0.95 * math.sqrt(max_bytes / len(encoded))))
        size = max(1, int(size[0] * factor)), max(1, int(size[1] * factor))  # always shrinks


def _fits_chat_as_is(header: Header, data: bytes, max_bytes: int, max_side_sum: int | None) -> bool:
    """A plain upright JPEG within the limits needs no re-encoding (nor quality loss)."""
    return (
        header.plain_jpeg
        and header.orientation == 1
        and len(data) <= max_bytes
        and (max_side_sum is None or header.width + header.height <= max_side_sum)
    )
