"""End to end on Telegram: /caption and /bubble draw exact words locally (no API call, no unit),
their result is an ordinary result (Reroll places the bubble elsewhere, Undo, a reply refines
it with the model), and captioning a captioned picture replaces the words."""

from __future__ import annotations

from PIL import ImageChops

from bot.texts import t
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(640, 480, color=(30, 120, 200))


async def captioned(app: BotUnderTest, telegram: FakeTelegram, words: str) -> StoredMessage:
    telegram.user_sends_text(CHAT, ALICE, f"/caption {words}")
    return await app.photo_reply(CHAT)


def data(telegram: FakeTelegram, message: StoredMessage) -> bytes:
    assert message.photo_bytes is not None
    return message.photo_bytes


async def test_caption_draws_the_words_with_no_api_call_and_no_unit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO)  # no caption: kept, and asked about
    await app.text_reply(CHAT)
    first = await captioned(app, telegram, "when the build | is green 猫")
    picture = decode(data(telegram, first))
    assert picture.size == (640, 480)
    plain = decode(PHOTO).convert("RGB")
    diff = (
        ImageChops.difference(picture.convert("RGB"), plain)
        .convert("L")
        .point(lambda v: 255 if v > 60 else 0)
    )
    box = diff.getbbox()
    assert box is not None  # words were drawn...
    top_band, bottom_band = diff.crop((0, 0, 640, 160)), diff.crop((0, 320, 640, 480))
    assert top_band.getbbox() and bottom_band.getbbox()  # ...at the top and at the bottom
    assert not stepfun.requests and await app.quota_used(ALICE) == 0
    assert [d.split(":")[0] for d in first.callback_data] == ["reroll", "undo", "full"]

    again = await captioned(app, telegram, "new words")  # on the captioned picture
    fresh = await captioned(app, telegram, "new words")  # the same words again
    assert data(telegram, again) == data(telegram, fresh)  # replaced, not stacked
    undo = next(d for d in again.callback_data if d.startswith("undo:"))
    telegram.user_presses_button(CHAT, ALICE, again, undo)
    back = await app.photo_reply(CHAT)
    assert decode(data(telegram, back)).size == (640, 480)


async def test_a_bubble_is_rerolled_to_another_place_and_a_reply_refines_it_with_the_model(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO)
    await app.text_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "/bubble I was wrong")
    bubble = await app.photo_reply(CHAT)
    reroll = next(d for d in bubble.callback_data if d.startswith("reroll:"))
    telegram.user_presses_button(CHAT, ALICE, bubble, reroll)
    moved = await app.photo_reply(CHAT)
    assert data(telegram, moved) != data(telegram, bubble)
    assert not stepfun.requests
    telegram.user_sends_text(CHAT, ALICE, "make it night", reply_to=moved)
    await app.photo_reply(CHAT)
    assert stepfun.requests[-1].fields["prompt"] == "make it night"
    assert await app.quota_used(ALICE) == 1


async def test_empty_and_overlong_captions_get_a_clear_answer(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO)
    await app.text_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "/caption")
    assert (await app.text_reply(CHAT)).text == t("error_meme_text_empty")
    telegram.user_sends_text(CHAT, ALICE, "/caption " + "x" * 1000)
    assert (await app.text_reply(CHAT)).text == t("error_meme_text_too_long", limit=200)
