"""End to end: the buttons under a result (reroll, undo, full quality), the queue as users see
it, and the chat action while the bot works. Buttons carry the stored edit id, so they must keep
working after a restart and answer kindly for an edit that does not exist."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.texts import t
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest
from tests.images import decode, make_image

ALICE = FakeUser(id=4242, first_name="Alice", language_code="en")
BOB = FakeUser(id=5151, first_name="Bob", language_code="en")
CHAT = ALICE.id
PHOTO = make_image(640, 480, color=(30, 120, 200))


def button(message: StoredMessage, action: str) -> str:
    """The callback_data of the result button for `action` ("reroll", "undo", "full")."""
    found = [data for data in message.callback_data if data.startswith(f"{action}:")]
    assert len(found) == 1, message.callback_data
    return found[0]


def looks_like(shown: bytes, expected: bytes) -> bool:
    """Whether a (JPEG) photo shows the same picture as `expected`: same size, and on average
    within a few levels per channel once both are seen at an eighth of their size (JPEG's
    halved colour resolution alone puts a full-size channel 3 levels off for some results)."""
    a, b = decode(shown).convert("RGB"), decode(expected).convert("RGB")
    if a.size != b.size:
        return False
    small = (max(a.width // 8, 1), max(a.height // 8, 1))
    a, b = a.resize(small, Image.Resampling.BOX), b.resize(small, Image.Resampling.BOX)
    return max(ImageStat.Stat(ImageChops.difference(a, b)).mean) < 3


async def edited(app: BotUnderTest, telegram: FakeTelegram, prompt: str) -> StoredMessage:
    """Alice sends the photo with `prompt`; the result photo."""
    telegram.user_sends_photo(CHAT, ALICE, PHOTO, caption=prompt)
    return await app.photo_reply(CHAT)


async def document_reply(app: BotUnderTest, chat_id: int) -> StoredMessage:
    return await app.telegram.wait_for_message(chat_id, lambda m: m.kind == "document")


# --- reroll -----------------------------------------------------------------------------------


async def test_reroll_edits_the_same_source_with_the_same_prompt_and_a_new_seed(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    first = await edited(app, telegram, "make it snow")
    telegram.user_presses_button(CHAT, ALICE, first, button(first, "reroll"))
    second = await app.photo_reply(CHAT)
    assert second.message_id != first.message_id
    assert second.reply_to_message_id == first.message_id
    original, reroll = stepfun.requests
    assert reroll.image == original.image
    assert reroll.fields["prompt"] == original.fields["prompt"] == "make it snow"
    assert reroll.fields["seed"] != original.fields["seed"]
    assert f"seed {reroll.fields['seed']}" in (second.caption or "")
    assert second.photo_bytes != first.photo_bytes
    assert looks_like(second.photo_bytes or b"", stepfun.results[1])
    assert await app.quota_used(ALICE) == 2


# --- undo -------------------------------------------------------------------------------------


async def test_undo_steps_back_through_a_chain_for_free(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    first = await edited(app, telegram, "make it snow")
    telegram.user_sends_text(CHAT, ALICE, "add a snowman", reply_to=first.message_id)
    second = await app.photo_reply(CHAT)
    assert await app.quota_used(ALICE) == 2

    telegram.user_presses_button(CHAT, ALICE, second, button(second, "undo"))
    back = await app.photo_reply(CHAT)
    assert back.reply_to_message_id == second.message_id
    assert looks_like(back.photo_bytes or b"", stepfun.results[0])
    first_seed = stepfun.requests[0].fields["seed"]
    assert back.caption == t("caption", prompt="make it snow", seed=first_seed)
    assert button(back, "reroll") == button(first, "reroll")  # it is the first result again
    assert len(stepfun.requests) == 2
    assert await app.quota_used(ALICE) == 2

    # Plain text now refines what undo showed, not the undone second result.
    telegram.user_sends_text(CHAT, ALICE, "make it night")
    await app.photo_reply(CHAT)
    assert stepfun.requests[2].image == stepfun.results[0]
    assert await app.quota_used(ALICE) == 3

    telegram.user_presses_button(CHAT, ALICE, first, button(first, "undo"))
    original = await app.photo_reply(CHAT)
    assert original.caption == "The original photo."
    assert original.callback_data == []  # an upload has nothing to reroll
    assert looks_like(original.photo_bytes or b"", PHOTO)
    assert await app.quota_used(ALICE) == 3
    telegram.user_sends_text(CHAT, ALICE, "make it sunny")  # back at the original photo
    await app.photo_reply(CHAT)
    assert stepfun.requests[3].image == stepfun.requests[0].image


# --- full quality -----------------------------------------------------------------------------


async def test_full_quality_sends_the_api_result_losslessly(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    result = await edited(app, telegram, "make it snow")
    assert decode(result.photo_bytes or b"").format == "JPEG"
    telegram.user_presses_button(CHAT, ALICE, result, button(result, "full"))
    file = await document_reply(app, CHAT)
    assert file.reply_to_message_id == result.message_id
    assert file.document is not None and file.document["file_name"].endswith(".png")
    png, api = decode(file.document_bytes or b""), decode(stepfun.results[0])
    assert png.format == "PNG"
    assert png.size == api.size
    assert png.convert("RGB").tobytes() == api.convert("RGB").tobytes()
    seed = stepfun.requests[0].fields["seed"]
    assert file.caption == t("caption_full", seed=seed)
    assert len(stepfun.requests) == 1
    assert await app.quota_used(ALICE) == 1


# --- whose buttons -----------------------------------------------------------------------------

GROUP = -4002


@pytest.mark.parametrize("action", ["undo", "reroll", "full", "compare"])
async def test_someone_elses_result_buttons_answer_them_privately_and_do_nothing(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, action: str
) -> None:
    """In a group, Bob presses a button under Alice's result: only Bob sees the short answer
    (the button's own popup), nothing is posted, no API call is made, nobody is charged."""
    telegram.user_sends_photo(GROUP, ALICE, PHOTO, caption="/edit make it snow", chat_type="group")
    result = await app.photo_reply(GROUP)
    posted = len(telegram.sent(GROUP))
    press = telegram.user_presses_button(GROUP, BOB, result, button(result, action))
    answered = await telegram.wait_for_call(
        "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == press.query_id
    )
    assert answered.params.get("text") == t("not_your_button")
    await app.idle()
    assert len(telegram.sent(GROUP)) == posted  # no picture, no file, no note, no text
    assert len(stepfun.requests) == 1
    assert (await app.quota_used(ALICE), await app.quota_used(BOB)) == (1, 0)
    telegram.user_presses_button(GROUP, ALICE, result, button(result, action))  # hers: it acts
    kind = "document" if action == "full" else "photo"
    done = await telegram.wait_for_message(GROUP, lambda m: m.kind == kind)
    assert done.reply_to_message_id == result.message_id


# --- after a restart, and for edits that do not exist ------------------------------------------


async def test_buttons_of_an_old_result_work_after_a_restart(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    old = await edited(app, telegram, "make it snow")
    await app.restart()
    telegram.user_presses_button(CHAT, ALICE, old, button(old, "reroll"))
    rerolled = await app.photo_reply(CHAT)
    assert stepfun.requests[1].image == stepfun.requests[0].image
    assert stepfun.requests[1].fields["prompt"] == "make it snow"
    assert "make it snow" in (rerolled.caption or "")
    telegram.user_presses_button(CHAT, ALICE, old, button(old, "full"))
    file = await document_reply(app, CHAT)
    png = decode(file.document_bytes or b"")
    assert png.convert("RGB").tobytes() == decode(stepfun.results[0]).convert("RGB").tobytes()
    assert await app.quota_used(ALICE) == 2


@pytest.mark.parametrize("action", ["reroll", "undo", "full"])
async def test_a_button_for_an_unknown_edit_gets_a_friendly_answer(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun, action: str
) -> None:
    telegram.user_sends_text(CHAT, ALICE, "/help")
    help_message = await app.text_reply(CHAT)
    press = telegram.user_presses_button(
        CHAT, ALICE, help_message, f"{action}:999999", check_button=False
    )
    answer = await app.text_reply(CHAT)
    assert answer.text == t("error_unknown_edit")
    assert "can't find that image" in answer.text
    assert answer.reply_to_message_id == help_message.message_id
    answered = telegram.calls_of("answerCallbackQuery")  # the button stops spinning
    assert [c.params["callback_query_id"] for c in answered] == [press.query_id]
    assert stepfun.requests == []
    assert not any(m.kind != "text" for m in telegram.sent(CHAT))
    assert await app.quota_used(ALICE) == 0
    await edited(app, telegram, "make it snow")  # and the bot carries on


# --- what users see while the bot works -------------------------------------------------------


@pytest.mark.service(concurrency=1)
@pytest.mark.client(timeout=5)
async def test_a_waiting_user_sees_their_place_in_line(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    for user in (ALICE, BOB):
        telegram.user_sends_photo(user.id, user, PHOTO, caption=f"snow for {user.first_name}")
    for user in (ALICE, BOB):
        result = await app.photo_reply(user.id)
        assert f"snow for {user.first_name}" in (result.caption or "")
        assert await app.quota_used(user) == 1

    def statuses(chat_id: int) -> list[StoredMessage]:
        return [m for m in telegram.sent(chat_id) if m.kind == "text"]

    queued = [chat for chat in (ALICE.id, BOB.id) if statuses(chat)[0].edits]
    assert len(queued) == 1, "exactly one of the two had to wait"
    waiter = queued[0]
    first = ALICE.id if waiter == BOB.id else BOB.id
    (status,) = statuses(waiter)
    assert [e.before["text"] for e in status.edits] == [t("queued", position=1)]
    assert "Queued: you're number 1 in line" in t("queued", position=1)
    assert status.text in (t("working"), t("working_sent"))  # sent, or about to be
    assert status.deleted
    (other,) = statuses(first)
    assert (other.text, other.edits, other.deleted) == (t("working"), [], True)


async def test_a_reroll_gets_its_own_progress_note_under_the_result(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    """The note is the progress sign, with Telegram's own "sending photo…" while the image
    model works (renewed as it fades, within a small send budget of its own)."""
    stepfun.delay = 0.3
    first = await edited(app, telegram, "make it snow")
    telegram.user_presses_button(CHAT, ALICE, first, button(first, "reroll"))
    again = await app.photo_reply(CHAT)
    notes = [m for m in telegram.sent(CHAT) if m.kind == "text"]
    assert all(n.text in (t("working"), t("working_sent")) for n in notes) and len(notes) == 2
    assert all(n.deleted for n in notes)
    assert notes[1].reply_to_message_id == first.message_id == again.reply_to_message_id
    assert "cancel:" in notes[1].callback_data[0]
    assert telegram.chat_actions(CHAT) == ["upload_photo", "upload_photo"]  # one per edit


def test_looks_like_tells_pictures_apart() -> None:
    """The helper the undo assertions lean on must be able to fail."""
    red = make_image(64, 48, color=(200, 20, 20))
    assert looks_like(red, make_image(64, 48, "PNG", color=(200, 20, 20)))
    assert not looks_like(red, make_image(64, 48, color=(20, 20, 200)))
    assert not looks_like(red, make_image(48, 64, color=(200, 20, 20)))
