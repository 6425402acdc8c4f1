"""Discord adapter (discord.py): messages, slash commands, the "Edit image" menu and buttons in;
core requests out; and the Messenger the core answers through. Like adapters/telegram.py it only
translates: every rule lives in the core (bot/service.py, bot/presenter.py).

Where an answer goes is an Address, stored with the job. In a channel it replies to the user's
message. For a slash command or the menu, whose user message does not exist, the answer goes
to the interaction (its "thinking" response becomes the progress note, the picture a follow-up)
while this process holds it and its token is fresh (15 minutes); after a restart, or later, it is
a channel message that mentions the user. Interaction tokens stay in memory, never in the
database.

Buttons are `discord.ui.DynamicItem`s: their state is the custom_id ("stepedit:reroll:42"), so
they keep working after a restart; the core checks the edit belongs to the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import discord
import yarl
from discord import app_commands

from bot import imaging, presenter, texts
from bot.domain import MAX_SEED, Address, ChatRef, EditRequest, FileRef, MessageRef, Picture
from bot.domain import UserRef as CoreUser
from bot.errors import Ignored, ImageTooLarge, StartupError, StepEditError, UnknownEdit
from bot.presenter import Action, Button
from bot.service import EditService
from bot.texts import t

log = logging.getLogger("stepedit.discord")

PLATFORM = "discord"
DEFAULT_API_URL = "https://discord.com/api/v10"
FILE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit without boosts
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # what we fetch of a user's file (as on Telegram)
CAPTION_LIMIT = 2000  # message content
INTERACTION_FRESH_SECONDS = 14 * 60  # tokens last 15 minutes: keep a margin
READY_TIMEOUT_SECONDS = 30.0
CUSTOM_ID_PREFIX = "stepedit:"
_INTERACTION_ADDRESS = re.compile(r"i(\d+):(\d+)")  # Address.reply_to of an interaction's answer


# --- translating Discord objects ------------------------------------------------------------------


def user_ref(user: discord.abc.User) -> CoreUser:
    return CoreUser(PLATFORM, str(user.id), user.display_name, None)


def chat_ref(channel_id: int | None, guild: discord.Guild | None) -> ChatRef:
    return ChatRef(PLATFORM, str(channel_id or 0), guild is None)


def message_ref(message: discord.Message | discord.PartialMessage) -> MessageRef:
    return MessageRef(PLATFORM, str(message.channel.id), str(message.id))


def image_file(message: discord.Message) -> FileRef | None:
    """The message's first attachment (the core judges whether it is an image). Known by its
    message, not its URL: attachment URLs expire, so a job run later asks for a fresh one."""
    for attachment in message.attachments:
        file_id = f"{message.channel.id}:{message.id}:{attachment.id}"
        return FileRef(PLATFORM, file_id, attachment.size, attachment.filename)
    return None


def attachment_file(attachment: discord.Attachment) -> FileRef:
    """A slash command's attachment belongs to no message: known by its URL."""
    return FileRef(PLATFORM, attachment.url, attachment.size, attachment.filename)


def checked(file: FileRef | None) -> FileRef:
    if file is None:
        raise UnknownEdit("the message has no image")
    if file.size and file.size > MAX_DOWNLOAD_BYTES:
        raise ImageTooLarge(f"{file.size} bytes", max_bytes=MAX_DOWNLOAD_BYTES)
    return file


def prompt_of(message: discord.Message, bot_id: int) -> tuple[str, bool]:
    """The words meant for the bot (its mentions taken out) and whether it was mentioned."""
    mention = re.compile(rf"<@!?{bot_id}>")
    text = message.content or ""
    mentioned = any(user.id == bot_id for user in message.mentions) or bool(mention.search(text))
    return re.sub(r"[ \t]{2,}", " ", mention.sub(" ", text)).strip(), mentioned


def language(locale: object = None, sample: str = "") -> str:
    return texts.language_for(str(locale) if locale else None, sample)


