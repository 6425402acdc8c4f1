"""The Discord bot (discord.py): the client and its lifecycle, the gate every event passes, and
the wiring of events to handlers. A channel's messages are turned into requests here; slash
commands, the message menu, its form and the buttons are in adapters/discord/commands/, and the
one place a failure becomes an answer is adapters/discord/replies.py.

With DISCORD_SHARD_COUNT the client is discord.py's AutoShardedClient holding this process's
shards (DISCORD_SHARD_IDS): Discord sends each guild's events to one shard, DMs to shard 0, and
only the process that holds shard 0 registers the slash commands (one voice for the application;
the others never touch them). Without it, one unsharded connection, as Discord allows below
2,500 servers.

A channel's messages are handled in the order they came (discord.py runs each event as its own
task). Buttons are `discord.ui.DynamicItem`s and the "Edit image" form is answered from its
custom_id: their state is the custom_id ("stepedit:reroll:42"), so they keep working after a
restart and nothing is kept in memory per message; the core checks the edit belongs to the
channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import discord
import yarl
from discord import app_commands

from adapters.discord.commands import add_commands, buttons, editing
from adapters.discord.messenger import DiscordMessenger
from adapters.discord.replies import answer_error, log_failure, refusal_text
from adapters.discord.translate import (
    CUSTOM_ID_PREFIX,
    MODAL_ID,
    PLATFORM,
    chat_ref,
    checked,
    image_files,
    language,
    message_ref,
    prompt_of,
    user_ref,
)
from bot import presenter
from bot.domain import Address, EditRequest, Incoming, MessageRef, Upload
from bot.errors import StartupError
from bot.service import EditService

log = logging.getLogger("stepedit.discord")

DEFAULT_API_URL = "https://discord.com/api/v10"
READY_TIMEOUT_SECONDS = 30.0
# discord.py waits this long between the IDENTIFYs of a process's shards (Discord allows one
# IDENTIFY per 5 s): a process with many shards takes that much longer to be ready.
IDENTIFY_INTERVAL_SECONDS = 5.0
CLOSE_INVALID_SHARD, CLOSE_SHARDING_REQUIRED = 4010, 4011
_USER_MESSAGES = (discord.MessageType.default, discord.MessageType.reply)
# Interaction tokens (15-minute credentials to answer as the bot) in the URLs and gateway
# payloads that discord.py logs at DEBUG.
_LOGGED_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?'\"]+|('token': ')[^']+")


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
        shard_count: int | None = None,
        shard_ids: Sequence[int] | None = None,
    ) -> None:
        """`shard_count` None: one unsharded connection; else the shards `shard_ids` (None:
        all of them) of `shard_count`."""
        self.service = service
        self.token = token
        self.api_url = api_url.rstrip("/")
        self.gateway_url = gateway_url
        intents = discord.Intents.default()
        intents.message_content = message_content  # privileged: only if the operator enabled it
        # Nobody is pinged by what the bot posts (a prompt may say "@everyone"); the one
        # mention it makes on purpose allows its user explicitly (DiscordMessenger._send).
        options: dict[str, Any] = {
            "intents": intents,
            "allowed_mentions": discord.AllowedMentions.none(),
        }
        self.client: _AnyClient
        if shard_count is None:
            self.shard_ids: list[int] | None = None
            self.client = _Client(self, **options)
        else:
            self.shard_ids = sorted(shard_ids) if shard_ids is not None else [*range(shard_count)]
            self.client = _ShardedClient(
                self, shard_count=shard_count, shard_ids=self.shard_ids, **options
            )
        self.tree: app_commands.CommandTree[_AnyClient] = _GatedTree(self.client)
        self.messenger = DiscordMessenger(self.client)
        self.accepting = True
        self.sending_only = False  # start_sending_only: no gateway, no command sync
        self._connection: asyncio.Task[None] | None = None
        self._order = _InOrder()
        _hide_interaction_tokens()
        add_commands(self.tree, service, self.messenger)

    async def _login(self) -> None:
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

    # lifecycle: start() returns once connected; stop_receiving() then stop() shut down
    async def start(self) -> None:
        await self._login()
        self._connection = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self.client.wait_until_ready())  # every shard of ours
        shards = len(self.shard_ids or [0])
        await asyncio.wait(
            [self._connection, ready],
            timeout=READY_TIMEOUT_SECONDS + IDENTIFY_INTERVAL_SECONDS * (shards - 1),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not ready.done():
            ready.cancel()
            await self._fail_start()
        log.info("Discord bot %s is running", self.client.user)

    async def start_sending_only(self) -> None:
        """The REST API only (`stepedit run --workers-only`): no gateway connection, so nothing
        is received here, and the messenger finds channels by id, not in the gateway's cache.
        The slash commands are left to the receiving processes to register."""
        self.sending_only = True
        await self._login()
        log.info("Discord bot %s only sends: nothing is received here", self.client.user)

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
        code = error.code if isinstance(error, discord.ConnectionClosed) else None
        count = self.client.shard_count
        if code == CLOSE_SHARDING_REQUIRED:
            now = "one connection" if count is None else f"DISCORD_SHARD_COUNT {count}"
            raise StartupError(
                f"Discord requires more shards: the bot is in too many servers for {now}. Set "
                "DISCORD_SHARD_COUNT to about one shard per 1,000 servers (see the README's "
                "Discord shards)"
            )
        if code == CLOSE_INVALID_SHARD:
            raise StartupError(
                f"Discord refused shards {self.shard_ids} of DISCORD_SHARD_COUNT {count} "
                "(invalid shard): every process needs the same DISCORD_SHARD_COUNT"
            )
        reason = f" ({error})" if error else ""
        raise StartupError(f"could not connect to Discord's gateway{reason}")

    async def setup(self) -> None:
        """At login: the buttons, and the slash commands, registered by the process that
        holds shard 0 alone (every process's tree is the same; one speaks for them), never by
        one that only sends."""
        self.client.add_dynamic_items(StepeditButton)
        if self.sending_only or (self.shard_ids is not None and 0 not in self.shard_ids):
            return
        try:
            await self.tree.sync()
        except discord.HTTPException as exc:  # the commands of the last run still work
            log.warning("could not register the slash commands: %s", exc)

    name = "discord"

    @property
    def connected(self) -> bool:
        """Whether every gateway connection of this process is up (for /readyz): the one
        connection, or each of its shards."""
        client = self.client
        if not client.is_ready() or client.is_closed():
            return False
        if isinstance(client, _ShardedClient):
            shards = client.shards
            return sorted(shards) == self.shard_ids and not any(
                shard.is_closed() for shard in shards.values()
            )
        return True

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
        except Exception as exc:  # a refusal, or a failure: the user hears of it (see replies)
            log_failure(exc, f"message {message.id}")
            text = refusal_text(exc, lang)
            if text is not None:  # else someone the operator keeps out, told already
                await self.messenger.send_text(to, text)

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
        uploads, origin = image_files(message), message_ref(message)  # several: one request
        if not uploads and known is None and replied is not None:
            uploads, origin = image_files(replied), message_ref(replied)  # someone's: a meme
        upload, more = (checked(uploads[0]), uploads[1:]) if uploads else (None, [])
        if upload is not None and not prompt:  # several: asked once, the answer edits all
            others = tuple(Upload(checked(each)) for each in more)
            await self.service.ask_for_prompt(user, chat, upload, origin, to, more=others)
            return
        request = EditRequest(
            user, chat, prompt, upload=upload,
            source_message=None if upload else known,
            origin=origin if upload else None,
            key=f"{PLATFORM}:{message.channel.id}:{message.id}",
            answer_to=to.reply_to, language=to.language,
            more=tuple(Upload(checked(each)) for each in more),  # (the message is the first's)
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
        try:
            await self.service.enter(event, claim=True)  # Discord never sends one twice
        except Exception as exc:  # banned, kept out, redelivered: it must be answered
            await answer_error(interaction, exc, self.messenger)
            return False
        return True

    async def on_modal(self, interaction: discord.Interaction) -> None:
        """The "Edit image" form, submitted (see commands/editing.py `edit_from_form`)."""
        data: dict[str, Any] = dict(interaction.data or {})
        match = MODAL_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None or not self.accepting or not await self.admit(interaction):
            return
        try:
            await editing.edit_from_form(self.service, self.messenger, interaction, match)
        except Exception as exc:
            await answer_error(interaction, exc, self.messenger)

    async def on_press(self, interaction: discord.Interaction, data: str) -> None:
        """A press on one of the core's buttons, past the gate."""
        if not self.accepting or not await self.admit(interaction):
            return
        try:
            await buttons.press(self.service, interaction, data)
        except Exception as exc:
            await answer_error(interaction, exc, self.messenger)


class _Events:
    """What both clients (one connection, or shards) hand to the bot."""

    stepedit: DiscordBot

    async def setup_hook(self) -> None:
        await self.stepedit.setup()

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


class _Client(_Events, discord.Client):
    def __init__(self, bot: DiscordBot, **options: Any) -> None:
        super().__init__(**options)
        self.stepedit = bot


class _ShardedClient(_Events, discord.AutoShardedClient):
    def __init__(self, bot: DiscordBot, **options: Any) -> None:
        super().__init__(**options)
        self.stepedit = bot


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
        if isinstance(client, _Events):
            await client.stepedit.on_press(interaction, self.data)


_AnyClient = _Client | _ShardedClient


class _GatedTree(app_commands.CommandTree[_AnyClient]):
    """Every slash command and menu passes the gate first, however it was registered."""

    async def interaction_check(self, interaction: discord.Interaction[_AnyClient], /) -> bool:
        return await self.client.stepedit.admit(interaction)

    async def on_error(
        self, interaction: discord.Interaction[_AnyClient], error: app_commands.AppCommandError, /
    ) -> None:
        """A command that raised: its user hears a clear word, the operator gets the trace."""
        cause = getattr(error, "original", error)
        await answer_error(interaction, cause, self.client.stepedit.messenger)
