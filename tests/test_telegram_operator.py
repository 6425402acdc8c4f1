"""End to end on Telegram: /forget with its confirmation, and admin commands as an admin and as
anyone else (in private and in a group)."""

from __future__ import annotations

import pytest

from bot.config import IdSet, OperatorRules
from bot.texts import t
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
ADMIN = FakeUser(id=9, first_name="Admin", language_code="en")
GROUP = -100500
PHOTO = make_image(320, 240)


async def test_forget_asks_first_then_deletes_history_but_not_the_quota(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    result = await app.photo_reply(ALICE.id)
    telegram.user_sends_text(ALICE.id, ALICE, "/forget")
    question = await app.text_reply(ALICE.id)
    assert question.text == t("forget_confirm")
    (keep,) = [d for d in question.callback_data if d == "forget:no"]
    telegram.user_presses_button(ALICE.id, ALICE, question, keep)
    await telegram.wait_until(lambda: question.text == t("forget_kept"))
    telegram.user_sends_text(ALICE.id, ALICE, "/forget")
    again = await app.text_reply(ALICE.id)
    telegram.user_presses_button(ALICE.id, ALICE, again, "forget:yes")
    await telegram.wait_until(lambda: again.text == t("forget_done", edits=1))
    full = next(d for d in result.callback_data if d.startswith("full:"))
    telegram.user_presses_button(ALICE.id, ALICE, result, full)  # the picture is gone
    answer = await app.text_reply(ALICE.id)
    assert answer.text == t("error_image_expired")
    assert len(stepfun.requests) == 1
    assert await app.quota_used(ALICE) == 1  # no way around the quota


@pytest.mark.service(daily_quota=1, rules=OperatorRules(admins=IdSet.parse("9")))
async def test_admin_commands_for_admins_and_silence_or_a_refusal_for_others(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_text(ALICE.id, ALICE, "/stats")
    refused = await app.text_reply(ALICE.id)
    assert refused.text == t("error_admins_only")
    telegram.user_sends_text(GROUP, ALICE, "/ban 9", chat_type="supergroup")
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/grant {ALICE.id} 2")
    granted = await app.text_reply(ADMIN.id)
    assert granted.text == t("admin_granted", who=f"telegram:{ALICE.id}", extra=2)
    telegram.user_sends_text(ADMIN.id, ADMIN, "/stats")
    stats = await app.text_reply(ADMIN.id)
    assert "1 delivered" in (stats.text or "")
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/ban {ALICE.id}")
    await app.text_reply(ADMIN.id)
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
    told = await app.text_reply(ALICE.id)
    assert told.text == t("error_banned")
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
    await app.idle()
    assert [m.text for m in telegram.sent(GROUP)] == []  # nothing in the group
    assert [m.text for m in telegram.sent(ALICE.id) if m.kind == "text"][-1] == t("error_banned")
    assert len(stepfun.requests) == 1


BOB = FakeUser(id=5151, first_name="Bob", language_code="en")


@pytest.mark.service(rules=OperatorRules(allowed_users=IdSet.parse("4242")))
async def test_an_allowlist_refuses_in_private_and_ignores_in_groups_before_any_download(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it snow")
    refused = await app.text_reply(BOB.id)
    assert refused.text == t("error_not_allowed")
    telegram.user_sends_photo(
        GROUP, BOB, PHOTO, caption="/edit make it snow", chat_type="supergroup"
    )
    telegram.user_sends_photo(GROUP, ALICE, PHOTO, caption="/edit make it rain",
                              chat_type="supergroup")  # fmt: skip
    await app.photo_reply(GROUP)
    await app.idle()
    assert [m.kind for m in telegram.sent(GROUP)] == ["text", "photo"]  # Alice's note and photo
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it rain"]
    assert not [c for c in telegram.calls if c.method == "getFile"][1:]  # only Alice's photo


@pytest.mark.service(
    daily_quota=0, rules=OperatorRules(chat_quota=1, budget=2, admins=IdSet.parse("9"))
)
async def test_the_chat_quota_and_the_budget_end_to_end(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_text(ADMIN.id, ADMIN, "/start")  # a bot can only write to those who did
    await app.text_reply(ADMIN.id)
    telegram.user_sends_photo(GROUP, ALICE, PHOTO, caption="/edit snow", chat_type="supergroup")
    await app.photo_reply(GROUP)
    telegram.user_sends_photo(GROUP, BOB, PHOTO, caption="/edit rain", chat_type="supergroup")
    refused = await app.text_reply(GROUP)
    assert refused.text is not None and refused.text.startswith("This chat has used all 1")
    telegram.user_sends_photo(BOB.id, BOB, PHOTO, caption="make it rain")  # private: fine
    await app.photo_reply(BOB.id)
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it hail")
    paused = await app.text_reply(ALICE.id)
    assert paused.text is not None and paused.text.startswith("The bot has used up")
    told = await app.text_reply(ADMIN.id)
    assert told.text == t("admin_budget_spent", budget=2, resets="00:00 (UTC)")
    assert len(stepfun.requests) == 2
