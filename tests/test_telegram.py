"""End to end in a private chat: a user talks to the real bot through the fake Bot API, and the
fake StepFun API does the edits. Assertions are on what the user sees and what is stored."""

from __future__ import annotations

import pytest

from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(640, 480, color=(30, 120, 200))


async def test_photo_with_caption_comes_back_edited(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(CHAT)
    assert result.reply_to_message_id == sent.message_id
    assert decode(result.photo_bytes).size == (640, 480)
    request = stepfun.requests[0]
    assert request.fields["prompt"] == "make it snow"
    assert decode(request.image).size == (640, 480)
    assert result.caption is not None
    assert "make it snow" in result.caption
    assert f"seed {request.fields['seed']}" in result.caption
    assert [b.split(":")[0] for b in result.callback_data] == ["reroll", "undo", "full", "compare"]
    statuses = [m for m in telegram.sent(CHAT) if m.kind == "text"]
    assert [m.text for m in statuses] == ["🎨 Editing…"]
    await telegram.wait_until(lambda: statuses[0].deleted)  # the note goes once the photo is in
    assert await app.quota_used(ALICE) == 1


async def test_photo_without_caption_asks_then_the_next_text_edits_it(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO)
    question = await app.text_reply(CHAT)
    assert "What should I change" in (question.text or "")
    assert stepfun.requests == []
    telegram.user_sends_text(CHAT, ALICE, "add a rainbow")
    result = await app.photo_reply(CHAT)
    assert "add a rainbow" in (result.caption or "")
    assert decode(stepfun.requests[0].image).size == (640, 480)


async def test_a_refine_chain_of_three_sends_the_previous_result_each_time(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    first = await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=first.message_id)
    second = await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "make it night", reply_to=second.message_id)
    await app.photo_reply(CHAT)
    assert [r.fields["prompt"] for r in stepfun.requests] == [
        "make it snow",
        "add a snowman",
        "make it night",
    ]
    assert stepfun.requests[1].image == stepfun.results[0]
    assert stepfun.requests[2].image == stepfun.results[1]


async def test_replying_to_an_older_result_refines_exactly_that_one(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    first = await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "add a snowman")  # plain text: refines the latest
    await app.photo_reply(CHAT)
    assert stepfun.requests[1].image == stepfun.results[0]
    telegram.user_sends_text(CHAT, ALICE, "make it sunny", reply_to=first.message_id)
    await app.photo_reply(CHAT)
    assert stepfun.requests[2].image == stepfun.results[0]


async def test_reply_to_refine_works_after_a_restart(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    first = await app.photo_reply(CHAT)
    await app.restart()
    telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=first.message_id)
    await app.photo_reply(CHAT)
    assert stepfun.requests[1].image == stepfun.results[0]
    assert first.file_id not in [f.file_id for f in telegram.downloads]  # found in the database


async def test_reply_to_any_photo_edits_that_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    own = telegram.user_sends_photo(CHAT, ALICE, make_image(300, 200), caption=None)
    await app.text_reply(CHAT)  # "what should I change?"
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "make it red", reply_to=own.message_id)
    await app.photo_reply(CHAT)
    assert decode(stepfun.requests[-1].image).size == (300, 200)


