"""Every sentence exists in English and Chinese with the same blanks to fill, and the language
follows the user."""

import string

import pytest

from bot.backends.base import Capabilities
from bot.backends.stepfun import StepFunBackend
from bot.domain import UserSettings
from bot.errors import InvalidSetting, PromptTooLong, StepEditError
from bot.texts import (
    EN,
    TEXTS,
    ZH,
    chat,
    describe_settings,
    discord,
    error_text,
    language_for,
    operator,
    payments,
    refusals,
)


def blanks(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_both_languages_with_the_same_blanks(key: str) -> None:
    variants = TEXTS[key]
    assert set(variants) == {EN, ZH}
    assert blanks(variants[EN]) == blanks(variants[ZH])


def test_each_sentence_lives_in_one_part_of_the_texts() -> None:
    parts = (chat.TEXTS, refusals.TEXTS, operator.TEXTS, discord.TEXTS, payments.TEXTS)
    assert sum(len(part) for part in parts) == len(TEXTS)  # no key in two parts (one would hide)


def test_setting_errors_speak_the_users_language() -> None:
    error = InvalidSetting(code="error_setting_int", field="steps", low=1, high=50)
    assert error_text(error, EN) == "steps must be a whole number from 1 to 50."
    assert error_text(error, ZH) == "steps 必须是 1 到 50 之间的整数。"
    assert "513" in error_text(PromptTooLong(length=513, limit=512), ZH)


def test_an_error_missing_its_details_still_gets_a_plain_sentence() -> None:
    assert error_text(PromptTooLong(), EN) == TEXTS["error_generic"][EN]
    assert error_text(StepEditError(), ZH) == TEXTS["error_generic"][ZH]


@pytest.mark.parametrize(
    ("hint", "sample", "expected"),
    [("zh-hans", "", ZH), ("en", "把猫变成蓝色", EN), (None, "把猫变成蓝色", ZH), (None, "hi", EN)],
)
def test_language_follows_the_platform_then_the_words(
    hint: str | None, sample: str, expected: str
) -> None:
    assert language_for(hint, sample) == expected


def test_settings_say_when_the_negative_prompt_is_ignored() -> None:
    ignored = UserSettings(steps=8, cfg_scale=1.0, negative_prompt="blurry")
    used = UserSettings(steps=8, cfg_scale=4.0, negative_prompt="blurry")
    stepfun = StepFunBackend.capabilities
    assert "only used when cfg > 1.0" in describe_settings(ignored, EN, stepfun, ("m",))
    assert "only used when cfg > 1.0" not in describe_settings(used, EN, stepfun, ("m",))
    assert "seed: random" in describe_settings(used, EN, stepfun, ("m",))


def test_settings_offer_only_what_the_backend_has() -> None:
    shown = describe_settings(UserSettings(steps=8, cfg_scale=4.0), EN, Capabilities(), ("gpt-x",))
    assert "steps" not in shown and "cfg" not in shown and "seed" not in shown
    assert "size of new images" not in shown and "model: gpt-x" in shown
    sized = Capabilities(generation_sizes={"1:1": (1024, 1024), "16:9": (1344, 768)})
    shown = describe_settings(UserSettings(image_size="1:1"), ZH, sized, ("g",))
    assert "/settings size 16:9" in shown and "步数" not in shown
