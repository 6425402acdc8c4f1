"""Edits asked for in messages: a photo (or an album's parts, collected by the core) with its
caption as the prompt, a text replying to a picture or to the bot's question, /edit, /imagine,
and /caption and /bubble (words the bot draws on the picture replied to). Whether a message is
meant for the bot is decided here; refusals are raised, for adapters/telegram/replies.py."""

from __future__ import annotations

from dataclasses import replace

from telegram import Message, Update
from telegram.constants import ChatType
from telegram.ext import ContextTypes

from adapters.telegram.translate import (
    PLATFORM,
    Addressing,
    album_file,
    chat_ref,
    checked_file,
    command_of,
    event_key,
    image_file,
    lang_of,
    message_ref,
    sender_ref,
)
from bot import presenter
from bot.domain import Address, AlbumPart, EditRequest, MessageRef
from bot.service import EditService


class Editing:
    def __init__(self, service: EditService) -> None:
        self.service = service

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
        kind = command_of(message.text)
        words = message.text.partition(" ")[2]
        chat = chat_ref(message)
        source = await self._known_reply(message)
        replied = message.reply_to_message
        if source is None and replied is not None and image_file(replied):  # someone's photo
            source = message_ref(replied)
            await self.service.register_photo(user, chat, checked_file(replied), source)
        to = Address(PLATFORM, chat.id, str(message.message_id), lang_of(update, words))
        await self.service.draw(user, chat, kind, words, to, source_message=source)
