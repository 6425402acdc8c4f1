"""Nobody waits behind someone else's free work: on Telegram each user in a chat has a lane of
their own, and drawings, Undo and Full quality have a per-user budget (FREE_ACTIONS_PER_MINUTE).
Measured by order, not by time: the other user's answer goes out while the flood is still being
worked on."""

from __future__ import annotations

import pytest

from bot.config import OperatorRules
from bot.texts import t
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=4401, first_name="Alice", language_code="en")
BOB = FakeUser(id=4402, first_name="Bob", language_code="en")
GROUP = -100999
BIG = make_image(3000, 3000, color=(200, 180, 40))


def _in_group(telegram: FakeTelegram, user: FakeUser, text: str) -> None:
    telegram.user_sends_text(GROUP, user, text, chat_type="supergroup")


@pytest.mark.service(rules=OperatorRules(free_actions_per_minute=20))
async def test_another_users_answer_goes_out_while_a_flood_of_drawings_is_worked_on(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    telegram.user_sends_photo(GROUP, ALICE, BIG, caption="/edit snow", chat_type="supergroup")
    await app.photo_reply(GROUP, timeout=30)  # her current picture: 3000 px, slow to draw on
    bubbles = [f"/bubble hi {n}" for n in range(25)]
    for text in bubbles:
        _in_group(telegram, ALICE, text)
    _in_group(telegram, BOB, "/quota")
    quota = await telegram.wait_for_message(
        GROUP, lambda m: "left today" in (m.text or ""), timeout=60
    )
    await app.idle(timeout=120)
    sent = [m for m in telegram.sent(GROUP) if m.from_bot]
    drawn = [m for m in sent if m.kind == "photo"][1:]
    assert len(drawn) == 20  # the budget: 20 a minute
    assert sent.index(quota) < sent.index(drawn[-1])  # Bob did not wait for Alice's flood
    slow = [m for m in sent if m.text == t("error_too_fast", limit=20)]
    assert len(slow) == 1  # said once, then silence


async def test_a_flood_past_telegrams_window_of_100_updates_holds_nobody_up(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    telegram.user_sends_photo(GROUP, ALICE, BIG, caption="/edit snow", chat_type="supergroup")
    await app.photo_reply(GROUP, timeout=30)
    for n in range(130):  # getUpdates hands out 100 at most, from the oldest not yet confirmed
        _in_group(telegram, ALICE, f"/bubble hi {n}")
    _in_group(telegram, BOB, "/quota")
    quota = await telegram.wait_for_message(
        GROUP, lambda m: "left today" in (m.text or ""), timeout=60
    )
    await app.idle(timeout=120)
    sent = [m for m in telegram.sent(GROUP) if m.from_bot]
    drawn = [m for m in sent if m.kind == "photo"][1:]
    assert len(drawn) == 20  # FREE_ACTIONS_PER_MINUTE's default; the rest said once, ignored
    assert sent.index(quota) < sent.index(drawn[-1])  # Bob's update was fetched and answered
