"""The edit rules, in one place for the core and the adapters: what a prompt may be, what each
/settings name takes (and which backend capability it needs), which size a new image gets,
and the options an edit is sent with. Pure functions: no I/O, no state."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from bot.backends.base import Capabilities
from bot.backends.checks import check_prompt
from bot.domain import (
    CFG_RANGE,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PICTURES,
    MAX_SEED,
    STEPS_RANGE,
    EditOptions,
    UserSettings,
)
from bot.errors import GenerationUnsupported, InvalidSetting, TooManyPictures

MAX_WAITING_PER_USER = 5

# Written text in quotes, as in the vendor's speech-bubble and sign examples. A straight single
# quote counts only when it does not touch a letter on its outer side (so "cat's" is no quote).
_QUOTED_TEXT = re.compile(r"\"[^\"]+\"|“[^”]+”|「[^」]+」|『[^』]+』|‘[^’]+’|(?<!\w)'[^']+'(?!\w)")


def wants_text_mode(prompt: str) -> bool:
    return bool(_QUOTED_TEXT.search(prompt))


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def checked_prompt(prompt: str) -> str:
    """The prompt without its outer spaces; PromptError when it is empty or too long (the one
    check, which the backends make too before anything is sent)."""
    return check_prompt(prompt)


@dataclass(frozen=True)
class Canvas:
    """A new image's source: no picture, only the size the backend makes it in."""

    size: str
    width: int
    height: int


def generation_size(offered: Capabilities, settings: UserSettings) -> str | None:
    """The size of the user's new images: theirs if this backend makes it, else its default;
    None when the backend makes no new images (`needed` then says so)."""
    if settings.image_size in offered.generation_sizes:
        return settings.image_size
    return offered.default_size


def needed(size: str | None) -> str:
    """A size for a new image; GenerationUnsupported (nothing queued, nothing charged) when
    the backend makes none."""
    if size is None:
        raise GenerationUnsupported("the edit backend makes no new images", maybe_done=False)
    return size


def canvas_of(offered: Capabilities, size: str | None) -> Canvas | None:
    if size is None:
        return None
    width, height = offered.generation_sizes[size]
    return Canvas(size, width, height)


def with_defaults(
    settings: UserSettings, defaults: EditOptions, offered: Capabilities
) -> UserSettings:
    """Steps and cfg the user did not choose are the operator's defaults; the size of new
    images the backend's default (also for a size another backend had)."""
    return replace(
        settings,
        steps=settings.steps or defaults.steps,
        cfg_scale=settings.cfg_scale or defaults.cfg_scale,
        image_size=generation_size(offered, settings),
    )


def edit_options(chosen: UserSettings, prompt: str, seeds: Callable[[], int]) -> EditOptions:
    """The options of a new edit from the user's settings with defaults filled in; a seed from
    `seeds` when they chose none."""
    assert chosen.steps is not None and chosen.cfg_scale is not None  # see with_defaults
    return EditOptions(
        steps=chosen.steps,
        cfg_scale=chosen.cfg_scale,
        seed=chosen.seed if chosen.seed is not None else seeds(),
        text_mode=wants_text_mode(prompt) if chosen.text_mode is None else chosen.text_mode,
        negative_prompt=chosen.negative_prompt,
    )


# Which capability each /settings name needs ("size": new images at all).
_SETTING_KINDS = {
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "cfg_scale": "cfg",
    "text": "text",
    "text_mode": "text",
    "negative": "negative",
    "negative_prompt": "negative",
    "size": "size",
    "image_size": "size",
}


def most_pictures(offered: Capabilities) -> int:
    """Pictures one request may hold: as many as the backend takes in one edit, or, with one
    that takes one picture (each is edited alone), a whole album's."""
    return MAX_PICTURES if offered.max_images == 1 else offered.max_images


def check_pictures(offered: Capabilities, count: int) -> None:
    """Refuse a request of more pictures than the backend takes, before anything is kept."""
    most = most_pictures(offered)
    if count > most:
        raise TooManyPictures(f"{count} pictures > {most}", count=count, most=most)


def lacks(offered: Capabilities, setting: str) -> bool:
    """Whether the backend lacks what the setting `setting` needs."""
    kind = _SETTING_KINDS.get(setting)
    return kind is not None and offered.lacks(kind)


_SWITCH = {
    "on": True,
    "off": False,
    "auto": None,
    "true": True,
    "false": False,
    "开": True,
    "关": False,
    "自动": None,
}


def parse_setting(
    current: UserSettings, name: str, value: str, offered: Capabilities
) -> UserSettings:
    """Turn one user-typed setting into new settings, or raise InvalidSetting saying what fits
    (or that the edit backend has no such setting)."""
    if lacks(offered, name):
        raise InvalidSetting(code="error_setting_unsupported", field=name)
    if name == "seed":
        if value.lower() in ("random", "随机", ""):
            return replace(current, seed=None)
        return replace(current, seed=_int_in(value, "seed", 0, MAX_SEED))
    if name == "steps":
        return replace(current, steps=_int_in(value, "steps", *STEPS_RANGE))
    if name in ("cfg", "cfg_scale"):
        return replace(current, cfg_scale=_float_in(value, "cfg", *CFG_RANGE))
    if name in ("text", "text_mode"):
        if value.lower() not in _SWITCH:
            raise InvalidSetting(code="error_setting_switch")
        return replace(current, text_mode=_SWITCH[value.lower()])
    if name in ("negative", "negative_prompt"):
        text = "" if value.lower() in ("none", "off", "无", "") else value
        if len(text) > MAX_NEGATIVE_PROMPT_CHARS:
            raise InvalidSetting(code="error_setting_length", limit=MAX_NEGATIVE_PROMPT_CHARS)
        return replace(current, negative_prompt=text)
    if name in ("size", "image_size"):
        sizes = offered.generation_sizes
        if value.lower() not in sizes:
            raise InvalidSetting(field="size", allowed=", ".join(sizes),
                                 code="error_setting_size")  # fmt: skip
        return replace(current, image_size=value.lower())
    raise InvalidSetting(code="error_setting_unknown", field=name)


def _int_in(value: str, field: str, low: int, high: int) -> int:
    error = InvalidSetting(code="error_setting_int", field=field, low=low, high=high)
    try:
        number = int(value)
    except ValueError:
        raise error from None
    if not low <= number <= high:
        raise error
    return number


def _float_in(value: str, field: str, low: float, high: float) -> float:
    error = InvalidSetting(code="error_setting_number", field=field, low=low, high=high)
    try:
        number = float(value)
    except ValueError:
        raise error from None
    if not low <= number <= high:  # also rejects nan
        raise error
    return number
