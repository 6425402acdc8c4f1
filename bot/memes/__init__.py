"""Exact words drawn on a picture by the bot: meme captions and speech bubbles.

Pure, synchronous Pillow code on bytes (the service runs it in a thread). No API call, no quota.

Words are never burned into the picture the service keeps: it keeps the plain base image and a
`TextLayer`, and every render starts from that base. A second /caption therefore replaces the
words instead of stacking them, and a Reroll moves the bubble without leaving the old one behind.

The default font is Noto Sans CJK JP Bold (SIL OFL 1.1), installed by the pinned PyPI package
`noto-cjk-sans-jp-bold`. Its region fonts all hold every Chinese, Japanese and Korean glyph plus
Latin and Cyrillic; the `locl` feature picks the Chinese or Korean forms when we tag the text's
language. Characters the font lacks (emoji above all) are left out rather than drawn as boxes.

The parts: layer.py (the words as data, the commands parsed), glyphs.py (the font and the
characters it draws), layout.py (fitting and drawing captions and bubbles), picture.py (decode,
draw, encode), compare.py (before and after, side by side).
"""

from bot.memes import glyphs
from bot.memes.compare import compare
from bot.memes.glyphs import DEFAULT_FONT, check_font
from bot.memes.layer import (
    MAX_TEXT_CHARS,
    SIDES,
    TEXT_EMPTY,
    TEXT_NO_GLYPHS,
    TEXT_NO_ROOM,
    TEXT_TOO_LONG,
    Format,
    MemeImage,
    MemeTextError,
    Side,
    TextLayer,
    parse_bubble,
    parse_caption,
)
from bot.memes.layout import MIN_FONT_PX
from bot.memes.picture import MAX_PIXELS, bubble, caption, render

__all__ = [
    "DEFAULT_FONT",
    "MAX_PIXELS",
    "MAX_TEXT_CHARS",
    "MIN_FONT_PX",
    "SIDES",
    "TEXT_EMPTY",
    "TEXT_NO_GLYPHS",
    "TEXT_NO_ROOM",
    "TEXT_TOO_LONG",
    "Format",
    "MemeImage",
    "MemeTextError",
    "Side",
    "TextLayer",
    "bubble",
    "caption",
    "check_font",
    "compare",
    "parse_bubble",
    "parse_caption",
    "render",
]

# The font's internals as tests/test_memes.py reads them.
_RAQM = glyphs.RAQM
_has_glyph = glyphs.has_glyph
_language = glyphs.language
