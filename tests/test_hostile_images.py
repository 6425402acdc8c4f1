"""Crafted files that once cost seconds of CPU or gigabytes (issue 6) are refused from their
bytes, before Pillow parses them, with little memory; honest ones with the same features pass.

Each file is generated here, small. The assertions are structural (Pillow never opened the file,
or never parsed its EXIF) plus a generous memory bound from tracemalloc; no wall-clock limits.
"""

from __future__ import annotations

import contextlib
import io
import random
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from bot import image_headers, imaging
from bot.errors import ImageTooLarge, InvalidImage, StepEditError
from bot.imaging import for_chat, image_size, lossless_png, normalize
from tests.images import (
    decode,
    exif_bytes,
    make_animated,
    make_image,
    png_chunk,
    png_parts,
    tiff_with_entries,
    to_bytes,
)

MIB = 1024 * 1024


@pytest.fixture
def pillow_never_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any file reaches Pillow's parsers."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Pillow was asked to open the file")

    monkeypatch.setattr(Image, "open", refuse)


def refused_cheaply(call: Callable[[], object], error: type[Exception] = InvalidImage) -> int:
    """Run `call`, expect `error`; return the peak of Python allocations during it (bytes)."""
    tracemalloc.start()
    try:
        with pytest.raises(error):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- building blocks ---------------------------------------------------------------------------


def exif_with_entries(entries: int, block: int) -> bytes:
    """The same structure as an EXIF block (TIFF header, one directory)."""
    return tiff_with_entries(entries, block, distinct_tags=True)


def jpeg_with_segments(segments: list[bytes], source: bytes | None = None) -> bytes:
    """A JPEG with extra marker segments right after its SOI."""
    source = source or make_image(80, 80, "JPEG")
    return source[:2] + b"".join(segments) + source[2:]


def app1_exif(exif: bytes) -> bytes:
    body = b"Exif\x00\x00" + exif
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def gif_with_extension_sub_blocks(count: int) -> bytes:
    """A one-frame GIF preceded by a comment extension of `count` 255-byte sub-blocks (Pillow
    joins them with `comment += block`, which is quadratic)."""
    source = make_image(80, 80, "GIF")
    flags = source[10]
    first_block = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the palette
    comment = b"\x21\xfe" + (b"\xff" + b"c" * 255) * count + b"\x00"
    return source[:first_block] + comment + source[first_block:]


# --- (a) TIFF directories ----------------------------------------------------------------------


@pytest.mark.parametrize("distinct_tags", [False, True])
@pytest.mark.usefixtures("pillow_never_opens")
def test_tiff_with_65535_entries_on_one_block_is_refused_cheaply(distinct_tags: bool) -> None:
    # Pillow: 18 s of CPU and GBs of memory for a 3 MB file like this one (block of 2 MB).
    data = tiff_with_entries(65_535, 2 * MIB, distinct_tags=distinct_tags)

    peak = refused_cheaply(lambda: normalize(data))

    assert peak < 16 * MIB  # the file alone is 2.8 MB; Pillow would have copied 128 GiB


@pytest.mark.usefixtures("pillow_never_opens")
def test_tiff_whose_few_entries_add_up_to_too_much_is_refused() -> None:
    # Within the entry limit, but 1000 copies of 64 KB: Pillow would hold 64 MB of them.
    data = tiff_with_entries(1000, 64 * 1024, distinct_tags=True)

    with pytest.raises(InvalidImage):
        normalize(data)


@pytest.mark.usefixtures("pillow_never_opens")
def test_tiff_with_a_strip_per_byte_is_refused() -> None:
    data = bytearray(make_image(100, 100, "TIFF"))
    entries = struct.unpack_from("<H", data, 8)[0]
    for start in range(10, 10 + 12 * entries, 12):
        if struct.unpack_from("<H", data, start)[0] == 273:  # StripOffsets
            struct.pack_into("<I", data, start + 4, 1_000_000)

    with pytest.raises(InvalidImage):
        normalize(bytes(data))


