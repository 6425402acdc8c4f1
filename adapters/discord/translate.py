"""Discord objects in, core values out, and the core's buttons and forms as Discord components.
Pure translation: no rule of the bot's lives here (bot/service.py and bot/presenter.py decide)."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot import texts
from bot.domain import ChatRef, FileRef, MessageRef
from bot.domain import UserRef as CoreUser
from bot.errors import ImageTooLarge, MixedAlbum, UnknownEdit
from bot.presenter import Button
from bot.texts import t

PLATFORM = "discord"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # what we fetch of a user's file (as on Telegram)
CUSTOM_ID_PREFIX = "stepedit:"
MODAL_ID = re.compile(rf"{CUSTOM_ID_PREFIX}prompt:(?P<message>\d+):(?P<attachment>\d+)")
_USER_MENTION = re.compile(r"<@!?(\d+)>")


def user_ref(user: discord.abc.User) -> CoreUser:
    return CoreUser(PLATFORM, str(user.id), user.display_name, None)


def chat_ref(channel_id: int | None, guild: discord.Guild | None) -> ChatRef:
    return ChatRef(PLATFORM, str(channel_id or 0), guild is None)


def message_ref(message: discord.Message | discord.PartialMessage) -> MessageRef:
    return MessageRef(PLATFORM, str(message.channel.id), str(message.id))


def image_attachment(message: discord.Message) -> discord.Attachment | None:
    """The attachment to edit: the first image, else the first file (the core judges it), so a
    text file sent along with a photo does not hide the photo."""
    images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
    return next(iter(images or message.attachments), None)


def image_file(message: discord.Message) -> FileRef | None:
    """The message's image. Known by its message, not its URL: attachment URLs expire, so a job
    run later asks for a fresh one."""
    attachment = image_attachment(message)
    return None if attachment is None else _file(message, attachment)


def image_files(message: discord.Message) -> list[FileRef]:
    """Every picture of a message, in order (several are one request); MixedAlbum when the
    message holds pictures and other files. No picture: its first file (the core judges it)."""
    images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
    if images and len(images) < len(message.attachments):
        raise MixedAlbum(f"{len(images)} of {len(message.attachments)} attachments are images")
    return [_file(message, attachment) for attachment in images or message.attachments[:1]]


def _file(message: discord.Message, attachment: discord.Attachment) -> FileRef:
    file_id = f"{message.channel.id}:{message.id}:{attachment.id}"
    return FileRef(PLATFORM, file_id, attachment.size, attachment.filename,
                   *_claims(attachment))  # fmt: skip


def attachment_file(attachment: discord.Attachment) -> FileRef:
    """A slash command's attachment belongs to no message: known by its URL."""
    return FileRef(PLATFORM, attachment.url, attachment.size, attachment.filename,
                   *_claims(attachment))  # fmt: skip


def _claims(attachment: discord.Attachment) -> tuple[str | None, int | None, int | None]:
    """What Discord says of a file (its type, and its size in pixels if it is an image), for
    the core to judge before anything is fetched or said in public."""
    return attachment.content_type, attachment.width, attachment.height


def checked(file: FileRef | None) -> FileRef:
    if file is None:
        raise UnknownEdit("the message has no image")
    if file.size and file.size > MAX_DOWNLOAD_BYTES:
        raise ImageTooLarge(f"{file.size} bytes", max_bytes=MAX_DOWNLOAD_BYTES)
    return file


def prompt_of(message: discord.Message, bot_id: int) -> tuple[str, bool]:
    """The words meant for the bot and whether it was mentioned. Its own mentions are taken out;
    other people's become their names (the edit API cannot read "<@1234>")."""
    mention = re.compile(rf"<@!?{bot_id}>")
    text = message.content or ""
    mentioned = any(user.id == bot_id for user in message.mentions) or bool(mention.search(text))
    names = {user.id: user.display_name for user in message.mentions}

    def name(match: re.Match[str]) -> str:
        found = names.get(int(match[1]))
        return match[0] if found is None else f"@{found}"

    text = _USER_MENTION.sub(name, mention.sub(" ", text))
    return re.sub(r"[ \t]{2,}", " ", text).strip(), mentioned


def language(locale: object = None, sample: str = "") -> str:
    return texts.language_for(str(locale) if locale else None, sample)


def view_of(rows: list[list[Button]]) -> discord.ui.View:
    """The core's buttons as components. Clicks are answered by StepeditButton from the
    custom_id alone, so the view is stopped before it is sent: discord.py would otherwise keep
    every result's view in memory for good."""
    view = discord.ui.View(timeout=None)
    for number, row in enumerate(rows):
        for button in row:
            view.add_item(
                discord.ui.Button(
                    label=button.label,
                    custom_id=CUSTOM_ID_PREFIX + button.data,
                    row=number,
                    style=discord.ButtonStyle.secondary,
                )
            )
    view.stop()
    return view


def submitted(components: list[Any], custom_id: str) -> str:
    """What the user typed in a modal's text input (in an action row or a label)."""
    for component in components:
        inner = [component.get("component") or {}, *component.get("components", [])]
        for item in inner:
            if item.get("custom_id") == custom_id:
                return str(item.get("value") or "")
    return ""


class PromptModal(discord.ui.Modal):
    """Asked by the "Edit image" menu: a modal must be the first answer, so no deferral first.
    Submissions are handled by DiscordBot.on_modal from the custom_id; the modal itself is
    stopped so that discord.py keeps no copy of it (one per menu use, forever, for forms
    that are dismissed)."""

    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label=t("discord_edit_form_prompt"),
        style=discord.TextStyle.paragraph,
        max_length=512,
        custom_id="prompt",
    )

    def __init__(self, target: discord.Message, attachment: discord.Attachment) -> None:
        custom_id = f"{CUSTOM_ID_PREFIX}prompt:{target.id}:{attachment.id}"
        super().__init__(title=t("discord_edit_menu"), custom_id=custom_id)
        self.stop()