async def test_edit_in_a_group_with_nothing_to_edit_says_what_to_do(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    """(In a private chat, words alone make a new image: see test_imagine.py.)"""
    telegram.user_sends_text(-100777, ALICE, "/edit make it snow", chat_type="supergroup")
    answer = await app.text_reply(-100777)
    assert "no photo to edit" in (answer.text or "")
    assert stepfun.requests == []


async def test_a_429_then_success_delivers_the_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.fail_next(429, retry_after=0.1)
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(CHAT)
    assert [r.status for r in stepfun.requests] == [429, 200]
    assert await app.quota_used(ALICE) == 1


@pytest.mark.client(timeout=0.3, retries=0)
async def test_a_timeout_gets_a_friendly_error_and_costs_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 1.0
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    answer = await app.text_reply(CHAT)
    assert "took too long" in (answer.text or "")
    assert "Nothing was charged" in (answer.text or "")
    assert await app.quota_used(ALICE) == 0
    stepfun.delay = 0
    telegram.user_sends_text(CHAT, ALICE, "make it snow")  # the photo is kept: just try again
    await app.photo_reply(CHAT)
    assert await app.quota_used(ALICE) == 1


@pytest.mark.service(daily_quota=2)
async def test_quota_is_charged_per_delivered_result_only(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.fail_next(500, times=3)  # every attempt of the first edit fails
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    failure = await app.text_reply(CHAT)
    assert "temporarily unavailable" in (failure.text or "")
    stepfun.filter_next()
    telegram.user_sends_text(CHAT, ALICE, "make it snow")
    refusal = await app.text_reply(CHAT)
    assert "refused" in (refusal.text or "")
    for _ in range(2):
        telegram.user_sends_text(CHAT, ALICE, "more snow")
        await app.photo_reply(CHAT)
    telegram.user_sends_text(CHAT, ALICE, "even more snow")
    out = await app.text_reply(CHAT)
    assert "used all 2 edits" in (out.text or "")
    telegram.user_sends_text(CHAT, ALICE, "/quota")
    quota = await app.text_reply(CHAT)
    assert "0 of 2" in (quota.text or "")
    assert await app.quota_used(ALICE) == 2


async def test_an_album_gets_one_question_not_one_per_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    album = [
        telegram.user_sends_photo(CHAT, ALICE, make_image(200 + i, 150), media_group_id="a1")
        for i in range(3)
    ]
    question = await app.text_reply(CHAT)
    assert "What should I change" in (question.text or "")
    await app.idle()
    questions = [m for m in telegram.sent(CHAT) if "What should I change" in (m.text or "")]
    assert questions == [question]
    await app.wait_linked(question)
    telegram.user_sends_text(CHAT, ALICE, "make it snow", reply_to=question)
    await app.photo_reply(CHAT)
    asked_about = next(p for p in album if p.message_id == question.reply_to_message_id)
    assert (
        decode(stepfun.requests[0].image).size
        == decode(telegram.file_bytes(asked_about.file_id or "")).size
    )


async def test_an_album_with_a_caption_edits_the_captioned_photo_without_questions(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow", media_group_id="a2")
    result = await app.photo_reply(CHAT)
    assert "make it snow" in (result.caption or "")
    rest = telegram.user_sends_photo(CHAT, ALICE, make_image(300, 200), media_group_id="a2")
    await telegram.wait_until_confirmed(rest)
    await app.idle()
    assert not [m for m in telegram.sent(CHAT) if "What should I change" in (m.text or "")]
    assert decode(stepfun.requests[0].image).size == (640, 480)
    assert len(stepfun.requests) == 1


@pytest.mark.postgres
async def test_reply_to_refine_after_a_restart_on_postgresql(
    telegram: FakeTelegram, stepfun: FakeStepFun, postgres_url: str
) -> None:
    app = BotUnderTest(telegram, stepfun, postgres_url)
    await app.start()
    try:
        telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
        first = await app.photo_reply(CHAT)
        await app.restart()
        telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=first.message_id)
        await app.photo_reply(CHAT)
        assert stepfun.requests[1].image == stepfun.results[0]
        assert await app.quota_used(ALICE) == 2
    finally:
        await app.stop()


async def test_editing_an_old_caption_starts_no_new_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(CHAT)
    telegram.user_edits_caption(sent, "make it rain")  # (the bot does not even ask for edits)
    telegram.user_sends_text(CHAT, ALICE, "/quota")  # handled after it, were it delivered
    await app.text_reply(CHAT)
    await app.idle()
    assert len(stepfun.requests) == 1
    assert await app.quota_used(ALICE) == 1
    assert len([m for m in telegram.sent(CHAT) if m.from_bot]) == 3  # note, photo, /quota


async def test_a_sticker_can_be_edited_like_a_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sticker = telegram.user_sends_sticker(CHAT, ALICE, make_image(512, 384, fmt="WEBP"))
    question = await app.text_reply(CHAT)
    assert question.reply_to_message_id == sticker.message_id
    assert "What should I change" in (question.text or "")
    await app.wait_linked(question)
    telegram.user_sends_text(CHAT, ALICE, 'add a speech bubble saying "hi"', reply_to=question)
    result = await app.photo_reply(CHAT)
    assert decode(stepfun.requests[0].image).size == (512, 384)
    assert stepfun.requests[0].fields["text_mode"] == "true"
    assert decode(result.photo_bytes).size == (512, 384)
