"""Compare (issue 19): under a result, the picture it was made from beside it, drawn by the bot
(no API call, no unit), labelled in the user's language; only where the chat saw the source,
only for whoever asked for the edit, also after a restart."""

from __future__ import annotations

from PIL import Image, ImageChops, ImageStat

from bot import memes
from bot.texts import EN, ZH, t
from tests.discord_harness import DiscordUnderTest, mention_and_wait, photo
from tests.fakes.discord import ALICE as DISCORD_ALICE
from tests.fakes.discord import FakeDiscord
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_image
from tests.test_discord_edges import button_of, pictures_in, slash_edit

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
LI = FakeUser(id=4343, first_name="Li", language_code="zh-hans")
PHOTO = make_image(640, 480, color=(30, 120, 200))
RED, BLUE = (220, 20, 20), (20, 20, 220)


def mean(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image.convert("RGB").crop(box)).mean)


def close(a: tuple[float, ...], b: tuple[float, ...], within: float = 12) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < within


# --- the drawing --------------------------------------------------------------------------------


def test_portraits_go_side_by_side_at_the_same_height_with_their_labels() -> None:
    before = make_image(300, 400, color=RED)
    after = make_image(600, 800, color=BLUE)  # twice as big: shown at the same height
    drawn = decode(memes.compare(before, after, ("Before", "After")).data)
    assert drawn.height == 400 and 600 < drawn.width < 620  # 300 + a thin line + 300
    # Each half is its picture (away from the label in its top left corner)...
    assert close(mean(drawn, (100, 200, 280, 380)), RED)
    assert close(mean(drawn, (drawn.width - 200, 200, drawn.width - 20, 380)), BLUE)
    # ...and the labels are drawn on them.
    plain = Image.new("RGB", (60, 20), RED)
    label = drawn.crop((0, 0, 60, 20))
    assert ImageChops.difference(label, plain).getbbox() is not None


def test_landscapes_go_one_above_the_other_at_the_same_width() -> None:
    before, after = make_image(640, 480, color=RED), make_image(640, 480, color=BLUE)
    drawn = decode(memes.compare(before, after, ("修改前", "修改后")).data)
    assert drawn.width == 640 and 960 < drawn.height < 980
    assert close(mean(drawn, (200, 200, 600, 460)), RED)
    assert close(mean(drawn, (200, drawn.height - 260, 600, drawn.height - 20)), BLUE)


# --- Telegram ------------------------------------------------------------------------------------


def compare_button(message: StoredMessage) -> str:
    (data,) = [d for d in message.callback_data if d.startswith("compare:")]
    return data


async def comparison(app: BotUnderTest, result: StoredMessage, user: FakeUser) -> StoredMessage:
    app.telegram.user_presses_button(result.chat_id, user, result, compare_button(result))
    return await app.telegram.wait_for_message(
        result.chat_id,
        lambda m: m.kind == "photo" and m.reply_to_message_id == result.message_id,
    )


async def test_compare_shows_the_photo_above_the_result_for_free(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(ALICE.id)
    shown = await comparison(app, result, ALICE)
    assert shown.caption == t("caption_compare", EN, prompt="make it snow")
    assert shown.callback_data == []  # no result of its own: nothing to reroll or compare
    drawn = decode(shown.photo_bytes or b"")
    assert drawn.width == 640 and drawn.height > 2 * 470  # 640x480 twice, one above the other
    top = drawn.crop((0, 0, 640, 480))
    bottom = drawn.crop((0, drawn.height - 480, 640, drawn.height))
    source, made = decode(PHOTO).convert("RGB"), decode(stepfun.results[0]).convert("RGB")
    away_from_label = (100, 100, 600, 460)
    assert close(mean(top, away_from_label), mean(source, away_from_label))
    assert close(mean(bottom, away_from_label), mean(made, away_from_label))
    assert len(stepfun.requests) == 1 and await app.quota_used(ALICE) == 1


async def test_compare_speaks_the_users_language_and_works_after_a_restart(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(LI.id, LI, PHOTO, caption="下雪")
    result = await app.photo_reply(LI.id)
    assert t("btn_compare", ZH) in [b["text"] for row in result.reply_markup["inline_keyboard"]
                                    for b in row]  # fmt: skip
    await app.restart()
    shown = await comparison(app, result, LI)
    assert shown.caption == t("caption_compare", ZH, prompt="下雪")
    assert await app.quota_used(LI) == 1


async def test_a_new_image_from_words_has_nothing_to_compare(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_text(ALICE.id, ALICE, "/imagine a cat in a hat")
    made = await app.photo_reply(ALICE.id)
    assert [d.split(":")[0] for d in made.callback_data] == ["reroll", "undo", "full"]
    # Its refinement compares with it: the chat saw the new image.
    telegram.user_sends_text(ALICE.id, ALICE, "make it night", reply_to=made.message_id)
    refined = await app.photo_reply(ALICE.id)
    shown = await comparison(app, refined, ALICE)
    assert decode(shown.photo_bytes or b"").size[0] > 0


# --- Discord -------------------------------------------------------------------------------------


async def test_on_discord_compare_is_offered_only_where_the_channel_saw_the_source(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    private_input = await slash_edit(bot, fake_discord)  # an attachment only Alice saw
    assert not [c for c in private_input.custom_ids if ":compare:" in c]
    public = await mention_and_wait(bot, fake_discord)  # a photo posted in the channel
    before = len(pictures_in(fake_discord))
    fake_discord.user_clicks_button(public, button_of(public, "compare"))
    await fake_discord.wait_until(lambda: len(pictures_in(fake_discord)) == before + 1)
    drawn = pictures_in(fake_discord)[-1]
    assert drawn.content.startswith(t("caption_compare", EN, prompt="make it snow"))
    (_, data), *_ = drawn.files
    assert decode(data).width == decode(photo().data).width  # one above the other
    assert len(stepfun.requests) == 2 and await bot.quota_used(DISCORD_ALICE) == 2
