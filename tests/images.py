"""Make test images in memory, so no test needs image files on disk."""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from typing import Any

from PIL import ExifTags, Image, ImageChops

Color = tuple[int, int, int]
FRAME_COLORS: tuple[Color, ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))


def to_bytes(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """Encode `image` as `fmt` with Pillow's save `params`."""
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def make_png(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A small valid PNG, handy for tests."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def make_image(
    width: int = 100,
    height: int = 80,
    fmt: str = "JPEG",
    color: Color = (200, 100, 50),
    mode: str = "RGB",
    exif_orientation: int | None = None,
) -> bytes:
    """A one-colour image; `mode` is converted from RGB (e.g. "L", "P", "RGBA", "CMYK")."""
    image = Image.new("RGB", (width, height), color)
    if mode != "RGB":
        image = image.convert(mode)
    params: dict[str, Any] = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = exif_orientation
        params["exif"] = exif.tobytes()
    return to_bytes(image, fmt, **params)


def make_noise(width: int, height: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """Random RGB pixels: the worst case for file size (use fmt="BMP" for speed)."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    return to_bytes(Image.frombytes("RGB", (width, height), pixels), fmt)


def make_animated(frames: int = 3, size: tuple[int, int] = (96, 72), fmt: str = "GIF") -> bytes:
    """A multi-frame GIF / WebP / PNG (APNG) / TIFF; frame i is FRAME_COLORS[i] (red first)."""
    images = [Image.new("RGB", size, FRAME_COLORS[i % len(FRAME_COLORS)]) for i in range(frames)]
    params: dict[str, Any] = {"save_all": True, "append_images": images[1:]}
    if fmt in ("GIF", "WEBP", "PNG"):
        params["duration"] = 100
    if fmt == "WEBP":
        params["lossless"] = True
    return to_bytes(images[0], fmt, **params)


def make_animated_gif(frames: int = 3, size: tuple[int, int] = (96, 72)) -> bytes:
    return make_animated(frames, size, "GIF")


@functools.cache  # ~0.4 s to build; bytes are immutable
def make_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit black PNG claiming width x height, ~110 KB on disk for 30000x30000.

    Hand-made (IHDR + zlib-compressed zero rows), since Pillow would need the pixels in memory.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + 1 bit per pixel
    compressor = zlib.compressobj(9)
    rows = [compressor.compress(row * min(1000, height - y)) for y in range(0, height, 1000)]
    idat = b"".join(rows) + compressor.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body)
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def decode(data: bytes) -> Image.Image:
    """Fully decoded image (format kept in `.format`)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def photo_like(width: int, height: int, *, noise: int = 16, seed: int = 0) -> Image.Image:
    """An RGB picture with smooth gradients plus uniform noise of +-`noise` levels: about as hard
    to compress as a camera photo (a 6000x4000 one is ~7 MB as JPEG quality 90)."""
    gx = Image.linear_gradient("L").rotate(90).resize((width, height), Image.Resampling.BILINEAR)
    gy = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    base = Image.merge("RGB", (gx, gy, ImageChops.invert(gx)))
    pixels = random.Random(seed).randbytes(width * height * 3)
    grain = Image.frombytes("RGB", (width, height), pixels).point(
        lambda v: 128 - noise + v * 2 * noise // 255
    )
    return ImageChops.add(base, grain, offset=-128)


def exif_bytes(orientation: int) -> bytes:
    """An EXIF block (as Pillow's `exif=` save parameter takes it) holding only an orientation."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif.tobytes()


def tiff_with_entries(entries: int, block: int, *, distinct_tags: bool) -> bytes:
    """A little-endian TIFF whose first directory has `entries` entries, each pointing at the
    same `block`-byte value (Pillow copies it once per entry; with distinct tags it keeps every
    copy): the shape of the file that took Pillow 18 s and gigabytes to open."""
    header_size, directory_size = 8, 2 + 12 * entries + 4
    data_offset = header_size + directory_size
    rows = []
    for i in range(entries):
        tag = 1 + i % 65_535 if distinct_tags else 40_000
        rows.append(struct.pack("<HHII", tag, 7, block, data_offset))  # 7: UNDEFINED bytes
    directory = struct.pack("<H", entries) + b"".join(rows) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", header_size) + directory + b"\x00" * block


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_in_chunks(data: bytes, size: int = 65536) -> bytes:
    """The same PNG with its image data split into IDAT chunks of `size` bytes, as most encoders
    write it (Pillow writes one chunk per save buffer, which bot.imaging enlarges)."""
    pos, before, pixels, after = 8, [data[:8]], [], []
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        chunk = data[pos : pos + 12 + length]
        if chunk[4:8] == b"IDAT":
            pixels.append(chunk[8:-4])
        else:
            (after if pixels else before).append(chunk)
        pos += 12 + length
    stream = b"".join(pixels)
    idats = [png_chunk(b"IDAT", stream[i : i + size]) for i in range(0, len(stream), size)]
    return b"".join(before + idats + after)


def png_parts(width: int = 80, height: int = 80) -> tuple[bytes, bytes, bytes]:
    """(signature + IHDR, IDAT, IEND) of a small grey PNG, to put other chunks between."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header),
        png_chunk(b"IDAT", pixels),
        png_chunk(b"IEND", b""),
    )
