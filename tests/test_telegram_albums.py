"""Telegram albums end to end: the real bot (PTB against the fake Bot API) collects an album's
messages (one per picture, sharing a media_group_id, the caption on one of them) through the
database into one request: with a backend that takes several images, one call with all of them
in the order sent, one unit charged; with a backend of one picture (StepFun), one call per
picture and one album back, one unit per picture, a reply to any of its pictures refining that
one; parts arriving out of order, or the caption on the last, change nothing. An album without a
caption is asked about once, and the prompt that answers is the whole album's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.texts import t
from tests.fakes.openai import run_fake_openai
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest, is_note
from tests.images import decode, make_image

ALICE = FakeUser(id=6161, first_name="Alice", language_code="en")
CHAT = ALICE.id
SIZES = [(320, 240), (300, 200), (200, 300)]  # each picture told apart by its size
PHOTOS = [make_image(w, h, color=(30, 120, 200)) for w, h in SIZES]


@pytest.fixture
async def openai_app(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> AsyncIterator[tuple[BotUnderTest, Any]]:
    async with run_fake_openai() as fake:
        client = {"style": "openai", "api_key": fake.api_key, "base_url": fake.base_url}
        options = {"daily_quota": 5, "album_wait": 0.3}
        bot = BotUnderTest(telegram, stepfun, sqlite_url, options, client)
        await bot.start()
        try:
            yield bot, fake
        finally:
            await bot.stop()


async def asked_once(
    app: BotUnderTest, telegram: FakeTelegram
) -> tuple[StoredMessage, list[StoredMessage]]:
    """Alice sends the three photos as an album without a caption: the bot's one question,
    and her photos' messages."""
    photos = telegram.user_sends_album(CHAT, ALICE, PHOTOS, order=[1, 2, 0])
    question = await app.text_reply(CHAT)
    assert question.text == t("ask_prompt")
    await app.idle()
    assert [m.text for m in telegram.sent(CHAT)] == [question.text]  # one question, no picture
    return question, photos


@pytest.mark.parametrize(
    ("caption_on", "order"), [(0, [0, 1, 2]), (2, [0, 1, 2]), (0, [2, 0, 1]), (1, [1, 2, 0])]
)
async def test_an_album_of_three_is_one_edit_of_all_three_in_the_order_sent(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram, caption_on: int, order: list[int]
) -> None:
    app, fake = openai_app
    telegram.user_sends_album(
        CHAT, ALICE, PHOTOS, "put the hat on the cat", caption_on=caption_on, order=order
    )
    result = await app.photo_reply(CHAT)
    assert "put the hat on the cat" in (result.caption or "")
    await app.idle()
    assert len(fake.requests) == 1
    assert [decode(entry[0]).size for entry in fake.last.images] == SIZES
    assert await app.quota_used(ALICE) == 1
    assert len([m for m in telegram.sent(CHAT) if m.photo]) == 1  # one result, no question
    assert not [m for m in telegram.sent(CHAT) if "What should I change" in (m.text or "")]