# --- (b) the same structure as EXIF ------------------------------------------------------------


@pytest.mark.usefixtures("pillow_never_opens")
def test_png_exif_chunk_with_65535_entries_is_refused_cheaply() -> None:
    head, idat, end = png_parts()
    data = head + png_chunk(b"eXIf", exif_with_entries(65_535, 1024)[: 200 * 1024]) + idat + end

    peak = refused_cheaply(lambda: normalize(data))

    assert peak < 16 * MIB


@pytest.mark.usefixtures("pillow_never_opens")
def test_oversized_png_exif_is_refused() -> None:
    head, idat, end = png_parts()
    data = head + png_chunk(b"eXIf", b"MM\x00*" + b"\x00" * MIB) + idat + end

    with pytest.raises(InvalidImage):
        normalize(data)


@pytest.mark.usefixtures("pillow_never_opens")
def test_jpeg_exif_with_too_many_entries_is_refused() -> None:
    # One APP1 segment holds at most 64 KB: ~5000 entries on a shared block.
    exif = exif_with_entries(5000, 1000)[:65_000]

    peak = refused_cheaply(lambda: normalize(jpeg_with_segments([app1_exif(exif)])))

    assert peak < 16 * MIB


@pytest.mark.usefixtures("pillow_never_opens")
def test_webp_exif_with_too_many_entries_is_refused() -> None:
    source = make_image(80, 80, "WEBP", exif_orientation=6)
    exif = exif_with_entries(5000, 1000)
    at = source.index(b"EXIF")
    length = struct.unpack_from("<I", source, at + 4)[0]
    chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif
    data = source[:at] + chunk + source[at + 8 + length + (length & 1) :]

    with pytest.raises(InvalidImage):
        normalize(data)


