"""A fake Discord (REST API, gateway and CDN) for end-to-end tests with a real discord.py client.

Like tests/fakes/telegram.py, but for discord.py 2.7: an ``aiohttp.web`` server on 127.0.0.1
(ephemeral port) that a real ``discord.Client`` talks to unchanged over HTTP and a websocket::

    async with run_fake_discord() as fake, running_client(fake, MyClient(intents=...)) as client:
        message = fake.user_sends(GENERAL_ID, ALICE, "hi", attachments=[("a.png", png, None)],
                                  mentions_bot=True)
        answer = await fake.next_message(GENERAL_ID)

``running_client`` (or ``with fake.patched():``) points ``discord.http.Route.BASE`` at
``fake.rest_url`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at ``fake.gateway_url``; both are class
attributes, so they are restored afterwards. The pytest fixture ``fake_discord`` does both.

The gateway speaks plain JSON text frames (discord.py asks for zlib-stream but only inflates
binary frames): HELLO, IDENTIFY -> READY (``application: {id, flags}``, ``resume_gateway_url``
pointing at the fake's /resume path) and one GUILD_CREATE per guild, heartbeats (op 1 -> op 11),
RESUME with a replay of missed events (-> RESUMED), op 9 for unknown sessions (and on request),
op 7 on request, REQUEST_GUILD_MEMBERS.

Sharding as Discord does it: an IDENTIFY's ``shard: [id, count]`` makes the session one shard
(none: shard 0 of 1, every guild). A guild's events (READY's guild list, GUILD_CREATE, messages,
deletions, interactions) go only to the sessions of shard ``(guild_id >> 22) % count``
(``shard_of``); DMs and DM interactions only to shard 0. ``GET /gateway/bot`` recommends one
shard per 1,000 guilds (or ``recommended_shards``). An invalid shard (id not below the count) is
closed with 4010, and so, stricter than Discord, is a count other than a live session's (two
processes that disagree would each miss some guilds' events); a shard that would hold more than
``max_guilds_per_shard`` guilds (2,500) with 4011, "sharding required".

Tests inject users' activity (``user_sends``, ``user_runs_slash_command``,
``user_runs_message_command``, ``user_clicks_button``, ``user_submits_modal``) as MESSAGE_CREATE and
INTERACTION_CREATE dispatches, and read back everything the bot did: channel messages (with file
bytes, components, replies, flags, edits, deletion, reactions), typing, interaction callbacks and
follow-ups, modals, and application command syncs (``shards_that_got`` tells which shards an
event went to).

Discord behaviour the fake enforces, so that code that would fail in production fails here:
``Authorization: Bot <token>`` on REST (401) and IDENTIFY (close 4004); privileged intents must be
enabled for the app (close 4014); intents gate which MESSAGE_CREATEs arrive, and without the
message content intent a guild message that does not mention the bot arrives without content,
attachments, embeds and components; the bot's own messages come back through the gateway; files
over the upload limit (10 MiB, 50/100 MiB for boost tier 2/3; an interaction's
``attachment_size_limit``) are refused with 413/40005; content over 2000 characters, empty
messages, bad components (custom_id 1-100 chars, 5 rows of 5 buttons, labels <= 80) and bad modals
with 50035; replies to unknown messages; interactions must be answered within ``ack_deadline``
(3 s) and once (10062 / 40060); interaction tokens expire (``expire_interactions()``: 50027);
the first follow-up after a deferred ("thinking") response replaces the loading message and keeps
its ephemeral flag; ephemeral messages are not dispatched and cannot be fetched. Responses carry
``Content-Type: application/json`` exactly (discord.py does not parse it with a charset) and
429s carry the ``Via`` header (without it discord.py takes a 429 for a Cloudflare ban).

Not supported (404 or unmodelled): permissions and role checks, threads, embeds' validation,
stickers, polls, voice, presences, guild/channel/role management, audit logs, autocomplete,
subcommands, user context menus, webhook-by-id, message search and pagination beyond
``limit``/``before``/``after``, zlib compression, identify rate limits (max_concurrency), gateway
rate limits, real rate-limit buckets (only injected 429s), TYPING_START and reaction events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import itertools
import json
import mimetypes
import re
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote

import pytest
import yarl
from aiohttp import BodyPartReader, WSMsgType, web
from PIL import Image

from tests.images import make_png

with warnings.catch_warnings():
    # discord.py imports the stdlib audioop for voice; Python 3.11 deprecates it, and pytest
    # runs with filterwarnings=error, so a plain import fails at collection.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord

__all__ = [
    "ALICE",
    "APP_ID",
    "BOB",
    "BOT_ID",
    "COMPONENTS_V2",
    "DEFAULT_PERMISSIONS",
    "EPHEMERAL",
    "GENERAL_ID",
    "GUILD_ID",
    "LOADING",
    "MAX_CONTENT",
    "OTHER_BOT",
    "TOKEN",
    "UPLOAD_LIMITS",
    "Call",
    "Callback",
    "DiscordError",
    "Edit",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeUser",
    "GatewayConnection",
    "StoredAttachment",
    "StoredMessage",
    "Upload",
    "fake_discord",
    "make_png",
    "run_fake_discord",
    "running_client",
    "shard_of",
]

# --------------------------------------------------------------------------------------------
# Constants: ids are realistic 19-digit snowflakes; the application id is the bot's user id,
# as for every application created since 2020.
# --------------------------------------------------------------------------------------------

TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.GfAkE1.fake-discord-token-for-tests-only"
BOT_ID = 1_300_000_000_000_000_001
APP_ID = BOT_ID
GUILD_ID = 1_300_000_000_000_000_100
GENERAL_ID = 1_300_000_000_000_000_101
API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

EPHEMERAL = 1 << 6  # message flag
LOADING = 1 << 7  # message flag of a deferred ("thinking") response
COMPONENTS_V2 = 1 << 15  # message flag

MAX_CONTENT = 2000
MAX_FILES = 10
MAX_CUSTOM_ID = 100
MAX_BUTTON_LABEL = 80
MAX_MODAL_TITLE = 45
UPLOAD_LIMITS = {0: 10 * 1024 * 1024, 1: 10 * 1024 * 1024, 2: 50 * 1024 * 1024, 3: 100 * 1024**2}

# Gateway intents that matter to the fake (https://discord.com/developers/docs/events/gateway).
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = {
    "members": INTENT_GUILD_MEMBERS,
    "presences": INTENT_GUILD_PRESENCES,
    "message_content": INTENT_MESSAGE_CONTENT,
}
# Application flags "...LIMITED": the intent is enabled in the developer portal.
_APP_FLAG_FOR_INTENT = {"presences": 1 << 13, "members": 1 << 15, "message_content": 1 << 19}

# View Channel, Send Messages, Embed Links, Attach Files, Read Message History, Add Reactions,
# Use Application Commands: what the README asks server admins to grant.
DEFAULT_PERMISSIONS = (
    (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 31)
)

# Interaction and callback types (https://discord.com/developers/docs/interactions).
APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 2, 3, 5
CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL = 4, 5, 6, 7, 9
_ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
}
# Option types of chat input commands.
OPT_STRING, OPT_INTEGER, OPT_BOOLEAN, OPT_USER, OPT_NUMBER, OPT_ATTACHMENT = 3, 4, 5, 6, 10, 11

# Sharding (https://discord.com/developers/docs/events/gateway#sharding).
GUILDS_PER_RECOMMENDED_SHARD = 1000
MAX_GUILDS_PER_SHARD = 2500
CLOSE_INVALID_SHARD, CLOSE_SHARDING_REQUIRED = 4010, 4011


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that receives a guild's events; DMs (no guild) come on shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DiscordError(Exception):
    """A Discord API error: ``{"message": ..., "code": ...}`` (with ``errors`` for 50035)."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code, **self.extra}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _invalid_form(path: str, code: str, message: str) -> DiscordError:
    """50035 with Discord's nested ``errors`` object for a dotted field path."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def _unknown(what: str, code: int) -> DiscordError:
    return DiscordError(404, code, f"Unknown {what}")


# --------------------------------------------------------------------------------------------
# The simulated world: users, guilds, channels
# --------------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


@dataclass(frozen=True)
class FakeUser:
    """A Discord user. ``locale`` is what interactions report (Discord's locale names)."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    locale: str = "en-US"

    def to_api(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",  # since the 2023 username migration
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


ALICE = FakeUser(1_300_000_000_000_000_201, "alice", "Alice")
BOB = FakeUser(1_300_000_000_000_000_202, "bob", "Bob", locale="zh-CN")
OTHER_BOT = FakeUser(1_300_000_000_000_000_203, "otherbot", "Other Bot", bot=True)


@dataclass
class FakeChannel:
    """A guild text channel (type 0) or a DM channel (type 1, no guild, one recipient)."""

    id: int
    name: str = ""
    type: int = 0
    guild_id: int | None = None
    recipient: FakeUser | None = None

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    def to_api(self) -> dict[str, Any]:
        if self.is_dm:
            recipients = [self.recipient.to_api()] if self.recipient else []
            return {"id": str(self.id), "type": 1, "recipients": recipients, "flags": 0}
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class FakeGuild:
    """A guild with text channels and members (the bot is always a member)."""

    id: int
    name: str
    channels: list[FakeChannel] = field(default_factory=list)
    members: list[FakeUser] = field(default_factory=list)
    premium_tier: int = 0
    locale: str = "en-US"
    owner_id: int | None = None
    joined_at: float = field(default_factory=time.time)

    @property
    def upload_limit(self) -> int:
        return UPLOAD_LIMITS.get(self.premium_tier, UPLOAD_LIMITS[0])

    def member_api(self, user: FakeUser, *, with_user: bool = True) -> dict[str, Any]:
        member: dict[str, Any] = {
            "roles": [],
            "joined_at": _iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "nick": None,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            member["user"] = user.to_api()
        return member


def default_guild() -> FakeGuild:
    guild = FakeGuild(GUILD_ID, "Test Guild", members=[ALICE, BOB, OTHER_BOT], owner_id=ALICE.id)
    guild.channels.append(FakeChannel(GENERAL_ID, "general", 0, GUILD_ID))
    return guild


# --------------------------------------------------------------------------------------------
# Recorded data
# --------------------------------------------------------------------------------------------


class Upload(NamedTuple):
    """A file a test user attaches: ``(filename, data, content_type)``; a plain tuple works."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (``files[N]``)."""

    name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass(eq=False)
class StoredAttachment:
    """An attachment on a message; its ``url`` downloads ``data`` from the fake's CDN."""

    id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str | None
    cdn_root: str
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> str:
        return f"attachments/{self.channel_id}/{self.id}/{self.filename}"

    @property
    def url(self) -> str:
        # Real CDN links are signed and expire (ex/is/hm): code must not rely on a bare path.
        return f"{self.cdn_root}/cdn/{self.path}?ex=6a000000&is=69f00000&hm={self.id:x}&"

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url.replace("/cdn/", "/media/", 1),
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.description:
            data["description"] = self.description
        if self.width is not None:
            data["width"], data["height"] = self.width, self.height
        return data


@dataclass(frozen=True)
class Edit:
    """One change of a message: the fields before it and the payload that made it."""

    source: str  # "PATCH", "callback 7", "followup", "webhook PATCH"
    payload: dict[str, Any]
    before: dict[str, Any]


@dataclass(eq=False)
class StoredMessage:
    """A message in a channel: a user's (injected) or the bot's (posted, or an interaction's)."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    attachments: list[StoredAttachment] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    mentions: list[FakeUser] = field(default_factory=list)
    referenced: StoredMessage | None = None
    interaction: FakeInteraction | None = None  # the interaction whose response/follow-up it is
    source: str = "user"  # "user", "channel", "callback", "followup"
    payload: dict[str, Any] = field(default_factory=dict)  # as the bot sent it
    timestamp: float = field(default_factory=time.time)
    edited_at: float | None = None
    edits: list[Edit] = field(default_factory=list)
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)

    @property
    def from_bot(self) -> bool:
        return self.source != "user"

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def reply_to(self) -> int | None:
        return self.referenced.id if self.referenced else None

    @property
    def files(self) -> list[tuple[str, bytes]]:
        return [(a.filename, a.data) for a in self.attachments]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk_components(self.components) if "custom_id" in c]

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in _walk_components(self.components) if c.get("type") == 2]

    def snapshot(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "attachments": [a.filename for a in self.attachments],
            "components": self.components,
            "embeds": self.embeds,
            "flags": self.flags,
        }

    def to_api(self, *, gateway: bool = False, with_reference: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "author": self.author.to_api(),
            "content": self.content,
            "timestamp": _iso(self.timestamp),
            "edited_timestamp": None if self.edited_at is None else _iso(self.edited_at),
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.to_api() for u in self.mentions],
            "mention_roles": [],
            "attachments": [a.to_api() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        if self.reactions:
            data["reactions"] = [
                {"emoji": {"id": None, "name": e}, "count": 1, "me": True}
                for e in dict.fromkeys(self.reactions)
            ]
        if self.interaction is not None:
            data["webhook_id"] = str(APP_ID)
            data["application_id"] = str(APP_ID)
            data["interaction_metadata"] = self.interaction.metadata()
        if self.referenced is not None:
            ref = self.referenced
            data["message_reference"] = {
                "type": 0,
                "message_id": str(ref.id),
                "channel_id": str(ref.channel_id),
                **({"guild_id": str(ref.guild_id)} if ref.guild_id else {}),
            }
            if with_reference:
                data["referenced_message"] = (
                    None if ref.deleted else ref.to_api(gateway=gateway, with_reference=False)
                )
        if gateway and self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        return data

    def __repr__(self) -> str:
        who = "bot" if self.from_bot else self.author.username
        parts = [f"#{self.id} in {self.channel_id} by {who} ({self.source})"]
        if self.content:
            parts.append(f"content={self.content[:60]!r}")
        if self.attachments:
            parts.append(f"files={[a.filename for a in self.attachments]}")
        if self.custom_ids:
            parts.append(f"custom_ids={self.custom_ids}")
        if self.referenced is not None:
            parts.append(f"reply_to={self.referenced.id}")
        flags = [n for n, f in (("ephemeral", EPHEMERAL), ("loading", LOADING)) if self.flags & f]
        parts += flags
        if self.edits:
            parts.append(f"edits={len(self.edits)}")
        if self.deleted:
            parts.append("deleted")
        return f"StoredMessage({', '.join(parts)})"


@dataclass
class Call:
    """One REST request, appended to ``fake.calls`` once answered.

    ``route`` is the template (``"POST /channels/{channel_id}/messages"``), ``payload`` the JSON
    body or the multipart ``payload_json``, ``files`` the ``files[N]`` parts.
    """

    method: str
    path: str
    route: str
    params: dict[str, str]
    query: dict[str, str]
    payload: Any
    files: list[UploadedFile]
    status: int = 200
    response: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        body = json.dumps(self.payload)[:120] if self.payload is not None else ""
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"Call({self.route} {body}{files} -> {self.status})"


@dataclass(frozen=True)
class Callback:
    """One interaction callback (``POST /interactions/{id}/{token}/callback``)."""

    type: int
    data: dict[str, Any]
    files: list[UploadedFile]
    at: float


@dataclass(eq=False)
class FakeInteraction:
    """An interaction a test user started, and everything the bot answered to it."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]  # as dispatched in INTERACTION_CREATE
    channel: FakeChannel
    user: FakeUser
    attachment_size_limit: int
    created_at: float = field(default_factory=time.monotonic)
    message: StoredMessage | None = None  # a component's message
    callbacks: list[Callback] = field(default_factory=list)
    original: StoredMessage | None = None  # the message the initial response made or updated
    followups: list[StoredMessage] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    expired: bool = False

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.payload.get("data") or {})

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def response_type(self) -> int | None:
        return self.callbacks[0].type if self.callbacks else None

    @property
    def thinking(self) -> bool:
        return self.response_type == DEFERRED_MESSAGE

    @property
    def ephemeral(self) -> bool:
        """Whether the initial response (message or deferral) was ephemeral."""
        if not self.callbacks:
            return False
        return bool(int(self.callbacks[0].data.get("flags") or 0) & EPHEMERAL)

    @property
    def ack_delay(self) -> float | None:
        return self.callbacks[0].at - self.created_at if self.callbacks else None

    @property
    def messages(self) -> list[StoredMessage]:
        """The original response (if it made a message) and the follow-ups, in order."""
        own = [self.original] if self.original and self.original.interaction is self else []
        return own + [m for m in self.followups if m not in own]

    def metadata(self) -> dict[str, Any]:
        owners = {"0": str(self.channel.guild_id)} if self.channel.guild_id else {}
        owners.setdefault("1", str(self.user.id))
        return {
            "id": str(self.id),
            "type": self.type,
            "user": self.user.to_api(),
            "authorizing_integration_owners": owners,
        }

    def __repr__(self) -> str:
        name = self.data.get("name") or self.data.get("custom_id")
        answers = [c.type for c in self.callbacks]
        return (
            f"FakeInteraction(#{self.id} type={self.type} {name!r} in {self.channel.id} "
            f"callbacks={answers} followups={len(self.followups)}"
            f"{' modal' if self.modal else ''}{' expired' if self.expired else ''})"
        )


@dataclass(eq=False)
class GatewaySession:
    """A gateway session: survives a dropped connection (RESUME), not a clean close (1000).
    ``shard`` is (id, count) as identified; unsharded, (0, 1)."""

    id: str
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connection: GatewayConnection | None = None
    invalid: bool = False
    shard: tuple[int, int] = (0, 1)

    def receives(self, guild_id: int | None) -> bool:
        """Whether this session gets the events of ``guild_id`` (None: a DM)."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id


@dataclass(eq=False)
class GatewayConnection:
    """One websocket connection. ``kind`` is "identify" or "resume" once the client said so;
    ``received``/``sent`` are the payloads the client sent and those written to it."""

    path: str
    query: dict[str, str]
    ws: web.WebSocketResponse
    kind: str | None = None
    session: GatewaySession | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    def __repr__(self) -> str:
        ops = [m.get("op") for m in self.received]
        return f"GatewayConnection({self.path} {self.kind} ops={ops} closed={self.close_code})"


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    retry_after: float | None
    is_global: bool
    method: str | None
    route: str | None


@dataclass(frozen=True)
class _Request:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    payload: Any
    files: list[UploadedFile]


Handler = Callable[[_Request], Awaitable[tuple[int, Any]]]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # not an image: Discord sends no width/height
        return None


def _content_type(filename: str, declared: str | None, data: bytes) -> str | None:
    # discord.py uploads every file as application/octet-stream; Discord derives the type.
    if declared and declared != "application/octet-stream":
        return declared
    guessed = mimetypes.guess_type(filename, strict=False)[0]
    if guessed:
        return guessed
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as image:
        return Image.MIME.get(image.format or "")
    return None


def _walk_components(components: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every component, depth first: rows' children, labels' component, sections' accessory."""
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(component.get(key), dict):
                yield from _walk_components([component[key]])


def _route_regex(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


def _as_upload(value: Upload | tuple[Any, ...]) -> Upload:
    return value if isinstance(value, Upload) else Upload(*value)


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


class FakeDiscord:
    """A fake Discord. Start with ``await fake.start()``, ``async with`` or ``run_fake_discord()``.

    ``guilds`` defaults to one guild (``GUILD_ID``, "#general" = ``GENERAL_ID``, members ALICE,
    BOB, OTHER_BOT and the bot). ``privileged_intents`` are those enabled for the application in
    the developer portal. ``recommended_shards`` is what ``GET /gateway/bot`` recommends (None: one
    per 1,000 guilds); an IDENTIFY whose shard would hold more than ``max_guilds_per_shard``
    guilds is refused (4011).
    """

    def __init__(
        self,
        token: str = TOKEN,
        *,
        bot_id: int = BOT_ID,
        bot_username: str = "StepEdit",
        guilds: Sequence[FakeGuild] | None = None,
        privileged_intents: Iterable[str] = ("message_content",),
        heartbeat_interval_ms: int = 41_250,
        ack_deadline: float = 3.0,
        recommended_shards: int | None = None,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
    ) -> None:
        self.token = token
        self.bot = FakeUser(bot_id, bot_username, bot_username, bot=True)
        self.application_id = bot_id
        self.privileged_intents = frozenset(privileged_intents)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.ack_deadline = ack_deadline
        self.recommended_shards = recommended_shards  # None: one per 1,000 guilds
        self.max_guilds_per_shard = max_guilds_per_shard
        self.root = ""  # set by start()

        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.users: dict[int, FakeUser] = {self.bot.id: self.bot}
        self.calls: list[Call] = []
        self.interactions: list[FakeInteraction] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id or None: global
        self.command_syncs: list[tuple[int | None, list[dict[str, Any]]]] = []
        self.typing: list[tuple[int, float]] = []  # (channel id, monotonic time)
        self.downloads: list[StoredAttachment] = []
        self.connections: list[GatewayConnection] = []
        self.sessions: list[GatewaySession] = []
        self.heartbeats = 0
        self.server_errors: list[BaseException] = []  # bugs in the fake itself

        self._messages: dict[int, StoredMessage] = {}
        self._attachments: dict[str, StoredAttachment] = {}
        self._failures: list[_Failure] = []
        self._returned: dict[int, set[int]] = {}
        self._last_id = 0
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._pulse_event = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._routes = self._build_routes()
        for guild in guilds if guilds is not None else [default_guild()]:
            self._register_guild(guild)

    # ---------------------------------------------------------------- lifecycle

    @property
    def rest_url(self) -> str:
        """For ``discord.http.Route.BASE``."""
        return f"{self.root}{API_PREFIX}"

    @property
    def gateway_url(self) -> yarl.URL:
        """For ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``."""
        return yarl.URL(self.root.replace("http://", "ws://", 1) + "/gateway/")

    @property
    def resume_gateway_url(self) -> str:
        """What READY names as ``resume_gateway_url``: a different path, so resumes are visible."""
        return self.root.replace("http://", "ws://", 1) + "/resume/"

    async def start(self) -> FakeDiscord:
        # Big enough for several 100 MiB files: the size limits are Discord's, checked per file.
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_route("GET", "/gateway/", self._gateway)
        app.router.add_route("GET", "/resume/", self._gateway)
        app.router.add_route("GET", "/cdn/{tail:.*}", self._cdn)
        app.router.add_route("GET", "/media/{tail:.*}", self._cdn)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.root = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        """Close gateway connections (code 1001, "going away"), stop the server, wake waiters."""
        self._closing = True
        self._pulse()
        for connection in list(self.connections):
            if not connection.ws.closed:
                with contextlib.suppress(Exception):
                    await connection.ws.close(code=1001, message=b"fake stopping")
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def patched(self) -> Iterator[FakeDiscord]:
        """Point discord.py's REST root and default gateway (class attributes) at the fake."""
        route = discord.http.Route
        socket = discord.gateway.DiscordWebSocket
        saved = route.BASE, socket.DEFAULT_GATEWAY
        route.BASE, socket.DEFAULT_GATEWAY = self.rest_url, self.gateway_url
        try:
            yield self
        finally:
            route.BASE, socket.DEFAULT_GATEWAY = saved

    # ---------------------------------------------------------------- notification and waiting

    def _pulse(self) -> None:
        event, self._pulse_event = self._pulse_event, asyncio.Event()
        event.set()

    async def _wait(self, check: Callable[[], Any], seconds: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            result = check()
            if result is not None and result is not False:
                return result
            if self._closing:
                raise RuntimeError(f"FakeDiscord stopped while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"FakeDiscord: timed out after {seconds}s waiting for {what}\n"
                    + self.describe()
                )
            # Woken by every request, and polling too: conditions may watch the client's state.
            event = self._pulse_event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.02))

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 5) -> Any:
        """Wait until ``condition()`` is truthy (checked after each request and every 20 ms)."""
        return await self._wait(lambda: condition() or None, timeout, f"condition {condition!r}")

    async def next_message(
        self,
        channel_id: int,
        predicate: Callable[[StoredMessage], Any] | None = None,
        timeout: float = 5,
    ) -> StoredMessage:
        """The next message the bot posted in ``channel_id`` (matching ``predicate``).

        Each message is returned once: messages posted before the call are not missed, and
        ``first = await next_message(c); second = await next_message(c)`` moves on. Interaction
        responses and follow-ups count (a deferred response once its loading state is replaced),
        as do ephemeral and deleted ones.
        """
        seen = self._returned.setdefault(channel_id, set())

        def check() -> StoredMessage | None:
            for message in self.sent(channel_id):
                if message.loading or message.id in seen:
                    continue
                if predicate is None or predicate(message):
                    seen.add(message.id)
                    return message
            return None

        return await self._wait(check, timeout, f"a bot message in channel {channel_id}")

    async def wait_for_call(
        self, route: str, predicate: Callable[[Call], Any] | None = None, timeout: float = 5
    ) -> Call:
        """The first answered call whose route template is ``route`` (e.g. "POST /channels/...")."""

        def check() -> Call | None:
            return next((c for c in self.calls_to(route) if not predicate or predicate(c)), None)

        return await self._wait(check, timeout, f"a call {route}")

    async def wait_for_response(
        self, interaction: FakeInteraction, timeout: float = 5
    ) -> FakeInteraction:
        """Wait until the bot acknowledged ``interaction`` (any callback type)."""
        await self._wait(lambda: interaction.acknowledged, timeout, f"a response to {interaction}")
        return interaction

    async def wait_for_followup(
        self, interaction: FakeInteraction, timeout: float = 5
    ) -> StoredMessage:
        """The first follow-up (or the filled deferred response) of ``interaction``."""

        def check() -> StoredMessage | None:
            return next((m for m in interaction.followups if not m.loading), None)

        return await self._wait(check, timeout, f"a follow-up to {interaction}")

    async def wait_connected(
        self, timeout: float = 5, *, shard: tuple[int, int] | None = None
    ) -> GatewaySession:
        """Wait until a client has identified (or resumed) on a live connection (as ``shard``,
        (id, count), when given)."""
        what = f"a gateway session of shard {shard}" if shard else "a gateway session"
        return await self._wait(lambda: self._live_session(shard), timeout, what)

    # ---------------------------------------------------------------- inspection

    def sent(self, channel_id: int) -> list[StoredMessage]:
        """The bot's messages in ``channel_id``, in order (deleted and ephemeral ones flagged)."""
        return [m for m in self.messages(channel_id) if m.from_bot]

    def messages(self, channel_id: int) -> list[StoredMessage]:
        return [m for m in self._messages.values() if m.channel_id == channel_id]

    def message(self, message_id: int) -> StoredMessage:
        return self._messages[message_id]

    def calls_to(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.route == route]

    def routes(self) -> list[str]:
        return [c.route for c in self.calls]

    def shards_that_got(self, event: str, object_id: int) -> list[tuple[int, int]]:
        """The shards, (id, count), whose sessions were sent ``event`` about ``object_id`` (a
        message's or an interaction's id)."""
        return [
            session.shard
            for session in self.sessions
            if any(f["t"] == event and f["d"].get("id") == str(object_id) for f in session.events)
        ]

    def typing_in(self, channel_id: int) -> int:
        """How many times the bot triggered the typing indicator in ``channel_id``."""
        return sum(1 for cid, _ in self.typing if cid == channel_id)

    @property
    def modals(self) -> list[dict[str, Any]]:
        return [i.modal for i in self.interactions if i.modal is not None]

    def describe(self, last: int = 25) -> str:
        """A readable summary of recent activity (used in timeout errors)."""
        lines = ["Recent REST calls:"]
        lines += [f"  {c!r}" for c in self.calls[-last:]]
        lines.append("Messages:")
        lines += [f"  {m!r}" for m in list(self._messages.values())[-last:]]
        lines.append("Interactions:")
        lines += [f"  {i!r}" for i in self.interactions[-last:]]
        lines.append("Gateway connections:")
        lines += [f"  {c!r}" for c in self.connections[-5:]]
        if self.server_errors:
            lines.append(f"Errors in the fake itself: {self.server_errors!r}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- world set-up

    def _register_guild(self, guild: FakeGuild) -> None:
        if self.bot not in guild.members:
            guild.members.append(self.bot)
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            channel.guild_id = guild.id
            self.channels[channel.id] = channel
        for member in guild.members:
            self.users[member.id] = member

    def add_guild(self, guild: FakeGuild) -> FakeGuild:
        """Add a guild; a connected bot gets its GUILD_CREATE (as when it is invited)."""
        self._register_guild(guild)
        for session in self._sessions_for(guild.id):
            self._send_event(session, "GUILD_CREATE", self._guild_create(guild, session))
        return guild

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between ``user`` and the bot (created on first use)."""
        self.users[user.id] = user
        for channel in self.channels.values():
            if channel.is_dm and channel.recipient == user:
                return channel
        channel = FakeChannel(self._snowflake(), type=1, recipient=user)
        self.channels[channel.id] = channel
        return channel

    def _channel(self, channel_id: int) -> FakeChannel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise LookupError(f"no channel {channel_id}; known: {sorted(self.channels)}") from None

    def _snowflake(self) -> int:
        # Time-based like real ids (discord.py derives created_at from them), strictly rising.
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(self._last_id + 1, candidate)
        return self._last_id

    # ---------------------------------------------------------------- faults

    def fail_next(
        self,
        times: int = 1,
        *,
        status: int = 429,
        retry_after: float = 0.05,
        code: int | None = None,
        message: str | None = None,
        method: str | None = None,
        route: str | None = None,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` REST calls (matching ``method``/``route``) with an error.

        429 carries ``retry_after`` (discord.py sleeps and retries); 500/502/504 make discord.py
        sleep 1 s, 3 s, ... before retrying, so use them sparingly.
        """
        if status == 429:
            message = message or "You are being rate limited."
        failure = _Failure(
            status=status,
            code=code if code is not None else 0,
            message=message or f"{status}: injected failure",
            retry_after=retry_after if status == 429 else None,
            is_global=is_global,
            method=method.upper() if method else None,
            route=route,
        )
        self._failures.extend(failure for _ in range(times))

    def expire_interactions(self) -> None:
        """Let every interaction token expire (as 15 minutes after it was created)."""
        for interaction in self.interactions:
            interaction.expired = True

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT on every live connection: clients reconnect and RESUME."""
        for session in self._open_sessions():
            if session.connection is not None:
                session.connection.queue.put_nowait(json.dumps({"op": 7, "d": None}))

    def invalidate_sessions(self, shard: tuple[int, int] | None = None) -> None:
        """Send op 9 (invalid session, not resumable) on every live connection, or on those of
        ``shard`` (id, count): clients IDENTIFY anew."""
        for session in self._open_sessions():
            if session.connection is not None and shard in (None, session.shard):
                session.invalid = True
                session.connection.queue.put_nowait(json.dumps({"op": 9, "d": False}))

    def request_heartbeat(self) -> None:
        """Send op 1 on every live connection: the client must heartbeat at once."""
        for session in self._open_sessions():
            if session.connection is not None:
                payload = {"op": 1, "d": session.seq}
                session.connection.queue.put_nowait(json.dumps(payload))

    # ---------------------------------------------------------------- test users: messages

    def user_sends(
        self,
        channel_id: int,
        author: FakeUser | None = None,
        content: str = "",
        *,
        attachments: Sequence[Upload | tuple[Any, ...]] = (),
        reply_to: int | StoredMessage | None = None,
        mentions_bot: bool = False,
        reply_pings: bool = True,
    ) -> StoredMessage:
        """A user posts a message; dispatched as MESSAGE_CREATE. Returns the stored message.

        ``mentions_bot`` puts ``<@bot_id>`` before ``content``; ``<@id>`` in content mentions
        users. A reply to someone pings them unless ``reply_pings`` is False (as in the app).
        """
        channel = self._channel(channel_id)
        user = author or (channel.recipient if channel.is_dm and channel.recipient else ALICE)
        self._check_member(channel, user)
        if mentions_bot and self.bot.mention not in content:
            content = f"{self.bot.mention} {content}".rstrip()
        referenced = self._reply_target(channel_id, reply_to) if reply_to is not None else None
        message = StoredMessage(
            id=self._snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=user,
            content=content,
            type=19 if referenced else 0,
            referenced=referenced,
        )
        message.attachments = [self._new_attachment(channel.id, _as_upload(a)) for a in attachments]
        message.mentions = self._mentions(content, referenced if reply_pings else None)
        self._messages[message.id] = message
        self._dispatch_message("MESSAGE_CREATE", message)
        return message

    def _check_member(self, channel: FakeChannel, user: FakeUser) -> None:
        self.users[user.id] = user
        if channel.is_dm and channel.recipient != user:
            raise ValueError(f"{user.username} is not the recipient of DM channel {channel.id}")
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is not None and user not in guild.members:
            guild.members.append(user)  # joined silently: the test needs no GUILD_MEMBER_ADD

    def _reply_target(self, channel_id: int, reply_to: int | StoredMessage) -> StoredMessage:
        rid = reply_to.id if isinstance(reply_to, StoredMessage) else reply_to
        target = self._messages.get(rid)
        if target is None or target.channel_id != channel_id or target.ephemeral:
            raise LookupError(f"no message {rid} in channel {channel_id} to reply to")
        return target

    def _mentions(self, content: str, replied: StoredMessage | None) -> list[FakeUser]:
        ids = [int(m) for m in re.findall(r"<@!?(\d+)>", content)]
        if replied is not None:
            ids.append(replied.author.id)
        return [self.users[i] for i in dict.fromkeys(ids) if i in self.users]

    def _new_attachment(self, channel_id: int, upload: Upload) -> StoredAttachment:
        data = bytes(upload.data)
        # Discord replaces spaces in uploaded file names.
        name = upload.filename.replace(" ", "_") or "unknown"
        size = _image_size(data)
        attachment = StoredAttachment(
            id=self._snowflake(),
            channel_id=channel_id,
            filename=name,
            data=data,
            content_type=_content_type(name, upload.content_type, data),
            cdn_root=self.root,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        self._attachments[attachment.path] = attachment
        return attachment

    # ---------------------------------------------------------------- test users: interactions

    def user_runs_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        channel_id: int = GENERAL_ID,
        user: FakeUser | None = None,
        locale: str | None = None,
        attachment_size_limit: int | None = None,
        app_permissions: int = DEFAULT_PERMISSIONS,
    ) -> FakeInteraction:
        """A user runs ``/name`` with ``options`` (an attachment option takes an ``Upload``).

        The command must have been synced (globally or to the channel's guild), as only synced
        commands can be run; option types come from its definition.
        """
        channel = self._channel(channel_id)
        command = self._synced_command(name, 1, channel)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        opts, resolved = self._command_options(command, options or {}, channel)
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        return self._start_interaction(
            APPLICATION_COMMAND,
            data,
            channel,
            user,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            app_permissions=app_permissions,
        )

    def user_runs_message_command(
        self,
        name: str,
        target_message_id: int | StoredMessage,
        *,
        user: FakeUser | None = None,
        locale: str | None = None,
        attachment_size_limit: int | None = None,
        app_permissions: int = DEFAULT_PERMISSIONS,
    ) -> FakeInteraction:
        """A user picks the message context-menu command ``name`` on a message."""
        mid = (
            target_message_id.id
            if isinstance(target_message_id, StoredMessage)
            else target_message_id
        )
        target = self._messages.get(mid)
        if target is None or target.deleted:
            raise LookupError(f"no message {mid}")
        channel = self._channel(target.channel_id)
        command = self._synced_command(name, 3, channel)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(mid),
            "resolved": {"messages": {str(mid): target.to_api()}},
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return self._start_interaction(
            APPLICATION_COMMAND,
            data,
            channel,
            user,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            app_permissions=app_permissions,
        )

    def user_clicks_button(
        self,
        message_id: int | StoredMessage,
        custom_id: str,
        *,
        user: FakeUser | None = None,
        locale: str | None = None,
        check_button: bool = True,
    ) -> FakeInteraction:
        """A user clicks a button of a message (it must currently show it, unless told not to)."""
        mid = message_id.id if isinstance(message_id, StoredMessage) else message_id
        message = self._messages.get(mid)
        if message is None or message.deleted:
            raise LookupError(f"no message {mid}")
        if check_button and custom_id not in [b.get("custom_id") for b in message.buttons]:
            raise LookupError(
                f"message {mid} has no button {custom_id!r}; it has {message.custom_ids}"
            )
        data = {"custom_id": custom_id, "component_type": 2}
        interaction = self._start_interaction(
            MESSAGE_COMPONENT,
            data,
            self._channel(message.channel_id),
            user,
            locale=locale,
            message=message,
        )
        return interaction

    def user_submits_modal(
        self,
        custom_id: str,
        values: dict[str, str],
        *,
        user: FakeUser | None = None,
    ) -> FakeInteraction:
        """A user submits the last modal the bot opened with ``custom_id``.

        ``values`` maps text inputs' custom_ids to what the user typed; required inputs must be
        filled, as in the app.
        """
        opener = next(
            (
                i
                for i in reversed(self.interactions)
                if i.modal and i.modal["custom_id"] == custom_id
            ),
            None,
        )
        if opener is None or opener.modal is None:
            raise LookupError(f"the bot opened no modal {custom_id!r}; opened: {self.modals}")
        components = self._modal_submit_components(opener.modal["components"], values)
        data = {"custom_id": custom_id, "components": components}
        return self._start_interaction(
            MODAL_SUBMIT,
            data,
            opener.channel,
            user or opener.user,
            locale=opener.payload.get("locale"),
            attachment_size_limit=opener.attachment_size_limit,
            message=opener.message,
        )

    def _modal_submit_components(
        self, components: list[dict[str, Any]], values: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Mirror the modal's layout (action rows or labels) with the typed values."""
        unknown = set(values) - {c.get("custom_id") for c in _walk_components(components)}
        if unknown:
            raise ValueError(f"the modal has no inputs {sorted(unknown)}")

        def submitted(item: dict[str, Any]) -> dict[str, Any]:
            value = values.get(item["custom_id"], "")
            if item.get("required", True) and not value:
                raise ValueError(f"required input {item['custom_id']!r} left empty")
            return {
                "type": item["type"],
                "id": item.get("id", 0),
                "custom_id": item["custom_id"],
                "value": value,
            }

        result: list[dict[str, Any]] = []
        for component in components:
            if component.get("type") == 1:
                children = [submitted(c) for c in component.get("components", [])]
                result.append({"type": 1, "components": children})
            elif component.get("type") == 18:
                result.append({"type": 18, "component": submitted(component["component"])})
        return result

    def _synced_command(self, name: str, kind: int, channel: FakeChannel) -> dict[str, Any]:
        scopes = ([channel.guild_id] if channel.guild_id else []) + [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == kind:
                    return command
        raise LookupError(
            f"no synced command {name!r} (type {kind}) for channel {channel.id}; "
            f"synced: { {k: [c['name'] for c in v] for k, v in self.commands.items()} }"
        )

    def _command_options(
        self, command: dict[str, Any], options: dict[str, Any], channel: FakeChannel
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        definitions = {o["name"]: o for o in command.get("options", [])}
        unknown = set(options) - set(definitions)
        if unknown:
            raise ValueError(f"/{command['name']} has no options {sorted(unknown)}")
        missing = [n for n, o in definitions.items() if o.get("required") and n not in options]
        if missing:
            raise ValueError(f"/{command['name']} needs options {missing}")
        result: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            kind = definitions[name]["type"]
            result.append(
                {
                    "name": name,
                    "type": kind,
                    "value": self._option_value(kind, value, channel, resolved),
                }
            )
        return result, resolved

    def _option_value(
        self, kind: int, value: Any, channel: FakeChannel, resolved: dict[str, dict[str, Any]]
    ) -> Any:
        if kind == OPT_ATTACHMENT:
            attachment = self._new_attachment(channel.id, _as_upload(value))
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_api()
            return str(attachment.id)
        if kind == OPT_USER:
            user = value if isinstance(value, FakeUser) else self.users[int(value)]
            resolved.setdefault("users", {})[str(user.id)] = user.to_api()
            return str(user.id)
        converters: dict[int, Callable[[Any], Any]] = {
            OPT_STRING: str,
            OPT_INTEGER: int,
            OPT_BOOLEAN: bool,
            OPT_NUMBER: float,
        }
        if kind not in converters:
            raise ValueError(f"option type {kind} is not supported by the fake")
        return converters[kind](value)

    def _start_interaction(
        self,
        kind: int,
        data: dict[str, Any],
        channel: FakeChannel,
        user: FakeUser | None,
        *,
        locale: str | None = None,
        attachment_size_limit: int | None = None,
        app_permissions: int = DEFAULT_PERMISSIONS,
        message: StoredMessage | None = None,
    ) -> FakeInteraction:
        user = user or (channel.recipient if channel.is_dm and channel.recipient else ALICE)
        self._check_member(channel, user)
        guild = self.guilds.get(channel.guild_id or 0)
        limit = attachment_size_limit or (guild.upload_limit if guild else UPLOAD_LIMITS[0])
        iid = self._snowflake()
        token = f"aW50ZXJhY3Rpb246{iid}:{secrets.token_urlsafe(24)}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": {**channel.to_api(), "permissions": str(DEFAULT_PERMISSIONS)},
            "locale": locale or user.locale,
            "app_permissions": str(app_permissions),
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": limit,
            "context": 0 if guild else 1,
        }
        owners = {"0": str(guild.id)} if guild else {"1": str(user.id)}
        payload["authorizing_integration_owners"] = owners
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.locale, "features": []}
            payload["guild_locale"] = guild.locale
            member = guild.member_api(user)
            member["permissions"] = str(DEFAULT_PERMISSIONS)
            payload["member"] = member
        else:
            payload["user"] = user.to_api()
        if message is not None:
            payload["message"] = message.to_api()
        interaction = FakeInteraction(
            id=iid,
            token=token,
            type=kind,
            payload=payload,
            channel=channel,
            user=user,
            attachment_size_limit=limit,
            message=message,
        )
        self.interactions.append(interaction)
        self._dispatch_all("INTERACTION_CREATE", lambda session: payload, channel.guild_id)
        return interaction

    # ---------------------------------------------------------------- gateway: dispatching

    def _live_session(self, shard: tuple[int, int] | None = None) -> GatewaySession | None:
        for session in reversed(self.sessions):
            live = not session.invalid and session.connection is not None
            if live and shard in (None, session.shard):
                return session
        return None

    def _open_sessions(self) -> list[GatewaySession]:
        # A session whose connection dropped keeps its events for a RESUME, as on Discord.
        return [s for s in self.sessions if not s.invalid]

    def _sessions_for(self, guild_id: int | None) -> list[GatewaySession]:
        """The open sessions that get the events of ``guild_id`` (None: a DM's): its shard's."""
        return [s for s in self._open_sessions() if s.receives(guild_id)]

    def _dispatch_all(
        self,
        event: str,
        build: Callable[[GatewaySession], dict[str, Any] | None],
        guild_id: int | None,
    ) -> None:
        if not self._open_sessions():
            raise LookupError(
                f"no bot is connected to the fake gateway to receive {event}; start the client "
                "first (running_client / await fake.wait_connected())"
            )
        sessions = self._sessions_for(guild_id)
        if not sessions:
            raise LookupError(
                f"no session holds the shard of guild {guild_id} to receive {event} (sessions' "
                f"shards: {[s.shard for s in self._open_sessions()]})"
            )
        for session in sessions:
            data = build(session)
            if data is not None:
                self._send_event(session, event, data)

    def _send_event(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.connection is not None:
            session.connection.queue.put_nowait(json.dumps(frame))

    def _dispatch_message(self, event: str, message: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE as each session may see it (intents, message content)."""

        def build(session: GatewaySession) -> dict[str, Any] | None:
            needed = INTENT_GUILD_MESSAGES if message.guild_id else INTENT_DIRECT_MESSAGES
            if not session.intents & needed:
                return None
            data = message.to_api(gateway=True)
            if message.guild_id is not None:
                guild = self.guilds[message.guild_id]
                data["member"] = guild.member_api(message.author, with_user=False)
                for mention in data["mentions"]:
                    mentioned = self.users[int(mention["id"])]
                    mention["member"] = guild.member_api(mentioned, with_user=False)
            if not self._content_visible(session, message):
                for key, empty in (("content", ""), ("attachments", []), ("embeds", [])):
                    data[key] = empty
                data["components"] = []
            return data

        if message.ephemeral or message.deleted:
            return  # ephemeral messages exist only for their user
        if self._sessions_for(message.guild_id):  # else nobody holds its shard
            self._dispatch_all(event, build, message.guild_id)

    def _content_visible(self, session: GatewaySession, message: StoredMessage) -> bool:
        # Without the message content intent: DMs, mentions of the bot and its own messages only.
        return (
            bool(session.intents & INTENT_MESSAGE_CONTENT)
            or message.guild_id is None
            or message.author == self.bot
            or self.bot in message.mentions
        )

    def _dispatch_delete(self, message: StoredMessage) -> None:
        if message.ephemeral or not self._sessions_for(message.guild_id):
            return
        data = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id:
            data["guild_id"] = str(message.guild_id)
        self._dispatch_all("MESSAGE_DELETE", lambda session: data, message.guild_id)

    # ---------------------------------------------------------------- gateway: protocol

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(request.path, dict(request.query), ws)
        self.connections.append(connection)
        writer = asyncio.create_task(self._gateway_writer(connection))
        hello = {
            "op": 10,
            "d": {"heartbeat_interval": self.heartbeat_interval_ms},
            "s": None,
            "t": None,
        }
        connection.queue.put_nowait(json.dumps(hello))
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                connection.received.append(payload)
                await self._on_gateway_payload(connection, payload)
                self._pulse()
        except Exception as exc:  # a bug in the fake: remember it for the fixture
            self.server_errors.append(exc)
        finally:
            await self._gateway_closed(connection, writer)
        return ws

    async def _gateway_writer(self, connection: GatewayConnection) -> None:
        # One writer per connection keeps frames in order although tests inject synchronously.
        while True:
            text = await connection.queue.get()
            if text is None or connection.ws.closed:
                return
            try:
                await connection.ws.send_str(text)
                connection.sent.append(json.loads(text))
            except ConnectionError:  # the client went away; a RESUME replays from the session
                return

    async def _gateway_closed(
        self, connection: GatewayConnection, writer: asyncio.Task[None]
    ) -> None:
        if connection.close_code is None:  # else the fake closed it, with this code
            connection.close_code = connection.ws.close_code
        connection.queue.put_nowait(None)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            # A clean close (1000/1001) ends the session on Discord; others can be resumed.
            if connection.close_code in (1000, 1001):
                session.invalid = True
        self._pulse()

    @staticmethod
    async def _close(connection: GatewayConnection, code: int, reason: str) -> None:
        """Close as Discord does when it refuses something (the client cannot resume)."""
        connection.close_code = code
        await connection.ws.close(code=code, message=reason.encode())

    async def _on_gateway_payload(
        self, connection: GatewayConnection, payload: dict[str, Any]
    ) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:
            self.heartbeats += 1
            connection.queue.put_nowait(json.dumps({"op": 11}))
        elif op == 2:
            await self._identify(connection, data or {})
        elif op == 6:
            await self._resume(connection, data or {})
        elif op == 8:
            self._request_members(connection, data or {})
        elif op in (3, 4):
            pass  # presence and voice state updates: accepted, not modelled
        else:
            await self._close(connection, 4001, "Unknown opcode.")

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await self._close(connection, 4004, "Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        for name, bit in PRIVILEGED_INTENTS.items():
            if intents & bit and name not in self.privileged_intents:
                await self._close(connection, 4014, "Disallowed intent(s).")
                return
        shard = self._shard_of_identify(data.get("shard"))
        refusal = self._shard_refusal(shard)
        if refusal is not None:
            await self._close(connection, *refusal)
            return
        assert shard is not None
        session = GatewaySession(secrets.token_hex(16), intents, connection=connection, shard=shard)
        connection.kind, connection.session = "identify", session
        self.sessions.append(session)
        self._send_event(session, "READY", self._ready(session))
        for guild in self._guilds_of(session):
            self._send_event(session, "GUILD_CREATE", self._guild_create(guild, session))

    @staticmethod
    def _shard_of_identify(given: Any) -> tuple[int, int] | None:
        """IDENTIFY's ``shard: [id, count]`` (absent: shard 0 of 1); None when malformed."""
        if given is None:
            return (0, 1)
        if isinstance(given, list) and len(given) == 2 and all(type(n) is int for n in given):
            return (given[0], given[1])
        return None

    def _shard_refusal(self, shard: tuple[int, int] | None) -> tuple[int, str] | None:
        """Why Discord would close an IDENTIFY as ``shard``: the close code and reason."""
        if shard is None or not 0 <= shard[0] < shard[1]:
            return CLOSE_INVALID_SHARD, "Invalid shard."
        counts = {s.shard[1] for s in self.sessions if s.connection is not None and not s.invalid}
        if counts - {shard[1]}:  # stricter than Discord: processes that disagree lose events
            return CLOSE_INVALID_SHARD, "Invalid shard."
        held = sum(1 for g in self.guilds if shard_of(g, shard[1]) == shard[0])
        if held > self.max_guilds_per_shard:
            return CLOSE_SHARDING_REQUIRED, "Sharding required."
        return None

    def _guilds_of(self, session: GatewaySession) -> list[FakeGuild]:
        return [g for g in self.guilds.values() if session.receives(g.id)]

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = next((s for s in self.sessions if s.id == data.get("session_id")), None)
        connection.kind = "resume"
        if data.get("token") != self.token:
            await self._close(connection, 4004, "Authentication failed.")
            return
        if session is None or session.invalid:
            connection.queue.put_nowait(json.dumps({"op": 9, "d": False}))
            return
        connection.session, session.connection = session, connection
        last = int(data.get("seq") or 0)
        for frame in session.events:
            if frame["s"] > last:
                connection.queue.put_nowait(json.dumps(frame))
        session.seq += 1
        resumed = {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}
        connection.queue.put_nowait(json.dumps(resumed))

    def _request_members(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        guild = self.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or connection.session is None:
            return
        chunk = {
            "guild_id": str(guild.id),
            "members": [guild.member_api(u) for u in guild.members],
            "chunk_index": 0,
            "chunk_count": 1,
            "nonce": data.get("nonce"),
        }
        self._send_event(connection.session, "GUILD_MEMBERS_CHUNK", chunk)

    def _application_flags(self) -> int:
        return sum(_APP_FLAG_FOR_INTENT[name] for name in self.privileged_intents)

    def _ready(self, session: GatewaySession) -> dict[str, Any]:
        ready = {
            "v": 10,
            "user": {**self.bot.to_api(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self._guilds_of(session)],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
        }
        if session.shard != (0, 1):
            ready["shard"] = list(session.shard)
        return ready

    def _guild_create(self, guild: FakeGuild, session: GatewaySession) -> dict[str, Any]:
        everyone = {
            "id": str(guild.id),
            "name": "@everyone",
            "permissions": str(DEFAULT_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id or guild.members[0].id),
            "features": [],
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "channels": [c.to_api() for c in guild.channels],
            "threads": [],
            "members": [guild.member_api(u) for u in self._listed_members(guild, session)],
            "member_count": len(guild.members),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_tier": guild.premium_tier,
            "preferred_locale": guild.locale,
            "joined_at": _iso(guild.joined_at),
            "large": False,
            "unavailable": False,
            "system_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
        }

    def _listed_members(self, guild: FakeGuild, session: GatewaySession) -> list[FakeUser]:
        # Without the members intent GUILD_CREATE lists only the bot itself.
        if session.intents & INTENT_GUILD_MEMBERS:
            return list(guild.members)
        return [self.bot]

    # ---------------------------------------------------------------- CDN

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]  # already percent-decoded by aiohttp
        attachment = self._attachments.get(path)
        if attachment is None:
            return web.Response(status=404, text="Not Found")
        self.downloads.append(attachment)
        self._pulse()
        return web.Response(
            body=attachment.data, content_type=attachment.content_type or "application/octet-stream"
        )

    # ---------------------------------------------------------------- REST: plumbing

    def _build_routes(self) -> list[tuple[str, str, re.Pattern[str], Handler, bool]]:
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", "/users/@me", self._get_me, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/@me", self._get_application, True),
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway, True),
            ("POST", "/users/@me/channels", self._create_dm, True),
            ("GET", "/users/{user_id}", self._get_user, True),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("POST", "/channels/{channel_id}/typing", self._typing, True),
            ("POST", "/channels/{channel_id}/messages", self._post_message, True),
            ("GET", "/channels/{channel_id}/messages", self._history, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message, True),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._add_reaction,
                True,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._remove_reaction,
                True,
            ),
            ("GET", "/applications/{app_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{app_id}/commands", self._put_commands, True),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands, True),
            # Interaction endpoints authenticate with the interaction token in the path.
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback, False),
            ("POST", "/webhooks/{app_id}/{token}", self._followup, False),
            (
                "GET",
                "/webhooks/{app_id}/{token}/messages/{message_id}",
                self._get_webhook_message,
                False,
            ),
            (
                "PATCH",
                "/webhooks/{app_id}/{token}/messages/{message_id}",
                self._edit_webhook_message,
                False,
            ),
            (
                "DELETE",
                "/webhooks/{app_id}/{token}/messages/{message_id}",
                self._delete_webhook_message,
                False,
            ),
        ]
        return [(m, t, _route_regex(t), h, auth) for m, t, h, auth in table]

    def _match(
        self, method: str, raw_path: str
    ) -> tuple[str, dict[str, str], Handler | None, bool]:
        path_matched = False
        for route_method, template, regex, handler, auth in self._routes:
            match = regex.match(raw_path)
            if match is None:
                continue
            path_matched = True
            if route_method == method:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return f"{method} {template}", params, handler, auth
        return f"{method} {raw_path}", {}, None, path_matched

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path[len(API_PREFIX) :].rstrip("/") or "/"
        route, params, handler, auth = self._match(request.method, raw_path)
        call = Call(request.method, raw_path, route, params, dict(request.query), None, [])
        try:
            call.payload, call.files = await self._parse(request)
            status, body = await self._answer(request, call, handler, auth)
        except DiscordError as exc:
            status, body = exc.status, exc.body()
            call.status, call.response = status, body
            self.calls.append(call)
            self._pulse()
            return self._json(status, body, exc.headers)
        except Exception as exc:  # a bug in the fake: 500, remembered for the fixture
            self.server_errors.append(exc)
            status, body = 500, {"message": f"fake failed: {exc!r}", "code": 0}
        call.status, call.response = status, body
        self.calls.append(call)
        self._pulse()
        return self._json(status, body)

    async def _answer(
        self, request: web.Request, call: Call, handler: Handler | None, auth: bool
    ) -> tuple[int, Any]:
        if handler is None:
            if auth:  # the path exists with another method
                raise DiscordError(405, 0, "405: Method Not Allowed")
            raise DiscordError(404, 0, "404: Not Found")
        if auth and request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")
        self._maybe_fail(call)
        return await handler(
            _Request(call.method, call.params, call.query, call.payload, call.files)
        )

    def _maybe_fail(self, call: Call) -> None:
        for index, failure in enumerate(self._failures):
            if failure.method and failure.method != call.method:
                continue
            # ``route`` is a path template such as "/channels/{channel_id}/messages".
            if failure.route and failure.route != call.route.split(" ", 1)[1]:
                continue
            del self._failures[index]
            extra: dict[str, Any] = {}
            headers: dict[str, str] = {}
            if failure.retry_after is not None:
                extra = {"retry_after": failure.retry_after, "global": failure.is_global}
                # discord.py treats a 429 without "Via" as a Cloudflare ban, not a rate limit.
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": str(failure.retry_after),
                    "X-RateLimit-Scope": "global" if failure.is_global else "user",
                }
            raise DiscordError(failure.status, failure.code, failure.message, None, headers, extra)

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        if status == 204 or body is None:
            return web.Response(status=204, headers=headers)
        # Exactly "application/json": discord.py compares the header, a charset breaks parsing.
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)

    @staticmethod
    async def _parse(request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            files: list[UploadedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.filename is not None:
                    data = bytes(await part.read())
                    ctype = part.headers.get("Content-Type")
                    files.append(UploadedFile(part.name, part.filename, ctype, data))
            return payload, files
        body = await request.read()
        if not body.strip():
            return None, []
        try:
            return json.loads(body), []
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    # ---------------------------------------------------------------- REST: identity

    async def _get_me(self, req: _Request) -> tuple[int, Any]:
        user = {**self.bot.to_api(), "verified": True, "mfa_enabled": False, "flags": 0}
        return 200, {**user, "locale": "en-US", "premium_type": 0, "email": None}

    async def _get_application(self, req: _Request) -> tuple[int, Any]:
        owner = ALICE.to_api()
        return 200, {
            "id": str(self.application_id),
            "name": self.bot.username,
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "0" * 64,
            "team": None,
            "flags": self._application_flags(),
            "bot": self.bot.to_api(),
            "summary": "",
            "interactions_endpoint_url": None,  # set, discord.py would get no interactions
            "redirect_uris": [],
            "tags": [],
            "approximate_guild_count": len(self.guilds),
        }

    async def _get_gateway(self, req: _Request) -> tuple[int, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        shards = self.recommended_shards or -(-len(self.guilds) // GUILDS_PER_RECOMMENDED_SHARD)
        body = {
            "url": str(self.gateway_url),
            "shards": max(shards, 1),
            "session_start_limit": limit,
        }
        return 200, body

    async def _get_user(self, req: _Request) -> tuple[int, Any]:
        user = self.users.get(int(req.params["user_id"]))
        if user is None:
            raise _unknown("User", 10013)
        return 200, user.to_api()

    async def _create_dm(self, req: _Request) -> tuple[int, Any]:
        user = self.users.get(int((req.payload or {}).get("recipient_id", 0)))
        if user is None:
            raise _invalid_form("recipient_id", "NUMBER_TYPE_COERCE", "Value is not snowflake.")
        return 200, self.dm_channel(user).to_api()

    async def _get_channel(self, req: _Request) -> tuple[int, Any]:
        return 200, self._rest_channel(req).to_api()

    def _rest_channel(self, req: _Request) -> FakeChannel:
        channel = self.channels.get(int(req.params["channel_id"]))
        if channel is None:
            raise _unknown("Channel", 10003)
        return channel

    # ---------------------------------------------------------------- REST: channel messages

    async def _typing(self, req: _Request) -> tuple[int, Any]:
        channel = self._rest_channel(req)
        self.typing.append((channel.id, time.monotonic()))
        return 204, None

    def _upload_limit(self, channel: FakeChannel) -> int:
        guild = self.guilds.get(channel.guild_id or 0)
        return guild.upload_limit if guild else UPLOAD_LIMITS[0]

    async def _post_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._rest_channel(req)
        message = self._build_bot_message(
            channel, req.payload or {}, req.files, self._upload_limit(channel), "channel"
        )
        self._store_and_dispatch(message)
        return 200, message.to_api()

    def _build_bot_message(
        self,
        channel: FakeChannel,
        payload: dict[str, Any],
        files: list[UploadedFile],
        limit: int,
        source: str,
        interaction: FakeInteraction | None = None,
    ) -> StoredMessage:
        """Validate a message payload as Discord does and build (not store) the message."""
        content = self._checked_content(payload.get("content"))
        components = self._checked_components(payload.get("components"), payload.get("flags"))
        attachments = self._attachments_from(channel, payload, files, limit, [])
        embeds = list(payload.get("embeds") or [])
        if not (content or attachments or embeds or components or payload.get("sticker_ids")):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        referenced = self._referenced(channel, payload.get("message_reference"))
        message = StoredMessage(
            id=self._snowflake(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.bot,
            content=content,
            attachments=attachments,
            components=components,
            embeds=embeds,
            flags=int(payload.get("flags") or 0),
            type=19 if referenced else 0,
            referenced=referenced,
            interaction=interaction,
            source=source,
            payload=payload,
        )
        replied_ok = (payload.get("allowed_mentions") or {}).get("replied_user", True)
        message.mentions = self._mentions(content, referenced if replied_ok else None)
        return message

    def _store_and_dispatch(self, message: StoredMessage) -> None:
        self._messages[message.id] = message
        self._dispatch_message("MESSAGE_CREATE", message)

    @staticmethod
    def _checked_content(content: Any) -> str:
        content = "" if content is None else str(content)
        if len(content) > MAX_CONTENT:
            raise _invalid_form(
                "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
            )
        return content

    @staticmethod
    def _checked_components(components: Any, flags: Any) -> list[dict[str, Any]]:
        components = list(components or [])
        v2 = bool(int(flags or 0) & COMPONENTS_V2)
        if not v2 and len(components) > 5:
            raise _invalid_form(
                "components", "BASE_TYPE_BAD_LENGTH", "Must be between 0 and 5 in length."
            )
        for index, row in enumerate(components):
            children = (row.get("components") or []) if row.get("type") == 1 else []
            if len(children) > 5:
                raise _invalid_form(
                    f"components.{index}.components",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 5 in length.",
                )
        for component in _walk_components(components):
            if (
                "custom_id" in component
                and not 1 <= len(str(component["custom_id"])) <= MAX_CUSTOM_ID
            ):
                raise _invalid_form(
                    "components.custom_id",
                    "BASE_TYPE_BAD_LENGTH",
                    f"Must be between 1 and {MAX_CUSTOM_ID} in length.",
                )
            if (
                component.get("type") == 2
                and len(str(component.get("label") or "")) > MAX_BUTTON_LABEL
            ):
                raise _invalid_form(
                    "components.label",
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_BUTTON_LABEL} or fewer in length.",
                )
        # Discord numbers components that have no id (since 2025); discord.py reads them back.
        counter = itertools.count(1)
        for component in _walk_components(components):
            component.setdefault("id", next(counter))
        return components

    def _attachments_from(
        self,
        channel: FakeChannel,
        payload: dict[str, Any],
        files: list[UploadedFile],
        limit: int,
        existing: list[StoredAttachment],
    ) -> list[StoredAttachment]:
        """``attachments`` entries keep an existing attachment (its id) or name ``files[id]``."""
        by_part = {f.name: f for f in files}
        if len(files) > MAX_FILES:
            raise _invalid_form(
                "files", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer in length."
            )
        for part in files:
            if len(part.data) > limit:
                raise DiscordError(413, 40005, "Request entity too large")
        entries = payload.get("attachments")
        if entries is None:  # no list: every uploaded file, in order
            entries = [{"id": i} for i in range(len(files))] if files else []
            entries = [{"id": e["id"], "_keep": False} for e in entries] + [
                {"id": a.id, "_keep": True} for a in existing
            ]
        kept = {a.id: a for a in existing}
        result: list[StoredAttachment] = []
        for entry in entries:
            key = int(entry["id"])
            if key in kept and entry.get("_keep", True):
                result.append(kept[key])
                continue
            part = by_part.get(f"files[{key}]")
            if part is None:
                raise _invalid_form(
                    f"attachments.{key}", "ATTACHMENT_NOT_FOUND", "Attachment data not found"
                )
            upload = Upload(
                str(entry.get("filename") or part.filename), part.data, part.content_type
            )
            attachment = self._new_attachment(channel.id, upload)
            attachment.description = entry.get("description")
            result.append(attachment)
        return result

    def _referenced(self, channel: FakeChannel, reference: Any) -> StoredMessage | None:
        if not reference:
            return None
        target = self._messages.get(int(reference.get("message_id") or 0))
        same_channel = target is not None and target.channel_id == int(
            reference.get("channel_id") or channel.id
        )
        if target is None or target.deleted or target.ephemeral or not same_channel:
            if reference.get("fail_if_not_exists", True) is False:
                return None
            raise _invalid_form(
                "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
            )
        return target

    def _channel_message(self, req: _Request) -> StoredMessage:
        channel = self._rest_channel(req)
        message = self._messages.get(int(req.params["message_id"]))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.channel_id != channel.id
        ):
            raise _unknown("Message", 10008)
        return message

    async def _get_message(self, req: _Request) -> tuple[int, Any]:
        return 200, self._channel_message(req).to_api()

    async def _history(self, req: _Request) -> tuple[int, Any]:
        channel = self._rest_channel(req)
        limit = min(int(req.query.get("limit", 50)), 100)
        before = int(req.query.get("before", 0)) or None
        after = int(req.query.get("after", 0)) or None
        found = [
            m
            for m in self.messages(channel.id)
            if not m.deleted
            and not m.ephemeral
            and (before is None or m.id < before)
            and (after is None or m.id > after)
        ]
        newest_first = sorted(found, key=lambda m: m.id, reverse=True)
        return 200, [m.to_api() for m in newest_first[:limit]]

    async def _patch_message(self, req: _Request) -> tuple[int, Any]:
        message = self._channel_message(req)
        if message.author != self.bot:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        channel = self._channel(message.channel_id)
        self._apply_edit(
            message, req.payload or {}, req.files, self._upload_limit(channel), "PATCH"
        )
        return 200, message.to_api()

    def _apply_edit(
        self,
        message: StoredMessage,
        payload: dict[str, Any],
        files: list[UploadedFile],
        limit: int,
        source: str,
    ) -> None:
        """Change the fields present in ``payload`` (a PATCH leaves the others alone)."""
        before = message.snapshot()
        channel = self._channel(message.channel_id)
        content = (
            self._checked_content(payload["content"]) if "content" in payload else message.content
        )
        if "components" in payload:
            flags = payload.get("flags", message.flags)
            components = self._checked_components(payload["components"], flags)
        else:
            components = message.components
        if "attachments" in payload or files:
            attachments = self._attachments_from(
                channel, payload, files, limit, message.attachments
            )
        else:
            attachments = message.attachments
        message.content, message.components, message.attachments = content, components, attachments
        if "embeds" in payload:
            message.embeds = list(payload["embeds"] or [])
        if "flags" in payload and payload["flags"] is not None:
            # Only SUPPRESS_EMBEDS can change; ephemeral/loading/components v2 stay as they were.
            keep = message.flags & (EPHEMERAL | COMPONENTS_V2)
            message.flags = keep | (int(payload["flags"]) & ~(EPHEMERAL | LOADING))
        message.flags &= ~LOADING
        message.edits.append(Edit(source, payload, before))
        message.edited_at = time.time()
        self._dispatch_message("MESSAGE_UPDATE", message)

    async def _delete_message(self, req: _Request) -> tuple[int, Any]:
        message = self._channel_message(req)
        if message.author != self.bot:
            raise DiscordError(403, 50013, "Missing Permissions")  # no Manage Messages modelled
        message.deleted = True
        self._dispatch_delete(message)
        return 204, None

    async def _add_reaction(self, req: _Request) -> tuple[int, Any]:
        message = self._channel_message(req)
        message.reactions.append(req.params["emoji"])
        return 204, None

    async def _remove_reaction(self, req: _Request) -> tuple[int, Any]:
        message = self._channel_message(req)
        with contextlib.suppress(ValueError):
            message.reactions.remove(req.params["emoji"])
        return 204, None

    # ---------------------------------------------------------------- REST: application commands

    def _check_app(self, req: _Request) -> None:
        if int(req.params["app_id"]) != self.application_id:
            raise DiscordError(
                403, 20012, "You are not authorized to perform this action on this application"
            )

    async def _get_commands(self, req: _Request) -> tuple[int, Any]:
        self._check_app(req)
        guild_id = int(req.params["guild_id"]) if "guild_id" in req.params else None
        return 200, self.commands.get(guild_id, [])

    async def _put_commands(self, req: _Request) -> tuple[int, Any]:
        self._check_app(req)
        guild_id = int(req.params["guild_id"]) if "guild_id" in req.params else None
        if guild_id is not None and guild_id not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        payload = req.payload or []
        commands = [self._registered_command(c, i, guild_id) for i, c in enumerate(payload)]
        names = [(c["name"], c["type"]) for c in commands]
        if len(set(names)) != len(names):
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "_errors": [
                        {
                            "code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                            "message": "Application command names must be unique",
                        }
                    ]
                },
            )
        self.commands[guild_id] = commands
        self.command_syncs.append((guild_id, payload))
        return 200, commands

    def _registered_command(
        self, command: dict[str, Any], index: int, guild_id: int | None
    ) -> dict[str, Any]:
        kind = int(command.get("type", 1))
        name = str(command.get("name", ""))
        slash_ok = bool(re.fullmatch(r"[-_\w]{1,32}", name)) and name == name.lower()
        valid = 1 <= len(name) <= 32 and (kind != 1 or slash_ok)
        if not valid:
            raise _invalid_form(
                f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
            )
        description = str(command.get("description") or "")
        if kind == 1 and not 1 <= len(description) <= 100:
            raise _invalid_form(
                f"{index}.description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        if len(command.get("options") or []) > 25:
            raise _invalid_form(
                f"{index}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        # Discord keeps a command's id when a bulk overwrite keeps its name and type.
        key = (guild_id, name, kind)
        command_id = self._command_ids.setdefault(key, self._snowflake())
        registered = {
            **command,
            "id": str(command_id),
            "application_id": str(self.application_id),
            "type": kind,
            "description": description,
            "version": str(self._snowflake()),
            "default_member_permissions": command.get("default_member_permissions"),
            "nsfw": bool(command.get("nsfw", False)),
        }
        if guild_id is not None:
            registered["guild_id"] = str(guild_id)
        return registered

    # ---------------------------------------------------------------- REST: interactions

    def _interaction_by_token(self, token: str) -> FakeInteraction | None:
        return next((i for i in self.interactions if i.token == token), None)

    async def _callback(self, req: _Request) -> tuple[int, Any]:
        interaction = self._interaction_by_token(req.params["token"])
        if interaction is None or interaction.id != int(req.params["interaction_id"]):
            raise _unknown("interaction", 10062)
        if interaction.acknowledged:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        too_late = time.monotonic() - interaction.created_at > self.ack_deadline
        if too_late or interaction.expired:
            raise _unknown("interaction", 10062)
        payload = req.payload or {}
        kind = int(payload.get("type", 0))
        if kind not in _ALLOWED_CALLBACKS.get(interaction.type, set()):
            raise _invalid_form(
                "type", "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid"
            )
        data = dict(payload.get("data") or {})
        self._apply_callback(interaction, kind, data, req.files)
        interaction.callbacks.append(Callback(kind, data, req.files, time.monotonic()))
        if req.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        return 200, self._callback_response(interaction, kind)

    def _apply_callback(
        self,
        interaction: FakeInteraction,
        kind: int,
        data: dict[str, Any],
        files: list[UploadedFile],
    ) -> None:
        limit = interaction.attachment_size_limit
        if kind == CHANNEL_MESSAGE:
            message = self._build_bot_message(
                interaction.channel, data, files, limit, "callback", interaction
            )
            message.type = self._response_message_type(interaction)
            interaction.original = message
            self._store_and_dispatch(message)
        elif kind == DEFERRED_MESSAGE:
            flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            message = StoredMessage(
                id=self._snowflake(),
                channel_id=interaction.channel.id,
                guild_id=interaction.channel.guild_id,
                author=self.bot,
                flags=flags,
                type=self._response_message_type(interaction),
                interaction=interaction,
                source="callback",
            )
            interaction.original = message
            interaction.followups.append(message)  # the first follow-up fills it in
            self._store_and_dispatch(message)
        elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            if interaction.message is None:
                raise _invalid_form(
                    "type", "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update"
                )
            interaction.original = interaction.message
            if kind == UPDATE_MESSAGE:
                self._apply_edit(interaction.message, data, files, limit, "callback 7")
        elif kind == MODAL:
            interaction.modal = self._checked_modal(data)

    @staticmethod
    def _response_message_type(interaction: FakeInteraction) -> int:
        if interaction.type == APPLICATION_COMMAND:
            return 23 if interaction.data.get("type", 1) != 1 else 20
        return 0

    @staticmethod
    def _checked_modal(data: dict[str, Any]) -> dict[str, Any]:
        title = str(data.get("title") or "")
        if not 1 <= len(title) <= MAX_MODAL_TITLE:
            raise _invalid_form(
                "data.title",
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {MAX_MODAL_TITLE} in length.",
            )
        custom_id = str(data.get("custom_id") or "")
        if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
            raise _invalid_form(
                "data.custom_id",
                "BASE_TYPE_BAD_LENGTH",
                f"Must be between 1 and {MAX_CUSTOM_ID} in length.",
            )
        components = data.get("components") or []
        if not 1 <= len(components) <= 5:
            raise _invalid_form(
                "data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
            )
        for component in _walk_components(components):
            if (
                "custom_id" in component
                and not 1 <= len(str(component["custom_id"])) <= MAX_CUSTOM_ID
            ):
                raise _invalid_form(
                    "data.components.custom_id",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            if component.get("type") in (4, 18) and len(str(component.get("label") or "")) > 45:
                raise _invalid_form(
                    "data.components.label",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 45 or fewer in length.",
                )
        counter = itertools.count(1)
        for component in _walk_components(components):
            component.setdefault("id", next(counter))
        return data

    def _callback_response(self, interaction: FakeInteraction, kind: int) -> dict[str, Any]:
        original = interaction.original
        meta: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        resource: dict[str, Any] = {"type": kind}
        if original is not None and kind in (CHANNEL_MESSAGE, DEFERRED_MESSAGE, UPDATE_MESSAGE):
            meta["response_message_id"] = str(original.id)
            meta["response_message_loading"] = original.loading
            meta["response_message_ephemeral"] = original.ephemeral
            resource["message"] = original.to_api()
        return {"interaction": meta, "resource": resource}

    def _webhook_interaction(self, req: _Request) -> FakeInteraction:
        interaction = self._interaction_by_token(req.params["token"])
        if interaction is None or int(req.params["app_id"]) != self.application_id:
            raise _unknown("Webhook", 10015)
        if interaction.expired:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if not interaction.acknowledged:
            raise _unknown("Webhook", 10015)  # the webhook exists once the interaction is answered
        return interaction

    async def _followup(self, req: _Request) -> tuple[int, Any]:
        interaction = self._webhook_interaction(req)
        payload = req.payload or {}
        limit = interaction.attachment_size_limit
        loading = next((m for m in interaction.followups if m.loading and not m.deleted), None)
        if loading is not None:
            # The first follow-up after a deferral replaces the "thinking" message, keeping its
            # ephemeral state whatever the follow-up's flags say.
            self._apply_edit(
                loading,
                {k: v for k, v in payload.items() if k != "flags"},
                req.files,
                limit,
                "followup",
            )
            message = loading
        else:
            message = self._build_bot_message(
                interaction.channel, payload, req.files, limit, "followup", interaction
            )
            interaction.followups.append(message)
            self._store_and_dispatch(message)
        if req.query.get("wait") not in ("1", "true", "True"):
            return 204, None
        return 200, message.to_api()

    def _webhook_message(self, req: _Request) -> tuple[FakeInteraction, StoredMessage]:
        interaction = self._webhook_interaction(req)
        key = req.params["message_id"]
        if key == "@original":
            message = interaction.original
        else:
            message = next((m for m in interaction.messages if m.id == int(key)), None)
        if message is None or message.deleted:
            raise _unknown("Message", 10008)
        return interaction, message

    async def _get_webhook_message(self, req: _Request) -> tuple[int, Any]:
        return 200, self._webhook_message(req)[1].to_api()

    async def _edit_webhook_message(self, req: _Request) -> tuple[int, Any]:
        interaction, message = self._webhook_message(req)
        self._apply_edit(
            message,
            req.payload or {},
            req.files,
            interaction.attachment_size_limit,
            "webhook PATCH",
        )
        return 200, message.to_api()

    async def _delete_webhook_message(self, req: _Request) -> tuple[int, Any]:
        _, message = self._webhook_message(req)
        message.deleted = True
        self._dispatch_delete(message)
        return 204, None


# --------------------------------------------------------------------------------------------
# Running things
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def run_fake_discord(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    """``async with run_fake_discord() as fake:`` -- started, discord.py pointed at it, stopped."""
    fake = FakeDiscord(**kwargs)
    await fake.start()
    try:
        with fake.patched():
            yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def running_client(
    fake: FakeDiscord,
    client: discord.Client,
    *,
    token: str | None = None,
    timeout: float = 5,
) -> AsyncIterator[discord.Client]:
    """Log ``client`` in, connect it and wait for on_ready; close it (cleanly) on exit.

    Pass ``guild_ready_timeout`` small (e.g. 0.05) to the client: discord.py waits that long after
    the last GUILD_CREATE before it is ready (2 s by default).
    """
    with fake.patched():
        try:
            await client.login(token or fake.token)
        except BaseException:
            await client.close()  # login opened an HTTP session
            raise
        connect = asyncio.create_task(client.connect(reconnect=True), name="fake-discord-client")
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {connect, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if connect in done:
                connect.result()  # raises what stopped the client (e.g. PrivilegedIntentsRequired)
                raise RuntimeError("the client stopped before it was ready")
            if ready not in done:
                raise AssertionError(f"client not ready after {timeout}s\n{fake.describe()}")
            yield client
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(connect, timeout)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py's URLs pointed at it (function scope)."""
    async with run_fake_discord() as fake:
        yield fake
    if fake.server_errors:
        raise AssertionError(f"the fake Discord server failed: {fake.server_errors!r}")
