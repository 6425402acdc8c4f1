"""End to end: the bot's commands (/start, /help, /quota, /seed, /settings, /cancel), the inline
settings buttons, automatic text mode, the command menu and the Chinese interface, all through the
fake Bot API, with the fake StepFun API recording what each edit was sent."""

from __future__ import annotations

from importlib import metadata

import pytest

from bot.texts import t
from tests.fakes.stepfun import FakeStepFun, RecordedRequest
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=6101, first_name="Alice", language_code="en")
XIAOMING = FakeUser(id=6102, first_name="小明", language_code="zh-hans")
CHAT = ALICE.id
PHOTO = make_image(160, 120, color=(30, 120, 200))
COMMAND_NAMES = [
    "edit", "imagine", "caption", "bubble", "help", "quota", "seed", "settings", "cancel",
    "forget", "about",
]  # fmt: skip


async def ask(
    app: BotUnderTest, telegram: FakeTelegram, words: str, user: FakeUser = ALICE
) -> StoredMessage:
    """Send `words` in the user's private chat; the bot's text answer."""
    telegram.user_sends_text(user.id, user, words)
    return await app.text_reply(user.id)


async def answer_to(
    app: BotUnderTest, telegram: FakeTelegram, words: str, user: FakeUser = ALICE
) -> str:
    return (await ask(app, telegram, words, user)).text or ""


async def edit(
    app: BotUnderTest,
    telegram: FakeTelegram,
    stepfun: FakeStepFun,
    prompt: str = "make it snow",
    user: FakeUser = ALICE,
) -> tuple[RecordedRequest, StoredMessage]:
    """A photo with `prompt` as its caption; what the API received and the photo that came back."""
    telegram.user_sends_photo(user.id, user, PHOTO, caption=prompt)
    result = await app.photo_reply(user.id)
    return stepfun.requests[-1], result


# --- /start, /help, the command menu -----------------------------------------------------------


async def test_start_greets_by_first_name(app: BotUnderTest, telegram: FakeTelegram) -> None:
    text = await answer_to(app, telegram, "/start")
    assert text.startswith("Hi Alice!")
    assert "/help" in text