def test_many_exif_segments_in_a_jpeg_never_reach_pillow() -> None:
    # Pillow joins every APP1 EXIF segment into one block and parses it on open (to find the
    # resolution). They are cut out before it opens the file, and the photo is fine.
    exif = exif_bytes(1)
    data = jpeg_with_segments([app1_exif(exif + b"\x00" * 60_000)] * 300)  # 18 MB

    result = normalize(data)

    assert len(result.data) < 10_000
    assert b"Exif" not in result.data


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_is_never_parsed_by_pillow(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """(e) Pillow's getexif() parses a block of any size; the orientation is read by our own
    bounded reader instead."""

    def no_exif(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Pillow parsed EXIF")

    monkeypatch.setattr(Image.Exif, "load", no_exif)
    data = make_image(100, 70, fmt, exif_orientation=6)

    result = normalize(data)

    assert (result.width, result.height) == (70, 100)
    assert decode(for_chat(data)[0]).size == (70, 100)
    if fmt != "PNG":  # a PNG is kept as it is
        assert decode(lossless_png(data)).size == (70, 100)


# --- (c) empty chunks, segments, sub-blocks ----------------------------------------------------


@pytest.mark.parametrize("where", ["before pixels", "after pixels"])
@pytest.mark.usefixtures("pillow_never_opens")
def test_png_with_20_mb_of_empty_chunks_is_refused_cheaply(where: str) -> None:
    # 1.7 million empty chunks: Pillow spent ~4 s walking them, holding everyone's slot.
    head, idat, end = png_parts()
    filler = png_chunk(b"zzZz", b"") * (20_000_000 // 12)
    data = head + filler + idat + end if where == "before pixels" else head + idat + filler + end

    peak = refused_cheaply(lambda: normalize(data))

    assert peak < 16 * MIB  # no copy of the 20 MB file, nor of its chunks


@pytest.mark.usefixtures("pillow_never_opens")
def test_jpeg_with_20_mb_of_tiny_segments_is_refused() -> None:
    data = jpeg_with_segments([b"\xff\xfe\x00\x02"] * 5_000_000)  # empty comments

    with pytest.raises(InvalidImage):
        normalize(data)


@pytest.mark.usefixtures("pillow_never_opens")
def test_jpeg_with_20_mb_of_fill_bytes_is_refused_or_read_in_c() -> None:
    # Fill bytes (0xFF) may precede any marker; 20 MB of them are skipped by the regex engine,
    # not one by one, and then the file is plain garbage.
    data = b"\xff\xd8" + b"\xff" * 20_000_000

    peak = refused_cheaply(lambda: normalize(data))

    assert peak < 64 * MIB


@pytest.mark.usefixtures("pillow_never_opens")
def test_gif_with_a_huge_comment_is_refused() -> None:
    data = gif_with_extension_sub_blocks(80_000)  # 20 MB in 255-byte sub-blocks

    with pytest.raises(InvalidImage):
        normalize(data)


def test_gif_with_a_short_comment_is_fine() -> None:
    assert normalize(gif_with_extension_sub_blocks(4)).width == 80


@pytest.mark.usefixtures("pillow_never_opens")
def test_webp_with_too_many_chunks_is_refused() -> None:
    source = make_image(80, 80, "WEBP")
    filler = b"zzZz\x00\x00\x00\x00" * 2_000_000
    body = source[12:] + filler
    data = b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body

    with pytest.raises(InvalidImage):
        normalize(data)


@pytest.mark.usefixtures("pillow_never_opens")
def test_progressive_jpeg_with_hundreds_of_scans_is_refused() -> None:
    # libjpeg passes over the whole picture once per scan.
    source = to_bytes(Image.new("RGB", (80, 80), (200, 100, 50)), "JPEG", progressive=True)
    scan = source.index(b"\xff\xda")
    end = source.rindex(b"\xff\xd9")
    data = source[:end] + source[scan:end] * 100 + b"\xff\xd9"

    with pytest.raises(InvalidImage):
        normalize(data)


@pytest.mark.usefixtures("pillow_never_opens")
def test_large_run_length_bmp_is_refused() -> None:
    # Pillow decodes run-length BMPs in Python, byte by byte.
    data = bytearray(make_image(100, 100, "BMP"))
    struct.pack_into("<iiHHI", data, 18, 4000, 4000, 1, 8, 1)  # 16 Mpx, 8 bit, RLE8

    with pytest.raises(ImageTooLarge):
        normalize(bytes(data))


# --- (d) no global serialization ---------------------------------------------------------------


def test_a_slow_open_does_not_hold_up_other_images(monkeypatch: pytest.MonkeyPatch) -> None:
    # One thread's Image.open waits until another thread has normalized a whole image: with a
    # process-wide lock around opening (as before), the other thread would wait for it instead.
    slow, quick = make_image(90, 90, "PNG"), make_image(100, 100, "PNG")
    slow_is_open, quick_done = threading.Event(), threading.Event()
    waited: list[bool] = []
    real_open = Image.open

    def open_slowly(fp: Any, *args: Any, **kwargs: Any) -> Any:
        image = real_open(fp, *args, **kwargs)
        if image.size == (90, 90):
            slow_is_open.set()
            waited.append(quick_done.wait(timeout=20))
        return image

    monkeypatch.setattr(Image, "open", open_slowly)
    worker = threading.Thread(target=normalize, args=(slow,))
    worker.start()
    assert slow_is_open.wait(timeout=20)
    normalize(quick)
    quick_done.set()
    worker.join(timeout=30)

    assert waited == [True]


def test_no_bomb_warning_can_reach_our_calls() -> None:
    # Our pixel limit is below Pillow's warning threshold, so no per-call warnings filter
    # (process-wide state) is needed.
    assert (Image.MAX_IMAGE_PIXELS or 0) > imaging.MAX_INPUT_PIXELS
    assert not hasattr(imaging, "_WARNINGS_LOCK")


# --- other hostile and odd files ---------------------------------------------------------------


@pytest.mark.usefixtures("pillow_never_opens")
def test_header_claiming_a_bomb_is_refused_by_every_entry_point() -> None:
    data = jpeg_with_segments([], make_image(80, 80, "JPEG"))
    sof = data.index(b"\xff\xc0")
    bomb = bytearray(data)
    struct.pack_into(">HH", bomb, sof + 5, 20_000, 20_000)

    for call in (normalize, for_chat, lossless_png):
        with pytest.raises(ImageTooLarge):
            call(bytes(bomb))
    assert image_size(bytes(bomb)) == (20_000, 20_000)  # sizes are only read, never decoded


def test_mpo_extra_pictures_and_trailing_bytes_are_dropped() -> None:
    photo = Image.new("RGB", (100, 80), (200, 100, 50))
    extra = Image.new("RGB", (100, 80), (0, 0, 255))
    data = to_bytes(photo, "MPO", save_all=True, append_images=[extra]) + b"secret trailer"

    result = normalize(data)

    assert result.data.count(b"\xff\xd9") == 1
    assert b"secret trailer" not in result.data
    assert b"MPF" not in result.data


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100),
        ("AVIF", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + b"\x00" * 100),
        ("PSD", b"8BPS\x00\x01" + b"\x00" * 100),
    ],
)
def test_known_unsupported_formats_get_their_own_error(name: str, data: bytes) -> None:
    with pytest.raises(InvalidImage) as error:
        normalize(data)

    assert error.value.code == image_headers.UNSUPPORTED
    assert error.value.params == {"format": name}


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0\x00",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"RIFF\x00\x00\x00\x00WEBPVP8X",
        b"GIF89a\x10\x00",
        b"II*\x00\xff\xff\xff\x00",
        b"MM\x00*\x00\x00\x00\x08\xff\xff",
        b"BM" + b"\x00" * 12,
    ],
)
def test_truncated_headers_are_not_images(data: bytes) -> None:
    for call in (normalize, for_chat, image_size):
        with pytest.raises(InvalidImage) as error:
            call(data)
        assert error.value.code == "error_not_image"


