"""The fake Telegram server works with a real python-telegram-bot Application, unchanged."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    MessageEntity,
    ReactionTypeEmoji,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram import (
    FakeTelegram,
    FakeUser,
    StoredMessage,
    default_user,
    make_png,
    run_fake_telegram,
)

ALICE = default_user()
GROUP = -1001234567890


@asynccontextmanager
async def running_app(
    fake: FakeTelegram, *handlers: Any, poll_timeout: int = 0
) -> AsyncIterator[tuple[Application[Any, Any, Any, Any, Any, Any], list[BaseException]]]:
    """A real PTB Application polling the fake; yields it with the list of handler errors."""
    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    for handler in handlers:
        app.add_handler(handler)
    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        errors.append(context.error)

    app.add_error_handler(on_error)
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=poll_timeout, poll_interval=0.02)
    try:
        yield app, errors
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


@asynccontextmanager
async def plain_bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as bot:
        yield bot


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Raw HTTP: the wire format the fake accepts
# ------------------------------------------------------------------------------------------


async def test_raw_http_tokens_methods_and_body_formats(telegram: FakeTelegram) -> None:
    api = f"{telegram.root}/bot{telegram.token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/getMe") as resp:
            me = await resp.json()
        assert me["ok"] and me["result"]["is_bot"] is True
        assert me["result"]["id"] == 999
        assert me["result"]["username"] == "stepedit_test_bot"

        async with http.get(f"{telegram.root}/bot1:WRONG/getMe") as resp:
            assert resp.status == 401
            assert await resp.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"{api}/noSuchMethod") as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["ok"] is False and body["error_code"] == 404

        telegram.user_sends_text(ALICE.id, ALICE, "hi")
        # JSON body, typed values
        async with http.post(f"{api}/sendMessage", json={"chat_id": ALICE.id, "text": "42"}) as r:
            sent = (await r.json())["result"]
        assert sent["text"] == "42" and sent["chat"]["id"] == ALICE.id
        assert sent["from"]["is_bot"] is True
        assert isinstance(sent["date"], int) and sent["date"] < 10**10  # seconds, not ms
        # form body: non-strings JSON-encoded, "text" stays a string even if it looks like JSON
        markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
        form = {"chat_id": str(ALICE.id), "text": "true", "reply_markup": json.dumps(markup)}
        async with http.post(f"{api}/sendMessage", data=form) as r:
            sent2 = (await r.json())["result"]
        assert sent2["message_id"] == sent["message_id"] + 1
        assert sent2["reply_markup"] == markup
        # query-string GET
        async with http.get(f"{api}/sendChatAction?chat_id={ALICE.id}&action=typing") as r:
            assert (await r.json())["result"] is True
        # Bot API error shape
        async with http.post(f"{api}/sendMessage", data={"chat_id": "777", "text": "x"}) as r:
            assert r.status == 400
            assert await r.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: chat not found",
            }

    messages = telegram.sent(ALICE.id)
    assert [m.text for m in messages] == ["42", "true"]
    assert messages[1].reply_markup == markup
    assert messages[1].callback_data == ["go"]
    assert telegram.chat_actions(ALICE.id) == ["typing"]
    assert telegram.calls_of("sendMessage")[0].params == {"chat_id": ALICE.id, "text": "42"}
    assert telegram.calls_of("sendMessage")[1].params["chat_id"] == ALICE.id


async def test_get_updates_offset_timeout_and_long_poll(telegram: FakeTelegram) -> None:
    api = f"{telegram.root}/bot{telegram.token}"
    async with aiohttp.ClientSession() as http:

        async def get_updates(**params: Any) -> list[dict[str, Any]]:
            async with http.post(f"{api}/getUpdates", data=params) as resp:
                return (await resp.json())["result"]  # type: ignore[no-any-return]

        assert await get_updates(timeout=0) == []
        first = telegram.user_sends_text(ALICE.id, ALICE, "one")
        second = telegram.user_sends_text(ALICE.id, ALICE, "two")
        updates = await get_updates(timeout=0)
        assert [u["update_id"] for u in updates] == [first.update_id, second.update_id]
        assert updates[0]["message"]["text"] == "one"
        assert updates[0]["message"]["chat"] == {
            "id": ALICE.id,
            "type": "private",
            "first_name": "Alice",
            "username": "alice",
        }
        assert updates[0]["message"]["from"]["language_code"] == "en"
        # not confirmed yet: delivered again; the offset confirms (deletes) earlier updates
        assert len(await get_updates(timeout=0)) == 2
        assert second.update_id is not None
        assert [u["update_id"] for u in await get_updates(offset=second.update_id)] == [
            second.update_id
        ]
        assert await get_updates(offset=second.update_id + 1, timeout=0) == []
        assert telegram.pending_updates == []

        # A long poll returns as soon as an update arrives.
        poll = asyncio.create_task(get_updates(offset=second.update_id + 1, timeout=30))
        await telegram.wait_until(lambda: telegram.long_polls)
        third = telegram.user_sends_text(ALICE.id, ALICE, "three")
        result = await asyncio.wait_for(poll, 5)
        assert [u["update_id"] for u in result] == [third.update_id]
        assert third.message_id == 3  # message ids count per chat


async def test_stop_releases_pending_long_poll() -> None:
    async with run_fake_telegram() as fake, aiohttp.ClientSession() as http:
        url = f"{fake.root}/bot{fake.token}/getUpdates"
        poll = asyncio.create_task(http.post(url, data={"timeout": "60"}))
        await fake.wait_until(lambda: fake.long_polls)
        await asyncio.wait_for(fake.stop(), 5)
        async with await asyncio.wait_for(poll, 5) as resp:
            assert (await resp.json())["result"] == []


# ------------------------------------------------------------------------------------------
# A real PTB Application end to end
# ------------------------------------------------------------------------------------------


async def test_ptb_echo_photo_round_trip_button_and_reply(telegram: FakeTelegram) -> None:
    pressed: list[str] = []
    replied_photo: list[bytes] = []

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        if msg.reply_to_message and msg.reply_to_message.photo:
            # The user replies to the bot's result: the bot downloads the replied-to photo.
            file = await msg.reply_to_message.photo[-1].get_file()
            data = bytes(await file.download_as_bytearray())
            replied_photo.append(data)
            await msg.reply_photo(data, caption=f"again: {msg.text}", do_quote=True)
            return
        await msg.reply_text(f"echo: {msg.text}", do_quote=True)

    async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        assert msg is not None and msg.photo
        await context.bot.send_chat_action(msg.chat_id, "upload_photo")
        file = await msg.photo[-1].get_file()
        data = await file.download_as_bytearray()
        keyboard = InlineKeyboardMarkup(
            [
                [InlineKeyboardButton("Again", callback_data="again")],
                [InlineKeyboardButton("Swap", callback_data="swap")],
            ]
        )
        await context.bot.send_photo(
            msg.chat_id,
            bytes(data),
            caption="Edited",
            reply_markup=keyboard,
            reply_to_message_id=msg.message_id,
        )

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None and query.message is not None
        pressed.append(query.data)
        await query.answer("Working…")
        if query.data == "swap":
            await query.edit_message_media(
                InputMediaPhoto(make_png(32, 32, (0, 255, 0)), caption="Swapped")
            )
        else:
            await query.edit_message_caption("Edited again")

    original = jpeg(800, 600)
    async with running_app(
        telegram,
        MessageHandler(filters.TEXT & ~filters.COMMAND, echo),
        MessageHandler(filters.PHOTO, photo),
        CallbackQueryHandler(button),
    ) as (_app, errors):
        hello = telegram.user_sends_text(ALICE.id, ALICE, "hello")
        answer = await telegram.wait_for_message(ALICE.id)
        assert answer.text == "echo: hello"
        assert answer.reply_to_message_id == hello.message_id

        sent_photo = telegram.user_sends_photo(ALICE.id, ALICE, original, caption="make it pop")
        assert sent_photo.photo is not None and len(sent_photo.photo) == 2  # thumbnail + original
        assert sent_photo.photo[-1]["width"] == 800
        result = await telegram.wait_for_message(ALICE.id, lambda m: m.kind == "photo")
        assert result.photo_bytes == original  # bytes survived download + upload unchanged
        assert result.caption == "Edited"
        assert result.reply_to_message_id == sent_photo.message_id
        assert result.callback_data == ["again", "swap"]
        assert telegram.chat_actions(ALICE.id) == ["upload_photo"]
        assert any(d.data == original for d in telegram.downloads)
        assert telegram.file_bytes(result.file_id or "") == original

        press = telegram.user_presses_button(ALICE.id, ALICE, result, "again")
        answered = await telegram.wait_for_call(
            "answerCallbackQuery", lambda c: c.params["callback_query_id"] == press.query_id
        )
        assert answered.params["text"] == "Working…"
        await telegram.wait_until(lambda: result.edits)
        assert result.caption == "Edited again"
        assert result.edits[0].method == "editMessageCaption"
        assert result.edits[0].before["caption"] == "Edited"
        # Like Telegram: editing a caption without reply_markup removes the keyboard.
        assert result.reply_markup is None
        with pytest.raises(LookupError):
            telegram.user_presses_button(ALICE.id, ALICE, result, "swap")

        # The user replies to the bot's photo; the bot downloads that photo by its file_id.
        telegram.user_sends_text(ALICE.id, ALICE, "more contrast", reply_to=result)
        again = await telegram.wait_for_message(ALICE.id, lambda m: m.kind == "photo")
        assert replied_photo == [original]
        assert again.photo_bytes == original and again.caption == "again: more contrast"

        # editMessageMedia with a multipart upload referenced as attach://
        swap_target = again  # sent without a keyboard: give it one so the user can press it
        async with plain_bot(telegram) as bot:
            await bot.edit_message_reply_markup(
                ALICE.id,
                swap_target.message_id,
                reply_markup=InlineKeyboardMarkup(
                    [[InlineKeyboardButton("Swap", callback_data="swap")]]
                ),
            )
        telegram.user_presses_button(ALICE.id, ALICE, swap_target, "swap")
        await telegram.wait_until(lambda: swap_target.caption == "Swapped")
        assert swap_target.photo_bytes == make_png(32, 32, (0, 255, 0))
        assert [e.method for e in swap_target.edits] == [
            "editMessageReplyMarkup",
            "editMessageMedia",
        ]
        media_call = telegram.calls_of("editMessageMedia")[0]
        attach = media_call.params["media"]["media"]
        assert attach.startswith("attach://") and attach[len("attach://") :] in media_call.files

        assert pressed == ["again", "swap"]
        assert errors == []
    assert telegram.long_polls == 0


async def test_ptb_group_mentions_commands_and_caption_entities(telegram: FakeTelegram) -> None:
    seen: dict[str, Any] = {}

    async def mentioned(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        seen["mention"] = update.effective_message.text

    async def edit_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen["command_args"] = context.args

    async def captioned(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        assert msg is not None and msg.from_user is not None
        seen["caption_entities"] = {
            e.type: text for e, text in msg.parse_caption_entities().items()
        }
        seen["language_code"] = msg.from_user.language_code
        seen["chat"] = (msg.chat.type, msg.chat.title)
        await msg.reply_text("on it")

    bob = FakeUser(id=5151, first_name="小明", language_code="zh-hans")
    async with running_app(
        telegram,
        CommandHandler("edit", edit_command),
        MessageHandler(filters.PHOTO & filters.CaptionRegex(r"^/edit\b"), captioned),
        MessageHandler(filters.TEXT & filters.Mention("stepedit_test_bot"), mentioned),
    ) as (_app, errors):
        telegram.user_sends_text(GROUP, bob, "hey @stepedit_test_bot 你好", chat_type="supergroup")
        await telegram.wait_until(lambda: "mention" in seen)
        assert seen["mention"] == "hey @stepedit_test_bot 你好"

        telegram.user_sends_text(
            GROUP, bob, "/edit@stepedit_test_bot make it red", chat_type="supergroup"
        )
        await telegram.wait_until(lambda: "command_args" in seen)
        assert seen["command_args"] == ["make", "it", "red"]

        photo_msg = telegram.user_sends_photo(
            GROUP,
            bob,
            make_png(),
            caption="/edit 🎨 sepia @stepedit_test_bot",
            chat_type="supergroup",
        )
        reply = await telegram.wait_for_message(GROUP)
        assert reply.text == "on it" and reply.reply_to_message_id == photo_msg.message_id
        assert seen["caption_entities"] == {
            MessageEntity.BOT_COMMAND: "/edit",
            MessageEntity.MENTION: "@stepedit_test_bot",  # offset after the emoji: UTF-16
        }
        assert seen["language_code"] == "zh-hans"
        assert seen["chat"] == ("supergroup", "Test group 1001234567890")
        assert errors == []


async def test_ptb_document_photo_and_entities_helpers(telegram: FakeTelegram) -> None:
    got: dict[str, Any] = {}

    async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        assert msg is not None and msg.document is not None
        file = await msg.document.get_file()
        got["bytes"] = bytes(await file.download_as_bytearray())
        got["meta"] = (msg.document.mime_type, msg.document.file_name)
        await msg.reply_document(got["bytes"], filename="result.png", caption="done")

    png = make_png(40, 30)
    async with running_app(telegram, MessageHandler(filters.Document.IMAGE, on_document)) as (
        _app,
        errors,
    ):
        telegram.user_sends_photo(ALICE.id, ALICE, png, as_document=True, filename="cat.png")
        result = await telegram.wait_for_message(ALICE.id)
        assert got == {"bytes": png, "meta": ("image/png", "cat.png")}
        assert result.kind == "document" and result.document_bytes == png
        assert result.document is not None and result.document["file_name"] == "result.png"
        assert result.document["mime_type"] == "image/png"
        assert errors == []


# ------------------------------------------------------------------------------------------
# Telegram's limits and errors, as PTB sees them
# ------------------------------------------------------------------------------------------


async def test_limits_surface_as_ptb_errors(telegram: FakeTelegram) -> None:
    telegram.user_sends_text(ALICE.id, ALICE, "/start")
    async with plain_bot(telegram) as bot:
        # Oversize photos: width + height > 10000, and > 10 MB.
        with pytest.raises(BadRequest, match=r"(?i)PHOTO_INVALID_DIMENSIONS"):
            await bot.send_photo(ALICE.id, make_png(9000, 1200))
        with pytest.raises(BadRequest, match=r"(?i)PHOTO_INVALID_DIMENSIONS"):
            await bot.send_photo(ALICE.id, os.urandom(10 * 1024 * 1024 + 1))
        with pytest.raises(BadRequest, match=r"(?i)IMAGE_PROCESS_FAILED"):
            await bot.send_photo(ALICE.id, b"not an image")
        with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
            await bot.send_photo(ALICE.id, make_png(), caption="x" * 1025)
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(ALICE.id, "x" * 4097)
        with pytest.raises(BadRequest, match=r"(?i)text is empty"):
            await bot.send_message(ALICE.id, "   ")
        with pytest.raises(BadRequest, match=r'(?i)unsupported start tag "br"'):
            await bot.send_message(ALICE.id, "a<br>b", parse_mode="HTML")
        with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
            await bot.send_message(ALICE.id, "v1.5", parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
            await bot.send_message(
                ALICE.id,
                "x",
                reply_markup=InlineKeyboardMarkup(
                    [[InlineKeyboardButton("b", callback_data="d" * 65)]]
                ),
            )
        with pytest.raises(BadRequest, match=r"(?i)chat not found"):
            await bot.send_message(777, "hello")
        with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
            await bot.send_message(ALICE.id, "x", reply_to_message_id=999)
        assert telegram.sent(ALICE.id) == []  # nothing stored for rejected calls

        html = await bot.send_message(ALICE.id, "<b>Done</b> &amp; saved", parse_mode="HTML")
        assert html.text == "Done & saved"
        stored = telegram.sent(ALICE.id)[-1]
        assert stored.text == "<b>Done</b> &amp; saved" and stored.plain_text == "Done & saved"
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_text(
                "<b>Done</b> &amp; saved", ALICE.id, html.message_id, parse_mode="HTML"
            )
        with pytest.raises(BadRequest, match=r"(?i)there is no caption"):
            await bot.edit_message_caption(ALICE.id, html.message_id, caption="c")
        with pytest.raises(BadRequest, match=r"(?i)reaction_invalid"):
            await bot.set_message_reaction(ALICE.id, html.message_id, ReactionTypeEmoji("✅"))
        assert await bot.set_message_reaction(ALICE.id, html.message_id, "👍")
        assert stored.reactions == ["👍"]
        assert await bot.delete_message(ALICE.id, html.message_id)
        assert stored.deleted
        with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
            await bot.delete_message(ALICE.id, html.message_id)
        with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
            await bot.edit_message_text("new", ALICE.id, html.message_id)
        with pytest.raises(BadRequest, match=r"(?i)wrong file_id"):
            await bot.get_file("nope")
        with pytest.raises(BadRequest, match=r"(?i)query id is invalid"):
            await bot.answer_callback_query("12345")

        telegram.fail_next("sendMessage", retry_after=3)
        with pytest.raises(RetryAfter):
            await bot.send_message(ALICE.id, "flood")
        assert (await bot.send_message(ALICE.id, "fine")).text == "fine"

        telegram.block(ALICE.id)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await bot.send_message(ALICE.id, "hello?")
        telegram.unblock(ALICE.id)

        chat = await bot.get_chat(ALICE.id)
        assert chat.type == "private" and chat.first_name == "Alice"
        commands = [("edit", "Edit a photo"), ("help", "Help")]
        assert await bot.set_my_commands(commands)
        assert await bot.set_my_commands([("edit", "编辑照片")], language_code="zh")
        assert [(c.command, c.description) for c in await bot.get_my_commands()] == commands
        zh = await bot.get_my_commands(language_code="zh")
        assert [c.description for c in zh] == ["编辑照片"]
        with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
            await bot.set_my_commands([("Edit-Photo", "bad")])
        assert await bot.log_out() and await bot.close()

    assert [c.method for c in telegram.calls if not c.ok][:2] == ["sendPhoto", "sendPhoto"]
    assert telegram.calls_of("sendPhoto")[0].error == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: PHOTO_INVALID_DIMENSIONS",
    }


async def test_waiters_time_out_with_a_readable_summary(telegram: FakeTelegram) -> None:
    telegram.user_sends_text(ALICE.id, ALICE, "hi")
    with pytest.raises(AssertionError, match=r"timed out after 0\.05s") as info:
        await telegram.wait_for_message(ALICE.id, timeout=0.05)
    assert "Chat 4242" in str(info.value)


async def test_start_stop_with_long_poll_timeout_does_not_hang(telegram: FakeTelegram) -> None:
    async def shut_down() -> None:
        async with running_app(telegram, poll_timeout=30):
            await telegram.wait_until(lambda: telegram.long_polls)

    await asyncio.wait_for(shut_down(), 20)


async def test_edits_keyboards_media_groups_and_file_id_resend(telegram: FakeTelegram) -> None:
    start = telegram.user_sends_text(ALICE.id, ALICE, "/start")
    async with plain_bot(telegram) as bot:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data="cancel")]])
        sent = await bot.send_message(ALICE.id, "Working…", reply_markup=keyboard)
        await bot.edit_message_text(
            "Still working…", ALICE.id, sent.message_id, reply_markup=keyboard
        )
        stored = telegram.sent(ALICE.id)[-1]
        assert stored.text == "Still working…" and stored.callback_data == ["cancel"]
        # Editing the text without reply_markup removes the keyboard, as on Telegram.
        edited = await bot.edit_message_text("Done", ALICE.id, sent.message_id)
        assert edited.reply_markup is None and stored.reply_markup is None
        assert [e.before["text"] for e in stored.edits] == ["Working…", "Still working…"]
        assert isinstance(edited.edit_date, type(edited.date))
        with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
            await bot.edit_message_text("hijack", ALICE.id, start.message_id)

        first, second = make_png(10, 10), make_png(20, 20, (0, 0, 255))
        group = await bot.send_media_group(
            ALICE.id, [InputMediaPhoto(first), InputMediaPhoto(second, caption="two")]
        )
        assert len(group) == 2 and group[0].media_group_id == group[1].media_group_id
        assert [m.photo_bytes for m in telegram.sent(ALICE.id)[-2:]] == [first, second]
        with pytest.raises(BadRequest, match=r"(?i)there is no text in the message to edit"):
            await bot.edit_message_text("x", ALICE.id, group[0].message_id)

        # Re-sending by file_id reuses the stored bytes.
        await bot.send_photo(ALICE.id, group[1].photo[-1].file_id, caption="again")
        assert telegram.sent(ALICE.id)[-1].photo_bytes == second

    found = await telegram.wait_for(
        lambda item: isinstance(item, StoredMessage) and item.caption == "two"
    )
    assert isinstance(found, StoredMessage) and found.kind == "photo"
    call = await telegram.wait_for_call("sendMediaGroup")
    assert len(call.params["media"]) == 2 and len(call.files) == 2
    assert telegram.methods()[:3] == ["getMe", "sendMessage", "editMessageText"]


async def test_updates_are_confirmed_by_a_real_poller(telegram: FakeTelegram) -> None:
    async with running_app(telegram) as (_app, errors):
        message = telegram.user_sends_text(ALICE.id, ALICE, "anyone?")
        await telegram.wait_until_confirmed(message)
        assert telegram.pending_updates == []
        assert errors == []


# ------------------------------------------------------------------------------------------
# Webhooks: set and reported like Telegram's, updates delivered by POST
# ------------------------------------------------------------------------------------------


async def test_a_webhook_is_set_reported_and_deleted_like_telegrams(telegram: FakeTelegram) -> None:
    async with plain_bot(telegram) as bot:
        with pytest.raises(BadRequest, match=r"(?i)https url"):
            await bot.set_webhook("http://hook.example.com/in")
        with pytest.raises(BadRequest, match=r"(?i)ports 80, 88, 443 or 8443"):
            await bot.set_webhook("https://hook.example.com:8080/in")
        with pytest.raises(BadRequest, match=r"(?i)secret token"):
            await bot.set_webhook("https://hook.example.com/in", secret_token="no spaces")
        await bot.set_webhook("https://hook.example.com/in", secret_token="s3cret_-",
                              allowed_updates=["message"])  # fmt: skip
        telegram.user_sends_text(ALICE.id, ALICE, "waiting")
        info = await bot.get_webhook_info()
        assert (info.url, info.allowed_updates, info.pending_update_count) == (
            "https://hook.example.com/in",
            ("message",),
            1,
        )
        assert "s3cret_-" not in json.dumps(info.to_dict())  # Telegram never tells it
        with pytest.raises(Conflict, match=r"(?i)webhook is active"):
            await bot.get_updates()
        await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        assert [u.message.text for u in await bot.get_updates() if u.message] == ["waiting"]


async def test_webhook_posts_wait_for_each_chats_answer_and_come_again_after_a_failure(
    telegram: FakeTelegram,
) -> None:
    got: list[tuple[int, str | None]] = []  # (update id, secret header) as posted
    release = asyncio.Event()
    failed_once: set[int] = set()

    async def receive(request: web.Request) -> web.Response:
        update = await request.json()
        got.append((update["update_id"], request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        if update["message"]["text"] == "first":
            await release.wait()  # holds its chat's next update back
        if update["message"]["text"] == "flaky" and update["update_id"] not in failed_once:
            failed_once.add(update["update_id"])
            return web.Response(status=500)
        return web.Response()

    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with plain_bot(telegram) as bot:
            await bot.set_webhook("https://hook.example.com/in", secret_token="s3cret")
        telegram.webhook.forward_to(f"http://127.0.0.1:{runner.addresses[0][1]}")
        first = telegram.user_sends_text(ALICE.id, ALICE, "first")
        second = telegram.user_sends_text(ALICE.id, ALICE, "second")
        bob = FakeUser(5151, "Bob")
        other = telegram.user_sends_text(bob.id, bob, "flaky")  # another chat: not held back
        await telegram.wait_until(lambda: [u for u, _ in got].count(other.update_id) == 2)
        assert second.update_id not in [u for u, _ in got]  # its chat's first is unanswered
        release.set()
        await telegram.wait_until(lambda: telegram.pending_updates == [])
        ids = [u for u, _ in got]
        assert ids.index(first.update_id) < ids.index(second.update_id)
        assert {secret for _, secret in got} == {"s3cret"}
        assert [p.status for p in telegram.webhook.delivered(other.update_id)] == [500, 200]
    finally:
        await runner.cleanup()