async def test_help_shows_a_speech_bubble_example_and_the_commands(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    text = await answer_to(app, telegram, "/help")
    assert "speech bubble" in text
    assert '"I was wrong"' in text  # the quoted words that switch text mode on
    for command in ("/settings", "/seed", "/quota", "/cancel"):
        assert command in text


async def test_the_command_menu_is_registered_in_english_and_chinese(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    english = telegram.get_commands()
    chinese = telegram.get_commands(language_code="zh")
    assert [c["command"] for c in english] == COMMAND_NAMES
    assert [c["command"] for c in chinese] == COMMAND_NAMES
    assert english[0]["description"].startswith("Edit a photo")
    assert chinese[0]["description"].startswith("修改照片")


async def test_about_names_the_version_the_image_model_and_the_limits(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    editor = app.service.editor
    text = await answer_to(app, telegram, "/about")
    assert f"stepedit {metadata.version('stepedit')}" in text
    assert f"Image model: {editor.model} ({editor.style})" in text
    assert "5 edits a day" in text and "512 characters" in text
    chinese = await answer_to(app, telegram, "/about", XIAOMING)
    assert f"图像模型：{editor.model}" in chinese and "每天 5 次修改" in chinese


# --- /quota ----------------------------------------------------------------------------------


async def test_quota_counts_down_with_each_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert "5 of 5 edits left today" in await answer_to(app, telegram, "/quota")
    await edit(app, telegram, stepfun)
    assert "4 of 5 edits left today" in await answer_to(app, telegram, "/quota")


@pytest.mark.service(daily_quota=0)
async def test_quota_without_a_daily_limit_says_so(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert "no daily limit" in await answer_to(app, telegram, "/quota")
    await edit(app, telegram, stepfun)
    text = await answer_to(app, telegram, "/quota")
    assert "no daily limit" in text
    assert "Edits today: 1" in text


# --- /seed -----------------------------------------------------------------------------------


async def test_a_fixed_seed_is_sent_and_shown_on_every_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert "Seed fixed at 42" in await answer_to(app, telegram, "/seed 42")
    first, result = await edit(app, telegram, stepfun)
    assert first.fields["seed"] == "42"
    assert "seed 42" in (result.caption or "")
    second, _ = await edit(app, telegram, stepfun)
    assert second.fields["seed"] == "42"
    assert stepfun.results[0] == stepfun.results[1]  # same photo, prompt and seed


async def test_seed_random_gives_each_edit_a_new_seed(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    await answer_to(app, telegram, "/seed 42")
    assert "random" in await answer_to(app, telegram, "/seed random")
    seeds = [(await edit(app, telegram, stepfun))[0].fields["seed"] for _ in range(3)]
    assert "42" not in seeds
    assert len(set(seeds)) == 3  # 31-bit random seeds: a clash is a one in a billion event


async def test_seed_without_arguments_shows_the_current_seed_and_how_to_use_it(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    text = await answer_to(app, telegram, "/seed")
    assert "Seed is random" in text
    assert "Usage: /seed" in text
    await answer_to(app, telegram, "/seed 7")
    text = await answer_to(app, telegram, "/seed")
    assert "Seed fixed at 7" in text
    assert "Usage: /seed" in text


async def test_a_bad_seed_names_the_valid_range_and_changes_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    await answer_to(app, telegram, "/seed 42")
    for bad in ("abc", "-1", "2147483648", "4.5"):
        text = await answer_to(app, telegram, f"/seed {bad}")
        assert text == "seed must be a whole number from 0 to 2147483647.", bad
    assert "Seed fixed at 42" in await answer_to(app, telegram, "/seed")
    request, _ = await edit(app, telegram, stepfun)
    assert request.fields["seed"] == "42"


# --- /settings and its buttons ------------------------------------------------------------------


async def test_settings_shows_the_defaults(app: BotUnderTest, telegram: FakeTelegram) -> None:
    answer = await ask(app, telegram, "/settings")
    text = answer.text or ""
    assert "steps: 8" in text
    assert "cfg: 1.0" in text
    assert "text mode: auto" in text
    assert "negative prompt: none" in text
    assert "seed: random" in text
    assert "set:text:on" in answer.callback_data


async def test_settings_steps_cfg_and_negative_are_sent_with_the_next_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert "steps: 12" in await answer_to(app, telegram, "/settings steps 12")
    assert "cfg: 4.0" in await answer_to(app, telegram, "/settings cfg 4")
    text = await answer_to(app, telegram, "/settings negative blurry, low quality")
    assert "negative prompt: blurry, low quality" in text
    request, _ = await edit(app, telegram, stepfun)
    assert request.fields["steps"] == "12"
    assert request.fields["cfg_scale"] == "4.0"
    assert request.fields["negative_prompt"] == "blurry, low quality"


async def test_a_setting_sent_right_before_a_photo_is_used_for_it(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    """Both in one batch of updates (read by the gate together): the photo, handled after the
    setting, is edited with it."""
    await answer_to(app, telegram, "/quota")  # Alice is known
    telegram.user_sends_text(CHAT, ALICE, "/settings steps 12")
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(CHAT)
    assert [r.fields["steps"] for r in stepfun.requests] == ["12"]


async def test_the_default_settings_are_sent_when_nothing_was_chosen(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    request, _ = await edit(app, telegram, stepfun)
    assert request.fields["steps"] == "8"
    assert request.fields["cfg_scale"] == "1.0"
    assert request.fields["text_mode"] == "false"
    assert "negative_prompt" not in request.fields


async def test_a_bad_setting_is_explained_and_changes_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    await answer_to(app, telegram, "/settings steps 12")
    expected = {
        "/settings steps 99": "steps must be a whole number from 1 to 50.",
        "/settings steps": "steps must be a whole number from 1 to 50.",
        "/settings cfg 0.5": "cfg must be a number from 1.0 to 10.0.",
        "/settings cfg nan": "cfg must be a number from 1.0 to 10.0.",
        "/settings text maybe": "text mode must be on, off or auto.",
        "/settings bogus 1": "Unknown setting “bogus”. Use steps, cfg, text, negative or seed.",
    }
    for command, explanation in expected.items():
        assert await answer_to(app, telegram, command) == explanation, command
    request, _ = await edit(app, telegram, stepfun)
    assert request.fields["steps"] == "12"
    assert request.fields["cfg_scale"] == "1.0"
    assert request.fields["text_mode"] == "false"


async def test_settings_buttons_edit_the_settings_message_in_place(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    shown = await ask(app, telegram, "/settings")
    telegram.user_presses_button(CHAT, ALICE, shown, "set:text:on")
    await telegram.wait_until(lambda: "text mode: on" in (shown.text or ""))
    assert len(shown.edits) == 1
    assert "set:steps:16" in shown.callback_data  # the buttons stay for the next press
    telegram.user_presses_button(CHAT, ALICE, shown, "set:steps:16")
    await telegram.wait_until(lambda: "steps: 16" in (shown.text or ""))
    assert "text mode: on" in (shown.text or "")
    assert len([m for m in telegram.sent(CHAT) if not m.deleted]) == 1  # no new messages
    request, _ = await edit(app, telegram, stepfun, "make it snow")  # no quotes, yet text mode
    assert request.fields["text_mode"] == "true"
    assert request.fields["steps"] == "16"


async def test_pressing_the_current_value_again_is_harmless(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    shown = await ask(app, telegram, "/settings")
    telegram.user_presses_button(CHAT, ALICE, shown, "set:steps:8")  # already 8
    refused = await telegram.wait_for_call("editMessageText", lambda c: not c.ok)
    assert "not modified" in str(refused.error)  # what Telegram says to an identical edit
    telegram.user_presses_button(CHAT, ALICE, shown, "set:cfg:3.0")  # still works afterwards
    await telegram.wait_until(lambda: "cfg: 3.0" in (shown.text or ""))
    assert "steps: 8" in (shown.text or "")
    assert len(telegram.calls_of("answerCallbackQuery")) == 2  # no spinning buttons
    assert "How to use me" in await answer_to(app, telegram, "/help")
    assert len(telegram.sent(CHAT)) == 2  # the settings and the help: no error message


async def test_settings_reset_restores_the_defaults(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    await answer_to(app, telegram, "/settings steps 30")
    await answer_to(app, telegram, "/settings text off")
    await answer_to(app, telegram, "/settings negative blurry")
    text = await answer_to(app, telegram, "/settings reset")
    assert "steps: 8" in text
    assert "text mode: auto" in text
    assert "negative prompt: none" in text
    request, _ = await edit(app, telegram, stepfun, 'a sign saying "OPEN"')
    assert request.fields["steps"] == "8"
    assert request.fields["text_mode"] == "true"
    assert "negative_prompt" not in request.fields


async def test_the_reset_button_restores_the_defaults(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    shown = await ask(app, telegram, "/settings steps 30")
    telegram.user_presses_button(CHAT, ALICE, shown, "set:reset")
    await telegram.wait_until(lambda: "steps: 8" in (shown.text or ""))
    request, _ = await edit(app, telegram, stepfun)
    assert request.fields["steps"] == "8"


# --- text mode -------------------------------------------------------------------------------


async def test_text_mode_switches_on_by_itself_for_quoted_words(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    expected = {
        'add a speech bubble saying "I was wrong"': "true",
        "add a sign saying “OPEN”": "true",
        "加一个写着「欢迎」的牌子": "true",
        "make the cat's fur white": "false",
        "make it snow": "false",
    }
    for prompt in expected:
        await edit(app, telegram, stepfun, prompt)
    sent = {r.fields["prompt"]: r.fields["text_mode"] for r in stepfun.requests}
    assert sent == expected


async def test_text_mode_off_wins_over_quoted_words(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert "text mode: off" in await answer_to(app, telegram, "/settings text off")
    request, _ = await edit(app, telegram, stepfun, 'add a sign saying "OPEN"')
    assert request.fields["text_mode"] == "false"


# --- languages -------------------------------------------------------------------------------


async def test_a_chinese_user_gets_chinese_answers(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    assert (await answer_to(app, telegram, "/start", XIAOMING)).startswith("你好 小明")
    assert "使用方法" in await answer_to(app, telegram, "/help", XIAOMING)
    telegram.user_sends_text(XIAOMING.id, XIAOMING, "紫色天空下的灯塔")  # nothing to edit yet:
    made = await app.photo_reply(XIAOMING.id)  # a new image from the words
    assert "种子" in (made.caption or "") and stepfun.requests[-1].path.endswith("/generations")
    telegram.user_sends_photo(XIAOMING.id, XIAOMING, PHOTO)  # no caption: the bot asks
    question = await app.text_reply(XIAOMING.id)
    assert "这张照片要怎么改" in (question.text or "")
    telegram.user_sends_text(XIAOMING.id, XIAOMING, "make it snow")
    result = await app.photo_reply(XIAOMING.id)
    assert "种子" in (result.caption or "")  # English words, Chinese interface
    assert [b["text"] for b in result.buttons] == ["🎲 重新生成", "↩️ 撤销", "🖼 原图", "◐ 前后对比"]
    assert "今天还剩 3/5 次修改" in await answer_to(app, telegram, "/quota", XIAOMING)
    assert "没有可取消的任务" in await answer_to(app, telegram, "/cancel", XIAOMING)


async def test_an_english_user_writing_chinese_keeps_the_english_interface(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    prompt = "把天空变成紫色，加上“晚安”两个字"
    request, result = await edit(app, telegram, stepfun, prompt)
    assert request.fields["prompt"] == prompt
    caption = result.caption or ""
    assert caption.startswith(prompt)
    assert f"seed {request.fields['seed']}" in caption
    assert "种子" not in caption
    assert [b["text"] for b in result.buttons] == [
        "🎲 Reroll", "↩️ Undo", "🖼 Full quality", "◐ Compare before / after"
    ]  # fmt: skip


async def test_without_a_language_hint_chinese_words_get_a_chinese_caption(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    anonymous = FakeUser(id=6103, first_name="Li", language_code=None)
    request, result = await edit(app, telegram, stepfun, "把天空变成紫色", anonymous)
    assert request.fields["prompt"] == "把天空变成紫色"
    assert f"种子 {request.fields['seed']}" in (result.caption or "")


# --- /cancel ---------------------------------------------------------------------------------


async def test_cancel_with_nothing_running(app: BotUnderTest, telegram: FakeTelegram) -> None:
    assert await answer_to(app, telegram, "/cancel") == t("nothing_to_cancel")


@pytest.mark.client(timeout=5)
async def test_cancel_after_the_request_left_lets_the_edit_finish_and_charges_it(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 1
    sent = telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await telegram.wait_until(lambda: stepfun.requests)  # the API is working on it
    assert await answer_to(app, telegram, "/cancel") == t("nothing_to_cancel")
    photo = await app.photo_reply(CHAT)  # the vendor did (and billed) the work: delivered
    assert photo.reply_to_message_id == sent.message_id
    assert await app.quota_used(ALICE) == 1
    assert "4 of 5" in await answer_to(app, telegram, "/quota")
    assert len(stepfun.requests) == 1