def _all_formats() -> Iterator[tuple[str, bytes]]:
    for fmt in imaging.ACCEPTED_FORMATS:
        yield fmt, make_image(120, 90, fmt)
    picture = Image.new("RGB", (123, 45), (200, 100, 50))
    yield "WEBP", to_bytes(picture, "WEBP", lossless=True)  # VP8L
    yield "WEBP", to_bytes(picture, "WEBP", exif=exif_bytes(1))  # VP8X
    yield "JPEG", to_bytes(picture, "JPEG", progressive=True)
    yield "JPEG", to_bytes(picture, "JPEG", restart_marker_blocks=1)
    yield "PNG", make_animated(frames=2, size=(123, 45), fmt="PNG")
    yield "TIFF", to_bytes(picture, "TIFF", compression="tiff_lzw")
    yield "BMP", to_bytes(picture.convert("P"), "BMP")


@pytest.mark.parametrize(("fmt", "data"), list(_all_formats()))
def test_header_sizes_agree_with_pillow(fmt: str, data: bytes) -> None:
    header = image_headers.read_header(data, None)

    assert header.format == fmt
    assert (header.width, header.height) == Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("fmt", imaging.ACCEPTED_FORMATS)
def test_cut_or_corrupted_headers_only_ever_raise_our_errors(fmt: str) -> None:
    # The header walks index into the bytes everywhere: a file cut short or with a wrong field
    # must come out as "not an image" (or too large / small), never as an IndexError or a crash.
    if fmt in ("GIF", "PNG", "WEBP", "TIFF"):
        source = make_animated(frames=2, size=(80, 60), fmt=fmt)
    else:
        source = make_image(80, 60, fmt, exif_orientation=6 if fmt == "JPEG" else None)
    rng = random.Random(fmt)
    variants = [source[:cut] for cut in range(0, min(len(source), 400), 7)]
    for _ in range(200):
        broken = bytearray(source)
        broken[rng.randrange(min(len(source), 300))] = rng.randrange(256)
        variants.append(bytes(broken))
    for data in variants:
        for call in (normalize, for_chat, image_size):
            with contextlib.suppress(StepEditError):
                call(data)
