"""Read what an image file claims (format, size, frames, orientation) from its bytes, before any
decoder sees them, and refuse what no honest photo looks like.

Pillow's parsers do work in Python per chunk, segment, sub-block or directory entry, and copy
data per entry: a small crafted file can cost seconds of CPU and gigabytes (65,535 TIFF entries
pointing at one block; millions of empty PNG chunks; a GIF comment of 80,000 sub-blocks, which
Pillow joins with `+=`). So every walk here is capped by counts and sizes that honest files stay
far below, each step is O(1), and EXIF is never given to Pillow: the orientation is read here
from the first directory only. For JPEG the result also carries a cleaned stream: only what
decoding needs (tables, frame, scans; no EXIF, XMP, MPF, comments or trailing pictures), which
is what Pillow opens and what an upright photo sends to the API as it is.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass

from bot.errors import ImageTooLarge, InvalidImage

# Honest files stay far below these; hostile ones are refused after bounded work.
MAX_JPEG_SEGMENTS = 512  # marker segments (a camera JPEG has ~20)
# libjpeg passes over the whole picture once per scan: progressive encoders write about 10.
MAX_JPEG_SCANS = 64
MAX_EXIF_BYTES = 256 * 1024  # a JPEG's EXIF fits one 64 KB segment
MAX_IFD_ENTRIES = 1024  # tags in one TIFF/EXIF directory (cameras write ~10-60)
MAX_ICC_BYTES = 4 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024 * 1024  # PNG/WebP chunks other than pixels, TIFF tag values
MAX_GIF_EXTENSION_BYTES = 64 * 1024  # before the first frame (Pillow joins comments with +=)
MAX_TIFF_STRIPS = 65_536  # Pillow builds a Python tuple per strip or tile
MAX_BMP_RLE_PIXELS = 1_000_000
UNSUPPORTED = "error_unsupported_format"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Any marker in a JPEG's entropy-coded data: 0xFF not followed by a stuffed 0, a restart marker
# or a fill byte. The regex engine finds them without a Python loop over every 0xFF.
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_FILL = re.compile(rb"\xff+")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_DECODING = frozenset({0xC4, 0xCC, 0xDB, 0xDD})  # DHT, DAC, DQT, DRI
_ORIENTATION_TAG = 0x0112
# Recognised but not decoded: files users may send, who deserve "send JPEG/PNG/WebP".
_OTHER_FORMATS = (
    (re.compile(rb"^....ftyp(heic|heix|heim|heis|hevc|hevx|mif1|msf1)", re.S), "HEIC"),
    (re.compile(rb"^....ftyp(avif|avis)", re.S), "AVIF"),
    (re.compile(rb"^(\xff\x0a|\x00\x00\x00\x0cJXL \r\n\x87\n)"), "JPEG XL"),
    (re.compile(rb"^8BPS"), "PSD"),
)


@dataclass(frozen=True)
class Header:
    """What a file claims, checked; `data` is what the decoder may open."""

    format: str  # Pillow's name: "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"
    width: int
    height: int
    data: bytes
    animated: bool = False  # more than one frame or page
    orientation: int = 1  # EXIF orientation, 1-8
    icc: bytes | None = None  # JPEG only: the colour profile, left out of `data`
    plain_jpeg: bool = False  # baseline 8-bit YCbCr: fine for the edit API as it is
    # PNG: (start, end) of each of its consecutive pixel (IDAT) chunks, when there are several
    pixel_chunks: tuple[tuple[int, int], ...] = ()


def read_header(data: bytes, max_pixels: int | None) -> Header:
    """Identify and check `data`. Raises InvalidImage (not an image, or no honest one),
    InvalidImage with code "error_unsupported_format" (an image format we do not decode) or
    ImageTooLarge (more than `max_pixels` pixels)."""
    try:
        header = _read(data)
    except (IndexError, ValueError, struct.error) as exc:  # a field cut short by the file's end
        raise InvalidImage(f"broken header: {type(exc).__name__}: {exc}") from exc
    if header.width <= 0 or header.height <= 0:
        raise InvalidImage(f"bad size {header.width}x{header.height}")
    if max_pixels is not None and header.width * header.height > max_pixels:
        raise ImageTooLarge(
            f"{header.width}x{header.height} > {max_pixels} pixels",
            max_pixels=max_pixels,
            width=header.width,
            height=header.height,
        )
    return header


def _read(data: bytes) -> Header:
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    if data[:2] == b"BM":
        return _bmp(data)
    for pattern, name in _OTHER_FORMATS:
        if pattern.match(data):
            raise InvalidImage(f"unsupported format {name}", code=UNSUPPORTED, format=name)
    raise InvalidImage("not a known image format")


def _u16be(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _need(data: bytes, end: int, what: str) -> None:
    if end > len(data):
        raise InvalidImage(f"truncated {what}")


# --- EXIF ----------------------------------------------------------------------------------------


def exif_orientation(exif: bytes) -> int:
    """The orientation (1-8) in an EXIF block (a TIFF header, maybe after "Exif\\0\\0"); 1 when
    absent or unreadable. Only the first directory is read; one with more entries than any
    camera writes is refused."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    if len(exif) > MAX_EXIF_BYTES:
        raise InvalidImage(f"EXIF of {len(exif)} bytes")
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None or len(exif) < 8:
        return 1
    magic, offset = struct.unpack_from(order + "HI", exif, 2)
    if magic != 42 or offset + 2 > len(exif):
        return 1
    (count,) = struct.unpack_from(order + "H", exif, offset)
    if count > MAX_IFD_ENTRIES:
        raise InvalidImage(f"EXIF directory of {count} entries")
    for start in range(offset + 2, min(offset + 2 + 12 * count, len(exif) - 11), 12):
        tag, kind = struct.unpack_from(order + "HH", exif, start)
        if tag == _ORIENTATION_TAG and kind == 3:  # SHORT
            (value,) = struct.unpack_from(order + "H", exif, start + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _exif_chunk(data: bytes, start: int, length: int) -> bytes:
    """A chunk's EXIF bytes, refused by their size before they are copied."""
    if length > MAX_EXIF_BYTES + 6:
        raise InvalidImage(f"EXIF of {length} bytes")
    return data[start : start + length]


# --- JPEG ----------------------------------------------------------------------------------------


def _jpeg(data: bytes) -> Header:
    """Walk the segments up to the first scan, keep what decoding needs, then find the end of the
    picture (what follows it, e.g. an MPO's depth map, is dropped)."""
    kept: list[bytes | memoryview] = [b"\xff\xd8"]
    icc: list[bytes] = []
    orientation, frame, adobe, exif_seen, pos = 1, b"", False, False, 2
    for _ in range(MAX_JPEG_SEGMENTS):
        fill = _FILL.match(data, pos)  # a marker is 0xFF, maybe repeated, then its code
        if fill is None:
            raise InvalidImage("broken JPEG segment")
        pos = fill.end() - 1
        _need(data, pos + 4, "JPEG")
        marker, end = data[pos + 1], pos + 2 + _u16be(data, pos + 2)
        if end < pos + 4:
            raise InvalidImage("broken JPEG segment")
        _need(data, end, "JPEG")
        body = data[pos + 4 : end]
        if marker == 0xDA:  # start of scan: the pixels follow
            kept.append(_jpeg_scans(data, pos))
            return _jpeg_header(b"".join(kept), frame, orientation, _icc(icc), adobe)
        if marker in _SOF_MARKERS:
            if frame:
                raise InvalidImage("two JPEG frame headers")
            frame = bytes([marker]) + body
        # Adobe's segment says whether 3 channels are RGB or YCbCr, and inverts CMYK.
        adobe = adobe or (marker == 0xEE and body.startswith(b"Adobe"))
        if marker in _JPEG_DECODING or marker in _SOF_MARKERS or marker == 0xEE:
            kept.append(data[pos:end])
        elif marker == 0xE1 and body.startswith(b"Exif\x00\x00") and not exif_seen:
            orientation, exif_seen = exif_orientation(body), True  # the first block counts
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE\x00"):
            icc.append(body)
        pos = end
    raise InvalidImage(f"over {MAX_JPEG_SEGMENTS} JPEG segments")


def _jpeg_scans(data: bytes, pos: int) -> memoryview:
    """data[pos:] from the first scan header to the end-of-image marker. Markers between scans
    (progressive JPEGs) are skipped by their length, so a table's bytes are never taken for
    one."""
    start = pos
    for _ in range(MAX_JPEG_SCANS):
        _need(data, pos + 4, "JPEG")
        pos += 2 + _u16be(data, pos + 2)  # past this segment's header
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            raise InvalidImage("JPEG without an end")
        pos = found.start()
        if data[pos + 1] == 0xD9:
            return memoryview(data)[start : pos + 2]  # joined without a copy of its own
    raise InvalidImage(f"over {MAX_JPEG_SCANS} JPEG scans and tables")


def _icc(segments: list[bytes]) -> bytes | None:
    """The profile from its APP2 pieces (ordered by their sequence numbers)."""
    if not segments:
        return None
    if sum(len(s) for s in segments) > MAX_ICC_BYTES:
        raise InvalidImage("oversized ICC profile")
    return b"".join(s[14:] for s in sorted(segments, key=lambda s: s[12]))


def _jpeg_header(
    clean: bytes, frame: bytes, orientation: int, icc: bytes | None, adobe: bool
) -> Header:
    if len(frame) < 7:
        raise InvalidImage("JPEG without a frame header")
    marker, precision = frame[0], frame[1]
    height, width, components = _u16be(frame, 2), _u16be(frame, 4), frame[6]
    ids = bytes(frame[7 + 3 * i] for i in range(components) if 7 + 3 * i < len(frame))
    plain = (
        marker in (0xC0, 0xC1)  # baseline or extended sequential Huffman: decoded everywhere
        and precision == 8
        and components == 3
        and ids != b"RGB"  # component ids that mean RGB rather than YCbCr
        and not adobe  # its colour transform may mean RGB too
    )
    return Header("JPEG", width, height, clean, False, orientation, icc, plain)


# --- PNG -----------------------------------------------------------------------------------------


def _png(data: bytes) -> Header:
    """Walk the chunks: bounded count (Pillow spends Python time on each) and metadata size;
    note where the pixel chunks are, for bot.imaging to show them to Pillow as one."""
    max_chunks = 1024 + len(data) // 2048  # honest encoders write pixel chunks of 8 KB or more
    pos, chunks, metadata, frames = 8, 0, 0, 1
    width = height = 0
    orientation = 1
    idats: list[tuple[int, int]] = []  # (start, end) of each IDAT chunk
    while pos + 12 <= len(data):
        length, tag = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        _need(data, end, "PNG chunk")
        chunks += 1
        if chunks > max_chunks:
            raise InvalidImage(f"over {max_chunks} PNG chunks")
        if tag == b"IDAT":
            idats.append((pos, end))
        if tag == b"IHDR" and length >= 8:
            width, height = struct.unpack_from(">II", data, pos + 8)
        elif tag == b"acTL" and length >= 8:
            (frames,) = struct.unpack_from(">I", data, pos + 8)
        elif tag == b"eXIf":
            orientation = exif_orientation(_exif_chunk(data, pos + 8, length))
        elif tag == b"IEND":
            break
        if tag not in (b"IDAT", b"fdAT"):
            metadata += length
            if metadata > MAX_METADATA_BYTES:
                raise InvalidImage("oversized PNG metadata")
        pos = end
    if width == 0:
        raise InvalidImage("PNG without a header")
    consecutive = all(end == start for (_, end), (start, _) in itertools.pairwise(idats))
    pixels = tuple(idats) if len(idats) > 1 and consecutive and frames == 1 else ()
    return Header("PNG", width, height, data, frames > 1, orientation, pixel_chunks=pixels)


# --- WebP ----------------------------------------------------------------------------------------


def _webp(data: bytes) -> Header:
    max_chunks = 1024 + len(data) // 2048
    pos, chunks, frames, metadata = 12, 0, 0, 0
    width = height = 0
    orientation = 1
    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + min(length, 16)]  # enough for any size field
        chunks += 1
        if chunks > max_chunks:
            raise InvalidImage(f"over {max_chunks} WebP chunks")
        if tag == b"VP8X" and length >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif tag == b"VP8 " and not width and len(body) >= 10:
            width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", body, 6))
        elif tag == b"VP8L" and not width and len(body) >= 5:
            bits = int.from_bytes(body[1:5], "little")
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif tag == b"ANMF":
            frames += 1
        elif tag == b"EXIF":
            orientation = exif_orientation(_exif_chunk(data, pos + 8, length))
        if tag not in (b"ANMF", b"VP8 ", b"VP8L", b"ALPH"):
            metadata += length
            if metadata > MAX_METADATA_BYTES:
                raise InvalidImage("oversized WebP metadata")
        pos += 8 + length + (length & 1)  # chunks are padded to an even size
    return Header("WEBP", width, height, data, frames > 1, orientation)


