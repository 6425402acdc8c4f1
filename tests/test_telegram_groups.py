"""End to end in group chats: the bot only acts on messages meant for it (/edit, a mention of
@stepedit_test_bot, or a reply to one of its results) and ignores the rest of the conversation,
without downloading anything or calling the edit API. Assertions are on what the group sees."""

from __future__ import annotations

import pytest

from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=5101, first_name="Alice", language_code="en")
BOB = FakeUser(id=5102, first_name="Bob", language_code="en")
GROUP = -4001
SUPERGROUP = -1001234567890
PHOTO = make_image(320, 240, color=(30, 120, 200))
OTHER_PHOTO = make_image(200, 150, color=(200, 60, 40))


def photo(
    telegram: FakeTelegram,
    user: FakeUser,
    caption: str | None,
    image: bytes = PHOTO,
    reply_to: StoredMessage | None = None,
    chat_id: int = GROUP,
    chat_type: str = "group",
) -> StoredMessage:
    return telegram.user_sends_photo(
        chat_id, user, image, caption=caption, reply_to=reply_to, chat_type=chat_type
    )


def text(
    telegram: FakeTelegram,
    user: FakeUser,
    words: str,
    reply_to: StoredMessage | None = None,
) -> StoredMessage:
    return telegram.user_sends_text(GROUP, user, words, reply_to=reply_to, chat_type="group")


async def assert_ignored(app: BotUnderTest, telegram: FakeTelegram, message: StoredMessage) -> None:
    """`message` (in GROUP) was received and left alone: once the bot has answered a later /help,
    it has not downloaded its image, not answered it and sent nothing else."""
    await telegram.wait_until_confirmed(message)
    await app.idle()
    before = len(telegram.sent(GROUP))
    text(telegram, ALICE, "/help")
    answer = await app.text_reply(GROUP)
    assert "How to use me" in (answer.text or "")
    assert len(telegram.sent(GROUP)) == before + 1
    assert [m for m in telegram.sent(GROUP) if m.reply_to_message_id == message.message_id] == []
    if message.file_id is not None:
        assert message.file_id not in [f.file_id for f in telegram.downloads]


