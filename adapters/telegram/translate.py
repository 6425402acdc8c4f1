"""Telegram objects as the core's: who speaks, where, which message and file; what the gate
sees of an update (and whether it is addressed to the bot); what a message says to the bot; and
the core's buttons as an inline keyboard. No I/O and no rules: bot/service.py decides."""

from __future__ import annotations

import re

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram import User as TgUser
from telegram.constants import ChatType

from bot import texts
from bot.domain import ChatRef, FileRef, Incoming, MessageRef, UserRef
from bot.errors import ImageTooLarge, MixedAlbum, UnknownEdit
from bot.presenter import Button

PLATFORM = "telegram"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # the cloud Bot API's getFile limit


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


def is_payment(update: Update) -> bool:
    """A payment's record (paid, or refunded): kept whoever sent it, even someone banned."""
    message = update.message
    return message is not None and bool(message.successful_payment or message.refunded_payment)


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


def command_of(text: str) -> str:
    """The command a message's text starts with: "/Stats@my_bot 42" -> "stats"."""
    return text.split()[0].lstrip("/").split("@")[0].lower()


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


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup | None:
    """The core's buttons as an inline keyboard (None for no buttons)."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows]
    )