async def test_an_album_needs_a_unit_per_picture(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    async with run_fake_openai() as fake:
        client = {"style": "openai", "api_key": fake.api_key, "base_url": fake.base_url}
        options = {"daily_quota": 2, "album_wait": 0.3}
        app = BotUnderTest(telegram, stepfun, sqlite_url, options, client)
        await app.start()
        try:
            telegram.user_sends_album(CHAT, ALICE, PHOTOS, "put the hat on the cat")
            answer = await app.text_reply(CHAT)
            assert "daily" in (answer.text or "") or "quota" in (answer.text or "").lower()
            assert not fake.requests and await app.quota_used(ALICE) == 0
        finally:
            await app.stop()


@pytest.mark.parametrize("prompt", ["the album's caption", "the answer to the bot's question"])
async def test_a_one_picture_backend_edits_each_and_sends_one_album_back(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str, prompt: str
) -> None:
    app = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 5, "album_wait": 0.3})
    await app.start()
    try:
        if prompt == "the album's caption":
            telegram.user_sends_album(CHAT, ALICE, PHOTOS, "put the hat on the cat", caption_on=1)
        else:  # no caption: asked once, and the answer is the whole album's prompt
            await asked_once(app, telegram)
            telegram.user_sends_text(CHAT, ALICE, "put the hat on the cat")
        buttons = await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and
                                                  not is_note(m))  # fmt: skip
        assert "put the hat on the cat" in (buttons.text or "")
        assert any(data.startswith("reroll:") for data in buttons.callback_data)
        await app.idle()
        album = [m for m in telegram.sent(CHAT) if m.photo]
        assert len(album) == 3 and album[0].media_group_id  # one album, its pictures in order
        assert {m.media_group_id for m in album} == {album[0].media_group_id}
        assert [decode(m.photo_bytes or b"").size for m in album] == SIZES
        assert [decode(request.image).size for request in stepfun.requests] == SIZES
        assert await app.quota_used(ALICE) == 3  # one unit per picture delivered
        # A reply to the album's second picture refines that picture.
        await app.wait_linked(album[1])
        telegram.user_sends_text(CHAT, ALICE, "now at night", reply_to=album[1])
        await telegram.wait_until(lambda: len(stepfun.requests) == 4)
        refined = await app.photo_reply(CHAT)
        assert "now at night" in (refined.caption or "")
        assert decode(stepfun.last.image).size == SIZES[1]  # the second result, not the first
        assert await app.quota_used(ALICE) == 4
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("bad", "answer"),
    [
        ({"videos": [1]}, "mixes pictures with other files"),
        ({"too_large": [2]}, "too large"),
    ],
)
async def test_an_album_with_a_video_or_a_file_too_large_gets_one_answer_and_costs_nothing(
    telegram: FakeTelegram,
    stepfun: FakeStepFun,
    sqlite_url: str,
    bad: dict[str, list[int]],
    answer: str,
) -> None:
    app = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 5, "album_wait": 0.3})
    await app.start()
    try:
        telegram.user_sends_album(CHAT, ALICE, PHOTOS, "put the hat on the cat", **bad)
        said = await app.text_reply(CHAT)
        assert answer in (said.text or "")
        await app.idle()
        assert [m for m in telegram.sent(CHAT) if not is_note(m)] == [said]  # one answer
        assert not stepfun.requests and not telegram.calls_of("getFile")
        assert await app.quota_used(ALICE) == 0
    finally:
        await app.stop()


async def test_an_album_telegram_refuses_as_photos_comes_as_files(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 5, "album_wait": 0.3})
    await app.start()
    try:
        telegram.fail_next("sendMediaGroup",
                           description="Bad Request: PHOTO_INVALID_DIMENSIONS")  # fmt: skip
        telegram.user_sends_album(CHAT, ALICE, PHOTOS[:2], "put the hat on the cat")
        await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and not is_note(m))
        await app.idle()
        files = [m for m in telegram.sent(CHAT) if m.document]
        assert [decode(m.document_bytes or b"").size for m in files] == SIZES[:2]
        assert len({m.media_group_id for m in files}) == 1 and files[0].media_group_id
        await app.wait_linked(files[1])  # a reply to either file refines it
        assert await app.quota_used(ALICE) == 2
    finally:
        await app.stop()


async def test_undo_of_an_album_shows_all_its_pictures_again(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    app = BotUnderTest(telegram, stepfun, sqlite_url, {"daily_quota": 5, "album_wait": 0.3})
    await app.start()
    try:
        telegram.user_sends_album(CHAT, ALICE, PHOTOS, "put the hat on the cat")
        buttons = await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and
                                                  not is_note(m))  # fmt: skip
        await app.idle()
        undo = next(data for data in buttons.callback_data if data.startswith("undo:"))
        telegram.user_presses_button(CHAT, ALICE, buttons, undo)
        await telegram.wait_until(lambda: len([m for m in telegram.sent(CHAT) if m.photo]) == 6)
        again = [m for m in telegram.sent(CHAT) if m.photo][3:]
        assert [decode(m.photo_bytes or b"").size for m in again] == SIZES
        for shown in again:  # the originals (uniform), not the results (tinted, striped)
            colors = decode(shown.photo_bytes or b"").convert("RGB").getcolors(1 << 16) or []
            assert max(colors)[1] == pytest.approx((30, 120, 200), abs=6)
        assert {m.media_group_id for m in again} == {again[0].media_group_id}
        await app.wait_linked(again[2])  # each repliable
        assert await app.quota_used(ALICE) == 3  # Undo is free
    finally:
        await app.stop()


