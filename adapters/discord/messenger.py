"""The core's Messenger port over Discord's REST API: where an answer goes is an Address, stored
with the job. In a channel it replies to the user's message. For a slash command or the menu,
whose user message does not exist, the answer goes to the interaction (its "thinking" response
becomes the progress note, the picture a follow-up) while this process holds it and its token is
fresh (15 minutes); after a restart, later, or once Discord says the token is gone, it is a
channel message that mentions the user. Interaction tokens stay in memory, never in the database
(nor in the logs). Nothing the bot posts pings anyone but that user."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord

from adapters.discord.translate import MAX_DOWNLOAD_BYTES, PLATFORM, view_of
from bot import imaging, presenter
from bot.domain import Address, FileRef, MessageRef, Picture
from bot.errors import ImageTooLarge, UnknownEdit
from bot.ports import NoteGone

log = logging.getLogger("stepedit.discord")

FILE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit without boosts
CAPTION_LIMIT = 2000  # message content
INTERACTION_FRESH_SECONDS = 14 * 60  # tokens last 15 minutes: keep a margin
_INTERACTION_ADDRESS = re.compile(r"i(\d+):(\d+)")  # Address.reply_to of an interaction's answer
_Upload = tuple[str, bytes]  # (filename, data): a discord.File is made afresh for each try
# An interaction that can no longer answer: its token expired (401/50027), its webhook or
# message is gone (404: 10015, 10008), it was never acknowledged (10062).
_GONE_CODES = (50027, 10015, 10008, 10062)


@dataclass
class _Held:
    """An interaction this process answers through while its token is fresh. Its original
    response ("thinking…") is taken by whichever comes first, the note or the answer; whatever
    comes after is a follow-up."""

    interaction: discord.Interaction
    since: float
    original_taken: bool = False
    note_id: str | None = None  # the original response's message id while it is the note

    def fresh(self) -> bool:
        return time.monotonic() - self.since < INTERACTION_FRESH_SECONDS


def _reply_to(interaction: discord.Interaction) -> str:
    return f"i{interaction.id}:{interaction.user.id}"


class DiscordMessenger:
    """bot.ports.Messenger over Discord's REST API: everything it needs is in the Address."""

    platform = PLATFORM

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return imaging.PictureLimits(max_bytes=self.file_limit(to))

    def file_limit(self, to: Address) -> int:
        """What the interaction says (`attachment_size_limit`, lower than 10 MiB too) while it
        answers; else 10 MiB, or what the server allows (boosts)."""
        held = self._fresh(to)
        if held is not None:
            return held.interaction.filesize_limit or FILE_LIMIT
        channel = self.client.get_channel(int(to.chat_id))
        guild = getattr(channel, "guild", None)
        return max(FILE_LIMIT, guild.filesize_limit) if guild is not None else FILE_LIMIT

    def __init__(self, client: discord.Client) -> None:
        self.client = client
        self._held: dict[str, _Held] = {}  # Address.reply_to of an interaction -> it

    def hold(self, interaction: discord.Interaction, lang: str) -> Address:
        """The address of an interaction's answer (kept in memory with its token)."""
        reply_to = _reply_to(interaction)
        self._forget_stale()
        self._held[reply_to] = _Held(interaction, time.monotonic())
        channel_id = interaction.channel_id or 0
        return Address(PLATFORM, str(channel_id), reply_to, lang)

    def let_go(self, interaction: discord.Interaction) -> bool:
        """The interaction will not be answered through (its request was refused). True if its
        original response may still be "thinking…" (nothing was shown in its place)."""
        held = self._held.pop(_reply_to(interaction), None)
        return held is None or not held.original_taken

    def _forget_stale(self) -> None:
        """Nothing tells the messenger that a job is over: interactions are forgotten when their
        tokens run out (oldest first, the dict's order), or the dict would grow for good."""
        for reply_to, held in list(self._held.items()):
            if held.fresh():
                break
            del self._held[reply_to]

    def release(self, to: Address) -> None:
        if to.reply_to is not None:
            self._held.pop(to.reply_to, None)

    async def fetch(self, file: FileRef) -> bytes:
        url = file.file_id
        if not url.startswith("http"):  # channel:message:attachment: ask for a fresh URL
            url = await self._attachment_url(url)
        try:
            return await self.client.http.get_from_cdn(url)
        except discord.NotFound:
            raise UnknownEdit("the attachment is gone from Discord's CDN") from None

    async def _attachment_url(self, file_id: str) -> str:
        """A fresh URL of an attachment; UnknownEdit if its message or the file was deleted."""
        channel_id, message_id, attachment_id = file_id.split(":")
        try:
            found = await self.client.http.get_message(int(channel_id), int(message_id))
        except discord.NotFound:
            raise UnknownEdit(f"message {message_id} with the image was deleted") from None
        attachment = next((a for a in found["attachments"] if a["id"] == attachment_id), None)
        if attachment is None:
            raise UnknownEdit(f"the image was taken off message {message_id}")
        if int(attachment.get("size", 0)) > MAX_DOWNLOAD_BYTES:
            raise ImageTooLarge(f"{attachment['size']} bytes", max_bytes=MAX_DOWNLOAD_BYTES)
        return str(attachment["url"])

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        caption = presenter.caption(picture, to.language, limit=CAPTION_LIMIT - 30)
        view = view_of(presenter.picture_buttons(picture, to.language))
        return await self._send(to, caption, uploads=[(picture.filename, picture.data)], view=view)

    async def send_album(self, to: Address, pictures: Sequence[Picture]) -> list[MessageRef]:
        """One message with every picture (numbered files, in order) and the first's caption
        and buttons: a reply to it refines the first picture."""
        first = pictures[0]
        caption = presenter.caption(first, to.language, limit=CAPTION_LIMIT - 30)
        view = view_of(presenter.picture_buttons(first, to.language))
        stem = first.filename.rsplit(".", 1)[0]
        files = [(f"{stem}-{i}.jpg", each.data) for i, each in enumerate(pictures, 1)]
        return [await self._send(to, caption, uploads=files, view=view)]

    async def send_file(self, to: Address, picture: Picture) -> None:
        caption = presenter.full_caption(picture, to.language)
        await self._send(to, caption, uploads=[(picture.filename, picture.data)])

    async def tell(self, user_id: str, text: str) -> None:
        user = await self.client.fetch_user(int(user_id))
        await user.send(text)

    async def send_text(self, to: Address, text: str) -> MessageRef:
        return await self._send(to, text, private=True)

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        view = view_of(presenter.cancel_buttons(edit_id, to.language))
        held = self._fresh(to)
        if held is not None and not held.original_taken:  # "thinking…" becomes the note
            held.original_taken = True
            try:
                sent = await held.interaction.edit_original_response(content=text, view=view)
            except discord.HTTPException as exc:
                self._lost(to, exc)
            else:
                held.note_id = str(sent.id)
                return held.note_id
        channel = self.client.get_partial_messageable(int(to.chat_id))
        with contextlib.suppress(discord.HTTPException):
            await channel.typing()  # Discord's own sign that the bot is at work
        sent_to_channel = await channel.send(text, view=view, **self._reply(to))
        return str(sent_to_channel.id)

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        view = view_of(presenter.cancel_buttons(edit_id, to.language))
        held = self._fresh(to)
        if held is not None and held.note_id == note_id:
            try:
                await held.interaction.edit_original_response(content=text, view=view)
                return
            except discord.HTTPException as exc:
                self._lost(to, exc)
        if note_id.isdigit():  # also an interaction's note, after a restart: it is ours
            channel = self.client.get_partial_messageable(int(to.chat_id))
            try:
                await channel.get_partial_message(int(note_id)).edit(content=text, view=view)
            except discord.NotFound as exc:  # deleted meanwhile
                raise NoteGone(note_id) from exc

    async def show_working(self, to: Address) -> None:
        pass  # an interaction shows "thinking…"; a message has its note

    async def delete_note(self, to: Address, note_id: str) -> None:
        held = self._fresh(to)
        if held is not None and held.note_id == note_id:
            held.note_id = None
            try:
                await held.interaction.delete_original_response()
                return
            except discord.HTTPException as exc:
                self._lost(to, exc)
        if note_id.isdigit():
            channel = self.client.get_partial_messageable(int(to.chat_id))
            with contextlib.suppress(discord.NotFound):  # gone already: done
                await channel.get_partial_message(int(note_id)).delete()

    async def _send(
        self,
        to: Address,
        content: str,
        *,
        uploads: Sequence[_Upload] = (),
        view: discord.ui.View | None = None,
        private: bool = False,
    ) -> MessageRef:
        """Answer `to`: through its interaction while that can answer (`private`: only its
        user sees it), else in the channel, replying to the user's message or mentioning them."""
        held = self._fresh(to)
        if held is not None:
            try:
                return await self._answer(held, to, content, uploads, view, private=private)
            except discord.HTTPException as exc:
                self._lost(to, exc)
        extra: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if uploads:
            extra["files"] = _files(uploads)
        if view is not None:
            extra["view"] = view
        match = _INTERACTION_ADDRESS.fullmatch(to.reply_to or "")
        if match is not None:  # the interaction is gone: mention its user instead
            content = f"<@{match[2]}> {content}"[:CAPTION_LIMIT]
            user = discord.Object(int(match[2]))
            extra["allowed_mentions"] = discord.AllowedMentions(users=[user])
        channel = self.client.get_partial_messageable(int(to.chat_id))
        message = await channel.send(content, **extra, **self._reply(to))
        return MessageRef(PLATFORM, to.chat_id, str(message.id))

    async def _answer(
        self,
        held: _Held,
        to: Address,
        content: str,
        uploads: Sequence[_Upload],
        view: discord.ui.View | None,
        *,
        private: bool,
    ) -> MessageRef:
        interaction = held.interaction
        extra: dict[str, Any] = {} if view is None else {"view": view}
        if not held.original_taken:
            held.original_taken = True
            if not private:  # the answer replaces "thinking…"
                if uploads:
                    extra["attachments"] = _files(uploads)
                sent = await interaction.edit_original_response(content=content, **extra)
                return MessageRef(PLATFORM, to.chat_id, str(sent.id))
            with contextlib.suppress(discord.HTTPException):  # "thinking…" is seen by all
                await interaction.delete_original_response()
        if uploads:
            extra["files"] = _files(uploads)
        sent_later = await interaction.followup.send(content, ephemeral=private, wait=True, **extra)
        return MessageRef(PLATFORM, to.chat_id, str(sent_later.id))

    def _lost(self, to: Address, error: discord.HTTPException) -> None:
        """After `error` from its interaction: if the interaction can no longer answer, forget
        it, so that this and every later answer goes to the channel; else re-raise `error`."""
        if error.status != 401 and error.code not in _GONE_CODES:
            raise error
        log.info("interaction of %s can no longer answer (%s): using its channel", to, error)
        self.release(to)

    def _fresh(self, to: Address) -> _Held | None:
        held = self._held.get(to.reply_to or "")
        if held is not None and not held.fresh():
            self._held.pop(to.reply_to or "", None)
            return None
        return held

    @staticmethod
    def _reply(to: Address) -> dict[str, Any]:
        if to.reply_to is None or not to.reply_to.isdigit():
            return {}
        reference = discord.MessageReference(
            message_id=int(to.reply_to), channel_id=int(to.chat_id), fail_if_not_exists=False
        )
        return {"reference": reference, "mention_author": False}


def _files(uploads: Sequence[_Upload]) -> list[discord.File]:
    return [discord.File(io.BytesIO(data), filename=name) for name, data in uploads]