def view_of(rows: list[list[Button]]) -> discord.ui.View:
    """The core's buttons as a persistent view (clicks are handled by StepeditButton)."""
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
    return view


# --- the bot ----------------------------------------------------------------------------------


class DiscordBot:
    """Receives what users do on Discord and hands it to the core."""

    def __init__(
        self,
        service: EditService,
        *,
        token: str,
        api_url: str = DEFAULT_API_URL,
        gateway_url: str | None = None,
        message_content: bool = False,
    ) -> None:
        self.service = service
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url
        intents = discord.Intents.default()
        intents.message_content = message_content  # privileged: only if the operator enabled it
        self.client = _Client(self, intents=intents)
        self.tree = app_commands.CommandTree(self.client)
        self.messenger = DiscordMessenger(self.client)
        self.accepting = True
        self._connection: asyncio.Task[None] | None = None
        _add_commands(self)

    # lifecycle: start() returns once connected; stop_receiving() then stop() shut down
    async def start(self) -> None:
        # Both are read when used, so tests and proxies can stand in (see README).
        discord.http.Route.BASE = self.api_url
        if self.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            await self.client.login(self.token)
        except discord.LoginFailure:
            await self.client.close()
            raise StartupError(f"Discord at {self.api_url} rejected DISCORD_BOT_TOKEN") from None
        except (discord.HTTPException, OSError) as exc:
            await self.client.close()
            raise StartupError(
                f"cannot reach Discord at {self.api_url} ({exc}): check DISCORD_API_URL and "
                "the network"
            ) from None
        self._connection = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self.client.wait_until_ready())
        await asyncio.wait(
            [self._connection, ready],
            timeout=READY_TIMEOUT_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not ready.done():
            ready.cancel()
            await self._fail_start()
        log.info("Discord bot %s is running", self.client.user)

    async def _fail_start(self) -> None:
        error = None
        if self._connection is not None and self._connection.done():
            error = self._connection.exception()
        await self.client.close()
        if isinstance(error, discord.PrivilegedIntentsRequired):
            raise StartupError(
                "Discord refused the message content intent: enable it for the bot in the "
                "Developer Portal, or unset DISCORD_MESSAGE_CONTENT"
            )
        reason = f" ({error})" if error else ""
        raise StartupError(f"could not connect to Discord's gateway{reason}")

    async def stop_receiving(self) -> None:
        """Take no new requests; running jobs still answer through the REST API."""
        self.accepting = False

    async def stop(self) -> None:
        self.accepting = False
        await self.client.close()
        if self._connection is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connection

    # --- messages -----------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        bot_user = self.client.user
        if not self.accepting or message.author.bot or bot_user is None:
            return  # ourselves and other bots are never users
        prompt, mentioned = prompt_of(message, bot_user.id)
        replied = await self._replied(message)
        known = None if replied is None else await self._known(replied)
        ours = replied is not None and replied.author.id == bot_user.id
        private = message.guild is None
        if not presenter.addressed(private=private, command=False, mentioned=mentioned,
                                   replies_to_our_image=known is not None and ours):  # fmt: skip
            return
        lang = language(None, prompt)
        to = Address(PLATFORM, str(message.channel.id), str(message.id), lang)
        try:
            await self._edit_from_message(message, prompt, replied, known, to)
        except Ignored:
            pass  # someone the operator keeps out, told already (or in a group)
        except StepEditError as exc:
            await self.messenger.send_text(to, texts.error_text(exc, lang))

    async def _edit_from_message(
        self,
        message: discord.Message,
        prompt: str,
        replied: discord.Message | None,
        known: MessageRef | None,
        to: Address,
    ) -> None:
        user, chat = user_ref(message.author), chat_ref(message.channel.id, message.guild)
        upload, origin = image_file(message), message_ref(message)
        if upload is None and known is None and replied is not None:
            upload, origin = image_file(replied), message_ref(replied)  # someone's image: a meme
        if upload is not None and not prompt:
            await self.service.ask_for_prompt(user, chat, checked(upload), origin, to)
            return
        request = EditRequest(
            user, chat, prompt,
            upload=checked(upload) if upload else None,
            source_message=None if upload else known,
            origin=origin if upload else None,
            key=f"{PLATFORM}:{message.channel.id}:{message.id}",
            answer_to=to.reply_to, language=to.language,
        )  # fmt: skip
        await self.service.submit(request)

    async def _replied(self, message: discord.Message) -> discord.Message | None:
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        with contextlib.suppress(discord.HTTPException):
            return await message.channel.fetch_message(reference.message_id)
        return None

    async def _known(self, message: discord.Message) -> MessageRef | None:
        ref = message_ref(message)
        return ref if await self.service.knows(ref) else None

    # --- interactions ---------------------------------------------------------------------------

    async def edit_from_interaction(
        self,
        interaction: discord.Interaction,
        prompt: str,
        upload: FileRef,
        origin: MessageRef | None,
        overrides: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """/edit and the "Edit image" menu: "thinking" at once (Discord wants an answer within
        3 s), then the core's note replaces it and the picture follows."""
        lang = language(interaction.locale, prompt)
        await interaction.response.defer(thinking=True)
        to = self.messenger.hold(interaction, lang)
        request = EditRequest(
            user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild), prompt,
            upload=upload, origin=origin, key=f"{PLATFORM}:i:{interaction.id}",
            answer_to=to.reply_to, language=lang, overrides=overrides,
        )  # fmt: skip
        try:
            await self.service.submit(request)
        except Exception as exc:  # refused: only the user sees why
            if not isinstance(exc, StepEditError):
                log.exception("interaction %s could not be handled", interaction.id)
            self.messenger.release(to)
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            text = texts.error_text(exc, lang) if isinstance(exc, StepEditError) else None
            await interaction.followup.send(text or t("error_generic", lang), ephemeral=True)

    async def press(self, interaction: discord.Interaction, data: str) -> None:
        press = presenter.parse_press(data)
        message = interaction.message
        lang = language(interaction.locale)
        if press is None or message is None:
            await interaction.response.defer()
            return
        user, chat = user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild)
        if press.action == Action.SET:
            await self._apply_setting(interaction, user, press.setting, lang)
            return
        await interaction.response.defer()  # an acknowledgement the user does not see
        to = Address(PLATFORM, chat.id, str(message.id), lang)
        try:
            toast = await self.service.press(
                user, chat, press, to, key=f"{PLATFORM}:i:{interaction.id}"
            )
        except Ignored:
            toast = None
        except StepEditError as exc:
            toast = texts.error_text(exc, lang)
        if toast:
            await interaction.followup.send(toast, ephemeral=True)

    async def _apply_setting(
        self, interaction: discord.Interaction, user: CoreUser, setting: tuple[str, str], lang: str
    ) -> None:
        name, value = setting
        try:
            if name == "reset":
                settings = await self.service.reset_settings(user)
            else:
                settings = await self.service.change_setting(user, name, value)
        except StepEditError as exc:
            await interaction.response.send_message(texts.error_text(exc, lang), ephemeral=True)
            return
        await interaction.response.edit_message(
            content=presenter.settings_text(settings, lang),
            view=view_of(presenter.settings_buttons()),
        )


