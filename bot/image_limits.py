"""The sizes a picture may have: what the edit API takes (`check_claims` judges what a platform
says of a file by these rules before anything is fetched; `fitted` is the size an upload is
fitted to) and what each chat shows as a picture (`PictureLimits`, stated by its adapter).

Pure arithmetic: no byte of an image is read here (bot/imaging.py does that).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain import MAX_SIDE, MIN_SIDE
from bot.errors import ImageTooLarge, ImageTooSmall, InvalidImage

MAX_INPUT_PIXELS = 64_000_000


@dataclass(frozen=True)
class PictureLimits:
    """What a platform accepts as a picture shown in the chat (its adapter states them)."""

    max_bytes: int
    max_side_sum: int | None = None  # width + height
    max_ratio: float | None = None  # long side / short side

    def shows_as_picture(self, width: int, height: int) -> bool:
        """Whether a picture this long can be shown at all (else send it as a file): fitting
        cannot change the ratio without cropping or padding the user's picture."""
        return self.max_ratio is None or max(width, height) <= self.max_ratio * min(width, height)


TELEGRAM_PHOTO = PictureLimits(max_bytes=10_000_000, max_side_sum=10_000, max_ratio=20.0)
DISCORD_FILE = PictureLimits(max_bytes=10 * 1024 * 1024)


def check_claims(
    mime: str | None,
    width: int | None,
    height: int | None,
    *,
    max_side: int = MAX_SIDE,
    min_side: int = MIN_SIDE,
    max_input_pixels: int = MAX_INPUT_PIXELS,
) -> None:
    """Judge what a platform says of a file before anything is fetched (its type, its size in
    pixels; None where it says nothing) by the rules `normalize` applies to the bytes, so a
    sure refusal needs no download: InvalidImage (not an image), ImageTooLarge, ImageTooSmall."""
    if mime and not mime.lower().startswith("image/"):
        raise InvalidImage(f"the platform says it is {mime}")
    if width is None or height is None or width <= 0 or height <= 0:
        return
    if width * height > max_input_pixels:
        raise ImageTooLarge(
            f"{width}x{height} > {max_input_pixels} pixels", max_pixels=max_input_pixels
        )
    fitted((width, height), max_side, min_side)


def fitted(size: tuple[int, int], max_side: int, min_side: int) -> tuple[int, int]:
    """The size an image is fitted to for the API; ImageTooSmall if a side is (or would be)
    below `min_side`."""
    if min(size) < min_side:
        raise ImageTooSmall(f"{size[0]}x{size[1]} below {min_side}", min_side=min_side)
    target = scaled(size, max_side / max(size))
    if min(target) < min_side:  # e.g. a 100x9000 panorama: fitting it makes it too thin
        raise ImageTooSmall(
            f"{size[0]}x{size[1]} fits as {target[0]}x{target[1]}, below {min_side}",
            code="error_image_too_narrow",
            min_side=min_side,
            max_side=max_side,
        )
    return target


def scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """`size` times `factor` (capped at 1: never upscale), keeping the aspect ratio."""
    factor = min(factor, 1.0)
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))
