"""What a user notices about photo handling: what is accepted, how it looks, what is refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms, ImageFile

from bot import imaging
from bot.errors import ImageTooLarge, ImageTooSmall, InvalidImage
from bot.image_headers import read_header
from bot.imaging import (
    NOTE_DOWNSCALED,
    NOTE_FIRST_FRAME,
    for_chat,
    image_size,
    lossless_png,
    normalize,
)
from bot.texts import error_text
from tests.images import (
    decode,
    make_animated,
    make_animated_gif,
    make_bomb,
    make_image,
    make_noise,
    png_in_chunks,
    to_bytes,
)

ORANGE = (200, 100, 50)
RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def close(actual: object, expected: tuple[int, ...], tolerance: int = 8) -> bool:
    """Pixel colours after lossy (JPEG) encoding are near, not equal."""
    assert isinstance(actual, tuple)
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_jpeg(result: imaging.NormalizedImage) -> Image.Image:
    assert result.mime == "image/jpeg"
    assert result.filename == "image.jpg"
    image = decode(result.data)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (result.width, result.height)
    return image


# --- normalize: accepted formats -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_format_becomes_a_same_size_jpeg(fmt: str) -> None:
    result = normalize(make_image(120, 90, fmt, color=ORANGE))

    image = assert_jpeg(result)
    assert image.size == (120, 90)
    assert close(image.getpixel((60, 45)), ORANGE, tolerance=12)  # GIF/WebP quantize a bit
    assert result.notes == ()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_animated_or_multi_page_uses_the_first_frame(fmt: str) -> None:
    result = normalize(make_animated(frames=3, size=(96, 72), fmt=fmt))

    image = assert_jpeg(result)
    assert image.size == (96, 72)
    assert close(image.getpixel((48, 36)), RED)
    assert result.notes == (NOTE_FIRST_FRAME,)


def _idats(data: bytes) -> list[bytes]:
    """The IDAT chunks of a PNG (length, tag, body and CRC each), in order."""
    found, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            found.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return found


def test_a_png_in_many_pixel_chunks_is_decoded_as_one() -> None:
    original = make_noise(300, 200)  # incompressible: 180 KB of pixel data
    chunked = png_in_chunks(original, size=8192)
    header = read_header(chunked, None)
    assert len(header.pixel_chunks) == len(_idats(chunked)) > 20
    with imaging._open(header) as opened:
        assert isinstance(opened.fp, io.BufferedReader)  # read through the one-chunk view
        opened.load()
        assert opened.tobytes() == decode(original).tobytes()
    assert decode(normalize(chunked).data).size == (300, 200)
    sent, _ = for_chat(chunked)
    assert decode(sent).size == (300, 200)


def test_an_animated_png_or_one_in_one_chunk_is_read_as_it_is() -> None:
    assert read_header(make_animated(frames=3, size=(96, 72), fmt="PNG"), None).pixel_chunks == ()
    assert read_header(png_in_chunks(make_noise(64, 48), size=1 << 20), None).pixel_chunks == ()


def test_animated_gif_helper_default_is_accepted() -> None:
    assert normalize(make_animated_gif()).notes == (NOTE_FIRST_FRAME,)


def test_camera_mpo_is_one_photo_not_an_animation() -> None:
    # Cameras and phones store extra pictures (e.g. a depth map) after the photo: MPO.
    photo = Image.new("RGB", (100, 80), ORANGE)
    extra = Image.new("RGB", (100, 80), BLUE)
    data = to_bytes(photo, "MPO", save_all=True, append_images=[extra])

    result = normalize(data)

    assert close(assert_jpeg(result).getpixel((50, 40)), ORANGE)
    assert result.notes == ()


# --- normalize: how it looks -----------------------------------------------------------------


def test_exif_orientation_is_applied_and_exif_dropped() -> None:
    # Stored sideways: left half red, right half blue; orientation 6 = "rotate 90° clockwise".
    stored = Image.new("RGB", (128, 64), RED)
    stored.paste(BLUE, (64, 0, 128, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = to_bytes(stored, "JPEG", quality=95, exif=exif.tobytes())

    result = normalize(data)

    image = assert_jpeg(result)
    assert image.size == (64, 128)
    assert close(image.getpixel((32, 10)), RED, tolerance=20)  # the left side is now on top
    assert close(image.getpixel((32, 118)), BLUE, tolerance=20)
    assert "exif" not in image.info
    assert len(image.getexif()) == 0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_from_any_format(fmt: str) -> None:
    result = normalize(make_image(100, 70, fmt, exif_orientation=8))

    assert (result.width, result.height) == (70, 100)


def test_other_metadata_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Secret Camera Maker"  # Make
    exif[0x8825] = {2: (1.0, 2.0, 3.0)}  # GPSInfo: latitude
    data = to_bytes(Image.new("RGB", (80, 80), ORANGE), "JPEG", exif=exif.tobytes())

    result = normalize(data)

    assert b"Secret Camera Maker" not in result.data
    assert len(decode(result.data).getexif()) == 0


def _half_transparent(mode: str) -> bytes:
    image = Image.new("RGBA", (80, 80), (0, 0, 0, 0))  # transparent black on the left
    image.paste((0, 160, 0, 255), (40, 0, 80, 80))  # opaque green on the right
    if mode == "P":
        return to_bytes(image.convert("P"), "PNG")  # palette with a transparent entry
    if mode == "LA":
        return to_bytes(image.convert("LA"), "PNG")
    return to_bytes(image, "WEBP" if mode == "RGBA/WEBP" else "PNG", lossless=True)


@pytest.mark.parametrize("mode", ["RGBA", "RGBA/WEBP", "LA", "P"])
def test_transparency_becomes_white(mode: str) -> None:
    image = assert_jpeg(normalize(_half_transparent(mode)))

    assert close(image.getpixel((10, 40)), WHITE)
    right = image.getpixel((70, 40))
    assert not close(right, WHITE, tolerance=40)  # the opaque half keeps its colour


def test_transparent_gif_becomes_white() -> None:
    image = Image.new("P", (80, 80), 0)
    image.putpalette([0, 0, 0, 0, 160, 0] + [0] * 762)
    image.paste(1, (40, 0, 80, 80))
    data = to_bytes(image, "GIF", transparency=0)

    result = assert_jpeg(normalize(data))

    assert close(result.getpixel((10, 40)), WHITE)
    assert close(result.getpixel((70, 40)), (0, 160, 0))


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    color = WHITE if mode == "1" else ORANGE
    image = assert_jpeg(normalize(make_image(80, 80, fmt, color=color, mode=mode)))

    expected = Image.new("RGB", (1, 1), color).convert(mode).convert("RGB").getpixel((0, 0))
    assert isinstance(expected, tuple)
    assert close(image.getpixel((40, 40)), expected, tolerance=12)


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = assert_jpeg(normalize(make_image(80, 80, "JPEG", color=ORANGE, mode="CMYK")))

    assert close(image.getpixel((40, 40)), ORANGE, tolerance=12)


def test_16_bit_grey_keeps_its_brightness() -> None:
    # A plain convert() would clip 16-bit values to white; 40000/65535 is about 156/255.
    data = to_bytes(Image.new("I;16", (80, 80), 40000), "PNG")

    image = assert_jpeg(normalize(data))

    assert close(image.getpixel((40, 40)), (156, 156, 156), tolerance=3)


def test_srgb_profile_keeps_colours() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = to_bytes(Image.new("RGB", (80, 80), ORANGE), "JPEG", quality=95, icc_profile=srgb)

    image = assert_jpeg(normalize(data))

    assert close(image.getpixel((40, 40)), ORANGE)
    assert "icc_profile" not in image.info


# --- normalize: size -------------------------------------------------------------------------


def test_large_photo_is_downscaled_keeping_aspect() -> None:
    result = normalize(make_image(6000, 4000, "JPEG"))

    image = assert_jpeg(result)
    assert image.size == (4096, 2731)
    assert result.notes == (NOTE_DOWNSCALED,)
    assert close(image.getpixel((2000, 1300)), ORANGE)


def test_large_portrait_png_is_downscaled_keeping_aspect() -> None:
    result = normalize(make_image(1000, 2500, "PNG"), max_side=1024)

    assert (result.width, result.height) == (410, 1024)
    assert abs(result.width / result.height - 1000 / 2500) < 1 / 1024
    assert result.notes == (NOTE_DOWNSCALED,)


@pytest.mark.parametrize("max_side", [1000, 512])
def test_big_reduction_of_a_jpeg_is_exact(max_side: int) -> None:
    # Decoded at a fraction of the size (JPEG draft), then resized precisely.
    result = normalize(make_image(6000, 4000, "JPEG", exif_orientation=6), max_side=max_side)

    image = assert_jpeg(result)
    assert image.size == (round(max_side * 4000 / 6000), max_side)  # rotated to portrait
    assert result.notes == (NOTE_DOWNSCALED,)
    assert close(image.getpixel((image.width // 2, image.height // 2)), ORANGE)


def test_small_images_are_not_upscaled() -> None:
    result = normalize(make_image(64, 300, "PNG"))

    assert (result.width, result.height) == (64, 300)
    assert result.notes == ()


def test_animated_and_downscaled_notes_together() -> None:
    result = normalize(make_animated(frames=2, size=(600, 300)), max_side=300)

    assert (result.width, result.height) == (300, 150)
    assert result.notes == (NOTE_FIRST_FRAME, NOTE_DOWNSCALED)


def test_output_is_kept_under_the_upload_limit() -> None:
    # Noise is the worst case for JPEG size; quality is lowered until it fits.
    data = make_noise(400, 400, "BMP")
    limit = 100_000
    assert len(imaging._encode(decode(data), 95)) > limit

    result = normalize(data, max_output_bytes=limit)

    assert len(result.data) <= limit
    assert (result.width, result.height) == (400, 400)


# --- normalize: refused ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [(30_000, 30_000), (10_000, 10_000)])
def test_decompression_bomb_is_refused(size: tuple[int, int]) -> None:
    # 30000x30000 trips Pillow's own bomb error; 10000x10000 only its warning, which must not
    # escape (pytest turns warnings into errors here) and is refused by our own limit.
    bomb = make_bomb(*size)
    assert len(bomb) < 1_000_000

    with pytest.raises(ImageTooLarge):
        normalize(bomb)


@pytest.mark.parametrize(
    ("fmt", "size"), [("PNG", (6000, 4001)), ("WEBP", (4097, 4096)), ("GIF", (4097, 4096))]
)
def test_formats_decoded_in_full_have_a_lower_pixel_cap(fmt: str, size: tuple[int, int]) -> None:
    # Only JPEG decodes at a reduced scale; the others would cost several bytes per pixel.
    with pytest.raises(ImageTooLarge):
        normalize(make_image(*size, fmt))


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge) as error:
        normalize(make_image(300, 300, "PNG"), max_input_pixels=300 * 300 - 1)

    assert error.value.params["max_pixels"] == 300 * 300 - 1


def test_too_many_bytes_is_refused() -> None:
    data = make_image(100, 100, "PNG")

    with pytest.raises(ImageTooLarge):
        normalize(data, max_input_bytes=len(data) - 1)


def test_bomb_frame_inside_a_small_gif_is_never_decoded() -> None:
    # The logical screen is small, but the second frame claims 30000x30000: only the first
    # frame is ever decoded, so the upload works.
    data = bytearray(make_animated_gif(frames=2, size=(96, 72)))
    second = data.index(b"\x2c", data.index(b"\x2c") + 1)  # the second image descriptor
    data[second + 5 : second + 9] = (30_000).to_bytes(2, "little") * 2
    with pytest.raises(Image.DecompressionBombError):  # what a naive decoder would hit
        Image.open(io.BytesIO(data)).seek(1)

    result = normalize(bytes(data))

    assert (result.width, result.height) == (96, 72)
    assert result.notes == (NOTE_FIRST_FRAME,)


def _not_images() -> dict[str, bytes]:
    noisy_jpeg = make_noise(200, 200, "JPEG")
    return {
        "empty": b"",
        "random": bytes(range(256)) * 8,
        "text": b"Hello! This is not a photo, it is a text file.\n" * 10,
        "truncated jpeg": noisy_jpeg[: len(noisy_jpeg) // 2],
        "jpeg header only": noisy_jpeg[:200],
        "png signature only": b"\x89PNG\r\n\x1a\n",
        "unsupported ppm": make_image(100, 100, "PPM"),
        "unsupported ico": make_image(100, 100, "ICO"),
    }


@pytest.mark.parametrize("name", list(_not_images()))
def test_not_an_image_is_refused(name: str) -> None:
    with pytest.raises(InvalidImage) as error:
        normalize(_not_images()[name])

    assert type(error.value) is InvalidImage
    assert error.value.code == "error_not_image"


@pytest.mark.parametrize("size", [(10, 10), (63, 500), (500, 63)])
def test_too_small_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ImageTooSmall) as error:
        normalize(make_image(*size, "PNG"))

    assert error.value.params["min_side"] == 64


def test_too_thin_to_fit_is_refused() -> None:
    # 8200x100 fits 4096 wide only as 4096x50: below the API's minimum side.
    with pytest.raises(ImageTooSmall) as error:
        normalize(make_image(8200, 100, "PNG"))

    assert error.value.params["min_side"] == 64
    assert "too long and narrow" in error_text(error.value)


# --- for_chat --------------------------------------------------------------------------------


def test_for_chat_fits_telegram_side_sum() -> None:
    data, mime = for_chat(make_image(9000, 2000, "PNG"))

    image = decode(data)
    assert mime == "image/jpeg"
    assert image.format == "JPEG"
    assert image.width + image.height <= 10_000
    assert len(data) <= 10_000_000
    assert abs(image.width / image.height - 4.5) < 0.01
    assert close(image.getpixel((100, 100)), ORANGE)


def test_for_chat_fits_a_small_byte_limit() -> None:
    data, mime = for_chat(make_noise(2000, 2000, "BMP"), max_bytes=50_000)

    image = decode(data)
    assert mime == "image/jpeg"
    assert image.format == "JPEG"
    assert len(data) <= 50_000
    assert image.width == image.height
    assert image.width >= 100  # still a picture, not a thumbnail


def test_for_chat_lowers_quality_before_shrinking() -> None:
    source = make_noise(300, 300, "BMP")
    best = len(imaging._encode(decode(source), 92))

    data, _ = for_chat(source, max_bytes=best - 1)

    assert decode(data).size == (300, 300)


def test_for_chat_passes_a_fitting_jpeg_through() -> None:
    source = make_image(800, 600, "JPEG")

    assert for_chat(source) == (source, "image/jpeg")


def test_for_chat_flattens_orients_and_takes_the_first_frame() -> None:
    assert close(decode(for_chat(_half_transparent("RGBA"))[0]).getpixel((10, 40)), WHITE)
    assert decode(for_chat(make_image(100, 70, "JPEG", exif_orientation=6))[0]).size == (70, 100)
    assert close(decode(for_chat(make_animated_gif())[0]).getpixel((10, 10)), RED)


def test_for_chat_refuses_garbage() -> None:
    with pytest.raises(InvalidImage):
        for_chat(b"not an image")


# --- full_quality ----------------------------------------------------------------------------


def test_full_quality_is_a_png_or_a_jpeg_as_it_is_and_anything_else_a_lossless_png() -> None:
    jpeg, png, webp = (
        make_noise(60, 40, "JPEG"),
        make_image(60, 40, "PNG"),
        make_noise(60, 40, "WEBP"),
    )
    assert imaging.full_quality(jpeg) == (jpeg, imaging.JPEG_MIME)  # not decoded
    assert imaging.full_quality(png) == (png, imaging.PNG_MIME)
    data, mime = imaging.full_quality(webp)
    assert mime == imaging.PNG_MIME and decode(data).tobytes() == decode(webp).tobytes()
    assert [imaging.full_quality_mime(x) for x in (jpeg, png, webp)] == [
        imaging.JPEG_MIME, imaging.PNG_MIME, imaging.PNG_MIME,
    ]  # fmt: skip


# --- lossless_png ----------------------------------------------------------------------------


def test_lossless_png_keeps_every_pixel_of_a_jpeg() -> None:
    source = make_noise(120, 80, "JPEG")

    png = decode(lossless_png(source))

    assert png.format == "PNG"
    assert png.tobytes() == decode(source).convert("RGB").tobytes()


def test_lossless_png_keeps_alpha() -> None:
    source = _half_transparent("RGBA/WEBP")

    png = decode(lossless_png(source))

    assert png.format == "PNG"
    assert png.mode == "RGBA"
    assert png.tobytes() == decode(source).tobytes()


def test_lossless_png_returns_a_png_as_is() -> None:
    source = make_image(100, 80, "PNG")

    assert lossless_png(source) == source


def test_lossless_png_orients_upright() -> None:
    assert decode(lossless_png(make_image(100, 70, "JPEG", exif_orientation=6))).size == (70, 100)


def test_lossless_png_converts_cmyk() -> None:
    png = decode(lossless_png(make_image(80, 80, "JPEG", mode="CMYK")))

    assert png.mode == "RGB"
    assert close(png.getpixel((40, 40)), ORANGE, tolerance=12)


def test_lossless_png_refuses_garbage() -> None:
    with pytest.raises(InvalidImage):
        lossless_png(b"GIF89a broken")


# --- image_size ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_image_size_reads_the_header(fmt: str) -> None:
    assert image_size(make_image(123, 45, fmt)) == (123, 45)


def test_image_size_of_a_huge_header_without_decoding() -> None:
    assert image_size(make_bomb(10_000, 10_000)) == (10_000, 10_000)


@pytest.mark.parametrize("data", [b"", b"hello", b"\xff\xd8\xff"])
def test_image_size_refuses_garbage(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        image_size(data)


def test_for_chat_refuses_an_impossible_byte_limit() -> None:
    with pytest.raises(ImageTooLarge):
        for_chat(make_image(200, 100, "PNG"), max_bytes=100)  # a JPEG header alone is bigger


@pytest.mark.parametrize("size", [(12_000, 12_000), (30_000, 30_000)])
def test_bombs_are_refused_without_decoding_a_pixel(
    size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(self: object) -> None:
        raise AssertionError("pixels were decoded before the size check")

    bomb = make_bomb(*size)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge):
        normalize(bomb)


# --- sent as it is, reduced decoding, platform limits -------------------------------------------


def test_upright_baseline_jpeg_goes_to_the_api_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Secret Camera Maker"
    exif[0x0112] = 1  # upright
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>secret place</x:xmpmeta>"
    noise = decode(make_noise(200, 150, "BMP"))
    photo = to_bytes(noise, "JPEG", quality=90, exif=exif.tobytes(), comment=b"secret")
    data = photo[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + photo[2:]

    def no_decoding(self: object) -> None:
        raise AssertionError("an upright JPEG that fits was decoded")

    expected = decode(data).tobytes()
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    result = normalize(data)
    monkeypatch.undo()

    assert (result.width, result.height, result.notes) == (200, 150, ())
    assert b"secret" not in result.data.lower()
    assert b"Exif" not in result.data
    assert decode(result.data).tobytes() == expected  # the very same pixels, not re-encoded


@pytest.mark.parametrize("params", [{"restart_marker_blocks": 1}, {"subsampling": 0}])
def test_jpeg_variants_sent_as_they_are_keep_their_pixels(params: dict[str, int]) -> None:
    source = to_bytes(decode(make_noise(120, 90, "BMP")), "JPEG", quality=90, **params)

    result = normalize(source)

    assert result.data == source[:2] + source[source.index(b"\xff\xdb") :]  # only JFIF gone
    assert decode(result.data).tobytes() == decode(source).tobytes()


def test_jpeg_in_another_colour_space_is_converted_not_sent_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An sRGB profile renamed: to us it is some other RGB space, like an iPhone's Display P3.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    other = srgb.replace("sRGB".encode("utf-16-be"), "Wide".encode("utf-16-be"))
    assert other != srgb
    data = to_bytes(Image.new("RGB", (80, 80), ORANGE), "JPEG", quality=95, icc_profile=other)
    converted: list[str] = []
    real = ImageCms.profileToProfile

    def spy(image: Image.Image, *args: object, **kwargs: object) -> object:
        converted.append(image.mode)
        return real(image, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageCms, "profileToProfile", spy)
    result = normalize(data)

    assert converted == ["RGB"]

    image = assert_jpeg(result)
    assert b"\xff\xe2" not in result.data[:200]  # no profile: the pixels are sRGB now
    assert close(image.getpixel((40, 40)), ORANGE)


def test_big_jpeg_just_over_the_limit_is_decoded_at_half_scale() -> None:
    # 2000x1500 to fit 1024: a half-scale decode gives 1000x750, close enough to keep as it is.
    result = normalize(make_image(2000, 1500, "JPEG"), max_side=1024)

    assert (result.width, result.height) == (1000, 750)
    assert result.notes == (NOTE_DOWNSCALED,)


def test_big_endian_16_bit_grey_tiff_keeps_its_brightness() -> None:
    grey = Image.new("I;16", (80, 80), 40000)
    data = to_bytes(Image.frombytes("I;16B", grey.size, grey.tobytes("raw", "I;16B")), "TIFF")
    assert decode(data).mode == "I;16B"

    image = assert_jpeg(normalize(data))

    assert close(image.getpixel((40, 40)), (156, 156, 156), tolerance=3)


def test_for_chat_keeps_the_ratio_and_says_whether_it_shows_as_a_picture() -> None:
    data, _ = for_chat(make_image(4096, 150, "PNG"))  # 27:1: Telegram refuses it as a photo

    assert decode(data).size == (4096, 150)
    assert not imaging.TELEGRAM_PHOTO.shows_as_picture(4096, 150)
    assert imaging.TELEGRAM_PHOTO.shows_as_picture(4000, 200)
    assert imaging.DISCORD_FILE.shows_as_picture(4096, 150)


def test_for_chat_follows_the_platform_limits() -> None:
    source = make_image(6400, 3700, "PNG")

    telegram = decode(for_chat(source, limits=imaging.TELEGRAM_PHOTO)[0])
    discord = decode(for_chat(source, limits=imaging.DISCORD_FILE)[0])

    assert telegram.width + telegram.height <= 10_000
    assert discord.size == (6400, 3700)  # Discord limits bytes only
