"""The bot keeps its promise when Telegram or the users do something unexpected mid-edit."""

from __future__ import annotations

import pytest

from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=6101, first_name="Alice", language_code="en")
BOB = FakeUser(id=6102, first_name="Bob", language_code="en")
GROUP = -6001
PHOTO = make_image(320, 240)


@pytest.mark.client(timeout=5)
async def test_the_result_arrives_even_if_the_user_deleted_their_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    sent = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await telegram.wait_until(lambda: stepfun.requests)
    sent.deleted = True  # the user deletes their message while the edit runs
    result = await app.photo_reply(ALICE.id)
    assert result.reply_to_message_id is None
    assert decode(result.photo_bytes).size == (320, 240)
    assert await app.quota_used(ALICE) == 1


async def test_a_failed_status_message_does_not_fail_the_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.fail_next("sendMessage", error_code=502, description="Bad Gateway")
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(ALICE.id)
    assert "make it snow" in (result.caption or "")
    assert await app.quota_used(ALICE) == 1


async def test_a_button_answered_too_late_still_does_its_job(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(ALICE.id)
    full = next(data for data in result.callback_data if data.startswith("full:"))
    telegram.fail_next(
        "answerCallbackQuery",
        description="Bad Request: query is too old and response timeout expired or query id "
        "is invalid",
    )
    telegram.user_presses_button(ALICE.id, ALICE, result, full)
    document = await telegram.wait_for_message(ALICE.id, lambda m: m.kind == "document")
    assert decode(document.document_bytes).tobytes() == decode(stepfun.results[0]).tobytes()


async def test_chatter_replying_to_someones_edited_photo_is_not_an_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    photo = telegram.user_sends_photo(
        GROUP, ALICE, PHOTO, caption="/edit make it snow", chat_type="group"
    )
    await app.photo_reply(GROUP)
    chatter = telegram.user_sends_text(
        GROUP, BOB, "haha nice holiday pic", reply_to=photo, chat_type="group"
    )
    also = telegram.user_sends_photo(
        GROUP, BOB, make_image(200, 100), caption="mine", reply_to=photo, chat_type="group"
    )
    await telegram.wait_until_confirmed(chatter)
    await telegram.wait_until_confirmed(also)
    await app.idle()
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert await app.quota_used(BOB) == 0
