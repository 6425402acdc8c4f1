"""The one gate every incoming event passes (EditService.enter, wired once per platform): the
operator's lists and bans for every command, each update handled once (edited messages never
run commands), a ban ahead of someone's first message, and messages sent as a channel or an
anonymous admin answered once without making a user. End to end through PTB against the fake
Bot API; a command registered the normal way is gated and deduplicated without code of its own."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from telegram import Update
from telegram.ext import CommandHandler, ContextTypes

from bot.config import IdSet, OperatorRules
from bot.texts import t
from storage.models import User
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser
from tests.harness import BotUnderTest
from tests.images import make_image

ALICE = FakeUser(id=4301, first_name="Alice", language_code="en")
MALLORY = FakeUser(id=4302, first_name="Mallory", language_code="en")
ADMIN = FakeUser(id=9, first_name="Admin", language_code="en")
GROUP = -100777
CHANNEL = {"id": -100888, "type": "channel", "title": "Mallory's channel"}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}
PHOTO = make_image(320, 240, color=(120, 40, 160))
ADMINS = OperatorRules(admins=IdSet.parse("9"))


async def _users(app: BotUnderTest) -> int:
    assert app.store is not None
    async with app.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(User))).scalar_one())


@pytest.mark.service(rules=ADMINS)
async def test_a_command_registered_the_normal_way_is_gated_and_handled_once(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    assert app.bot is not None
    heard: list[str] = []

    async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        heard.append(update.effective_message.text or "")
        await update.effective_message.reply_text("pong")

    app.bot.app.add_handler(CommandHandler("ping", ping))  # no gate code of its own
    sent = telegram.user_sends_text(ALICE.id, ALICE, "/ping")
    assert (await app.text_reply(ALICE.id)).text == "pong"
    telegram.user_edits_caption(sent, "/ping again")  # an edited message runs no command
    await app.idle()
    # The same update again, as Telegram sends an update it has no confirmation of:
    (raw,) = [u for u in telegram.updates if u["update_id"] == sent.update_id]
    await app.bot._handle((Update.de_json(raw, app.bot.app.bot),))
    assert heard == ["/ping"]
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/ban {MALLORY.id}")  # never seen: banned ahead
    assert (await app.text_reply(ADMIN.id)).text == t("admin_banned", who=f"telegram:{MALLORY.id}")
    telegram.user_sends_text(MALLORY.id, MALLORY, "/ping")
    assert (await app.text_reply(MALLORY.id)).text == t("error_banned")  # told once
    telegram.user_sends_text(MALLORY.id, MALLORY, "/ping")
    await app.idle()
    assert heard == ["/ping"]
    assert [m.text for m in telegram.sent(MALLORY.id) if m.kind == "text"] == [t("error_banned")]


@pytest.mark.service(rules=OperatorRules(allowed_users=IdSet.parse(str(ALICE.id))))
async def test_someone_off_the_allowlist_gets_nothing_in_a_group_and_one_reply_in_private(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    for command in ("/settings", "/quota", "/seed 5", "/help", "/caption top | bottom"):
        telegram.user_sends_text(GROUP, MALLORY, command, chat_type="supergroup")
    telegram.user_sends_photo(GROUP, MALLORY, PHOTO, caption="/edit snow", chat_type="supergroup")
    await app.idle()
    assert [m for m in telegram.sent(GROUP) if m.from_bot] == []
    assert await _users(app) == 0  # nothing of Mallory was kept
    telegram.user_sends_text(MALLORY.id, MALLORY, "/seed 5")
    assert (await app.text_reply(MALLORY.id)).text == t("error_not_allowed")
    telegram.user_sends_text(GROUP, ALICE, "/quota", chat_type="supergroup")
    assert "left today" in ((await app.text_reply(GROUP)).text or "")


async def test_a_message_sent_as_a_channel_is_answered_once_and_makes_no_user(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    as_channel: dict[str, Any] = {"chat_type": "supergroup", "sender_chat": CHANNEL}
    telegram.user_sends_photo(GROUP, CHANNEL_BOT, PHOTO, caption="/edit snow", **as_channel)
    told = await app.text_reply(GROUP)
    assert told.text == t("error_sent_as_chat")
    telegram.user_sends_photo(GROUP, CHANNEL_BOT, PHOTO, caption="/edit rain", **as_channel)
    group_itself = {"id": GROUP, "type": "supergroup", "title": "G"}  # an anonymous admin
    anonymous = {"id": 1087968824, "is_bot": True, "first_name": "Group"}
    telegram.user_sends_text(GROUP, anonymous, "/quota", chat_type="supergroup",
                             sender_chat=group_itself)  # fmt: skip
    await app.idle()
    assert [m.text for m in telegram.sent(GROUP) if m.from_bot] == [told.text]  # once a day
    assert stepfun.requests == [] and await _users(app) == 0


@pytest.mark.service(rules=ADMINS)
async def test_grant_takes_plain_numbers_and_an_edited_grant_grants_nothing(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    telegram.user_sends_text(ALICE.id, ALICE, "/quota")  # known to the bot
    await app.text_reply(ALICE.id)
    for bad in ("²", "٣", "99999999999999999999", "0", "1001", "-5"):
        telegram.user_sends_text(ADMIN.id, ADMIN, f"/grant {ALICE.id} {bad}")
        assert (await app.text_reply(ADMIN.id)).text == t("admin_grant_range", most=1000)
        await app.idle()
        for message in telegram.sent(ADMIN.id):
            message.deleted = True  # so the next text_reply waits for a new answer
    grant = telegram.user_sends_text(ADMIN.id, ADMIN, f"/grant {ALICE.id} 5")
    assert (await app.text_reply(ADMIN.id)).text == t(
        "admin_granted", who=f"telegram:{ALICE.id}", extra=5
    )
    telegram.user_edits_caption(grant, f"/grant {ALICE.id} 6")  # corrected: not run again
    await app.idle()
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/quota {ALICE.id}")
    await app.idle()
    answer = [m for m in telegram.sent(ADMIN.id) if m.kind == "text"][-1]
    assert answer.text == t("admin_quota", who=f"telegram:{ALICE.id}", used=0, limit=5, granted=5)
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/ban {ADMIN.id}")
    await app.idle()
    answer = [m for m in telegram.sent(ADMIN.id) if m.kind == "text"][-1]
    assert answer.text == t("admin_cannot_ban_admin", who=f"telegram:{ADMIN.id}")


@pytest.mark.service(rules=ADMINS)
async def test_updates_received_together_are_gated_as_each_alone_with_one_read(
    app: BotUnderTest, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.store is not None
    telegram.user_sends_text(ADMIN.id, ADMIN, f"/ban {MALLORY.id}")
    await app.text_reply(ADMIN.id)
    telegram.user_sends_text(ALICE.id, ALICE, "/quota")  # Alice is known from here on
    await app.text_reply(ALICE.id)
    reads: list[str] = []
    one_read = app.store.event_and_user

    async def counted(platform: str, event_id: str, user: Any) -> Any:
        reads.append(event_id)
        return await one_read(platform, event_id, user)

    monkeypatch.setattr(app.store, "event_and_user", counted)
    # One getUpdates brings them all: the banned, a known user twice, a newcomer.
    newcomer = FakeUser(id=4303, first_name="Nia", language_code="en")
    telegram.user_sends_text(MALLORY.id, MALLORY, "/quota")
    telegram.user_sends_text(MALLORY.id, MALLORY, "/quota")
    telegram.user_sends_text(ALICE.id, ALICE, "/quota")
    telegram.user_sends_text(newcomer.id, newcomer, "/quota")
    await app.idle()
    assert [m.text for m in telegram.sent(MALLORY.id) if m.kind == "text"] == [t("error_banned")]
    assert len([m for m in telegram.sent(ALICE.id) if m.kind == "text"]) == 2
    assert len([m for m in telegram.sent(newcomer.id) if m.kind == "text"]) == 1
    assert reads == []  # read ahead, all four in one read
