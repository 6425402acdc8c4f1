"""The words on a picture as data: a `TextLayer` (caption and bubble, kept apart from the pixels
and stored with the edit), what a render returns, the commands' arguments parsed, and the error
for words that cannot be drawn (its `code` names the text in bot/texts.py)."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, replace
from typing import Literal

from bot.errors import UserError

Side = Literal["auto", "left", "right"]
Format = Literal["PNG", "JPEG"]
SIDES: tuple[Side, ...] = ("auto", "left", "right")
_SIDE_WORDS: dict[str, Side] = {"left": "left", "right": "right", "左": "left", "右": "right"}

MAX_TEXT_CHARS = 200  # per part: top, bottom, bubble

# Text keys (bot/texts.py) of MemeTextError.code.
TEXT_EMPTY = "error_meme_text_empty"
TEXT_TOO_LONG = "error_meme_text_too_long"  # params: limit
TEXT_NO_GLYPHS = "error_meme_text_no_glyphs"  # params: dropped
TEXT_NO_ROOM = "error_meme_text_no_room"


class MemeTextError(UserError):
    """The words cannot be drawn: none, too many, only emoji, or no room. `code` names the text."""

    code = TEXT_EMPTY


@dataclass(frozen=True)
class TextLayer:
    """The words on a result, kept apart from its pixels (store `to_json()` with the edit).

    A caption and a bubble may live on one picture; each replaces only its own kind.
    `variant` counts Rerolls: the n-th best place for the bubble.
    """

    top: str = ""
    bottom: str = ""
    bubble: str = ""
    side: Side = "auto"
    variant: int = 0

    def __post_init__(self) -> None:
        for part in (self.top, self.bottom, self.bubble):
            _check_length(part)
        if not (self.top.strip() or self.bottom.strip() or self.bubble.strip()):
            raise MemeTextError("no words", code=TEXT_EMPTY)
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {self.side!r}")
        if self.variant < 0:
            raise ValueError(f"variant must be >= 0, not {self.variant}")

    @classmethod
    def captioned(cls, top: str, bottom: str = "") -> TextLayer:
        return cls(top=tidy(top), bottom=tidy(bottom))

    @classmethod
    def bubbled(cls, text: str, side: Side = "auto", variant: int = 0) -> TextLayer:
        return cls(bubble=tidy(text), side=side, variant=variant)

    @property
    def has_caption(self) -> bool:
        return bool(self.top or self.bottom)

    @property
    def has_bubble(self) -> bool:
        return bool(self.bubble)

    def with_caption(self, top: str, bottom: str = "") -> TextLayer:
        """This layer with its caption replaced (the bubble stays)."""
        if not (top.strip() or bottom.strip()):  # "/caption" alone: not a way to erase
            raise MemeTextError("no words", code=TEXT_EMPTY)
        return replace(self, top=tidy(top), bottom=tidy(bottom))

    def with_bubble(self, text: str, side: Side = "auto") -> TextLayer:
        """This layer with its bubble replaced (the caption stays), at the best place again."""
        if not text.strip():
            raise MemeTextError("no words", code=TEXT_EMPTY)
        return replace(self, bubble=tidy(text), side=side, variant=0)

    def rerolled(self) -> TextLayer:
        """The bubble at the next-best place (a caption alone has only one look)."""
        return replace(self, variant=self.variant + 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, data: str) -> TextLayer:
        """Raises ValueError for anything `to_json` did not write."""
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a text layer: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) != {"top", "bottom", "bubble", "side", "variant"}:
            raise ValueError("not a text layer: wrong fields")
        texts = [raw[key] for key in ("top", "bottom", "bubble", "side")]
        if not all(isinstance(v, str) for v in texts) or type(raw["variant"]) is not int:
            raise ValueError("not a text layer: wrong types")
        side = next((s for s in SIDES if s == raw["side"]), None)
        if side is None:
            raise ValueError(f"not a text layer: side {raw['side']!r}")
        return cls(raw["top"], raw["bottom"], raw["bubble"], side, raw["variant"])


@dataclass(frozen=True)
class MemeImage:
    """A rendered picture. `dropped`: characters left out because the font lacks them."""

    data: bytes
    mime: str
    width: int
    height: int
    dropped: tuple[str, ...]


def parse_caption(argument: str) -> tuple[str, str]:
    """`/caption top | bottom` -> (top, bottom); without a bar all words go on top."""
    top, _, bottom = argument.replace("｜", "|").partition("|")  # also the full-width bar
    return top.strip(), bottom.strip()


def parse_bubble(argument: str) -> tuple[Side, str]:
    """`/bubble [left|right|左|右] text` -> (side, text)."""
    first, *rest = argument.split(maxsplit=1) or [""]
    side = _SIDE_WORDS.get(first.lower())
    return (side, "".join(rest)) if side else ("auto", argument.strip())


def tidy(text: str) -> str:
    lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(" ".join(line.split()) for line in lines.split("\n")).strip()


def _check_length(text: str) -> None:
    if len(text.strip()) > MAX_TEXT_CHARS:
        raise MemeTextError(
            f"{len(text)} characters > {MAX_TEXT_CHARS}", code=TEXT_TOO_LONG, limit=MAX_TEXT_CHARS
        )
