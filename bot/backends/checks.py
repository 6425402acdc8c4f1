"""The values a request carries, checked before anything is sent: the prompt, the negative
prompt, whole numbers and numbers within their ranges, and form values written as the OpenAI SDK
writes them. A bad value raises PromptError or InvalidSetting from bot/errors.py."""

from __future__ import annotations

import math

from bot.domain import MAX_NEGATIVE_PROMPT_CHARS, MAX_PROMPT_CHARS
from bot.errors import InvalidSetting, PromptError, PromptTooLong


def check_prompt(prompt: str) -> str:
    text = (prompt or "").strip()
    if not text:
        raise PromptError("the prompt is empty", limit=MAX_PROMPT_CHARS)
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptTooLong(
            f"the prompt has {len(text)} characters; the API takes at most {MAX_PROMPT_CHARS}",
            limit=MAX_PROMPT_CHARS,
            length=len(text),
        )
    return text


def check_negative(value: object) -> str:
    """A negative prompt within the length the API takes ("" when there is none)."""
    negative = value or ""
    if not isinstance(negative, str):
        raise InvalidSetting("negative_prompt must be text", field="negative_prompt")
    if len(negative) > MAX_NEGATIVE_PROMPT_CHARS:
        raise InvalidSetting(
            f"negative_prompt has {len(negative)} characters; "
            f"the API takes at most {MAX_NEGATIVE_PROMPT_CHARS}",
            field="negative_prompt",
            limit=MAX_NEGATIVE_PROMPT_CHARS,
            length=len(negative),
        )
    return negative if negative.strip() else ""


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(
            f"{name} must be a whole number from {low} to {high}, not {value!r}",
            field=name,
            allowed=f"{low}-{high}",
            min=low,
            max=high,
            value=value,
        )
    return value


def check_float(name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise InvalidSetting(
            f"{name} must be a number from {low} to {high}, not {value!r}",
            field=name,
            allowed=f"{low}-{high}",
            min=low,
            max=high,
            value=value,
        )
    return float(value)


def form_value(value: bool | int | float | str) -> str:
    """Encode a value as the OpenAI SDK does: booleans lowercase, numbers as Python writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