async def test_an_ordinary_group_photo_with_a_caption_is_ignored(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = photo(telegram, ALICE, "look at my holiday photo, make it snow next time")
    await assert_ignored(app, telegram, sent)
    assert stepfun.requests == []
    assert telegram.downloads == []
    assert await app.quota_used(ALICE) == 0


async def test_edit_in_a_caption_edits_the_photo_without_the_command_in_the_prompt(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = photo(telegram, ALICE, "/edit make it snow")
    result = await app.photo_reply(GROUP)
    assert result.reply_to_message_id == sent.message_id
    assert decode(result.photo_bytes or b"").size == (320, 240)
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert decode(stepfun.requests[0].image).size == (320, 240)
    assert "make it snow" in (result.caption or "")
    assert "/edit" not in (result.caption or "")
    assert await app.quota_used(ALICE) == 1


async def test_edit_addressed_to_this_bot_by_name_works(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = photo(telegram, ALICE, "/edit@stepedit_test_bot make it snow")
    result = await app.photo_reply(GROUP)
    assert result.reply_to_message_id == sent.message_id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]


async def test_edit_addressed_to_another_bot_is_ignored(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = photo(telegram, ALICE, "/edit@otherbot make it snow")
    await assert_ignored(app, telegram, sent)
    assert stepfun.requests == []
    assert telegram.downloads == []


async def test_a_text_edit_for_another_bot_replying_to_a_photo_is_ignored(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    bobs = photo(telegram, BOB, None)
    command = text(telegram, ALICE, "/edit@otherbot add a hat", reply_to=bobs)
    await telegram.wait_until_confirmed(bobs)
    await assert_ignored(app, telegram, command)
    assert stepfun.requests == []
    assert telegram.downloads == []


@pytest.mark.parametrize(
    "caption",
    [
        "@stepedit_test_bot make it snow",
        "make it @stepedit_test_bot snow",
        "make it snow @StepEdit_Test_Bot",
    ],
)
async def test_a_mention_in_a_caption_edits_with_the_mention_stripped(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, caption: str
) -> None:
    sent = photo(telegram, ALICE, caption)
    result = await app.photo_reply(GROUP)
    assert result.reply_to_message_id == sent.message_id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert "@" not in (result.caption or "")


async def test_a_text_reply_to_a_result_refines_that_result(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    photo(telegram, ALICE, "/edit make it snow")
    first = await app.photo_reply(GROUP)
    reply = text(telegram, ALICE, "add a snowman", reply_to=first)
    second = await app.photo_reply(GROUP)
    assert second.reply_to_message_id == reply.message_id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow", "add a snowman"]
    assert stepfun.requests[1].image == stepfun.results[0]
    assert await app.quota_used(ALICE) == 2


async def test_edit_as_a_text_reply_to_someone_elses_photo_edits_that_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    bobs = photo(telegram, BOB, "our cat", image=OTHER_PHOTO)  # not for the bot: ignored
    command = text(telegram, ALICE, "/edit add a hat", reply_to=bobs)
    result = await app.photo_reply(GROUP)
    assert result.reply_to_message_id == command.message_id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["add a hat"]
    assert decode(stepfun.requests[0].image).size == (200, 150)
    assert decode(result.photo_bytes or b"").size == (200, 150)
    assert await app.quota_used(ALICE) == 1
    assert await app.quota_used(BOB) == 0


async def test_a_mention_as_a_text_reply_to_someone_elses_photo_edits_that_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    bobs = photo(telegram, BOB, None, image=OTHER_PHOTO)
    text(telegram, ALICE, "@stepedit_test_bot add a hat", reply_to=bobs)
    await app.photo_reply(GROUP)
    assert [r.fields["prompt"] for r in stepfun.requests] == ["add a hat"]
    assert decode(stepfun.requests[0].image).size == (200, 150)


async def test_a_plain_text_reply_to_someone_elses_photo_is_ignored(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    bobs = photo(telegram, BOB, None, image=OTHER_PHOTO)
    reply = text(telegram, ALICE, "add a hat to this one", reply_to=bobs)
    await telegram.wait_until_confirmed(bobs)
    await assert_ignored(app, telegram, reply)
    assert stepfun.requests == []
    assert telegram.downloads == []


async def test_plain_group_text_is_ignored_even_with_a_current_image(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    photo(telegram, ALICE, "/edit make it snow")  # Alice now has a current image here
    await app.photo_reply(GROUP)
    chatter = text(telegram, ALICE, "make it night")  # in a private chat this would refine it
    await assert_ignored(app, telegram, chatter)
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert await app.quota_used(ALICE) == 1


@pytest.mark.parametrize("caption", ["/edit", "/edit@stepedit_test_bot", "/edit   "])
async def test_edit_without_a_prompt_asks_what_to_change_and_costs_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, caption: str
) -> None:
    sent = photo(telegram, ALICE, caption)
    answer = await app.text_reply(GROUP)
    assert answer.reply_to_message_id == sent.message_id
    assert (answer.text or "").startswith("Got it! What should I change")
    assert stepfun.requests == []
    assert await app.quota_used(ALICE) == 0
    # a reply to the bot's question edits the photo, which was kept
    await app.wait_linked(answer)
    text(telegram, ALICE, "make it snow", reply_to=answer)
    await app.photo_reply(GROUP)
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert decode(stepfun.requests[0].image).size == (320, 240)
    assert await app.quota_used(ALICE) == 1


async def test_bob_refining_alices_result_is_charged_to_bob(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    photo(telegram, ALICE, "/edit make it snow")
    alices = await app.photo_reply(GROUP)
    assert await app.quota_used(ALICE) == 1
    bobs_reply = text(telegram, BOB, "add a snowman", reply_to=alices)
    bobs = await app.photo_reply(GROUP)
    assert bobs.reply_to_message_id == bobs_reply.message_id
    assert stepfun.requests[1].image == stepfun.results[0]
    assert await app.quota_used(ALICE) == 1
    assert await app.quota_used(BOB) == 1


async def test_a_supergroup_works_like_a_group(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    ignored = photo(telegram, ALICE, "just a photo", chat_id=SUPERGROUP, chat_type="supergroup")
    sent = photo(telegram, ALICE, "/edit make it snow", chat_id=SUPERGROUP, chat_type="supergroup")
    result = await app.photo_reply(SUPERGROUP)
    assert result.reply_to_message_id == sent.message_id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]
    assert [f.file_id for f in telegram.downloads] == [sent.file_id]
    assert ignored.file_id not in [f.file_id for f in telegram.downloads]


async def test_a_reply_to_the_bots_text_messages_is_conversation_not_an_edit(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    photo(telegram, ALICE, "/edit make it snow")
    await app.photo_reply(GROUP)  # Alice now has a current image in the group
    text(telegram, ALICE, "/help")
    help_text = await app.text_reply(GROUP)
    thanks = text(telegram, ALICE, "thanks, very helpful", reply_to=help_text)
    await assert_ignored(app, telegram, thanks)
    assert len(stepfun.requests) == 1
    assert await app.quota_used(ALICE) == 1


async def test_only_the_asker_can_press_their_settings_buttons(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    text(telegram, ALICE, "/settings")
    shown = await app.text_reply(GROUP)
    assert "steps: 8" in (shown.text or "")
    press = telegram.user_presses_button(GROUP, BOB, shown, "set:steps:30")
    answered = await telegram.wait_for_call(
        "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == press.query_id
    )
    assert "someone else's settings" in answered.params.get("text", "")
    assert shown.edits == []  # Alice's message still shows Alice's settings
    text(telegram, BOB, "/settings")
    bobs = await app.text_reply(GROUP)
    assert "steps: 8" in (bobs.text or "")  # and Bob's did not change
    telegram.user_presses_button(GROUP, ALICE, shown, "set:steps:30")
    await telegram.wait_until(lambda: "steps: 30" in (shown.text or ""))
