"""Telegram adapter (python-telegram-bot): updates in, core requests out; and the Messenger the
core answers through (photos with buttons, notes, texts), which needs nothing but a stored
address, so a job resumed after a restart answers in its chat. Every rule (quota, seeds,
sources, limits, queueing) lives in bot/service.py; this module only decides *whether* a
message is addressed to the bot and *how* to show answers.

Buttons carry the stored edit id ("reroll:42"), so they keep working after a restart; the core
checks that the edit belongs to the chat where the button was pressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, BinaryIO, cast

from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    Update,
)
from telegram import User as TgUser
from telegram.constants import ChatAction, ChatType
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.payments import COMMANDS as PAYMENT_COMMANDS
from adapters.telegram.payments import TelegramPayments, decline, is_payment
from adapters.telegram.webhook import Handler, Webhook, describe, update_types
from bot import imaging, logs, presenter, texts
from bot.commands import TEXT_COMMANDS, Asked
from bot.config import ConfigError, Settings
from bot.domain import (
    Address,
    AlbumPart,
    ChatRef,
    EditRequest,
    FileRef,
    Incoming,
    MessageRef,
    Picture,
    UserRef,
)
from bot.errors import (
    Ignored,
    ImageTooLarge,
    MixedAlbum,
    StartupError,
    StepEditError,
    UnknownEdit,
)
from bot.ports import RefundFailed, RetryLater
from bot.presenter import Action, Button
from bot.service import EditService
from bot.texts import t

log = logging.getLogger("stepedit.telegram")

PLATFORM = "telegram"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the cloud Bot API's getFile limit
POLL_RETRY_SECONDS = 2.0  # after a failed getUpdates
GROUP_ACTION_SECONDS = 20.0  # "sending photo…" in a group at most this often
# Updates from private chats handled at once, across lanes: a flood waits its turn here rather
# than crowding the event loop, so the edits at work keep their share of it (and the API its
# pace) meanwhile.
HANDLED_AT_ONCE = 32
LANES_GRACE_SECONDS = 10.0  # on stop, how long updates received may take to finish
# Bot API errors that refuse a picture as a photo but would take it as a file.
PHOTO_REFUSALS = ("PHOTO_INVALID_DIMENSIONS", "PHOTO_SAVE_FILE_INVALID", "IMAGE_PROCESS_FAILED")
COMMANDS = (
    "edit", "imagine", "caption", "bubble", "help", "quota", "seed", "settings", "cancel", "forget",
)  # fmt: skip
ADMIN_COMMANDS = ("stats", "grant", "ban", "unban", "refund")  # and /quota <id>; not in the menu
MAX_FILE_BYTES = 50_000_000  # what bots may send as a document


# --- translating Telegram objects ---------------------------------------------------------------


def user_ref(user: TgUser) -> UserRef:
    return UserRef(PLATFORM, str(user.id), user.full_name, user.language_code)


def sender_ref(update: Update) -> UserRef | None:
    """Who speaks: a person, or None for a message sent on behalf of a chat (a channel, an
    anonymous group admin: `sender_chat`), which the gate never lets through."""
    message = update.effective_message
    if message is not None and message.sender_chat is not None:
        return None
    return None if update.effective_user is None else user_ref(update.effective_user)


def incoming(update: Update, bot: Bot) -> Incoming | None:
    """What the gate sees of an update; None for what no handler takes (edited messages never
    run commands, channel posts and membership changes are not requests)."""
    checkout = update.pre_checkout_query
    if checkout is not None:  # a payment about to be made: the payer's, as in their chat
        payer = user_ref(checkout.from_user)
        return Incoming(str(update.update_id), ChatRef(PLATFORM, payer.id, True), payer)
    message, chat = update.message, update.effective_chat
    if chat is None or (message is None and update.callback_query is None):
        return None
    private = chat.type == ChatType.PRIVATE
    addressed = private or update.callback_query is not None
    if message is not None and not addressed:
        said = message.text or message.caption or ""
        replied = message.reply_to_message
        addressed = (
            said.startswith("/")
            or f"@{bot.username}".lower() in said.lower()
            or (replied is not None and replied.from_user is not None
                and replied.from_user.id == bot.id)
        )  # fmt: skip
    query = update.callback_query
    user = user_ref(query.from_user) if query is not None else sender_ref(update)
    where = ChatRef(PLATFORM, str(chat.id), private)
    return Incoming(
        str(update.update_id), where, user, addressed=addressed, payment=is_payment(update)
    )


def chat_ref(message: Message) -> ChatRef:
    return ChatRef(PLATFORM, str(message.chat_id), message.chat.type == ChatType.PRIVATE)


def message_ref(message: Message) -> MessageRef:
    return MessageRef(PLATFORM, str(message.chat_id), str(message.message_id))


def lang_of(update: Update, sample: str = "") -> str:
    user = update.effective_user
    return texts.language_for(user.language_code if user else None, sample)


def image_file(message: Message) -> FileRef | None:
    """The file of the best photo size, or of a document (any file: the core judges it)."""
    if message.photo:
        best = message.photo[-1]
        return FileRef(PLATFORM, best.file_id, best.file_size)
    if message.document:
        document = message.document
        return FileRef(PLATFORM, document.file_id, document.file_size, document.file_name)
    if message.sticker and not (message.sticker.is_animated or message.sticker.is_video):
        return FileRef(PLATFORM, message.sticker.file_id, message.sticker.file_size)
    return None


def checked_file(message: Message) -> FileRef:
    """The message's image file, refused now (before any job) if Telegram won't let us fetch it."""
    file = image_file(message)
    if file is None:
        raise UnknownEdit("the message has no image")
    if file.size and file.size > MAX_DOWNLOAD_BYTES:
        raise ImageTooLarge(f"{file.size} bytes is more than the Bot API lets bots download")
    return file


def album_file(message: Message) -> tuple[FileRef, str | None]:
    """An album part's file, and why it cannot be edited (an error's text key), if it cannot:
    a video, audio or other file among pictures, or a picture bots may not fetch."""
    document = message.document
    other = document is not None and not (document.mime_type or "image/").startswith("image/")
    file = None if other else image_file(message)
    if file is None:
        media = message.video or message.audio or document
        file_id = media.file_id if media is not None else str(message.message_id)
        return FileRef(PLATFORM, file_id), MixedAlbum.code
    if file.size and file.size > MAX_DOWNLOAD_BYTES:
        return file, ImageTooLarge.code
    return file, None


def event_key(message: Message) -> str:
    """The same Telegram message delivered twice (a crash before its offset was confirmed)
    must make one job."""
    return f"{PLATFORM}:{message.chat_id}:{message.message_id}"


class Addressing:
    """What a message says to the bot: the prompt with commands and mentions taken out, and
    whether it was addressed to the bot at all (which matters in groups)."""

    def __init__(self, text: str, bot_username: str) -> None:
        command = re.match(r"^/edit(@\w+)?(\s|$)", text, flags=re.IGNORECASE)
        self.command = False
        if command:
            addressee = command.group(1)
            self.command = not addressee or addressee[1:].lower() == bot_username.lower()
            text = text[command.end() :]
        mention = re.compile(rf"@{re.escape(bot_username)}\b", re.IGNORECASE)
        self.mentioned = bool(mention.search(text))
        # Line breaks stay (a speech bubble may have two lines); doubled spaces do not.
        self.prompt = re.sub(r"[ \t]{2,}", " ", mention.sub(" ", text)).strip()


# --- the bot -----------------------------------------------------------------------------------


class TelegramBot:
    def __init__(
        self,
        service: EditService,
        *,
        token: str,
        api_url: str = "https://api.telegram.org",
        rate_limit: bool = True,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.service = service
        self.api_url = api_url
        self.app = _application(token, api_url, rate_limit=rate_limit)
        self.messenger = TelegramMessenger(self.app.bot)
        # Webhook mode (TELEGRAM_WEBHOOK_URL): Telegram posts updates to `webhook.path`.
        self.webhook = None
        if webhook_url is not None and webhook_secret is not None:
            self.webhook = Webhook(self.app.bot, webhook_url, webhook_secret)
        self._receiving = False  # webhook mode: started, and taking updates
        self._delivered: dict[int, asyncio.Future[bool]] = {}  # update id -> handled?
        self._unhandled: set[int] = set()  # the gate could not tell: Telegram sends them again
        self._polling: asyncio.Task[None] | None = None
        self._polls_failing = False  # the last getUpdates failed
        self._confirmed = 0  # the last offset Telegram was told: all before are kept
        self._next = 0  # the update id after the newest one received
        self._in_flight: set[int] = set()  # update ids received, not yet handled
        self._handling = asyncio.Semaphore(HANDLED_AT_ONCE)
        self._lanes: dict[tuple[int, int], deque[Update]] = {}  # (chat, user) -> its updates
        self._lane_tasks: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()  # an update was handled (for _handle)
        # Updates meant for the bot (kept as received), until handled: then marked so.
        self._kept: dict[int, Incoming] = {}
        self._add_handlers()

    def _add_handlers(self) -> None:
        app = self.app
        # The one gate, before every handler of every update (group -1): whatever is added
        # below, or later, is gated and handled once.
        app.add_handler(TypeHandler(Update, self._enter), group=-1)
        # Only new messages: an edited one runs no command, nor (a caption changed) another
        # edit that would be charged again. So edited messages are not even asked for.
        new = filters.UpdateType.MESSAGE
        payments = TelegramPayments(self.service, self._unhandled.add)  # /buy, paid, refunded
        for handler in payments.handlers():
            app.add_handler(handler)
        commands: list[tuple[str | tuple[str, ...], Any]] = [
            ("start", self.on_start),
            ("help", self.on_help),
            ("quota", self.on_quota),
            ("seed", self.on_seed),
            ("settings", self.on_settings),
            ("cancel", self.on_cancel),
            (ADMIN_COMMANDS, self.on_admin),
            ("forget", self.on_forget),
            (tuple(TEXT_COMMANDS), self.on_text_command),
            (("caption", "bubble"), self.on_draw),
            ("imagine", self.on_imagine),
            ("edit", self.on_text),
        ]
        for names, callback in commands:
            app.add_handler(CommandHandler(names, callback, filters=new))
        # (videos and audio only for the albums they may be part of)
        images = filters.PHOTO | filters.Document.ALL | filters.Sticker.STATIC
        images |= filters.VIDEO | filters.AUDIO
        app.add_handler(MessageHandler(new & images, self.on_image))
        app.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_error_handler(self.on_error)

    @classmethod
    def wanted_updates(cls, token: str) -> list[str]:
        """The update types a bot of this class asks Telegram for, read from its handlers as
        registered on an Application that never runs. For `stepedit webhook set`, which runs
        beside the bot and opens no database, so has no service (no handler is ever called)."""
        unserved = cls.__new__(cls)
        unserved.app = _application(token, "https://api.telegram.org", rate_limit=False)
        unserved.service = cast(EditService, None)
        unserved._unhandled = set()
        unserved._add_handlers()
        return update_types(unserved.app.handlers)

    async def _register_commands(self) -> None:
        """The command menu, in English and Chinese. (PTB's post_init hook would only run under
        run_polling, which start() does not use.) A failure here must not stop the bot."""
        for code, lang in ((None, texts.EN), ("zh", texts.ZH)):
            selling = PAYMENT_COMMANDS if self.service.shop.offer() else ()
            names = (*COMMANDS, *TEXT_COMMANDS, *selling)
            commands = [BotCommand(name, t(f"command_{name}", lang)) for name in names]
            try:
                await self.app.bot.set_my_commands(commands, language_code=code)
            except TelegramError as exc:
                log.warning("could not set the command menu (%s): %s", code or "default", exc)

    async def _connect(self) -> None:
        try:
            await self.app.initialize()
        except InvalidToken:
            raise StartupError(
                f"the Bot API at {self.api_url} rejected TELEGRAM_BOT_TOKEN: "
                "check it with @BotFather"
            ) from None
        except NetworkError as exc:
            raise StartupError(
                f"cannot reach the Bot API at {self.api_url} ({exc}): check TELEGRAM_API_URL "
                "and the network"
            ) from None

    # lifecycle: start() returns once polling runs; stop_receiving() then stop() shut down
    async def start(self, *, poll_timeout: int = 30, poll_interval: float = 0.0) -> None:
        await self._connect()
        await self._register_commands()
        await self.app.start()
        types = update_types(self.app.handlers)
        if self.webhook is not None:  # never deleted on shutdown: other replicas serve it
            await self.webhook.ensure(types)
            self._receiving = True
            await self._resume()  # left by a process that polled
            log.info("Telegram bot @%s takes updates at %s", self.app.bot.username,
                     self.webhook.path)  # fmt: skip
            return
        await self._end_webhook()  # polling needs it off
        self._polling = asyncio.create_task(self._poll(poll_timeout, poll_interval, types))
        log.info("Telegram bot @%s is running", self.app.bot.username)

    async def _end_webhook(self) -> None:
        """Delete a webhook left set, and say so: replicas in webhook mode get nothing now."""
        info = await self.app.bot.get_webhook_info()
        if info.url:
            log.warning(
                "Telegram had a webhook set (%s); polling deletes it, so no process in webhook "
                "mode gets updates now: set TELEGRAM_WEBHOOK_URL on every process, or on none",
                info.url.partition("?")[0],
            )
        await self.app.bot.delete_webhook()

    async def start_sending_only(self) -> None:
        """The Bot API for sending only (`stepedit run --workers-only`): no polling; the webhook
        and the command menu stay as the receiving processes set them."""
        await self._connect()
        log.info("Telegram bot @%s only sends: nothing is received here", self.app.bot.username)

    async def stop_receiving(self) -> None:
        """Take no new updates, let the ones received finish (a while), and confirm those that
        did; the bot can still send (running jobs finish and answer)."""
        polling, self._polling = self._polling, None
        receiving, self._receiving = self._receiving, False
        if polling is not None:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        if polling is not None or receiving:
            if self._lane_tasks:
                await asyncio.wait(self._lane_tasks, timeout=LANES_GRACE_SECONDS)
            for task in list(self._lane_tasks):  # kept as received (polling) or unanswered
                task.cancel()  # (webhook): handled after a restart, or by another replica
        if polling is not None:
            await self._confirm()
        if self.app.running:
            await self.app.stop()

    async def stop(self) -> None:
        await self.stop_receiving()
        await self.app.shutdown()

    async def _poll(self, timeout: int, interval: float, types: list[str]) -> None:
        """Long-poll getUpdates; keep each batch in the database (received, not yet handled)
        before the next poll tells Telegram to forget it, and hand each update to its lane
        (_dispatch). So Telegram's window of 100 updates never fills with ones still being
        worked on, and after a crash the bot handles what was left (`_resume`); the gate
        recognises what was handled already."""
        await self._resume()
        while True:
            try:
                updates = await self.app.bot.get_updates(
                    offset=self._next, timeout=timeout, allowed_updates=types
                )
            except TelegramError as exc:
                self._polls_failing = True
                log.warning("getUpdates failed (%s); trying again", exc)
                await asyncio.sleep(POLL_RETRY_SECONDS)
                continue
            self._polls_failing = False
            self._confirmed = self._next
            fresh = [update for update in updates if update.update_id >= self._next]
            if fresh:
                # Handled at once; kept (before the next poll confirms them) meanwhile. After a
                # failed keep the same come again: those still in flight are not taken twice.
                # Chatter not meant for the bot is neither kept nor marked: no write for it.
                meant = {u.update_id: e for u in fresh if (e := incoming(u, self.app.bot))
                         and e.addressed}  # fmt: skip
                news = [e for u, e in meant.items() if u not in self._in_flight]
                if len(news) > 1:  # a burst: the gate's reads in one
                    await self.service.expect(news)
                for update in fresh:
                    if update.update_id not in self._in_flight:
                        if update.update_id in meant:
                            self._kept[update.update_id] = meant[update.update_id]
                        self._dispatch(update)
                try:
                    if meant:
                        await self.service.receive(PLATFORM, [
                            (str(u.update_id), json.dumps(u.to_dict()))
                            for u in fresh if u.update_id in meant
                        ])  # fmt: skip
                except Exception:  # the database: poll again with the same offset
                    log.exception("could not keep the updates received; trying again")
                    await asyncio.sleep(POLL_RETRY_SECONDS)
                    continue
                self._next = fresh[-1].update_id + 1
            elif not updates and interval:
                await asyncio.sleep(interval)

    async def _resume(self) -> None:
        """Updates a process before this one received and did not handle: first, in order."""
        try:
            kept = await self.service.received(PLATFORM)
        except Exception:
            log.exception("could not read the updates left unhandled")
            return
        for update_id, payload in sorted(kept, key=lambda kept: int(kept[0])):
            update = Update.de_json(json.loads(payload), self.app.bot)
            event = incoming(update, self.app.bot)
            if event is not None:
                self._kept[update.update_id] = event
            self._dispatch(update)
            self._next = max(self._next, int(update_id) + 1)

    name = PLATFORM

    @property
    def connected(self) -> bool:
        """Whether the bot polls and the Bot API answers, or takes webhook updates (/readyz)."""
        polling = self._polling is not None and not self._polling.done()
        return (polling and not self._polls_failing) or self._receiving

    @property
    def routes(self) -> dict[str, Handler]:
        """The HTTP routes this bot serves: its webhook's, in webhook mode."""
        return {} if self.webhook is None else {self.webhook.path: self.webhook.route(self.deliver)}

    async def deliver(self, update: Update) -> bool:
        """An update Telegram posted: handled in its lane (after the chat's earlier ones), and
        waited for. True once handled and written down as handled, so that any replica
        recognises it if it comes again; False when it was not (not taking updates, the gate
        could not read the database, the mark not written in time): Telegram sends it again.
        The update is not kept as received (as polling does): until answered, Telegram keeps
        it, and sends it again if this process dies."""
        if not self._receiving:
            return False
        uid = update.update_id
        waiter = self._delivered.get(uid)
        event = incoming(update, self.app.bot)
        if waiter is None:  # (else: sent again while this process handles it; wait for that)
            waiter = self._delivered[uid] = asyncio.get_running_loop().create_future()
            if event is not None and event.addressed:
                self._kept[uid] = event
            self._dispatch(update)
        try:
            handled = await asyncio.shield(waiter)
        finally:
            if waiter.done() and self._delivered.get(uid) is waiter:
                del self._delivered[uid]
        if handled and event is not None and event.addressed:
            return await self.service.recorded(event)
        return handled

    def _settle(self, update_id: int, handled: bool) -> None:
        waiter = self._delivered.get(update_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(handled)

    @property
    def handling(self) -> int:
        """Updates received and not yet handled."""
        return len(self._in_flight)

    def _dispatch(self, update: Update) -> None:
        """Queue `update` in its lane: one per user in a chat, handled one after another in
        the order sent (a text right after a photo edits that photo); lanes side by side, so
        nobody waits behind someone else's flood."""
        self._in_flight.add(update.update_id)
        chat, user = update.effective_chat, update.effective_user
        key = (chat.id if chat else 0, user.id if user else -update.update_id)
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(update)
            return
        self._lanes[key] = deque([update])
        task = asyncio.create_task(self._run_lane(key))
        self._lane_tasks.add(task)
        task.add_done_callback(self._lane_tasks.discard)

    async def _run_lane(self, key: tuple[int, int]) -> None:
        lane = self._lanes[key]
        logs.about(platform=PLATFORM, chat=str(key[0]))  # what this lane's log lines are about
        try:
            # A group's sends have their own small budget (20 a minute), which a flood there
            # waits for: its updates take no slot, so they never hold up everyone else's.
            slot = self._handling if key[0] > 0 else contextlib.nullcontext()
            while lane:
                async with slot:
                    await self._process(lane[0])
                self._in_flight.discard(lane.popleft().update_id)
                self._progress.set()
        finally:
            del self._lanes[key]
            for update in lane:  # cancelled (stopping): not handled here
                self._settle(update.update_id, False)

    async def _process(self, update: Update) -> None:
        handled = False
        try:
            await self.app.process_update(update)  # handler errors go to on_error
            kept = self._kept.pop(update.update_id, None)
            handled = update.update_id not in self._unhandled
            self._unhandled.discard(update.update_id)
            if kept is not None and handled:  # (or refused): a redelivery of it is ignored
                await self.service.handled(kept)
        except Exception:  # on_error itself failed: never let it stop the lane
            log.exception("update %s could not be handled", update.update_id)
        finally:
            self._settle(update.update_id, handled)

    async def _handle(self, updates: tuple[Update, ...]) -> None:
        """Handle `updates` as if polled, and wait until they are."""
        for update in updates:
            self._dispatch(update)
        while any(update.update_id in self._in_flight for update in updates):
            self._progress.clear()
            await self._progress.wait()

    async def _confirm(self) -> None:
        """Tell Telegram the updates received are kept (as the next getUpdates would)."""
        offset = self._next
        if offset > self._confirmed:
            with contextlib.suppress(TelegramError):
                await self.app.bot.get_updates(offset=offset, timeout=0)
            self._confirmed = offset

    async def _enter(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The gate (bot.service.EditService.enter), before any handler: what it refuses stops
        here, answered (in private, or to whom it concerns) or ignored."""
        event = incoming(update, context.bot)
        if event is None:
            raise ApplicationHandlerStop
        try:
            await self.service.enter(event)
        except Exception as exc:  # refused or failed: nothing gets past
            if self.webhook is not None and not isinstance(exc, StepEditError):
                # Unanswered, Telegram sends it again (the database may answer by then). Past
                # the gate a failure is answered as when polling: one update's bug must not
                # hold up its chat until Telegram gives up on it.
                log.warning("update %s: the gate failed (%s); left to Telegram to send again",
                            update.update_id, exc)  # fmt: skip
                self._unhandled.add(update.update_id)
            else:
                await self._refuse(update, exc)  # (it never raises)
            raise ApplicationHandlerStop from None

    async def _refuse(self, update: Update, exc: Exception) -> None:
        """Answer what the gate refused: its reason (the button's popup, or a reply), nothing
        for what is ignored (a pressed button only stops spinning)."""
        text = None
        if isinstance(exc, StepEditError) and not isinstance(exc, Ignored):
            text = texts.error_text(exc, lang_of(update))
        elif not isinstance(exc, Ignored):
            log.error("update %s: the gate failed", update.update_id, exc_info=exc)
            text = t("error_generic", lang_of(update))
        with contextlib.suppress(Exception):  # cosmetic: the update is stopped all the same
            if update.pre_checkout_query is not None:  # Telegram waits for a verdict
                await decline(update.pre_checkout_query, exc)
            elif update.callback_query is not None:
                await update.callback_query.answer(text)
            elif text is not None and update.effective_message is not None:
                await update.effective_message.reply_text(text, do_quote=True)

    # --- messages ----------------------------------------------------------------------------

    async def on_image(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if message is None or user is None:
            return
        if message.media_group_id is None and (message.video or message.audio):
            return  # a video or audio of its own: not ours to answer
        said = Addressing(message.caption or "", context.bot.username)
        for_us = self._for_us(message, said, await self._known_reply(message), context)
        if message.media_group_id is not None:  # one part of an album: collected first
            file, refused = album_file(message)
            part = AlbumPart(
                message.media_group_id, user, chat_ref(message), file, message_ref(message),
                said.prompt or None, for_us, lang_of(update), refused,
            )  # fmt: skip
            await self.service.album_part(part)
            return
        if not for_us:
            return  # a group photo not meant for us: no download, no API call
        upload = checked_file(message)
        chat, origin = chat_ref(message), message_ref(message)
        if not said.prompt:  # keep the photo and ask; a reply to the question edits it
            to = Address(PLATFORM, chat.id, origin.message_id, lang_of(update))
            await self.service.ask_for_prompt(user, chat, upload, origin, to)
            return
        request = EditRequest(user, chat, said.prompt, upload=upload, origin=origin)
        await self._submit(update, message, request)

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if message is None or user is None or message.text is None:
            return
        said = Addressing(message.text, context.bot.username)
        if message.text.startswith("/") and not said.command:
            return  # another bot's command, or one of ours we do not know
        known_reply = await self._known_reply(message)
        if not self._for_us(message, said, known_reply, context):
            return
        chat = chat_ref(message)
        request = EditRequest(user, chat, said.prompt, source_message=known_reply)
        replied = message.reply_to_message
        if known_reply is None and replied is not None and image_file(replied):
            upload = checked_file(replied)
            request = EditRequest(
                user, chat, said.prompt, upload=upload, origin=message_ref(replied)
            )
        await self._submit(update, message, request)

    async def _known_reply(self, message: Message) -> MessageRef | None:
        """The message `message` replies to, if it stands for an image the bot knows (a result,
        a kept photo, or the bot's question about one)."""
        replied = message.reply_to_message
        if replied is None:
            return None
        ref = message_ref(replied)
        return ref if await self.service.knows(ref) else None

    @staticmethod
    def _for_us(
        message: Message,
        said: Addressing,
        known_reply: MessageRef | None,
        context: ContextTypes.DEFAULT_TYPE,
    ) -> bool:
        replied = message.reply_to_message
        author = replied.from_user if replied is not None else None
        return presenter.addressed(
            private=message.chat.type == ChatType.PRIVATE,
            command=said.command,
            mentioned=said.mentioned,
            replies_to_our_image=known_reply is not None
            and author is not None
            and author.id == context.bot.id,
        )

    async def _submit(
        self, update: Update, answer_to: Message, request: EditRequest, *, key: str | None = None
    ) -> None:
        """Hand the request to the core, which queues it and answers by itself (a note, then
        the photo or a clear message). A refusal raises to on_error, which answers it."""
        request = replace(
            request,
            key=key or event_key(answer_to),
            answer_to=str(answer_to.message_id),
            language=lang_of(update, request.prompt),
        )
        await self.service.submit(request)

    # --- buttons ----------------------------------------------------------------------------

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        message = query.message if isinstance(query.message, Message) else None
        press = presenter.parse_press(query.data)
        lang = lang_of(update)
        if message is None or press is None:
            await self._answer(query)
            return
        user, chat = user_ref(query.from_user), chat_ref(message)
        if press.action == Action.SET:
            await self._apply_setting_button(query, message, user, press.setting, lang)
            return
        if press.action == Action.FORGET:  # the presser's own data, whoever asked
            await self._answer(query)
            answer = await self.service.forget(user, confirmed=press.setting[1] == "yes")
            with contextlib.suppress(BadRequest):
                await message.edit_text(answer)
            return
        to = Address(PLATFORM, chat.id, str(message.message_id), lang)
        toast = None  # the core's word for the presser only (e.g. "not your button")
        try:
            toast = await self._press(user, chat, press, to, query)
        finally:  # the button stops spinning whatever happened (a failure is told below it)
            await self._answer(query, toast)

    async def _press(
        self, user: UserRef, chat: ChatRef, press: presenter.Press, to: Address,
        query: CallbackQuery,
    ) -> str | None:  # fmt: skip
        return await self.service.press(user, chat, press, to, key=f"{PLATFORM}:cb:{query.id}")

    async def _apply_setting_button(
        self,
        query: CallbackQuery,
        message: Message,
        user: UserRef,
        setting: tuple[str, str],
        lang: str,
    ) -> None:
        asker = message.reply_to_message.from_user if message.reply_to_message else None
        if asker is not None and asker.id != query.from_user.id:
            await self._answer(query, t("not_your_settings", lang))  # someone else's /settings
            return
        await self._answer(query)
        name, value = setting
        if name == "reset":
            settings = await self.service.reset_settings(user)
        else:
            settings = await self.service.change_setting(user, name, value)
        with contextlib.suppress(BadRequest):  # "message is not modified"
            await message.edit_text(
                presenter.settings_text(settings, lang, *self.service.offers),
                reply_markup=keyboard(presenter.settings_buttons()),
            )

    @staticmethod
    async def _answer(query: CallbackQuery, text: str | None = None) -> None:
        """Stop the button's spinner. A press answered late (e.g. queued while the bot was
        down) is "too old" for Telegram, but the action itself must still happen."""
        with contextlib.suppress(BadRequest):
            await query.answer(text)

    # --- commands ---------------------------------------------------------------------------

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        name = user.first_name if user else ""
        await self._reply(update, t("start", lang_of(update), name=name))

    async def on_text_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command of bot/commands.py's table: its text answer."""
        user, message = sender_ref(update), update.effective_message
        if user is None or message is None or not message.text:
            return
        name = message.text.split()[0].removeprefix("/").partition("@")[0].lower()
        asked = Asked(user, chat_ref(message), tuple(context.args or ()), lang_of(update))
        await self._reply(update, await self.service.answer(name, asked))

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, presenter.help_text(PLATFORM, lang_of(update)))

    async def on_imagine(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/imagine <prompt>: a new image from the words alone."""
        message = update.effective_message
        user = sender_ref(update)
        if message is None or user is None or not message.text:
            return
        prompt = message.text.partition(" ")[2].strip()  # after "/imagine" or "/imagine@bot"
        request = EditRequest(user, chat_ref(message), prompt, imagine=True)
        await self._submit(update, message, request)

    async def on_draw(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/caption and /bubble: on the picture replied to, or the user's current one."""
        message = update.effective_message
        user = sender_ref(update)
        if message is None or user is None or not message.text:
            return
        kind = message.text.split()[0].lstrip("/").split("@")[0].lower()
        words = message.text.partition(" ")[2]
        chat = chat_ref(message)
        source = await self._known_reply(message)
        replied = message.reply_to_message
        if source is None and replied is not None and image_file(replied):  # someone's photo
            source = message_ref(replied)
            await self.service.register_photo(user, chat, checked_file(replied), source)
        to = Address(PLATFORM, chat.id, str(message.message_id), lang_of(update, words))
        await self.service.draw(user, chat, kind, words, to, source_message=source)

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        lang = lang_of(update)
        buttons = keyboard(presenter.forget_buttons(lang))
        await self._reply(update, t("forget_confirm", lang), reply_markup=buttons)

    async def on_admin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if user is None or message is None or not message.text:
            return
        command = message.text.split()[0].lstrip("/").split("@")[0].lower()
        event = self._kept.get(update.update_id)
        answer = await self.service.admin(
            user, chat_ref(message), command, context.args or [], event=event
        )
        await self._reply(update, answer)

    async def on_quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        message = update.effective_message
        if user is None or message is None:
            return
        if context.args:  # an admin asking about someone
            answer = await self.service.admin(user, chat_ref(message), "quota", context.args)
            await self._reply(update, answer)
            return
        quota = await self.service.quota(user)
        await self._reply(update, presenter.quota_text(quota, lang_of(update)))

    async def on_seed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        if user is None:
            return
        if context.args:
            settings = await self.service.change_setting(user, "seed", context.args[0])
        else:
            settings = await self.service.settings(user)
        text = presenter.seed_text(settings, lang_of(update), with_usage=not context.args)
        await self._reply(update, text)

    async def on_settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        if user is None:
            return
        args = context.args or []
        if args and args[0].lower() == "reset":
            settings = await self.service.reset_settings(user)
        elif args:
            settings = await self.service.change_setting(user, args[0], " ".join(args[1:]))
        else:
            settings = await self.service.settings(user)
        text = presenter.settings_text(settings, lang_of(update), *self.service.offers)
        await self._reply(update, text, reply_markup=keyboard(presenter.settings_buttons()))

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if user is None or message is None:
            return
        if not await self.service.cancel(user, chat_ref(message)):
            await self._reply(update, t("nothing_to_cancel", lang_of(update)))
        # otherwise each cancelled request is answered by the core, replying to it

    async def _reply(
        self, update: Update, text: str, reply_markup: InlineKeyboardMarkup | None = None
    ) -> None:
        if update.effective_message:
            await update.effective_message.reply_text(text, reply_markup=reply_markup)

    # --- errors -----------------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one place handler errors become replies: a StepEditError (a refused request) is
        the user's answer; anything else is logged with its traceback and the user gets a
        generic apology. Errors of queued jobs are answered by the core."""
        error = context.error
        if not isinstance(update, Update):
            log.error("error outside an update: %s", error, exc_info=error)
            return
        if isinstance(error, Ignored):
            return  # someone the operator keeps out, told already (or in a group)
        if isinstance(error, StepEditError):
            text = texts.error_text(error, lang_of(update))
        else:
            log.error("unhandled error in update %s", update.update_id, exc_info=error)
            text = t("error_generic", lang_of(update))
        message = update.effective_message
        if message is not None:
            with contextlib.suppress(TelegramError):
                await message.reply_text(text, do_quote=True)


def _application(
    token: str, api_url: str, *, rate_limit: bool
) -> Application[Any, Any, Any, Any, Any, Any]:
    root = api_url.rstrip("/")
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .updater(None)  # we poll ourselves (see TelegramBot._poll), or take webhook posts
        # A reply still arrives if the user deleted the message it answers.
        .defaults(Defaults(allow_sending_without_reply=True))
    )
    if rate_limit:
        # PTB's builder types the limiter's generic parameter loosely; this one fits.
        builder = builder.rate_limiter(AIORateLimiter(max_retries=2))  # type: ignore[arg-type]
    return builder.build()


def webhook_routes(platforms: list[Any]) -> dict[str, Handler]:
    """The HTTP routes of the Telegram bot among `platforms` (its webhook's, if it has one)."""
    return {path: route for p in platforms if isinstance(p, TelegramBot)
            for path, route in p.routes.items()}  # fmt: skip


async def webhook_command(settings: Settings, action: str) -> str:
    """`stepedit webhook set|delete|info`: what Telegram was told, or reports."""
    if settings.telegram_bot_token is None:
        raise ConfigError("set TELEGRAM_BOT_TOKEN (the bot whose webhook this is)")
    token = settings.telegram_bot_token.get_secret_value()
    where = settings.telegram_api_url
    app = _application(token, where, rate_limit=False)
    try:
        await app.bot.initialize()
    except InvalidToken:  # (its message would show the token)
        raise StartupError(f"the Bot API at {where} rejected TELEGRAM_BOT_TOKEN") from None
    except NetworkError as exc:
        raise StartupError(f"cannot reach the Bot API at {where} ({exc})") from None
    try:
        if action == "info":
            return describe(await app.bot.get_webhook_info())
        if action == "delete":
            await app.bot.delete_webhook()
            return "webhook deleted; its pending updates wait for `stepedit run` to poll"
        url, secret = settings.telegram_webhook_url, settings.webhook_secret()
        if url is None or secret is None:
            raise ConfigError("set TELEGRAM_WEBHOOK_URL (the public https URL to post to)")
        types = TelegramBot.wanted_updates(token)
        await Webhook(app.bot, url, secret).set(types)
        return f"webhook set to {url} for {', '.join(types)}"
    except TelegramError as exc:
        raise StartupError(f"Telegram refused: {exc}") from None
    finally:
        await app.bot.shutdown()


# --- answering: the core's Messenger port ---------------------------------------------------


class TelegramMessenger:
    """bot.ports.Messenger over the Bot API: everything it needs is in the Address."""

    platform = PLATFORM

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return imaging.TELEGRAM_PHOTO

    def file_limit(self, to: Address) -> int:
        return MAX_FILE_BYTES

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self._group_actions: dict[int, float] = {}  # group chat -> its last chat action

    async def fetch(self, file: FileRef) -> bytes:
        found = await self.bot.get_file(file.file_id)
        if found.file_size and found.file_size > MAX_DOWNLOAD_BYTES:
            raise ImageTooLarge(f"{found.file_size} bytes is more than bots may download")
        kept = _Kept()
        await found.download_to_memory(cast(BinaryIO, kept))
        return kept.data

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        """A photo replying to the request, with buttons; as a file, with the same caption
        and buttons, when Telegram refuses it as a photo (e.g. wider than 20:1)."""
        shown: dict[str, Any] = {
            "caption": presenter.caption(picture, to.language),
            "reply_markup": keyboard(presenter.picture_buttons(picture, to.language)),
            "reply_to_message_id": _message_id(to.reply_to),
            "filename": picture.filename,
        }
        try:
            sent = await self.bot.send_photo(_chat(to), picture.data, **shown)
        except BadRequest as exc:
            if not any(m in exc.message.upper() for m in PHOTO_REFUSALS):
                raise
            log.info("Telegram refused the photo (%s); sending it as a file", exc.message)
            sent = await self.bot.send_document(_chat(to), picture.data, **shown)
        return message_ref(sent)

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        """The pictures as one album (sendMediaGroup) replying to the request, then the
        first one's caption and buttons on a message below it (an album takes no buttons)."""
        reply = _message_id(to.reply_to)
        media = [InputMediaPhoto(each.data, filename=each.filename) for each in pictures]
        try:
            sent = await self.bot.send_media_group(_chat(to), media, reply_to_message_id=reply)
        except BadRequest as exc:  # e.g. one wider than 20:1: the album as files
            if not any(m in exc.message.upper() for m in PHOTO_REFUSALS):
                raise
            log.info("Telegram refused an album photo (%s); sending them as files", exc.message)
            files = [InputMediaDocument(each.data, filename=each.filename) for each in pictures]
            sent = await self.bot.send_media_group(_chat(to), files, reply_to_message_id=reply)
        first = pictures[0]
        try:  # the pictures are delivered: a failure here is no failed edit
            await self.bot.send_message(
                _chat(to),
                presenter.caption(first, to.language),
                reply_markup=keyboard(presenter.picture_buttons(first, to.language)),
                reply_to_message_id=reply,
            )
        except TelegramError as exc:
            log.warning("an album's buttons could not be sent: %s", exc)
        return [message_ref(message) for message in sent]

    async def send_file(self, to: Address, picture: Picture) -> None:
        await self.bot.send_document(
            _chat(to),
            picture.data,
            filename=picture.filename,
            caption=presenter.full_caption(picture, to.language),
            reply_to_message_id=_message_id(to.reply_to),
        )

    async def tell(self, user_id: str, text: str) -> None:
        await self.bot.send_message(int(user_id), text)  # a user's private chat has their id

    async def send_text(self, to: Address, text: str) -> MessageRef:
        sent = await self.bot.send_message(
            _chat(to), text, reply_to_message_id=_message_id(to.reply_to)
        )
        return message_ref(sent)

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        sent = await self.bot.send_message(
            _chat(to),
            text,
            reply_to_message_id=_message_id(to.reply_to),
            reply_markup=keyboard(presenter.cancel_buttons(edit_id, to.language)),
        )
        return str(sent.message_id)

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        try:
            await self.bot.edit_message_text(
                text,
                chat_id=_chat(to),
                message_id=int(note_id),
                reply_markup=keyboard(presenter.cancel_buttons(edit_id, to.language)),
            )
        except BadRequest as exc:  # it says that already (an earlier change that seemed to
            if "not modified" not in exc.message.lower():  # fail went through): as wanted
                raise

    async def delete_note(self, to: Address, note_id: str) -> None:
        try:
            await self.bot.delete_message(_chat(to), int(note_id))
        except RetryAfter as exc:  # past the rate limiter's own retries
            raise RetryLater(_seconds(exc)) from exc
        except Forbidden:  # the user blocked the bot: the note can never go, nor be seen
            return
        except BadRequest as exc:  # "message to delete not found": gone already, as wanted;
            said = exc.message.lower()  # "message can't be deleted": never will be
            if "not found" not in said and "can't be deleted" not in said:
                raise

    async def refund_stars(self, user_id: str, charge_id: str) -> None:
        """bot.ports.StarsRefunds: refundStarPayment."""
        try:
            await self.bot.refund_star_payment(int(user_id), charge_id)
        except BadRequest as exc:  # a definite no (a timeout is no answer: it may have gone)
            if "CHARGE_ALREADY_REFUNDED" not in exc.message.upper():
                raise RefundFailed(exc.message) from exc

    async def show_working(self, to: Address) -> None:
        """In a group at most every GROUP_ACTION_SECONDS: a group has 20 sends a minute."""
        chat = _chat(to)
        if chat < 0:
            now = time.monotonic()
            if now - self._group_actions.get(chat, -1e9) < GROUP_ACTION_SECONDS:
                return
            self._group_actions[chat] = now
            if len(self._group_actions) > 10_000:
                self._group_actions.clear()
        await self.bot.send_chat_action(chat, ChatAction.UPLOAD_PHOTO)


class _Kept:
    """Where a download goes: its bytes as received, without the copy a bytearray or a BytesIO
    makes (a 20 MB file would be held twice)."""

    data = b""

    def write(self, data: bytes) -> int:
        self.data = self.data + data if self.data else data  # PTB writes once; more, joined
        return len(data)


def _chat(to: Address) -> int:
    """Chat ids are numbers on Telegram. (As a string, PTB's rate limiter would take a private
    chat for a channel and hold it to a group's 20 messages a minute.)"""
    return int(to.chat_id)


def _seconds(flood: RetryAfter) -> float:
    """How long Telegram asks to wait. (PTB 22 gives an int with a warning, PTB 23 a timedelta.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = flood.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


def _message_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    """The core's buttons as an inline keyboard (None for no buttons)."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows]
    )
