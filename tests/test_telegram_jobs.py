"""Durable jobs seen from Telegram: a redelivered update is one edit, requests are handled in the
order sent, nothing is downloaded for a refused request, buttons only reach their own chat, and
`stepedit run` killed with SIGKILL mid-load answers every accepted request after a restart,
charging each delivered photo once."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.config import OperatorRules
from bot.domain import Address, UserRef
from bot.ports import NoteGone, RetryLater
from bot.texts import t
from storage.db import create_engine
from storage.repo import SqlStore
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.harness import BotUnderTest, is_note
from tests.images import decode, make_image
from tests.test_cli import STEPEDIT, wired_to

ALICE = FakeUser(id=5101, first_name="Alice", language_code="en")
MALLORY = FakeUser(id=5102, first_name="Mallory", language_code="en")
PHOTO = make_image(320, 240, color=(200, 40, 40))


async def test_a_redelivered_update_makes_one_edit_and_one_charge(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    telegram.redeliver(sent)  # the bot "crashed" before confirming the update
    await app.idle()
    await asyncio.sleep(0.3)  # a second job would be claimed by now
    await app.idle()
    assert len(stepfun.requests) == 1
    assert len([m for m in telegram.sent(ALICE.id) if m.kind == "photo"]) == 1
    assert await app.quota_used(ALICE) == 1


async def test_a_text_right_after_an_uncaptioned_photo_edits_that_photo(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    second = make_image(200, 100, color=(0, 200, 0))
    telegram.user_sends_photo(ALICE.id, ALICE, second)  # no caption: kept as the current image
    telegram.user_sends_text(ALICE.id, ALICE, "add a hat")  # at once, before any answer
    await app.photo_reply(ALICE.id)
    assert stepfun.requests[-1].fields["prompt"] == "add a hat"
    assert decode(stepfun.requests[-1].image).size == (200, 100)


@pytest.mark.service(daily_quota=1)
async def test_nothing_is_downloaded_for_a_request_over_the_quota(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    fetched = len(telegram.calls_of("getFile"))
    for n in range(5):
        telegram.user_sends_photo(ALICE.id, ALICE, make_image(300 + n, 200), caption="again")
    await app.idle()
    answers = [
        m for m in telegram.sent(ALICE.id) if m.kind == "text" and "used all" in (m.text or "")
    ]
    assert len(answers) == 5
    assert len(telegram.calls_of("getFile")) == fetched  # not one file fetched for them
    assert len(stepfun.requests) == 1


async def test_a_photo_is_downloaded_once_while_its_job_is_claimed(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    assert len(telegram.calls_of("getFile")) == 1
    assert len(telegram.downloads) == 1
    assert decode(stepfun.requests[0].image).size == (320, 240)


async def test_a_photo_whose_first_download_fails_is_fetched_again_and_edited(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.fail_next("getFile", error_code=500, description="Internal Server Error")
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    photo = await app.photo_reply(ALICE.id)
    assert decode(photo.photo_bytes).size == (320, 240)
    assert len(telegram.calls_of("getFile")) == 2  # the early try, then the worker's own
    assert len(stepfun.requests) == 1
    assert await app.quota_used(ALICE) == 1


async def test_a_photo_waiting_behind_its_users_first_edit_is_not_downloaded_yet(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 1.5
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await telegram.wait_until(lambda: len(stepfun.requests) == 1)  # the first is at the API
    telegram.user_sends_photo(ALICE.id, ALICE, make_image(200, 100), caption="and this one")
    await asyncio.sleep(0.4)  # admitted (it waits: one edit per user at a time)
    assert len(stepfun.requests) == 1
    assert len(telegram.calls_of("getFile")) == 1  # nothing held in memory while it waits
    await telegram.wait_until(
        lambda: len([m for m in telegram.sent(ALICE.id) if m.kind == "photo"]) == 2, timeout=15
    )
    assert len(telegram.calls_of("getFile")) == 2


async def test_buttons_only_reach_edits_of_their_own_chat(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it private")
    alices = await app.photo_reply(ALICE.id)
    edit_id = alices.callback_data[0].split(":")[1]
    telegram.user_sends_photo(MALLORY.id, MALLORY, make_image(64, 64), caption="anything")
    mallorys = await app.photo_reply(MALLORY.id)
    for action in ("undo", "full", "reroll"):  # forged data on Mallory's own message
        telegram.user_presses_button(
            MALLORY.id, MALLORY, mallorys, f"{action}:{edit_id}", check_button=False
        )
        answer = await app.text_reply(MALLORY.id)
        assert "can't find that image" in (answer.text or "")
        answer.deleted = True  # so the next text_reply waits for a new answer
    assert [m.kind for m in telegram.sent(MALLORY.id) if m.kind != "text"] == ["photo"]
    assert len(stepfun.requests) == 2


# --- SIGKILL mid-load, then a restart ------------------------------------------------------


async def test_a_killed_bot_answers_every_request_after_a_restart_and_charges_once(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram, db_url: str
) -> None:
    database_url = db_url
    env = wired_to(
        telegram, stepfun, DATABASE_URL=database_url, JOB_LEASE_SECONDS="2",
        EDIT_CONCURRENCY="2", DAILY_QUOTA="10", EDIT_RETRIES="0",
    )  # fmt: skip
    stepfun.delay = 0.5
    users = [FakeUser(id=7000 + n, first_name=f"U{n}") for n in range(4)]
    sent = {
        (user.id, n): telegram.user_sends_photo(
            user.id, user, make_image(96 + n, 64), caption=f"edit {n}"
        )
        for user in users
        for n in range(3)
    }
    first = await _start(tmp_path, env, "first.log")
    await telegram.wait_until(
        lambda: sum(1 for u in users for m in telegram.sent(u.id) if m.kind == "photo") >= 2,
        timeout=30,
    )
    first.send_signal(signal.SIGKILL)  # mid-load: edits are queued, running and delivering
    await first.wait()
    second = await _start(tmp_path, env, "second.log")
    try:

        def answered(key: tuple[int, int]) -> bool:
            chat, _ = key
            message_id = sent[key].message_id
            return any(
                m.reply_to_message_id == message_id and not is_note(m) for m in telegram.sent(chat)
            )

        await telegram.wait_until(lambda: all(answered(k) for k in sent), timeout=60)
        await telegram.wait_until(
            lambda: all(m.deleted for u in users for m in telegram.sent(u.id) if is_note(m)),
            timeout=20,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)
    store = SqlStore(create_engine(database_url))
    try:
        for user in users:
            photos = {m.reply_to_message_id for m in telegram.sent(user.id) if m.kind == "photo"}
            record = await store.get_or_create_user(_ref(user))
            used = await store.quota_used(record.id, _today())
            assert used == len(photos)  # charged = delivered (a re-sent photo counts once)
    finally:
        await store.aclose()


async def test_a_kill_mid_batch_replays_no_command_that_was_handled(
    tmp_path: Path, stepfun: FakeStepFun, telegram: FakeTelegram
) -> None:
    admin = FakeUser(id=9, first_name="Admin", language_code="en")
    env = wired_to(telegram, stepfun, ADMIN_IDS="9", DAILY_QUOTA="3")
    first = await _start(tmp_path, env, "first.log")
    telegram.user_sends_photo(ALICE.id, ALICE, make_image(3000, 3000))  # slow to draw on
    await telegram.wait_for_message(ALICE.id, lambda m: m.kind == "text", timeout=30)
    telegram.user_sends_text(admin.id, admin, "/start")
    await telegram.wait_for_message(admin.id, lambda m: m.kind == "text", timeout=30)
    # One batch: a dozen speech bubbles, and a /grant beside them.
    bubbles = [telegram.user_sends_text(ALICE.id, ALICE, f"/bubble hi {n}") for n in range(12)]
    telegram.user_sends_text(admin.id, admin, f"/grant {ALICE.id} 5")

    def granted() -> list[StoredMessage]:
        return [m for m in telegram.sent(admin.id) if "more edits today" in (m.text or "")]

    def drawn(bubble: StoredMessage) -> list[StoredMessage]:
        return [m for m in telegram.sent(ALICE.id)
                if m.kind == "photo" and m.reply_to_message_id == bubble.message_id]  # fmt: skip

    await telegram.wait_until(
        lambda: granted() and sum(1 for b in bubbles if drawn(b)) >= 3, timeout=30
    )
    first.send_signal(signal.SIGKILL)  # mid-batch: Telegram has no confirmation of it
    await first.wait()
    second = await _start(tmp_path, env, "second.log")
    try:
        await telegram.wait_until(lambda: all(drawn(b) for b in bubbles), timeout=60)
        telegram.user_sends_text(admin.id, admin, f"/quota {ALICE.id}")
        quota = await telegram.wait_for_message(
            admin.id, lambda m: "granted)" in (m.text or ""), timeout=30
        )
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)
    assert len(granted()) == 1  # the replayed /grant granted nothing
    assert "+5 granted" in (quota.text or "")
    redrawn = sum(len(drawn(b)) - 1 for b in bubbles)
    assert redrawn <= 1  # at most the one being drawn when the process died


async def _start(cwd: Path, env: dict[str, str], log: str) -> asyncio.subprocess.Process:
    """`stepedit run`, logging to a file in `cwd` (a pipe nobody reads would fill up)."""
    with (cwd / log).open("wb") as output:
        return await asyncio.create_subprocess_exec(
            STEPEDIT, "run", cwd=cwd, env=env, stdout=output, stderr=output
        )


def _ref(user: FakeUser) -> UserRef:
    return UserRef("telegram", str(user.id))


def _today() -> date:
    return datetime.now(UTC).date()


@pytest.mark.client(timeout=8)
@pytest.mark.service(note_interval=0.2)  # (the note changes at most every 4 s by default)
async def test_the_cancel_button_cancels_until_the_request_leaves_for_the_api(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 3
    first = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    note = await telegram.wait_for_message(
        ALICE.id, lambda m: any(d.startswith("cancel:") for d in m.callback_data)
    )
    assert note.reply_to_message_id == first.message_id
    await telegram.wait_until(lambda: stepfun.requests)  # the API is working on the first
    await telegram.wait_until(lambda: note.text == t("working_sent"))
    # Alice's second waits (one edit each at the API): it can still be cancelled
    second = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")
    await app.idle()
    telegram.user_presses_button(ALICE.id, MALLORY, note, note.callback_data[0])
    await app.idle()
    assert not note.deleted  # not Mallory's to cancel
    telegram.user_presses_button(ALICE.id, ALICE, note, note.callback_data[0])
    answer = await app.text_reply(ALICE.id)
    assert answer.text == "Cancelled. Nothing was charged."
    assert answer.reply_to_message_id == second.message_id
    # The first was sent: it runs to its end, is delivered and counted.
    photo = await app.photo_reply(ALICE.id)
    assert photo.reply_to_message_id == first.message_id
    assert await app.quota_used(ALICE) == 1
    telegram.user_sends_text(ALICE.id, ALICE, "/cancel")  # nothing left to cancel
    told = await app.text_reply(ALICE.id)
    assert told.text == t("nothing_to_cancel")
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"]


@pytest.mark.service(daily_quota=1, rules=OperatorRules(budget=1))
@pytest.mark.client(timeout=5)
async def test_a_press_after_the_request_left_neither_stops_nor_refunds_it(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    note = await telegram.wait_for_message(
        ALICE.id, lambda m: any(d.startswith("cancel:") for d in m.callback_data)
    )
    await telegram.wait_until(lambda: stepfun.requests)
    press = telegram.user_presses_button(ALICE.id, ALICE, note, note.callback_data[0])
    await telegram.wait_for_call(
        "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == press.query_id
    )
    answered = [c for c in telegram.calls_of("answerCallbackQuery")
                if c.params.get("callback_query_id") == press.query_id]  # fmt: skip
    assert answered[0].params.get("text") == t("nothing_to_cancel")
    await app.photo_reply(ALICE.id)
    assert await app.quota_used(ALICE) == 1
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it rain")  # quota spent
    refused = await app.text_reply(ALICE.id)
    assert refused.text is not None and "used" in refused.text
    assert len(stepfun.requests) == 1


async def test_a_redelivered_uncaptioned_photo_is_asked_about_once(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun
) -> None:
    sent = telegram.user_sends_photo(ALICE.id, ALICE, PHOTO)
    question = await app.text_reply(ALICE.id)
    telegram.redeliver(sent)
    await app.idle()
    assert [m for m in telegram.sent(ALICE.id) if m.kind == "text"] == [question]
    telegram.user_sends_text(ALICE.id, ALICE, "add a hat", reply_to=question.message_id)
    await app.photo_reply(ALICE.id)
    assert decode(stepfun.requests[0].image).size == (320, 240)
    assert telegram.calls_of("getFile") and len(telegram.calls_of("getFile")) == 1


@pytest.mark.client(timeout=5)
async def test_sending_photo_shows_while_the_edit_runs_and_is_renewed(
    app: BotUnderTest, telegram: FakeTelegram, stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("bot.calling.ACTION_EVERY", 0.3)  # Telegram's lasts about 5 s
    stepfun.delay = 1.2
    telegram.user_sends_photo(ALICE.id, ALICE, PHOTO, caption="make it snow")
    await app.photo_reply(ALICE.id)
    methods = [c.method for c in telegram.calls if c.params.get("chat_id") == ALICE.id]
    actions = [c for c in telegram.calls_of("sendChatAction")]
    assert len(actions) >= 3  # renewed while the API works
    assert all(a.params == {"chat_id": ALICE.id, "action": "upload_photo"} for a in actions)
    assert methods.index("sendPhoto") > max(i for i, m in enumerate(methods)
                                            if m == "sendChatAction")  # fmt: skip
    await asyncio.sleep(0.7)
    assert len(telegram.calls_of("sendChatAction")) == len(actions)  # and stops with it


async def test_every_note_goes_while_the_send_budget_is_spent(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    users = [FakeUser(id=5200 + n, first_name=f"User {n}", language_code="en") for n in range(4)]
    # As `stepedit run` has it: PTB's rate limiter, which waits and tries twice more on a 429,
    # and a lease of 30 s (the sweep of ended edits' leftovers, one try each, comes after that).
    options = {"note_interval": 0.05, "lease": 30.0}
    app = BotUnderTest(telegram, stepfun, sqlite_url, options, rate_limit=True)
    await app.start()
    try:
        stepfun.delay = 0.3
        # Flood control: note changes and deletions answered "retry after 1 s" more often than
        # PTB tries (three times each call); the pictures go through.
        telegram.fail_next("editMessageText", retry_after=1, times=3)
        telegram.fail_next("deleteMessage", retry_after=1, times=3 * len(users))
        for user in users:
            for n in range(2):
                telegram.user_sends_photo(user.id, user, make_image(300 + n, 200), caption="snow")

        def photos(user: FakeUser) -> int:
            return len([m for m in telegram.sent(user.id) if m.kind == "photo"])

        await telegram.wait_until(lambda: all(photos(user) == 2 for user in users))
        notes = [m for user in users for m in telegram.sent(user.id) if is_note(m)]
        assert len(notes) == len(users)  # one note each, for both requests
        await telegram.wait_until(lambda: all(note.deleted for note in notes), timeout=8)
        refused = [c for c in telegram.calls_of("deleteMessage") if c.http_status == 429]
        assert len(refused) == 3 * len(users)  # (the flood control did happen)
    finally:
        await app.stop()


async def test_a_deleted_note_counts_as_gone_and_flood_control_says_how_long_to_wait(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    assert app.bot is not None
    messenger, to = app.bot.messenger, Address("telegram", str(ALICE.id))
    await messenger.delete_note(to, "424242")  # deleted already (by the user, or a sweep)
    telegram.fail_next("deleteMessage", retry_after=7)
    with pytest.raises(RetryLater) as flood:
        await messenger.delete_note(to, "424242")
    assert flood.value.retry_after == 7


async def test_a_note_changed_to_what_it_says_already_is_no_failure(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    assert app.bot is not None
    messenger, to = app.bot.messenger, Address("telegram", str(ALICE.id))
    telegram.user_sends_text(ALICE.id, ALICE, "/start")  # the chat exists from here on
    await app.text_reply(ALICE.id)
    note_id = await messenger.send_note(to, "⏳ Queued, place 2", 1)
    await messenger.edit_note(to, note_id, "⏳ Queued, place 1", 1)
    # An edit that seemed to fail went through; the next one asks for the same words again.
    await messenger.edit_note(to, note_id, "⏳ Queued, place 1", 1)
    shown = next(m for m in telegram.sent(ALICE.id) if str(m.message_id) == note_id)
    assert shown.text == "⏳ Queued, place 1"
    edits = [c for c in telegram.calls if c.method == "editMessageText"]
    assert len(edits) == 2 and "not modified" in str(edits[1].error)  # what Telegram said


async def test_a_note_deleted_by_someone_else_says_so_when_it_is_changed(
    app: BotUnderTest, telegram: FakeTelegram
) -> None:
    """Telegram's "message to edit not found" is NoteGone (the board then sends a new note),
    not a failure like any other."""
    assert app.bot is not None
    messenger, to = app.bot.messenger, Address("telegram", str(ALICE.id))
    telegram.user_sends_text(ALICE.id, ALICE, "/start")  # the chat exists from here on
    await app.text_reply(ALICE.id)
    note_id = await messenger.send_note(to, "⏳ Queued, place 2", 1)
    await messenger.delete_note(to, note_id)  # by another process
    with pytest.raises(NoteGone):
        await messenger.edit_note(to, note_id, "⏳ Queued, place 1", 1)