# --- GIF -----------------------------------------------------------------------------------------


def _gif(data: bytes) -> Header:
    """The screen and first frame's size, and whether a second frame follows. Extensions before
    the first frame are capped in size (Pillow reads them on open); after it Pillow never looks.
    """
    _need(data, 13, "GIF")
    width, height = struct.unpack_from("<HH", data, 6)
    walk = _GifWalk(data, 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0))
    frame = walk.next_frame(MAX_GIF_EXTENSION_BYTES)
    if frame is None:
        raise InvalidImage("GIF without a frame")
    left, top, frame_width, frame_height = frame
    # Pillow grows the canvas to hold a first frame that overflows the screen.
    width, height = max(width, left + frame_width), max(height, top + frame_height)
    animated = walk.next_frame(len(data)) is not None
    return Header("GIF", width, height, data, animated)


class _GifWalk:
    """Blocks of a GIF, one sub-block (a length byte, then that many bytes) per step. Encoders
    fill sub-blocks (255 bytes), so the steps allowed are about the file's size / 200: a file
    cut into tiny sub-blocks is refused before it costs much."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos
        self.steps_left = 1024 + len(data) // 200

    def next_frame(self, max_extension_bytes: int) -> tuple[int, int, int, int] | None:
        """Skip extensions up to the next frame and past its pixels; return its (left, top,
        width, height), or None at the end."""
        data, extension_bytes = self.data, 0
        while self.pos < len(data):
            kind = data[self.pos]
            if kind == 0x21:  # extension: a label, then sub-blocks
                self.pos += 2
                extension_bytes += self._sub_blocks(max_extension_bytes - extension_bytes)
            elif kind == 0x2C:  # image descriptor, local palette, LZW code size, sub-blocks
                _need(data, self.pos + 10, "GIF frame")
                frame = struct.unpack_from("<HHHH", data, self.pos + 1)
                flags = data[self.pos + 9]
                self.pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
                self._sub_blocks(len(data))
                return frame
            else:  # 0x3B: the trailer (anything else ends it too, as decoders do)
                break
        return None

    def _sub_blocks(self, max_bytes: int) -> int:
        data, size = self.data, 0
        while self.pos < len(data) and data[self.pos]:
            size += data[self.pos]
            self.pos += 1 + data[self.pos]
            self.steps_left -= 1
            if size > max_bytes or self.steps_left < 0:
                raise InvalidImage("GIF of oversized extensions or tiny sub-blocks")
        self.pos += 1
        return size


# --- TIFF ----------------------------------------------------------------------------------------

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TIFF_STRIP_TAGS = frozenset({273, 279, 324, 325})  # strip and tile offsets and byte counts


def _tiff(data: bytes) -> Header:
    """Check the first directory the way Pillow will read it: it copies every value stored
    outside the entry, so their sum is capped, as are the entries and strips."""
    order = "<" if data[:2] == b"II" else ">"
    _need(data, 8, "TIFF")
    (offset,) = struct.unpack_from(order + "I", data, 4)
    _need(data, offset + 2, "TIFF directory")
    (count,) = struct.unpack_from(order + "H", data, offset)
    if count > MAX_IFD_ENTRIES:
        raise InvalidImage(f"TIFF directory of {count} entries")
    _need(data, offset + 2 + 12 * count + 4, "TIFF directory")
    values: dict[int, int] = {}
    outside = 0
    for start in range(offset + 2, offset + 2 + 12 * count, 12):
        tag, kind, n = struct.unpack_from(order + "HHI", data, start)
        size = _TIFF_TYPE_SIZES.get(kind, 1) * n
        if size > 4:
            outside += size
        if tag in _TIFF_STRIP_TAGS and n > MAX_TIFF_STRIPS:
            raise InvalidImage(f"TIFF of {n} strips")
        if kind in (3, 4) and n == 1:
            fmt = order + ("H" if kind == 3 else "I")
            values[tag] = struct.unpack_from(fmt, data, start + 8)[0]
    if outside > MAX_METADATA_BYTES:
        raise InvalidImage(f"TIFF tag values of {outside} bytes")
    (following,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * count)
    orientation = values.get(_ORIENTATION_TAG, 1)
    return Header(
        "TIFF",
        values.get(256, 0),
        values.get(257, 0),
        data,
        following != 0,
        orientation if 1 <= orientation <= 8 else 1,
    )


# --- BMP -----------------------------------------------------------------------------------------


def _bmp(data: bytes) -> Header:
    """Only the common Windows header (40 bytes or more); the height is negative for top-down
    rows."""
    _need(data, 26, "BMP")
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size < 40:
        raise InvalidImage("old BMP header")
    width, height = struct.unpack_from("<ii", data, 18)
    (compression,) = struct.unpack_from("<I", data, 30) if len(data) >= 34 else (0,)
    if compression in (1, 2) and width * abs(height) > MAX_BMP_RLE_PIXELS:
        # Pillow decodes run-length BMPs in Python, byte by byte.
        raise ImageTooLarge(
            f"run-length BMP of {width}x{abs(height)}", max_pixels=MAX_BMP_RLE_PIXELS
        )
    return Header("BMP", width, abs(height), data)
