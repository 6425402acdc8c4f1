"""Discord adapter (discord.py): messages, slash commands, the "Edit image" menu and buttons in;
core requests out; and the Messenger the core answers through. Like adapters/telegram.py it only
translates: every rule lives in the core (bot/service.py, bot/presenter.py).

Where an answer goes is an Address, stored with the job. In a channel it replies to the user's
message. For a slash command or the menu, whose user message does not exist, the answer goes
to the interaction (its "thinking" response becomes the progress note, the picture a follow-up)
while this process holds it and its token is fresh (15 minutes); after a restart, later, or once
Discord says the token is gone, it is a channel message that mentions the user. Interaction
tokens stay in memory, never in the database (nor in the logs). Nothing the bot posts pings
anyone but that user.

A channel's messages are handled in the order they came (discord.py runs each event as its own
task). Buttons are `discord.ui.DynamicItem`s and the "Edit image" form is answered from its
custom_id: their state is the custom_id ("stepedit:reroll:42"), so they keep working after a
restart and nothing is kept in memory per message; the core checks the edit belongs to the
channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import yarl
from discord import app_commands

from adapters.discord_extras import add_extra_commands, answer_forget, run_admin
from bot import imaging, presenter, texts
from bot.domain import (
    MAX_SEED,
    Address,
    ChatRef,
    EditRequest,
    FileRef,
    Incoming,
    MessageRef,
    Picture,
)
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
_USER_MESSAGES = (discord.MessageType.default, discord.MessageType.reply)
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_MODAL_ID = re.compile(rf"{CUSTOM_ID_PREFIX}prompt:(?P<message>\d+):(?P<attachment>\d+)")
# Interaction tokens (15-minute credentials to answer as the bot) in the URLs and gateway
# payloads that discord.py logs at DEBUG.
_LOGGED_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+|('token': ')[^']+")


# --- translating Discord objects ------------------------------------------------------------------


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
    if attachment is None:
        return None
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


def answer_for(error: Exception, lang: str) -> str:
    """A refusal in its own words; any other failure is ours (the caller logs it): an apology."""
    if isinstance(error, StepEditError):
        return texts.error_text(error, lang)
    return t("error_generic", lang)


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


def _submitted(components: list[Any], custom_id: str) -> str:
    """What the user typed in a modal's text input (in an action row or a label)."""
    for component in components:
        inner = [component.get("component") or {}, *component.get("components", [])]
        for item in inner:
            if item.get("custom_id") == custom_id:
                return str(item.get("value") or "")
    return ""


class _HideInteractionTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = _LOGGED_TOKEN.sub(lambda m: (m[1] or m[2]) + "***", message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _hide_interaction_tokens() -> None:
    for name in ("discord.http", "discord.webhook.async_", "discord.gateway"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideInteractionTokens) for f in logger.filters):
            logger.addFilter(_HideInteractionTokens())


