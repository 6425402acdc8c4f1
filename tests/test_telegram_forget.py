"""End to end on Telegram, on SQLite and PostgreSQL: after /forget nothing of the user's words or
photos is left in any table, and a reply to one of their old photos is told to send it again;
a result made again with the same bytes as a deleted one (the same /caption after /forget, the
same seed after the retention) is a picture that stays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.config import OperatorRules
from bot.texts import t
from storage.models import Base
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=4242, first_name="Zorblatt", language_code="en")
CHAT = ALICE.id


@pytest.fixture
async def app_on(
    telegram: FakeTelegram, stepfun: FakeStepFun, db_url: str
) -> AsyncIterator[BotUnderTest]:
    """The bot on the test's database (each test runs on SQLite and on PostgreSQL)."""
    bot = BotUnderTest(telegram, stepfun, db_url)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


async def forget(app: BotUnderTest, telegram: FakeTelegram, edits: int) -> None:
    telegram.user_sends_text(CHAT, ALICE, "/forget")
    question = await app.text_reply(CHAT)
    telegram.user_presses_button(CHAT, ALICE, question, "forget:yes")
    await telegram.wait_until(lambda: question.text == t("forget_done", edits=edits))
    await app.idle()  # the /forget and its press handled: no longer kept as received


async def stored_text(app: BotUnderTest) -> list[tuple[str, str | bytes]]:
    """("table.column", value) of every text and binary value the bot keeps."""
    assert app.store is not None
    found: list[tuple[str, str | bytes]] = []
    async with app.store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if isinstance(value, str | bytes):
                        found.append((f"{table.name}.{column.name}", value))
    return found


def places(values: list[tuple[str, str | bytes]], word: str) -> list[str]:
    """Where `word` is kept (also inside binary values, as UTF-8)."""
    return [
        where
        for where, value in values
        if (word in value if isinstance(value, str) else word.encode() in value)
    ]


async def full_quality(app: BotUnderTest, telegram: FakeTelegram, result: StoredMessage) -> str:
    """What pressing Full quality under `result` gets: "document" or the text answered."""
    (full,) = [data for data in result.callback_data if data.startswith("full:")]
    telegram.user_presses_button(CHAT, ALICE, result, full)
    answer = await telegram.wait_for_message(CHAT, lambda m: m.kind in ("document", "text"))
    return "document" if answer.kind == "document" else answer.text or ""


async def test_after_forget_no_table_holds_their_words_or_files_and_old_photos_are_expired(
    app_on: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    app = app_on
    first = telegram.user_sends_photo(CHAT, ALICE, make_image(320, 240))  # no words: asked
    assert (await app.text_reply(CHAT)).text == t("ask_prompt")
    second = telegram.user_sends_photo(CHAT, ALICE, make_image(300, 200, color=(10, 200, 90)))
    await app.text_reply(CHAT)  # the first one is no longer the current picture
    telegram.user_sends_text(CHAT, ALICE, "/settings negative NEGWORD blur")
    await app.text_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "PROMPTWORD make it snow")  # edits the second
    edited = await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "/caption TOPWORD | BOTTOMWORD")
    await app.photo_reply(CHAT)
    words = ["Zorblatt", "NEGWORD", "PROMPTWORD", "TOPWORD", "BOTTOMWORD"]
    assert first.file_id is not None and second.file_id is not None
    needles = [*words, first.file_id, second.file_id]
    before = await stored_text(app)
    assert all(places(before, needle) for needle in needles)  # the search finds them

    await forget(app, telegram, edits=2)
    after = await stored_text(app)
    assert [places(after, needle) for needle in needles] == [[] for _ in needles]
    calls = len(stepfun.requests)
    for old in (first, second, edited):  # a reply to an old photo of theirs edits nothing
        telegram.user_sends_text(CHAT, ALICE, "make it blue", reply_to=old)
        assert (await app.text_reply(CHAT)).text == t("error_image_expired")
    telegram.user_sends_text(CHAT, ALICE, "/caption more words", reply_to=first)
    assert (await app.text_reply(CHAT)).text == t("error_image_expired")
    await app.idle()
    assert len(stepfun.requests) == calls
    assert [m.kind for m in telegram.sent(CHAT) if m.message_id > edited.message_id].count(
        "photo"
    ) == 1  # the caption drawn before /forget: nothing since
    assert await app.quota_used(ALICE) == 1  # the quota is not forgotten


async def test_the_same_caption_after_forget_is_a_picture_that_stays(
    app_on: BotUnderTest, telegram: FakeTelegram
) -> None:
    photo = make_image(320, 240)
    telegram.user_sends_photo(CHAT, ALICE, photo)
    await app_on.text_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "/caption when the build | is green")
    drawn = await app_on.photo_reply(CHAT)
    await forget(app_on, telegram, edits=1)
    telegram.user_sends_photo(CHAT, ALICE, photo)  # the same photo and words again
    await app_on.text_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "/caption when the build | is green")
    again = await app_on.photo_reply(CHAT)
    assert again.photo_bytes == drawn.photo_bytes
    assert await full_quality(app_on, telegram, again) == "document"


async def test_the_same_seed_after_the_retention_deleted_a_result_is_a_picture_that_stays(
    telegram: FakeTelegram, stepfun: FakeStepFun, db_url: str
) -> None:
    now = [datetime.now(UTC)]
    rules = OperatorRules(retention_days=30)
    app = BotUnderTest(telegram, stepfun, db_url, {"clock": lambda: now[0], "rules": rules})
    await app.start()
    try:
        photo = make_image(320, 240)
        telegram.user_sends_text(CHAT, ALICE, "/seed 7")
        await app.text_reply(CHAT)
        telegram.user_sends_photo(CHAT, ALICE, photo, caption="make it snow")
        old = await app.photo_reply(CHAT)
        old_edit = int(old.callback_data[0].split(":")[1])
        now[0] += timedelta(days=31)
        await app.restart()  # the retention job runs at start
        assert app.store is not None
        record = await app.store.get_edit(old_edit)
        assert record is not None and record.result_image_id is not None
        async with asyncio.timeout(10):
            while not await app.store.expired(record.result_image_id):  # noqa: ASYNC110 - a poll
                await asyncio.sleep(0.01)
        telegram.user_sends_photo(CHAT, ALICE, photo, caption="make it snow")
        again = await app.photo_reply(CHAT)
        assert stepfun.results[0] == stepfun.results[1]  # the same picture, made again
        assert await full_quality(app, telegram, again) == "document"
    finally:
        await app.stop()
