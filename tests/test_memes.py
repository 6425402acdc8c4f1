"""What a user notices about captions and speech bubbles, checked by rendering and measuring pixels.

Pictures go in and come out as PNG here, so every changed pixel is the bot's drawing.
"""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFont

from bot import memes
from bot.errors import ImageTooLarge, InvalidImage
from bot.memes import (
    DEFAULT_FONT,
    MAX_TEXT_CHARS,
    TEXT_EMPTY,
    TEXT_NO_GLYPHS,
    TEXT_NO_ROOM,
    TEXT_TOO_LONG,
    MemeTextError,
    Side,
    TextLayer,
    bubble,
    caption,
    check_font,
    parse_bubble,
    parse_caption,
    render,
)

GREY = (128, 128, 128)
Box = tuple[int, int, int, int]


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def flat(width: int = 640, height: int = 480, color: tuple[int, int, int] = GREY) -> bytes:
    return png(Image.new("RGB", (width, height), color))


def half_noise(width: int, height: int, busy: str) -> bytes:
    """Random pixels in one half ("left", "right", "top" or "bottom"), flat grey in the other."""
    rnd = random.Random(7)
    noise = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    image = Image.new("RGB", (width, height), GREY)
    boxes = {
        "left": (0, 0, width // 2, height),
        "right": (width // 2, 0, width, height),
        "top": (0, 0, width, height // 2),
        "bottom": (0, height // 2, width, height),
    }
    image.paste(noise.crop(boxes[busy]), boxes[busy][:2])
    return png(image)


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def changed(before: bytes, after: bytes) -> Box:
    """The bounding box of every pixel the bot changed."""
    box = ImageChops.difference(decoded(before), decoded(after)).getbbox()
    assert box is not None, "nothing was drawn"
    return box


def ink_bands(before: bytes, after: bytes) -> int:
    """How many separate horizontal bands of changed rows: one per line of text."""
    diff = ImageChops.difference(decoded(before), decoded(after))
    rows = [diff.crop((0, y, diff.width, y + 1)).getbbox() is not None for y in range(diff.height)]
    return sum(1 for y, on in enumerate(rows) if on and (y == 0 or not rows[y - 1]))


def inside(box: Box, size: tuple[int, int], margin: int = 2) -> bool:
    left, top, right, bottom = box
    return (
        left >= margin
        and top >= margin
        and right <= size[0] - margin
        and (bottom <= size[1] - margin)
    )


# --- captions ---------------------------------------------------------------------------------


def test_caption_stays_inside_the_picture_in_every_script() -> None:
    base = flat(400, 300)
    out = caption(base, "猫 ねこ 고양이 кошка cat", "Ünïcödé Ågë ЙЁ gjpqy", fmt="PNG")
    assert inside(changed(base, out.data), (400, 300))
    assert out.dropped == ()


def test_caption_is_white_with_a_black_outline() -> None:
    base = flat()
    colors = decoded(caption(base, "HELLO", fmt="PNG").data).getcolors(1 << 20) or []
    counts = {color: n for n, color in colors}
    assert counts.get((255, 255, 255), 0) > 500
    assert counts.get((0, 0, 0), 0) > 500


def test_top_and_bottom_words_go_top_and_bottom() -> None:
    base = flat(640, 480)
    top = changed(base, caption(base, "TOP TEXT", fmt="PNG").data)
    bottom = changed(base, caption(base, "", "BOTTOM TEXT", fmt="PNG").data)
    assert top[3] < 480 * 0.35
    assert bottom[1] > 480 * 0.65


def test_a_word_wider_than_the_picture_is_broken_and_stays_inside() -> None:
    base = flat(300, 400)
    word = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 3
    out = caption(base, word, fmt="PNG")
    assert inside(changed(base, out.data), (300, 400))
    assert ink_bands(base, out.data) >= 2


def test_chinese_without_spaces_wraps_and_stays_inside() -> None:
    base = flat(240, 480)
    out = caption(base, "", "当你终于修好了所有的错误然后生产环境又挂了", fmt="PNG")
    assert inside(changed(base, out.data), (240, 480))
    assert ink_bands(base, out.data) >= 2


def test_200_characters_still_fit_a_small_picture() -> None:
    base = flat(320, 240)
    out = caption(base, "word " * 40, "字" * MAX_TEXT_CHARS, fmt="PNG")
    assert inside(changed(base, out.data), (320, 240))


def test_too_many_words_for_a_tiny_picture_is_a_clear_no() -> None:
    with pytest.raises(MemeTextError) as caught:
        caption(flat(64, 64), "字" * MAX_TEXT_CHARS)
    assert caught.value.code == TEXT_NO_ROOM


@pytest.mark.parametrize(("top", "bottom"), [("", ""), ("  ", "\n"), ("", " ")])
def test_an_empty_caption_is_refused_clearly(top: str, bottom: str) -> None:
    with pytest.raises(MemeTextError) as caught:
        caption(flat(), top, bottom)
    assert caught.value.code == TEXT_EMPTY


def test_a_1000_character_caption_is_refused_clearly() -> None:
    with pytest.raises(MemeTextError) as caught:
        caption(flat(), "a" * 1000)
    assert caught.value.code == TEXT_TOO_LONG
    assert caught.value.params == {"limit": MAX_TEXT_CHARS}
    caption(flat(), "a" * MAX_TEXT_CHARS)  # the limit itself is fine


def test_empty_or_long_bubble_is_refused_clearly() -> None:
    with pytest.raises(MemeTextError) as empty:
        bubble(flat(), " ")
    with pytest.raises(MemeTextError) as long:
        bubble(flat(), "字" * 1000)
    assert (empty.value.code, long.value.code) == (TEXT_EMPTY, TEXT_TOO_LONG)


# --- missing glyphs ---------------------------------------------------------------------------


def glyph(font: ImageFont.FreeTypeFont, text: str) -> bytes:
    canvas = Image.new("L", (200, 60))
    ImageDraw.Draw(canvas).text((10, 10), text, fill=255, font=font)
    return canvas.tobytes()


@pytest.mark.parametrize("word", ["猫", "ねこ", "고양이", "кошка", "cat"])
def test_the_bundled_font_draws_cjk_latin_and_cyrillic(word: str) -> None:
    font = ImageFont.truetype(str(DEFAULT_FONT), 32)
    missing = glyph(font, "\U0010fffd")  # nothing maps this: the font's missing-glyph box
    for ch in word:
        drawn = glyph(font, ch)
        assert drawn != missing, f"{ch!r} renders as the missing-glyph box"
        assert any(drawn), f"{ch!r} renders as nothing"


def test_an_emoji_is_left_out_without_a_box() -> None:
    base = flat()
    with_emoji = caption(base, "cat 👍 ok", "😂", fmt="PNG")
    plain = caption(base, "cat ok", fmt="PNG")
    assert with_emoji.data == plain.data
    assert with_emoji.dropped == ("👍", "😂")
    assert caption(base, "cat😂ok", fmt="PNG").data == plain.data  # still two words


def test_emoji_sequences_leave_no_trace() -> None:
    base = flat()
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
    out = bubble(base, f"hi {family} ❤️ 👍🏽 there", fmt="PNG")
    assert out.data == bubble(base, "hi there", fmt="PNG").data


def test_only_emoji_is_refused_clearly() -> None:
    with pytest.raises(MemeTextError) as caught:
        caption(flat(), "😂😂", "👍")
    assert caught.value.code == TEXT_NO_GLYPHS
    assert caught.value.params == {"dropped": "😂👍"}


# --- bubbles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy", "quiet"),
    [("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top")],
)
def test_the_bubble_sits_on_the_quiet_half(busy: str, quiet: str) -> None:
    base = half_noise(800, 600, busy)
    left, top, right, bottom = changed(base, bubble(base, "I was wrong", fmt="PNG").data)
    where = {
        "left": right <= 400,
        "right": left >= 400,
        "top": bottom <= 300,
        "bottom": top >= 300,
    }
    assert where[quiet], (left, top, right, bottom)


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_bubble_goes_to_the_side_asked_for(side: Side) -> None:
    base = half_noise(800, 600, side)  # even where it is busiest
    left, _, right, _ = changed(base, bubble(base, "我错了", side=side, fmt="PNG").data)
    center = (left + right) / 2
    assert center < 400 if side == "left" else center > 400


def test_the_bubble_stays_inside_and_holds_long_text() -> None:
    base = flat(500, 400)
    out = bubble(base, "Supercalifragilisticexpialidocious " * 5, fmt="PNG")
    assert inside(changed(base, out.data), (500, 400))


def test_reroll_moves_the_bubble_and_the_same_reroll_is_stable() -> None:
    base = flat(800, 600)
    places = [changed(base, bubble(base, "hello", variant=n, fmt="PNG").data) for n in range(3)]
    assert len(set(places)) == 3
    assert changed(base, bubble(base, "hello", variant=1, fmt="PNG").data) == places[1]


def test_the_bubble_avoids_the_caption() -> None:
    base = flat(800, 600)
    layer = TextLayer.captioned("A CAPTION ON TOP").with_bubble("hello")
    with_caption = render(base, layer, fmt="PNG").data
    caption_only = caption(base, "A CAPTION ON TOP", fmt="PNG").data
    _, top, _, _ = changed(caption_only, with_caption)
    caption_bottom = changed(base, caption_only)[3]
    assert top > caption_bottom


# --- the text layer ---------------------------------------------------------------------------


def test_a_new_caption_replaces_the_old_one() -> None:
    base = half_noise(640, 480, "left")
    first = TextLayer.captioned("OLD WORDS", "MORE OLD WORDS")
    again = first.with_caption("NEW")
    assert render(base, first).data != render(base, again).data
    assert render(base, again).data == caption(base, "NEW").data


def test_caption_and_bubble_each_replace_only_their_own_words() -> None:
    layer = TextLayer.captioned("top", "bottom").with_bubble("hi", "left")
    assert layer.with_caption("new").bubble == "hi"
    assert layer.with_bubble("bye").top == "top"
    assert layer.rerolled().variant == 1
    assert layer.rerolled().with_bubble("again").variant == 0


def test_the_layer_round_trips_through_json() -> None:
    layer = TextLayer.captioned("猫\n二行目", "ok").with_bubble("고양이", "right").rerolled()
    assert TextLayer.from_json(layer.to_json()) == layer
    assert "猫" in layer.to_json()  # stored readable, not \u-escaped


@pytest.mark.parametrize(
    "data",
    [
        "",
        "[]",
        '{"top": "a"}',
        '{"top": 1, "bottom": "", "bubble": "", "side": "auto", "variant": 0}',
        '{"top": "a", "bottom": "", "bubble": "", "side": "up", "variant": 0}',
        '{"top": "a", "bottom": "", "bubble": "", "side": "auto", "variant": -1}',
    ],
)
def test_a_damaged_layer_is_refused(data: str) -> None:
    with pytest.raises(ValueError):
        TextLayer.from_json(data)


def test_an_empty_layer_is_refused() -> None:
    with pytest.raises(MemeTextError):
        TextLayer.from_json('{"top": "", "bottom": "", "bubble": "", "side": "auto", "variant": 0}')


def test_caption_and_bubble_commands_are_parsed() -> None:
    assert parse_caption("top words | bottom words") == ("top words", "bottom words")
    assert parse_caption("上面｜下面") == ("上面", "下面")
    assert parse_caption("only top") == ("only top", "")
    assert parse_caption("| only bottom") == ("", "only bottom")
    assert parse_bubble("left I was wrong") == ("left", "I was wrong")
    assert parse_bubble("RIGHT 我错了") == ("right", "我错了")
    assert parse_bubble("左 我错了") == ("left", "我错了")
    assert parse_bubble("left\nline one\nline two") == ("left", "line one\nline two")
    assert parse_bubble("leftovers again") == ("auto", "leftovers again")
    assert parse_bubble("  ") == ("auto", "")


# --- pictures and fonts -----------------------------------------------------------------------


def test_the_result_is_a_jpeg_of_the_same_size_by_default() -> None:
    out = caption(flat(333, 222), "hi")
    assert (out.mime, out.width, out.height) == ("image/jpeg", 333, 222)
    assert decoded(out.data).size == (333, 222)


def test_a_transparent_picture_is_flattened_onto_white() -> None:
    base = png(Image.new("RGBA", (300, 200), (0, 0, 0, 0)))
    out = decoded(caption(base, "", "hi", fmt="PNG").data)
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_not_a_picture_is_refused() -> None:
    with pytest.raises(InvalidImage):
        caption(b"hello, not an image", "hi")


def test_too_many_pixels_are_refused_before_decoding() -> None:
    huge = png(Image.new("1", (5000, 4000)))  # 20 Mpx in a few kB
    with pytest.raises(ImageTooLarge):
        caption(huge, "hi")


def test_an_operator_font_is_used(tmp_path: Path) -> None:
    base = flat()
    assert caption(base, "hello", font=DEFAULT_FONT).data == caption(base, "hello").data
    check_font(DEFAULT_FONT)
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"font\.ttf"):
        check_font(not_a_font)
    with pytest.raises(ValueError, match="not found"):
        check_font(tmp_path / "missing.otf")


def test_glyph_checks_are_per_font() -> None:
    # A cached answer for one font must never decide for another file.
    assert memes._has_glyph(str(DEFAULT_FONT), "猫")
    assert not memes._has_glyph(str(DEFAULT_FONT), "👍")


def test_renders_in_parallel_threads_agree() -> None:
    # The service renders in worker threads; FreeType faces must not be shared between them.
    base = half_noise(400, 300, "left")
    expected = bubble(base, "並行 parallel", variant=1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: bubble(base, "並行 parallel", variant=1), range(8)))
    assert all(result.data == expected.data for result in results)


@pytest.mark.skipif(not memes._RAQM, reason="Pillow without raqm cannot pick regional forms")
def test_shared_characters_get_the_forms_of_the_writers_language() -> None:
    assert memes._language("直角") == "zh-Hans"  # Chinese forms, although the font is JP
    assert memes._language("直角です") == "ja"
    assert memes._language("고양이 猫") == "ko"
    assert memes._language("cat") is None