class _Client(discord.Client):
    def __init__(self, bot: DiscordBot, **options: Any) -> None:
        super().__init__(**options)
        self.stepedit = bot

    async def setup_hook(self) -> None:
        self.add_dynamic_items(StepeditButton)
        try:
            await self.stepedit.tree.sync()
        except discord.HTTPException as exc:  # the commands of the last run still work
            log.warning("could not register the slash commands: %s", exc)

    async def on_message(self, message: discord.Message) -> None:
        try:
            await self.stepedit.on_message(message)
        except Exception:
            log.exception("message %s could not be handled", message.id)


class StepeditButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"{CUSTOM_ID_PREFIX}(?P<data>[\w.:]+)",
):
    """Any of the core's buttons, rebuilt from its custom_id, so it works after a restart."""

    def __init__(self, data: str) -> None:
        super().__init__(discord.ui.Button(label="·", custom_id=CUSTOM_ID_PREFIX + data))
        self.data = data

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StepeditButton:
        return cls(match["data"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        if isinstance(client, _Client) and client.stepedit.accepting:
            await client.stepedit.press(interaction, self.data)


class PromptModal(discord.ui.Modal):
    """Asked by the "Edit image" menu: a modal must be the first answer, so no deferral first."""

    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What should change?",
        style=discord.TextStyle.paragraph,
        max_length=512,
        custom_id="prompt",
    )

    def __init__(self, bot: DiscordBot, target: discord.Message, upload: FileRef) -> None:
        super().__init__(title="Edit image", custom_id=f"{CUSTOM_ID_PREFIX}prompt:{target.id}")
        self.bot, self.target, self.upload = bot, target, upload

    async def on_submit(self, interaction: discord.Interaction) -> None:
        origin = message_ref(self.target)
        await self.bot.edit_from_interaction(interaction, self.prompt.value, self.upload, origin)


def _add_commands(bot: DiscordBot) -> None:
    """The slash commands and the message menu; their answers are only for whoever asked."""
    tree, service = bot.tree, bot.service

    @tree.error
    async def on_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """A command that failed: its user hears a clear word, the operator gets the trace."""
        cause = getattr(error, "original", error)
        lang = language(interaction.locale)
        if isinstance(cause, StepEditError):
            text = texts.error_text(cause, lang)
        else:
            log.error("command failed", exc_info=cause)
            text = t("error_generic", lang)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)

    @tree.command(name="edit", description="Edit an image: attach it and say what to change")
    @app_commands.describe(
        image="The image to edit",
        prompt="What to change",
        seed="A fixed seed (the same prompt and seed make the same picture)",
        steps="Steps (more: slower, finer)",
        cfg="How strictly to follow the prompt",
        text_mode="Render quoted words as text",
        negative="What to avoid (needs cfg above 1)",
    )
    async def edit(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, 512],
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 50] | None = None,
        cfg: app_commands.Range[float, 1.0, 10.0] | None = None,
        text_mode: bool | None = None,
        negative: app_commands.Range[str, 1, 512] | None = None,
    ) -> None:
        given = {"seed": seed, "steps": steps, "cfg": cfg, "negative": negative}
        overrides = [(name, str(value)) for name, value in given.items() if value is not None]
        if text_mode is not None:
            overrides.append(("text", "on" if text_mode else "off"))
        try:
            upload = checked(attachment_file(image))
        except StepEditError as exc:
            await _private(interaction, texts.error_text(exc, language(interaction.locale)))
            return
        await bot.edit_from_interaction(interaction, prompt, upload, None, tuple(overrides))

    async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
        lang = language(interaction.locale)
        try:
            upload = checked(image_file(message))
        except StepEditError as exc:
            await _private(interaction, texts.error_text(exc, lang))
            return
        await interaction.response.send_modal(PromptModal(bot, message, upload))

    tree.add_command(app_commands.ContextMenu(name="Edit image", callback=edit_image))

    @tree.command(name="quota", description="How many edits you have left today")
    async def quota(interaction: discord.Interaction) -> None:
        status = await service.quota(user_ref(interaction.user))
        await _private(interaction, presenter.quota_text(status, language(interaction.locale)))

    @tree.command(name="seed", description="Show or fix your seed (a number, or random)")
    async def seed_command(interaction: discord.Interaction, value: str | None = None) -> None:
        lang = language(interaction.locale)
        user = user_ref(interaction.user)
        try:
            if value is None:
                settings = await service.settings(user)
            else:
                settings = await service.change_setting(user, "seed", value)
        except StepEditError as exc:
            await _private(interaction, texts.error_text(exc, lang))
            return
        await _private(interaction, presenter.seed_text(settings, lang, with_usage=value is None))

    @tree.command(name="settings", description="Your edit settings, with buttons to change them")
    async def settings_command(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        settings = await service.settings(user_ref(interaction.user))
        await interaction.response.send_message(
            presenter.settings_text(settings, lang),
            view=view_of(presenter.settings_buttons()),
            ephemeral=True,
        )

    @tree.command(name="help", description="How to use the bot")
    async def help_command(interaction: discord.Interaction) -> None:
        await _private(interaction, presenter.help_text(PLATFORM, language(interaction.locale)))

    @tree.command(name="cancel", description="Cancel your edits in this channel")
    async def cancel(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        chat = chat_ref(interaction.channel_id, interaction.guild)
        if await service.cancel(user_ref(interaction.user), chat):
            await _private(interaction, t("cancelled", lang))
        else:
            await _private(interaction, t("nothing_to_cancel", lang))


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True)


# --- answering: the core's Messenger port -----------------------------------------------------


@dataclass
class _Held:
    """An interaction this process answers through while its token is fresh. Its original
    response ("thinking…") is taken by whichever comes first, the note or the answer; whatever
    comes after is a follow-up."""

    interaction: discord.Interaction
    since: float
    original_taken: bool = False
    note_in_original: bool = False

    def fresh(self) -> bool:
        return time.monotonic() - self.since < INTERACTION_FRESH_SECONDS


class DiscordMessenger:
    """bot.ports.Messenger over Discord's REST API: everything it needs is in the Address."""

    platform = PLATFORM

    def picture_limits(self, to: Address) -> imaging.PictureLimits:
        return imaging.PictureLimits(max_bytes=self.file_limit(to))

    def file_limit(self, to: Address) -> int:
        """10 MiB, or what the interaction says (`attachment_size_limit`) or the server allows
        (boosts)."""
        held = self._fresh(to)
        if held is not None:
            return max(FILE_LIMIT, held.interaction.filesize_limit)
        channel = self.client.get_channel(int(to.chat_id))
        guild = getattr(channel, "guild", None)
        return max(FILE_LIMIT, guild.filesize_limit) if guild is not None else FILE_LIMIT

    def __init__(self, client: discord.Client) -> None:
        self.client = client
        self._held: dict[str, _Held] = {}  # Address.reply_to of an interaction -> it

    def hold(self, interaction: discord.Interaction, lang: str) -> Address:
        """The address of an interaction's answer (kept in memory with its token)."""
        reply_to = f"i{interaction.id}:{interaction.user.id}"
        self._held[reply_to] = _Held(interaction, time.monotonic())
        channel_id = interaction.channel_id or 0
        return Address(PLATFORM, str(channel_id), reply_to, lang)

    def release(self, to: Address) -> None:
        if to.reply_to is not None:
            self._held.pop(to.reply_to, None)

    async def fetch(self, file: FileRef) -> bytes:
        url = file.file_id
        if not url.startswith("http"):  # channel:message:attachment: ask for a fresh URL
            channel_id, message_id, attachment_id = url.split(":")
            found = await self.client.http.get_message(int(channel_id), int(message_id))
            attachment = next(a for a in found["attachments"] if a["id"] == attachment_id)
            if int(attachment.get("size", 0)) > MAX_DOWNLOAD_BYTES:
                raise ImageTooLarge(f"{attachment['size']} bytes", max_bytes=MAX_DOWNLOAD_BYTES)
            url = attachment["url"]
        return await self.client.http.get_from_cdn(url)

    async def send_picture(self, to: Address, picture: Picture) -> MessageRef:
        caption = presenter.caption(picture, to.language, limit=CAPTION_LIMIT - 30)
        view = view_of(presenter.result_buttons(picture.edit_id, to.language))
        file = discord.File(io.BytesIO(picture.data), filename=picture.filename)
        return await self._send(to, caption, file=file, view=view)

    async def send_file(self, to: Address, picture: Picture) -> None:
        file = discord.File(io.BytesIO(picture.data), filename=picture.filename)
        await self._send(to, presenter.full_caption(picture, to.language), file=file)

    async def tell(self, user_id: str, text: str) -> None:
        user = await self.client.fetch_user(int(user_id))
        await user.send(text)

    async def send_text(self, to: Address, text: str) -> MessageRef:
        return await self._send(to, text, private=True)

    async def send_note(self, to: Address, text: str, edit_id: int) -> str:
        view = view_of(presenter.cancel_buttons(edit_id, to.language))
        held = self._fresh(to)
        if held is not None and not held.original_taken:  # "thinking…" becomes the note
            held.original_taken = held.note_in_original = True
            await held.interaction.edit_original_response(content=text, view=view)
            return "original"
        channel = self.client.get_partial_messageable(int(to.chat_id))
        with contextlib.suppress(discord.HTTPException):
            await channel.typing()  # Discord's own sign that the bot is at work
        sent = await channel.send(text, view=view, **self._reply(to))
        return str(sent.id)

    async def edit_note(self, to: Address, note_id: str, text: str, edit_id: int) -> None:
        view = view_of(presenter.cancel_buttons(edit_id, to.language))
        if note_id == "original":
            held = self._fresh(to)
            if held is not None and held.note_in_original:
                await held.interaction.edit_original_response(content=text, view=view)
            return
        channel = self.client.get_partial_messageable(int(to.chat_id))
        await channel.get_partial_message(int(note_id)).edit(content=text, view=view)

    async def delete_note(self, to: Address, note_id: str) -> None:
        if note_id == "original":
            held = self._fresh(to)
            if held is not None and held.note_in_original:
                held.note_in_original = False
                await held.interaction.delete_original_response()
            return
        channel = self.client.get_partial_messageable(int(to.chat_id))
        await channel.get_partial_message(int(note_id)).delete()

    async def _send(
        self,
        to: Address,
        content: str,
        *,
        file: discord.File | None = None,
        view: discord.ui.View | None = None,
        private: bool = False,
    ) -> MessageRef:
        """Answer `to`: through its interaction while that is fresh (`private`: only its user
        sees it), else in the channel, replying to the user's message or mentioning them."""
        extra: dict[str, Any] = {}
        if file is not None:
            extra["file"] = file
        if view is not None:
            extra["view"] = view
        held = self._fresh(to)
        if held is not None:
            return await self._answer(held, to, content, extra, private=private)
        channel = self.client.get_partial_messageable(int(to.chat_id))
        match = _INTERACTION_ADDRESS.fullmatch(to.reply_to or "")
        if match is not None:  # the interaction is gone: mention its user instead
            content = f"<@{match[2]}> {content}"[:CAPTION_LIMIT]
        message = await channel.send(content, **extra, **self._reply(to))
        return MessageRef(PLATFORM, to.chat_id, str(message.id))

    async def _answer(
        self, held: _Held, to: Address, content: str, extra: dict[str, Any], *, private: bool
    ) -> MessageRef:
        interaction = held.interaction
        if not held.original_taken:
            held.original_taken = True
            if not private:  # the answer replaces "thinking…"
                if "file" in extra:
                    extra["attachments"] = [extra.pop("file")]
                sent = await interaction.edit_original_response(content=content, **extra)
                return MessageRef(PLATFORM, to.chat_id, str(sent.id))
            with contextlib.suppress(discord.HTTPException):  # "thinking…" is seen by all
                await interaction.delete_original_response()
        sent_later = await interaction.followup.send(content, ephemeral=private, wait=True, **extra)
        return MessageRef(PLATFORM, to.chat_id, str(sent_later.id))

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