async def test_a_part_without_caption_that_comes_late_is_kept_for_a_reply_only(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram
) -> None:
    """A straggler of an album asked about: a reply to it edits it, but the user's next
    words still edit the whole album."""
    app, fake = openai_app
    telegram.user_sends_album(CHAT, ALICE, PHOTOS[:2])  # no caption: asked about
    await app.text_reply(CHAT)
    late = telegram.user_sends_photo(CHAT, ALICE, PHOTOS[2], media_group_id="album-1")
    await app.wait_linked(late)
    await app.idle()
    telegram.user_sends_text(CHAT, ALICE, "put the hat on the cat")
    await app.photo_reply(CHAT)
    assert [decode(entry[0]).size for entry in fake.last.images] == SIZES[:2]
    telegram.user_sends_text(CHAT, ALICE, "make it night", reply_to=late)
    await app.photo_reply(CHAT)
    assert [decode(entry[0]).size for entry in fake.last.images] == [SIZES[2]]


async def test_a_caption_on_a_part_that_comes_after_its_album_was_taken_is_still_answered(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram
) -> None:
    """The captioned part arrives late (Telegram sent it again after a failure, say): the rest
    was taken without a caption and asked about; the late caption is a request of its own."""
    app, fake = openai_app
    telegram.user_sends_album(CHAT, ALICE, PHOTOS[:2])  # no caption: asked about
    question = await app.text_reply(CHAT)
    assert "What should I change" in (question.text or "")
    late = telegram.user_sends_photo(
        CHAT, ALICE, PHOTOS[2], caption="put the hat on the cat", media_group_id="album-1"
    )
    result = await app.photo_reply(CHAT)
    assert result.reply_to_message_id == late.message_id
    assert "put the hat on the cat" in (result.caption or "")
    assert [decode(entry[0]).size for entry in fake.last.images] == [SIZES[2]]
    assert await app.quota_used(ALICE) == 1


@pytest.mark.parametrize("answer", ["the next text", "a reply to the question"])
async def test_an_album_without_a_caption_is_asked_about_once_and_the_answer_edits_all_of_it(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram, answer: str
) -> None:
    app, fake = openai_app
    question, _ = await asked_once(app, telegram)
    reply_to = question if answer == "a reply to the question" else None
    telegram.user_sends_text(CHAT, ALICE, "put the hat on the cat", reply_to=reply_to)
    result = await app.photo_reply(CHAT)
    assert "put the hat on the cat" in (result.caption or "")
    await app.idle()
    assert len(fake.requests) == 1  # one edit of all three, in the order sent
    assert [decode(entry[0]).size for entry in fake.last.images] == SIZES
    assert await app.quota_used(ALICE) == 1  # one picture delivered: as with the caption


async def test_words_typed_right_after_an_album_without_a_caption_are_its_caption(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram
) -> None:
    """Alice sends a photo and is asked about it; then an album without a caption, and types
    what to change at once, before the album is complete: her words are the album's caption.
    They edit all three (not her earlier photo), and the bot asks nothing more."""
    app, fake = openai_app
    telegram.user_sends_photo(CHAT, ALICE, make_image(120, 90))
    assert (await app.text_reply(CHAT)).text == t("ask_prompt")
    await app.idle()
    telegram.user_sends_album(CHAT, ALICE, PHOTOS)
    words = telegram.user_sends_text(CHAT, ALICE, "put the hat on the cat")
    result = await app.photo_reply(CHAT)
    assert "put the hat on the cat" in (result.caption or "")
    await app.idle()
    assert len(fake.requests) == 1
    assert [decode(entry[0]).size for entry in fake.last.images] == SIZES
    assert [m.text for m in telegram.sent(CHAT) if m.kind == "text" and not is_note(m)] == [
        t("ask_prompt")
    ]
    assert await app.quota_used(ALICE) == 1
    telegram.redeliver(words)  # after a crash before they were written down as handled
    await app.idle()
    assert len(fake.requests) == 1 and await app.quota_used(ALICE) == 1  # given once


