"""No route lets one user make unbounded paid API calls: calls that end without a charged picture
(refused content, a failure after the request was sent) are capped per user per day
(MAX_UNCHARGED_CALLS), admins exempt; and the admins hear that edits pause without holding up
the refusal, and are told again later if the message did not reach them.
End to end through the real bot (PTB against the fake Bot API) and the fake API."""

from __future__ import annotations

import pytest

from bot.config import IdSet, OperatorRules
from bot.texts import t
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=8181, first_name="Alice", language_code="en")
BOB = FakeUser(id=8282, first_name="Bob", language_code="en")
ADMIN = FakeUser(id=9, first_name="Admin", language_code="en")
PHOTO = make_image(320, 240, color=(10, 100, 200))
RESETS = "00:00 (UTC)"


@pytest.mark.service(daily_quota=5, rules=OperatorRules(max_uncharged=2, admins=IdSet.parse("9")))
async def test_paid_calls_without_a_picture_are_capped_per_user_and_day(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.filter_next()  # refused content
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="something bad")
    assert (await app.text_reply(ALICE.id)).text == t("error_refused")
    stepfun.fail_next(502)  # the server may have done (and billed) it
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    assert (await app.text_reply(ALICE.id)).text == t("error_unavailable")
    assert await app.quota_used(ALICE) == 0  # neither is charged to her quota…
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
    capped = await app.text_reply(ALICE.id)  # …but a third paid call is not made
    assert capped.text == t("error_uncharged_cap", limit=2, resets=RESETS)
    assert len(stepfun.requests) == 2
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it rain")  # others go on
    await app.photo_reply(BOB.id)
    stepfun.filter_next(times=3)  # admins are exempt
    for _ in range(3):
        telegram.user_sends_photo(ADMIN.id, ADMIN, PHOTO, caption="something bad")
        assert (await app.text_reply(ADMIN.id)).text == t("error_refused")
    assert len(stepfun.requests) == 6


@pytest.mark.service(daily_quota=0, rules=OperatorRules(budget=1, admins=IdSet.parse("9")))
async def test_admins_not_reached_are_told_at_the_next_pause(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_text(ADMIN.id, ADMIN, "/start")  # a bot can only write to those who did
    await app.text_reply(ADMIN.id)
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    telegram.block(ADMIN.id)  # the admin's chat refuses the bot's message for now
    tries = len(_sends_to(telegram, ADMIN))
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it rain")
    paused = await app.text_reply(BOB.id)
    assert paused.text == t("error_budget", resets=RESETS)
    await telegram.wait_until(lambda: len(_sends_to(telegram, ADMIN)) > tries)  # refused
    telegram.unblock(ADMIN.id)
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it hail")
    assert (await app.text_reply(BOB.id)).text == t("error_budget", resets=RESETS)
    told = await app.text_reply(ADMIN.id)  # not marked told while nobody heard it
    assert told.text == t("admin_budget_spent", budget=1, resets=RESETS)
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it fog")
    assert (await app.text_reply(BOB.id)).text == t("error_budget", resets=RESETS)
    await app.idle()
    admin_texts = [m for m in telegram.sent(ADMIN.id) if m.kind == "text"]
    assert [m.text for m in admin_texts].count(told.text) == 1  # once, once it got through


def _sends_to(telegram: FakeTelegram, user: FakeUser) -> list[object]:
    return [c for c in telegram.calls_of("sendMessage") if c.params.get("chat_id") == user.id]


@pytest.mark.service(daily_quota=5, rules=OperatorRules(max_uncharged=1))
@pytest.mark.client(timeout=5)
async def test_a_picture_that_could_not_be_delivered_counts_as_a_paid_call(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await telegram.wait_until(lambda: stepfun.requests)  # past cancelling
    telegram.block(ALICE.id)  # she blocks the bot: the picture cannot be delivered
    await telegram.wait_until(lambda: stepfun.requests[0].status == 200)
    await app.idle()
    await app.service.wait(1, 10)  # type: ignore[union-attr]
    telegram.unblock(ALICE.id)
    assert await app.quota_used(ALICE) == 0  # not delivered: not charged…
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
    capped = await app.text_reply(ALICE.id)  # …but it was a paid call: the cap holds
    assert capped.text == t("error_uncharged_cap", limit=1, resets=RESETS)
    assert len(stepfun.requests) == 1