class _InOrder:
    """Each channel's messages handled one after another, in the order Discord sent them (an
    image and then "make it snow" must not swap); channels side by side. discord.py runs every
    event as its own task, so without this the second could overtake the first."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}  # channel -> (lock, its users)

    @contextlib.asynccontextmanager
    async def turn(self, channel_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(channel_id, (asyncio.Lock(), 0))
        self._locks[channel_id] = (lock, users + 1)
        try:
            async with lock:  # taken in arrival order: nothing is awaited before this
                yield
        finally:
            lock, users = self._locks[channel_id]
            if users == 1:
                del self._locks[channel_id]
            else:
                self._locks[channel_id] = (lock, users - 1)


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
        # Nobody is pinged by what the bot posts (a prompt may say "@everyone"); the one
        # mention it makes on purpose allows its user explicitly (DiscordMessenger._send).
        self.client = _Client(
            self, intents=intents, allowed_mentions=discord.AllowedMentions.none()
        )
        self.tree: app_commands.CommandTree[_Client] = _GatedTree(self.client)
        self.messenger = DiscordMessenger(self.client)
        self.accepting = True
        self._connection: asyncio.Task[None] | None = None
        self._order = _InOrder()
        _hide_interaction_tokens()
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
        async with self._order.turn(message.channel.id):
            await self._on_message(message)

    async def _on_message(self, message: discord.Message) -> None:
        bot_user = self.client.user
        if bot_user is None or not self._from_a_person(message):
            return
        prompt, mentioned = prompt_of(message, bot_user.id)
        if message.guild is not None and not mentioned and not self.client.intents.message_content:
            return  # Discord withheld what it says: whatever it is, the bot cannot act on it
        replied = await self._replied(message)
        known = None if replied is None else await self._known(replied)
        ours = replied is not None and replied.author.id == bot_user.id
        private = message.guild is None
        if not presenter.addressed(private=private, command=False, mentioned=mentioned,
                                   replies_to_our_image=known is not None and ours):  # fmt: skip
            return
        lang = language(None, prompt)
        to = Address(PLATFORM, str(message.channel.id), str(message.id), lang)
        event = Incoming(f"m{message.id}", chat_ref(message.channel.id, message.guild),
                         user_ref(message.author))  # fmt: skip
        try:
            await self.service.enter(event, claim=True)  # the gate, before anything is kept
            await self._edit_from_message(message, prompt, replied, known, to)
        except Ignored:
            pass  # someone the operator keeps out, told already (or in a group)
        except Exception as exc:  # a refusal, or a failure: either way the user hears of it
            if not isinstance(exc, StepEditError):
                log.exception("message %s could not be handled", message.id)
            await self.messenger.send_text(to, answer_for(exc, lang))

    def _from_a_person(self, message: discord.Message) -> bool:
        """Written by a person: ourselves and other bots are never users, and "pinned a
        message" or "joined the server" are events, not requests."""
        return self.accepting and not message.author.bot and message.type in _USER_MESSAGES

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

    async def admit(self, interaction: discord.Interaction) -> bool:
        """The gate (bot.service.EditService.enter) for an interaction, before it is deferred
        or anything of it kept: refused, only its user hears why. Every slash command passes
        it (_GatedTree), every button and form too."""
        event = Incoming(str(interaction.id), chat_ref(interaction.channel_id, interaction.guild),
                         user_ref(interaction.user))  # fmt: skip
        lang = language(interaction.locale)
        try:
            await self.service.enter(event, claim=True)  # Discord never sends one twice
            return True
        except Ignored:  # banned and told, or redelivered: a slash command must be answered
            text = t("error_not_allowed", lang)
        except Exception as exc:
            if not isinstance(exc, StepEditError):
                log.exception("interaction %s: the gate failed", interaction.id)
            text = answer_for(exc, lang)
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.send_message(text, ephemeral=True)
        return False

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
            admission = await self.service.submit(request)
        except Exception as exc:  # refused: only the user sees why
            if not isinstance(exc, StepEditError):
                log.exception("interaction %s could not be handled", interaction.id)
            self.messenger.release(to)
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            if not isinstance(exc, Ignored):  # else silence, as for a message
                await interaction.followup.send(answer_for(exc, lang), ephemeral=True)
            return
        if admission.ignored:
            note = texts.t("note_options_ignored", lang, names=", ".join(admission.ignored))
            with contextlib.suppress(discord.HTTPException):
                await interaction.followup.send(note, ephemeral=True)

    async def on_modal(self, interaction: discord.Interaction) -> None:
        """The "Edit image" form, submitted. Its custom_id names the message and attachment, so
        it needs no memory of the form: any number of users may fill one in for the same
        image, and one submitted after a restart still edits."""
        data: dict[str, Any] = dict(interaction.data or {})
        match = _MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None or not self.accepting or not await self.admit(interaction):
            return
        prompt = _submitted(list(data.get("components") or []), "prompt")
        channel_id = str(interaction.channel_id)
        file_id = f"{channel_id}:{match['message']}:{match['attachment']}"
        origin = MessageRef(PLATFORM, channel_id, match["message"])
        await self.edit_from_interaction(interaction, prompt, FileRef(PLATFORM, file_id), origin)

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
        if press.action == Action.FORGET:  # the presser's own data, whoever asked
            await answer_forget(self, interaction, confirmed=press.setting[1] == "yes")
            return
        await interaction.response.defer()  # an acknowledgement the user does not see
        to = Address(PLATFORM, chat.id, str(message.id), lang)
        try:
            toast = await self.service.press(
                user, chat, press, to, key=f"{PLATFORM}:i:{interaction.id}"
            )
        except Ignored:
            toast = None
        except Exception as exc:  # only the presser hears of it
            if not isinstance(exc, StepEditError):
                log.exception("button %s could not be handled", data)
            toast = answer_for(exc, lang)
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
        except Exception as exc:  # only the presser hears of it
            if not isinstance(exc, StepEditError):
                log.exception("setting %s could not be applied", name)
            await interaction.response.send_message(answer_for(exc, lang), ephemeral=True)
            return
        await interaction.response.edit_message(
            content=presenter.settings_text(settings, lang, *self.service.offers),
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

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return  # commands and buttons have their own handlers
        try:
            await self.stepedit.on_modal(interaction)
        except Exception:
            log.exception("form %s could not be handled", interaction.id)


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
        if not isinstance(client, _Client) or not client.stepedit.accepting:
            return
        if await client.stepedit.admit(interaction):
            await client.stepedit.press(interaction, self.data)


class _GatedTree(app_commands.CommandTree["_Client"]):
    """Every slash command and menu passes the gate first, however it was registered."""

    async def interaction_check(self, interaction: discord.Interaction[_Client], /) -> bool:
        return await self.client.stepedit.admit(interaction)


class PromptModal(discord.ui.Modal):
    """Asked by the "Edit image" menu: a modal must be the first answer, so no deferral first.
    Submissions are handled by DiscordBot.on_modal from the custom_id; the modal itself is
    stopped so that discord.py keeps no copy of it (one per menu use, forever, for forms
    that are dismissed)."""

    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What should change?",
        style=discord.TextStyle.paragraph,
        max_length=512,
        custom_id="prompt",
    )

    def __init__(self, target: discord.Message, attachment: discord.Attachment) -> None:
        custom_id = f"{CUSTOM_ID_PREFIX}prompt:{target.id}:{attachment.id}"
        super().__init__(title="Edit image", custom_id=custom_id)
        self.stop()


