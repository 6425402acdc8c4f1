"""The core's Messenger port over the Bot API (photos with buttons, albums, notes, texts): it
needs nothing but a stored Address, so a job resumed after a restart answers in its chat."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, BinaryIO, cast

from telegram import Bot, InputMediaDocument, InputMediaPhoto
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from adapters.telegram.translate import MAX_DOWNLOAD_BYTES, PLATFORM, keyboard, message_ref
from bot import imaging, presenter
from bot.domain import Address, FileRef, MessageRef, Picture
from bot.errors import ImageTooLarge
from bot.ports import NoteGone, RefundFailed, RetryLater

log = logging.getLogger("stepedit.telegram")

GROUP_ACTION_SECONDS = 20.0  # "sending photo…" in a group at most this often
# Bot API errors that refuse a picture as a photo but would take it as a file.
PHOTO_REFUSALS = ("PHOTO_INVALID_DIMENSIONS", "PHOTO_SAVE_FILE_INVALID", "IMAGE_PROCESS_FAILED")
MAX_FILE_BYTES = 50_000_000  # what bots may send as a document


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
        except BadRequest as exc:  # "not modified": it says that already (an earlier change
            said = exc.message.lower()  # that seemed to fail went through), as wanted
            if "not found" in said:  # "message to edit not found": deleted meanwhile
                raise NoteGone(note_id) from exc
            if "not modified" not in said:
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
