"""Telegram adapter (python-telegram-bot): updates in, core requests out, results back as
photos, buttons and files. Every rule (quota, seeds, sources, limits) lives in bot/service.py;
this module only decides *whether* a message is addressed to the bot and *how* to show answers.

Buttons carry the stored edit id ("reroll:42"), so they keep working after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from telegram import (
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram import User as TgUser
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    filters,
)

from bot import texts
from bot.config import ConfigError
from bot.domain import ChatRef, EditRequest, ImageUpload, MessageRef, Picture, Progress, UserRef
from bot.errors import ImageTooLarge, StepEditError, UnknownEdit
from bot.service import Deliver, EditService
from bot.texts import t

log = logging.getLogger("stepedit.telegram")

PLATFORM = "telegram"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the cloud Bot API's getFile limit
ALBUMS_REMEMBERED = 1000
CHAT_ACTION_EVERY = 4.0  # seconds; Telegram shows a chat action for about five
# Bot API errors that refuse a picture as a photo but would take it as a file.
PHOTO_REFUSALS = ("PHOTO_INVALID_DIMENSIONS", "PHOTO_SAVE_FILE_INVALID", "IMAGE_PROCESS_FAILED")
COMMANDS = ("edit", "help", "quota", "seed", "settings", "cancel")  # described in bot/texts.py
SETTINGS_BUTTONS = (
    (("text", "auto"), ("text", "on"), ("text", "off")),
    (("steps", "8"), ("steps", "16"), ("steps", "30")),
    (("cfg", "1.0"), ("cfg", "3.0"), ("cfg", "5.0")),
)


# --- translating Telegram objects ---------------------------------------------------------------


def user_ref(user: TgUser) -> UserRef:
    return UserRef(PLATFORM, str(user.id), user.full_name, user.language_code)


def chat_ref(message: Message) -> ChatRef:
    return ChatRef(PLATFORM, str(message.chat_id), message.chat.type == ChatType.PRIVATE)


def message_ref(message: Message) -> MessageRef:
    return MessageRef(PLATFORM, str(message.chat_id), str(message.message_id))


def lang_of(update: Update, sample: str = "") -> str:
    user = update.effective_user
    return texts.language_for(user.language_code if user else None, sample)


def image_file_id(message: Message) -> tuple[str, int | None] | None:
    """The file of the best photo size, or of a document (any file: the core judges it)."""
    if message.photo:
        best = message.photo[-1]
        return best.file_id, best.file_size
    if message.document:
        return message.document.file_id, message.document.file_size
    if message.sticker and not (message.sticker.is_animated or message.sticker.is_video):
        return message.sticker.file_id, message.sticker.file_size
    return None


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
    ) -> None:
        self.service = service
        self.api_url = api_url
        self._albums: OrderedDict[str, None] = OrderedDict()  # presentation state only
        root = api_url.rstrip("/")
        builder = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{root}/bot")
            .base_file_url(f"{root}/file/bot")
            .concurrent_updates(True)  # /cancel must run while an edit is in flight
            # A reply still arrives if the user deleted the message it answers.
            .defaults(Defaults(allow_sending_without_reply=True))
        )
        if rate_limit:
            # PTB's builder types the limiter's generic parameter loosely; this one fits.
            builder = builder.rate_limiter(AIORateLimiter(max_retries=2))  # type: ignore[arg-type]
        self.app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self._add_handlers()

    def _add_handlers(self) -> None:
        app = self.app
        app.add_handler(CommandHandler("start", self.on_start))
        app.add_handler(CommandHandler("help", self.on_help))
        app.add_handler(CommandHandler("quota", self.on_quota))
        app.add_handler(CommandHandler("seed", self.on_seed))
        app.add_handler(CommandHandler("settings", self.on_settings))
        app.add_handler(CommandHandler("cancel", self.on_cancel))
        # Only new messages: editing an old caption must not start (and charge) another edit.
        new = filters.UpdateType.MESSAGE
        app.add_handler(CommandHandler("edit", self.on_text, filters=new))
        images = filters.PHOTO | filters.Document.ALL | filters.Sticker.STATIC
        app.add_handler(MessageHandler(new & images, self.on_image))
        app.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_error_handler(self.on_error)

    async def _register_commands(self) -> None:
        """The command menu, in English and Chinese. (PTB's post_init hook would only run under
        run_polling, which start() does not use.) A failure here must not stop the bot."""
        for code, lang in ((None, texts.EN), ("zh", texts.ZH)):
            commands = [BotCommand(name, t(f"command_{name}", lang)) for name in COMMANDS]
            try:
                await self.app.bot.set_my_commands(commands, language_code=code)
            except TelegramError as exc:
                log.warning("could not set the command menu (%s): %s", code or "default", exc)

    # lifecycle: start() returns once polling runs; stop() shuts everything down
    async def start(self, *, poll_timeout: int = 30, poll_interval: float = 0.0) -> None:
        try:
            await self.app.initialize()
        except InvalidToken:
            raise ConfigError(
                f"the Bot API at {self.api_url} rejected TELEGRAM_BOT_TOKEN: "
                "check it with @BotFather"
            ) from None
        except NetworkError as exc:
            raise ConfigError(
                f"cannot reach the Bot API at {self.api_url} ({exc}): check TELEGRAM_API_URL "
                "and the network"
            ) from None
        await self._register_commands()
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(
            timeout=poll_timeout, poll_interval=poll_interval, allowed_updates=Update.ALL_TYPES
        )
        log.info("Telegram bot @%s is running", self.app.bot.username)

    async def stop(self) -> None:
        if self.app.updater and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- messages ----------------------------------------------------------------------------

    async def on_image(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_user is None:
            return
        said = Addressing(message.caption or "", context.bot.username)
        if not self._for_us(message, said, await self._known_reply(message), context):
            return  # a group photo not meant for us: no download, no API call
        upload = await self._download(message, context)
        user, chat, origin = (
            user_ref(update.effective_user),
            chat_ref(message),
            message_ref(message),
        )
        if not said.prompt:  # keep the photo and ask; a reply to the question edits it
            notes = await self.service.register_photo(user, chat, upload, origin)
            if self._album_answered_before(message):
                return  # one question per album, not one per photo
            lang = lang_of(update)
            text = "\n\n".join([t("ask_prompt", lang), *(t(n, lang) for n in notes)])
            question = await message.reply_text(text, do_quote=True)
            await self.service.link_same_image(message_ref(question), origin)
            return
        self._album_answered_before(message)  # its other photos need no question
        request = EditRequest(user, chat, said.prompt, upload=upload, origin=origin)
        await self.run_edit(update, context, request)

    def _album_answered_before(self, message: Message) -> bool:
        """Note that the bot answers this message's album (media group); True if it already
        had. False for a message outside any album."""
        album = message.media_group_id
        if album is None:
            return False
        if album in self._albums:
            return True
        self._albums[album] = None
        if len(self._albums) > ALBUMS_REMEMBERED:
            self._albums.popitem(last=False)
        return False

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or update.effective_user is None or message.text is None:
            return
        said = Addressing(message.text, context.bot.username)
        if message.text.startswith("/") and not said.command:
            return  # another bot's command, or one of ours we do not know
        known_reply = await self._known_reply(message)
        if not self._for_us(message, said, known_reply, context):
            return
        user, chat = user_ref(update.effective_user), chat_ref(message)
        request = EditRequest(user, chat, said.prompt, reply_to=known_reply)
        replied = message.reply_to_message
        if known_reply is None and replied is not None and image_file_id(replied):
            upload = await self._download(replied, context)
            request = EditRequest(
                user, chat, said.prompt, upload=upload, origin=message_ref(replied)
            )
        await self.run_edit(update, context, request)

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
        """Private chats: everything. Groups: /edit, a mention, or a reply to one of the bot's
        own image messages; replies to people's photos are chatter."""
        if message.chat.type == ChatType.PRIVATE or said.command or said.mentioned:
            return True
        replied = message.reply_to_message
        author = replied.from_user if replied is not None else None
        return known_reply is not None and author is not None and author.id == context.bot.id

    async def _download(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> ImageUpload:
        found = image_file_id(message)
        if found is None:
            raise UnknownEdit("the message has no image")
        file_id, size = found
        if size and size > MAX_DOWNLOAD_BYTES:
            raise ImageTooLarge(f"{size} bytes is more than the Bot API lets bots download")
        file = await context.bot.get_file(file_id)
        data = await file.download_as_bytearray()
        name = message.document.file_name if message.document else None
        return ImageUpload(bytes(data), name)

    # --- running an edit, with progress --------------------------------------------------------

    async def run_edit(
        self,
        update: Update,
        context: ContextTypes.DEFAULT_TYPE,
        request: EditRequest,
        *,
        answer_to: Message | None = None,
    ) -> None:
        """Show progress, run the edit in the core, reply with the photo and its buttons.
        Errors propagate to on_error, which answers the user."""
        message = answer_to or update.effective_message
        assert message is not None
        lang = lang_of(update, request.prompt)
        status: Message | None = None  # sent once the core starts waiting or working
        shown = ""

        async def on_progress(progress: Progress) -> None:
            nonlocal status, shown
            place = progress.queue_position
            text = t("queued", lang, position=place) if place else t("working", lang)
            if text == shown:
                return
            shown = text
            with contextlib.suppress(TelegramError):  # progress is cosmetic: never fail an edit
                if status is None:
                    status = await message.reply_text(text, do_quote=True)
                else:
                    await status.edit_text(text)

        try:
            async with self._showing_action(message):
                await self.service.edit(request, self._photo_reply(message, lang), on_progress)
        finally:
            if status is not None:
                with contextlib.suppress(TelegramError):
                    await status.delete()

    def _photo_reply(self, message: Message, lang: str) -> Deliver:
        """How the core hands over a picture: as a photo replying to `message`, with buttons
        (as a file, with the same caption and buttons, when Telegram refuses it as a photo)."""

        async def deliver(picture: Picture) -> MessageRef:
            shown: dict[str, Any] = {
                "caption": self._caption(picture, lang),
                "reply_markup": self._result_buttons(picture.edit_id, lang),
                "do_quote": True,
                "filename": picture.filename,
            }
            try:
                sent = await message.reply_photo(picture.data, **shown)
            except BadRequest as exc:
                # Telegram refuses some pictures as photos (e.g. wider than 20:1): send a file.
                if not any(m in exc.message.upper() for m in PHOTO_REFUSALS):
                    raise
                log.info("Telegram refused the photo (%s); sending it as a file", exc.message)
                sent = await message.reply_document(picture.data, **shown)
            return message_ref(sent)

        return deliver

    @contextlib.asynccontextmanager
    async def _showing_action(self, message: Message) -> AsyncIterator[None]:
        """Keep "sending photo…" on in the chat header until the body is done."""

        async def keep_on() -> None:
            while True:
                with contextlib.suppress(TelegramError):
                    await message.get_bot().send_chat_action(
                        message.chat_id, ChatAction.UPLOAD_PHOTO
                    )
                await asyncio.sleep(CHAT_ACTION_EVERY)

        task = asyncio.create_task(keep_on())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _caption(self, picture: Picture, lang: str) -> str:
        if picture.prompt is None:
            lines = [t("caption_original", lang)]
        elif picture.seed is None:  # a server that does not tell its seed
            lines = [picture.prompt]
        else:
            lines = [t("caption", lang, prompt=picture.prompt, seed=picture.seed)]
        lines += [t(note, lang) for note in picture.notes]
        return "\n\n".join(lines)[:1024]

    def _full_caption(self, picture: Picture, lang: str) -> str:
        if picture.seed is None:
            return t("caption_full_plain", lang)
        return t("caption_full", lang, seed=picture.seed)

    def _result_buttons(self, edit_id: int | None, lang: str) -> InlineKeyboardMarkup | None:
        if edit_id is None:
            return None
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(t("btn_reroll", lang), callback_data=f"reroll:{edit_id}"),
                    InlineKeyboardButton(t("btn_undo", lang), callback_data=f"undo:{edit_id}"),
                    InlineKeyboardButton(t("btn_full", lang), callback_data=f"full:{edit_id}"),
                ]
            ]
        )

    # --- buttons ----------------------------------------------------------------------------

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        message = query.message if isinstance(query.message, Message) else None
        action, _, arg = query.data.partition(":")
        lang = lang_of(update)
        if message is None:
            await self._answer(query)
            return
        asker = message.reply_to_message.from_user if message.reply_to_message else None
        if action == "set" and asker is not None and asker.id != query.from_user.id:
            await self._answer(query, t("not_your_settings", lang))  # someone else's /settings
            return
        await self._answer(query)
        user, chat = user_ref(query.from_user), chat_ref(message)
        if action == "set":
            name, _, value = arg.partition(":")
            if name == "reset":
                settings = await self.service.reset_settings(user)
            else:
                settings = await self.service.change_setting(user, name, value)
            with contextlib.suppress(BadRequest):  # "message is not modified"
                await message.edit_text(
                    texts.describe_settings(settings, lang), reply_markup=self._settings_buttons()
                )
            return
        if not arg.isdigit():
            return
        edit_id = int(arg)
        if action == "reroll":
            request = EditRequest(user, chat, reroll_of=edit_id)
            await self.run_edit(update, context, request, answer_to=message)
        elif action == "undo":
            await self.service.undo(user, chat, edit_id, self._photo_reply(message, lang))
        elif action == "full":
            picture = await self.service.full_quality(edit_id)
            await message.reply_document(
                picture.data,
                filename=picture.filename,
                caption=self._full_caption(picture, lang),
                do_quote=True,
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

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, t("help", lang_of(update)))

    async def on_quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_user is None:
            return
        quota = await self.service.quota(user_ref(update.effective_user))
        lang = lang_of(update)
        if quota.remaining is None:
            text = t("quota_unlimited", lang, used=quota.used)
        else:
            resets = quota.resets_at.strftime("%H:%M")
            text = t("quota", lang, remaining=quota.remaining, limit=quota.limit, resets=resets)
        await self._reply(update, text)

    async def on_seed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_user is None:
            return
        user, lang = user_ref(update.effective_user), lang_of(update)
        if context.args:
            settings = await self.service.change_setting(user, "seed", context.args[0])
        else:
            settings = await self.service.settings(user)
        if settings.seed is None:
            text = t("seed_random", lang)
        else:
            text = t("seed_fixed", lang, seed=settings.seed)
        if not context.args:
            text += "\n\n" + t("seed_usage", lang)
        await self._reply(update, text)

    async def on_settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_user is None:
            return
        user, lang = user_ref(update.effective_user), lang_of(update)
        args = context.args or []
        if args and args[0].lower() == "reset":
            settings = await self.service.reset_settings(user)
        elif args:
            settings = await self.service.change_setting(user, args[0], " ".join(args[1:]))
        else:
            settings = await self.service.settings(user)
        text = texts.describe_settings(settings, lang)
        await self._reply(update, text, reply_markup=self._settings_buttons())

    def _settings_buttons(self) -> InlineKeyboardMarkup:
        rows = [
            [
                InlineKeyboardButton(f"{name} {value}", callback_data=f"set:{name}:{value}")
                for name, value in row
            ]
            for row in SETTINGS_BUTTONS
        ]
        rows.append([InlineKeyboardButton("reset", callback_data="set:reset")])
        return InlineKeyboardMarkup(rows)

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if update.effective_user is None or message is None:
            return
        cancelled = await self.service.cancel(user_ref(update.effective_user), chat_ref(message))
        if not cancelled:
            await self._reply(update, t("nothing_to_cancel", lang_of(update)))
        # otherwise the cancelled edit answers for itself (see on_error)

    async def _reply(
        self, update: Update, text: str, reply_markup: InlineKeyboardMarkup | None = None
    ) -> None:
        if update.effective_message:
            await update.effective_message.reply_text(text, reply_markup=reply_markup)

    # --- errors -----------------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one place errors become replies: a StepEditError is the user's answer; anything
        else is logged with its traceback and the user gets a generic apology."""
        error = context.error
        if not isinstance(update, Update):
            log.error("error outside an update: %s", error, exc_info=error)
            return
        if isinstance(error, StepEditError):
            text = texts.error_text(error, lang_of(update))
        else:
            log.error("unhandled error in update %s", update.update_id, exc_info=error)
            text = t("error_generic", lang_of(update))
        message = update.effective_message
        if message is not None:
            with contextlib.suppress(TelegramError):
                await message.reply_text(text, do_quote=True)