def _add_commands(bot: DiscordBot) -> None:
    """The slash commands and the message menu; their answers are only for whoever asked."""
    tree, service = bot.tree, bot.service
    add_extra_commands(bot)  # the operator's, /forget, the memes

    @tree.error
    async def on_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """A command that failed: its user hears a clear word, the operator gets the trace."""
        cause = getattr(error, "original", error)
        if not isinstance(cause, StepEditError):
            log.error("command failed", exc_info=cause)
        text = answer_for(cause, language(interaction.locale))
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
        try:  # refused before "thinking…": only its user sees it
            upload = checked(attachment_file(image))
            service.check_claims(upload)
        except StepEditError as exc:
            await _private(interaction, texts.error_text(exc, language(interaction.locale)))
            return
        await bot.edit_from_interaction(interaction, prompt, upload, None, tuple(overrides))

    async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
        lang = language(interaction.locale)
        attachment = image_attachment(message)
        try:
            service.check_claims(checked(image_file(message)))
        except StepEditError as exc:
            await _private(interaction, texts.error_text(exc, lang))
            return
        assert attachment is not None  # checked() refused a message without one
        await interaction.response.send_modal(PromptModal(message, attachment))

    tree.add_command(app_commands.ContextMenu(name="Edit image", callback=edit_image))

    @tree.command(name="quota", description="How many edits you have left today")
    @app_commands.describe(user="Admins: someone else's id")
    async def quota(interaction: discord.Interaction, user: str | None = None) -> None:
        lang = language(interaction.locale)
        if user is not None:  # an admin asking about someone: as /stats and the others
            await run_admin(bot, interaction, "quota", [user])
            return
        status = await service.quota(user_ref(interaction.user))
        await _private(interaction, presenter.quota_text(status, lang))

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
            presenter.settings_text(settings, lang, *bot.service.offers),
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
        reply_to = f"i{interaction.id}:{interaction.user.id}"
        self._forget_stale()
        self._held[reply_to] = _Held(interaction, time.monotonic())
        channel_id = interaction.channel_id or 0
        return Address(PLATFORM, str(channel_id), reply_to, lang)

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
        return await self._send(to, caption, upload=(picture.filename, picture.data), view=view)

    async def send_file(self, to: Address, picture: Picture) -> None:
        caption = presenter.full_caption(picture, to.language)
        await self._send(to, caption, upload=(picture.filename, picture.data))

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
            await channel.get_partial_message(int(note_id)).edit(content=text, view=view)

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
        upload: _Upload | None = None,
        view: discord.ui.View | None = None,
        private: bool = False,
    ) -> MessageRef:
        """Answer `to`: through its interaction while that can answer (`private`: only its
        user sees it), else in the channel, replying to the user's message or mentioning them."""
        held = self._fresh(to)
        if held is not None:
            try:
                return await self._answer(held, to, content, upload, view, private=private)
            except discord.HTTPException as exc:
                self._lost(to, exc)
        extra: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if upload is not None:
            extra["file"] = discord.File(io.BytesIO(upload[1]), filename=upload[0])
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
        upload: _Upload | None,
        view: discord.ui.View | None,
        *,
        private: bool,
    ) -> MessageRef:
        interaction = held.interaction
        extra: dict[str, Any] = {} if view is None else {"view": view}
        file = None if upload is None else discord.File(io.BytesIO(upload[1]), upload[0])
        if not held.original_taken:
            held.original_taken = True
            if not private:  # the answer replaces "thinking…"
                if file is not None:
                    extra["attachments"] = [file]
                sent = await interaction.edit_original_response(content=content, **extra)
                return MessageRef(PLATFORM, to.chat_id, str(sent.id))
            with contextlib.suppress(discord.HTTPException):  # "thinking…" is seen by all
                await interaction.delete_original_response()
        if file is not None:
            extra["file"] = file
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
