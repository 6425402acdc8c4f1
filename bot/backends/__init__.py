"""The edit backends: one module per protocol behind one small interface (base.ImageEditor).

    base.py         the interface: InputImage, Capabilities, ImageEditor
    http.py         what every backend shares: HttpBackend (httpx), result images and their limits
    replies.py      one answer read within a size limit, and its JSON read
    retry.py        when a request may go again, and the waits (Retry-After and variants)
    answers.py      every answer mapped to the error tree of bot/errors.py
    checks.py       a request's values checked before anything is sent
    openai_wire.py  the OpenAI Images wire (multipart edits, JSON generations, b64_json replies)
    openai.py       `openai` (GPT image models, DeepInfra) and `omni` (vLLM-Omni, SGLang)
    gemini.py       `gemini` (Google's native image models, :generateContent)
    fal.py          `fal` (fal.ai edit models by id, queue or sync)
    stepfun.py      `stepfun` (retired by its vendor on 2026-10-10)
    fallback.py     FALLBACK_*: a second backend for edits the first surely did not do

`EDIT_API_STYLE` picks one; `make_backend` builds it. A new backend is one module here, one line
in STYLES, and its fake in tests/fakes/.
"""

from __future__ import annotations

from typing import Any

import httpx

from bot.backends.base import Capabilities, ImageEditor, InputImage
from bot.backends.fal import FalBackend
from bot.backends.fallback import FallbackEditor
from bot.backends.gemini import GeminiBackend
from bot.backends.http import HttpBackend
from bot.backends.openai import OmniBackend, OpenAIBackend
from bot.backends.stepfun import RETIREMENT, StepFunBackend

__all__ = [
    "RETIREMENT",
    "STYLES",
    "Capabilities",
    "FallbackEditor",
    "ImageEditor",
    "InputImage",
    "make_backend",
    "style_for_url",
]

STYLES: dict[str, type[HttpBackend]] = {
    "openai": OpenAIBackend,
    "gemini": GeminiBackend,
    "fal": FalBackend,
    "omni": OmniBackend,
    "stepfun": StepFunBackend,
}
# Hosts whose style is known (a suffix matches the host and its subdomains).
_HOST_STYLES = (
    ("api.openai.com", "openai"),
    ("api.deepinfra.com", "openai"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("fal.run", "fal"),
    ("api.stepfun.com", "stepfun"),
    ("api.stepfun.ai", "stepfun"),
)


def style_for_url(url: str) -> str | None:
    """The style of a vendor's known host, or None (a self-hosted server names its style)."""
    try:
        host = httpx.URL(url.strip()).host.lower()
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    for suffix, style in _HOST_STYLES:
        if host == suffix or host.endswith("." + suffix):
            return style
    return None


def make_backend(style: str, **options: Any) -> HttpBackend:
    """The backend of `style` (a key of STYLES). `options`: base_url, api_key, model (empty:
    the style's default), timeout, retries, backoff, max_backoff, role; `quality` for openai."""
    try:
        kind = STYLES[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; one of {', '.join(STYLES)}") from None
    if kind is not OpenAIBackend:
        options.pop("quality", None)
    return kind(**options)
