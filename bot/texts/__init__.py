"""Every sentence a user reads, in English and Chinese, in one place: this package (its parts
by who reads them: chat.py, refusals.py, operator.py, discord.py, payments.py).

Adapters call `t(key, lang, **params)`; `language_for` picks the language from the platform's hint
and, failing that, from the script of the user's own words.
"""

from __future__ import annotations

import re

from bot.backends.base import Capabilities
from bot.domain import UserSettings
from bot.errors import StepEditError
from bot.texts import chat, discord, operator, payments, refusals
from bot.texts.languages import EN as EN
from bot.texts.languages import ZH as ZH

TEXTS: dict[str, dict[str, str]] = {
    **chat.TEXTS, **refusals.TEXTS, **operator.TEXTS, **discord.TEXTS, **payments.TEXTS,
}  # fmt: skip

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def language_for(hint: str | None, sample: str = "") -> str:
    """Chinese for a zh-* platform language, or for Chinese words when there is no hint."""
    if hint:
        return ZH if hint.lower().startswith("zh") else EN
    return ZH if _CJK.search(sample) else EN


def t(key: str, lang: str = EN, **params: object) -> str:
    variants = TEXTS[key]
    template = variants.get(lang, variants[EN])
    return template.format(**params)


def error_text(error: StepEditError, lang: str = EN) -> str:
    """The user-facing sentence for any core error, filled with the error's params."""
    try:
        return t(error.code, lang, **error.params)
    except (KeyError, IndexError):  # a param the template needs is missing: say it plainly
        return t("error_generic", lang)


def describe_settings(
    settings: UserSettings, lang: str, offered: Capabilities, models: tuple[str, ...]
) -> str:
    """/settings summary of what the edit backend offers; `settings` has the operator's
    defaults filled in; `models`: the model, and the fallback's if there is one."""
    lines = [t("settings_head", lang)]
    examples = []
    if offered.steps:
        lines.append(t("settings_steps", lang, steps=settings.steps))
        examples.append("/settings steps 12")
    if offered.guidance:
        lines.append(t("settings_cfg", lang, cfg=settings.cfg_scale))
        examples.append("/settings cfg 4")
    if offered.text_mode:
        if settings.text_mode is None:
            text_mode = t("value_auto", lang)
        else:
            text_mode = t("value_on" if settings.text_mode else "value_off", lang)
        lines.append(t("settings_text", lang, text_mode=text_mode))
        examples.append("/settings text on|off|auto")
    if offered.negative_prompt:
        negative = settings.negative_prompt or t("value_none", lang)
        if settings.negative_prompt and (settings.cfg_scale or 1.0) <= 1.0:
            negative += t("negative_ignored", lang)
        lines.append(t("settings_negative", lang, negative=negative))
        examples.append(t("settings_negative_example", lang))
    if offered.seed:
        seed = t("value_random", lang) if settings.seed is None else str(settings.seed)
        lines.append(t("settings_seed", lang, seed=seed))
    if offered.generates:
        lines.append(t("settings_size", lang, size=settings.image_size))
        other = [size for size in offered.generation_sizes if size != settings.image_size]
        examples.append(f"/settings size {other[0] if other else settings.image_size}")
    lines.append(t("settings_model", lang, model=models[0]))
    lines += [t("settings_fallback", lang, model=fallback) for fallback in models[1:]]
    examples.append("/settings reset")
    sep = "、" if lang == ZH else ", "
    return "\n".join(lines) + "\n\n" + t("settings_change", lang, examples=sep.join(examples))