async def test_a_reply_to_one_photo_of_an_album_asked_about_edits_that_photo(
    openai_app: tuple[BotUnderTest, Any], telegram: FakeTelegram
) -> None:
    app, fake = openai_app
    _, photos = await asked_once(app, telegram)
    second = photos[1]
    telegram.user_sends_text(CHAT, ALICE, "put the hat on the cat", reply_to=second)
    await app.photo_reply(CHAT)
    assert [decode(entry[0]).size for entry in fake.last.images] == [SIZES[1]]
    assert await app.quota_used(ALICE) == 1


@pytest.mark.service(daily_quota=5, album_wait=0.3)
async def test_a_one_picture_backend_fetches_each_picture_while_the_call_before_it_runs(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    """An album of ten 20 MB pictures is not held at once: each picture is fetched once the
    call of the one before it was made (two are held at most), and before its own call."""
    sent = telegram.user_sends_album(CHAT, ALICE, PHOTOS, "put the hat on the cat")
    await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and not is_note(m))
    await app.idle()
    asked = {call.params["file_id"]: call.at for call in telegram.calls_of("getFile")}
    fetched = [asked[message.photo[-1]["file_id"]] for message in sent if message.photo]
    calls = [request.at for request in stepfun.requests]
    assert len(fetched) == len(calls) == 3
    assert fetched[0] < calls[0] < fetched[2] < calls[2]  # the third waits for the first's call
    assert fetched[1] < calls[1]
    assert [decode(request.image).size for request in stepfun.requests] == SIZES
    album = [m for m in telegram.sent(CHAT) if m.photo]
    assert len(album) == 3
    await app.wait_linked(album[2])  # (the edit has ended)
    assert await app.quota_used(ALICE) == 3


@pytest.mark.service(daily_quota=5, album_wait=0.3)
async def test_a_picture_that_cannot_be_read_is_left_out_of_an_album_made_one_by_one(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    """The second picture of three is no image: the first and the third are edited and sent,
    two units charged, and the caption says a picture was left out."""
    broken = [PHOTOS[0], b"not a picture", PHOTOS[2]]
    telegram.user_sends_album(CHAT, ALICE, broken, "put the hat on the cat")
    buttons = await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and
                                              not is_note(m))  # fmt: skip
    await app.idle()
    assert "could not edit every picture" in (buttons.text or "")
    album = [m for m in telegram.sent(CHAT) if m.photo]
    assert [decode(m.photo_bytes or b"").size for m in album] == [SIZES[0], SIZES[2]]
    await app.wait_linked(album[1])  # (the edit has ended)
    assert [decode(request.image).size for request in stepfun.requests] == [SIZES[0], SIZES[2]]
    assert not [m for m in telegram.sent(CHAT) if "couldn't read" in (m.text or "")]
    assert await app.quota_used(ALICE) == 2


@pytest.mark.parametrize("same_update", [True, False], ids=["same update", "new update id"])
@pytest.mark.service(daily_quota=5, album_wait=0.3)
async def test_an_album_part_delivered_again_after_its_album_was_answered_changes_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, same_update: bool
) -> None:
    """Telegram sends a part again after a restart (with its update id, or a new one after the
    offset was lost): the user's next text still edits the album's result, not that part."""
    sent = telegram.user_sends_album(CHAT, ALICE, PHOTOS[:2], "put the hat on the cat")
    await telegram.wait_for_message(CHAT, lambda m: bool(m.callback_data) and not is_note(m))
    album = [m for m in telegram.sent(CHAT) if m.photo]
    await app.wait_linked(album[1])  # (the edit has ended)
    await app.restart()
    before = len(telegram.sent(CHAT))
    telegram.redeliver(sent[1], same_update=same_update)
    await app.idle()
    assert len(telegram.sent(CHAT)) == before  # no answer, no question
    telegram.user_sends_text(CHAT, ALICE, "now at night")
    refined = await app.photo_reply(CHAT)
    assert "now at night" in (refined.caption or "")
    assert len(stepfun.requests) == 3
    assert decode(stepfun.last.image).size == SIZES[0]  # the album's first result
    assert decode(stepfun.last.image) != decode(PHOTOS[0])
    assert await app.quota_used(ALICE) == 3
