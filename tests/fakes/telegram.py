"""A fake Telegram Bot API server for end-to-end tests with a real python-telegram-bot app.

In the spirit of aiogram's ``mocked_bot``, but over real HTTP: an ``aiohttp.web`` server on
127.0.0.1 (ephemeral port) that a real ``telegram.ext.Application`` talks to unchanged::

    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)            # f"{fake.root}/bot"
        .base_file_url(fake.base_file_url)  # f"{fake.root}/file/bot"
        .build()
    )

The fake records every request (``fake.calls``), stores every message the bot sends per chat
(``fake.sent(chat_id)``) and lets the test inject user activity (``fake.user_sends_text`` /
``user_sends_photo`` / ``user_presses_button``; payments in Telegram Stars: ``fake.payments``,
tests/fakes/telegram_payments.py) that the bot receives through ``getUpdates``, or, once the bot
set a webhook, by POST (``fake.webhook``: tests/fakes/telegram_webhook.py).

Realistic behaviour that the fake enforces (each one a real Telegram error, so a bug that would
break in production breaks the test too): dates in Unix seconds, message ids per chat, text and
caption limits, photo size/dimension limits, HTML / Markdown / MarkdownV2 parse errors, "message
is not modified", editing or deleting unknown messages, callback_data over 64 bytes, unknown
chats, unknown callback query ids, invalid reaction emoji, file download limits. Editing a
message's text or caption without ``reply_markup`` removes its inline keyboard, as on Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import itertools
import json
import mimetypes
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import BodyPartReader, web
from PIL import Image
from telegram.constants import ReactionEmoji

from tests.fakes.telegram_payments import FakePayments
from tests.fakes.telegram_webhook import GET_UPDATES_CONFLICT, FakeWebhook
from tests.images import make_png

__all__ = [
    "ApiError",
    "Call",
    "Edit",
    "FakeTelegram",
    "FakeUser",
    "StoredFile",
    "StoredMessage",
    "UploadedFile",
    "default_user",
    "make_png",
    "run_fake_telegram",
    "telegram",
]

TOKEN = "123456:TEST-TOKEN"
BOT_ID = 999
BOT_USERNAME = "stepedit_test_bot"
BOT_FIRST_NAME = "StepEdit"

# Telegram's limits (https://core.telegram.org/bots/api).
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_DIMENSIONS_SUM = 10_000
MAX_PHOTO_RATIO = 20
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
MAX_CALLBACK_DATA_BYTES = 64
THUMBNAIL_SIDE = 320

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup of "
    "the existing message are exactly the same as a previous ones"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"

# Parameters that are plain strings even when they look like JSON ("42", "true", "[1]").
_TEXT_PARAMS = frozenset(
    {
        "action",
        "animation",
        "audio",
        "business_connection_id",
        "callback_query_id",
        "caption",
        "currency",
        "custom_title",
        "data",
        "description",
        "document",
        "emoji",
        "error_message",
        "file_id",
        "inline_message_id",
        "ip_address",
        "language_code",
        "message_effect_id",
        "name",
        "parse_mode",
        "payload",
        "photo",
        "pre_checkout_query_id",
        "provider_token",
        "query",
        "secret_token",
        "short_description",
        "sticker",
        "telegram_payment_charge_id",
        "text",
        "thumbnail",
        "title",
        "url",
        "video",
        "voice",
    }
)

_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_REACTION_EMOJI = frozenset(e.value for e in ReactionEmoji)
_BUTTON_ACTIONS = frozenset(
    {
        "url",
        "callback_data",
        "web_app",
        "login_url",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    }
)
# Methods that need no behaviour here: answered with ``true`` and recorded.
_HARMLESS = frozenset(
    {
        "setmydescription",
        "setmyshortdescription",
        "setmyname",
        "setchatmenubutton",
        "setmydefaultadministratorrights",
        "pinchatmessage",
        "unpinchatmessage",
        "unpinallchatmessages",
        "leavechat",
    }
)


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Bot API error, answered as ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass(frozen=True)
class FakeUser:
    """A Telegram user. ``language_code`` is what Telegram sends, e.g. "en" or "zh-hans"."""

    id: int
    first_name: str
    language_code: str | None = "en"
    username: str | None = None
    last_name: str | None = None
    is_bot: bool = False

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data


def default_user(**overrides: Any) -> FakeUser:
    """Alice, id 4242, English. Keyword arguments override fields."""
    values: dict[str, Any] = {
        "id": 4242,
        "first_name": "Alice",
        "language_code": "en",
        "username": "alice",
    }
    values.update(overrides)
    return FakeUser(**values)


def _as_user(user: FakeUser | dict[str, Any] | None) -> FakeUser:
    if user is None:
        return default_user()
    if isinstance(user, FakeUser):
        return user
    return FakeUser(**user)


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class StoredFile:
    """A file known to the fake: resolvable by ``file_id`` via getFile and the download URL."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    mime_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Call:
    """One Bot API request. Appended to ``fake.calls`` once it has been answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    http_status: int = 200
    result: Any = None
    error: dict[str, Any] | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        status = "ok" if self.ok else f"error {self.error}"
        return f"Call({self.method} {self.params} files={sorted(self.files)} -> {status})"


@dataclass(frozen=True)
class Edit:
    """One edit of a message: the method, its parsed params and the fields before the edit."""

    method: str
    params: dict[str, Any]
    before: dict[str, Any]


@dataclass(eq=False)
class StoredMessage:
    """A message in a chat, sent by the bot (``from_bot``) or injected as a user's.

    ``text``/``caption`` are the raw strings as sent (including HTML/Markdown markup if a
    ``parse_mode`` was used); ``plain_text``/``plain_caption`` are what the user sees.
    """

    chat_id: int
    message_id: int
    date: int
    from_bot: bool
    sender: dict[str, Any]
    chat: dict[str, Any]
    method: str
    text: str | None = None
    entities: list[dict[str, Any]] | None = None
    caption: str | None = None
    caption_entities: list[dict[str, Any]] | None = None
    parse_mode: str | None = None
    photo: list[dict[str, Any]] | None = None
    photo_bytes: bytes | None = None
    document: dict[str, Any] | None = None
    document_bytes: bytes | None = None
    sticker: dict[str, Any] | None = None
    reply_markup: dict[str, Any] | None = None
    reply_to: StoredMessage | None = None
    deleted: bool = False
    edits: list[Edit] = field(default_factory=list)
    edit_date: int | None = None
    reactions: list[str] = field(default_factory=list)
    update_id: int | None = None
    media_group_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # Sent on behalf of a chat: a channel ("send as"), or the group itself (anonymous admin)
    sender_chat: dict[str, Any] | None = None
    # Other fields of the Bot API's Message, as sent: an invoice, a successful_payment, ...
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def reply_to_message_id(self) -> int | None:
        return self.reply_to.message_id if self.reply_to else None

    @property
    def kind(self) -> str:
        if self.photo is not None:
            return "photo"
        if self.document is not None:
            return "document"
        if "invoice" in self.extras:
            return "invoice"
        return "text"

    @property
    def plain_text(self) -> str | None:
        return None if self.text is None else _render(self.text, self.parse_mode)

    @property
    def plain_caption(self) -> str | None:
        return None if self.caption is None else _render(self.caption, self.parse_mode)

    @property
    def file_id(self) -> str | None:
        """The file_id of the largest photo size or of the document."""
        if self.photo:
            return str(self.photo[-1]["file_id"])
        if self.document:
            return str(self.document["file_id"])
        return None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Inline keyboard buttons, flattened row by row."""
        if not self.reply_markup:
            return []
        rows = self.reply_markup.get("inline_keyboard") or []
        return [button for row in rows for button in row]

    @property
    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons if "callback_data" in b]

    def snapshot(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "caption": self.caption,
            "parse_mode": self.parse_mode,
            "reply_markup": self.reply_markup,
            "photo_bytes": self.photo_bytes,
            "document_bytes": self.document_bytes,
        }

    def to_api(self, include_reply: bool = True) -> dict[str, Any]:
        """The Bot API ``Message`` object for the message's current state."""
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
        }
        if self.sender_chat is not None:
            data["sender_chat"] = self.sender_chat
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if self.media_group_id:
            data["media_group_id"] = self.media_group_id
        if self.text is not None:
            data["text"] = self.plain_text
            if self.entities:
                data["entities"] = self.entities
        if self.photo is not None:
            data["photo"] = self.photo
        if self.document is not None:
            data["document"] = self.document
        if self.sticker is not None:
            data["sticker"] = self.sticker
        if self.caption is not None:
            data["caption"] = self.plain_caption
            if self.caption_entities:
                data["caption_entities"] = self.caption_entities
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            data["reply_markup"] = {"inline_keyboard": self.reply_markup["inline_keyboard"]}
        if include_reply and self.reply_to is not None:
            data["reply_to_message"] = self.reply_to.to_api(include_reply=False)
        return {**data, **self.extras}

    def __repr__(self) -> str:
        who = "bot" if self.from_bot else f"user {self.sender.get('id')}"
        parts = [f"#{self.message_id} in {self.chat_id} from {who}", self.kind]
        if self.text is not None:
            parts.append(f"text={self.text[:60]!r}")
        if self.caption is not None:
            parts.append(f"caption={self.caption[:60]!r}")
        if self.callback_data:
            parts.append(f"buttons={self.callback_data}")
        if self.reply_to is not None:
            parts.append(f"reply_to={self.reply_to.message_id}")
        if self.edits:
            parts.append(f"edits={len(self.edits)}")
        if self.deleted:
            parts.append("deleted")
        return f"StoredMessage({', '.join(parts)})"


@dataclass(frozen=True)
class CallbackPress:
    """What ``user_presses_button`` injected."""

    query_id: str
    update_id: int
    chat_id: int
    message_id: int
    data: str
    update: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Text helpers: entities, parse modes
# --------------------------------------------------------------------------------------------

_COMMAND_RE = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w@/])")
_MENTION_RE = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{3,32}(?!\w)")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def make_entities(text: str) -> list[dict[str, Any]]:
    """``bot_command`` and ``mention`` entities as Telegram generates them (UTF-16 offsets)."""
    found: list[tuple[int, int, str]] = []
    for m in _COMMAND_RE.finditer(text):
        found.append((m.start(), m.end(), "bot_command"))
    for m in _MENTION_RE.finditer(text):
        found.append((m.start(), m.end(), "mention"))
    found.sort()
    return [
        {
            "offset": _utf16_len(text[:start]),
            "length": _utf16_len(text[start:end]),
            "type": kind,
        }
        for start, end, kind in found
    ]


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _parse_error(description: str) -> ApiError:
    return _bad(f"can't parse entities: {description}")


_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_TAG_NAME_RE = re.compile(r"[^\s>]*")


def _parse_html(text: str) -> str:
    """Validate Telegram HTML (like tdlib does) and return the plain text."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            if m:
                out.append(html.unescape(m.group()))
                i = m.end()
                continue
            out.append(char)
            i += 1
        elif char == "<":
            offset = _byte_offset(text, i)
            if text.startswith("</", i):
                end = text.find(">", i)
                if end == -1:
                    raise _parse_error(f"Unclosed end tag at byte offset {offset}")
                name = text[i + 2 : end].strip().lower()
                if not stack:
                    raise _parse_error(f"Unexpected end tag at byte offset {offset}")
                if name and name != stack[-1]:
                    raise _parse_error(
                        f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1]}>", '
                        f'found "</{name}>"'
                    )
                stack.pop()
                i = end + 1
            else:
                m = _TAG_NAME_RE.match(text, i + 1)
                name = m.group().lower() if m else ""
                if name not in _HTML_TAGS:
                    raise _parse_error(f'Unsupported start tag "{name}" at byte offset {offset}')
                end = text.find(">", i)
                if end == -1:
                    raise _parse_error(f"Unclosed start tag at byte offset {offset}")
                stack.append(name)
                i = end + 1
        else:
            out.append(char)
            i += 1
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


_MDV2_RESERVED = frozenset("#+-={}.!()>|")
_MDV2_FORMAT = frozenset("*_~[]")


def _parse_markdown_v2(text: str) -> str:
    """Validate MarkdownV2 reserved characters (the common failure) and return the plain text.

    Formatting characters are stripped without checking that they are balanced.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        elif text.startswith("```", i):
            end = text.find("```", i + 3)
            if end == -1:
                raise _parse_error(
                    f"Can't find end of Pre entity at byte offset {_byte_offset(text, i)}"
                )
            body = text[i + 3 : end]
            first, newline, rest = body.partition("\n")
            if newline and first and " " not in first:
                body = rest  # language line
            out.append(re.sub(r"\\(.)", r"\1", body))
            i = end + 3
        elif char == "`":
            end = text.find("`", i + 1)
            if end == -1:
                raise _parse_error(
                    f"Can't find end of Code entity at byte offset {_byte_offset(text, i)}"
                )
            out.append(re.sub(r"\\(.)", r"\1", text[i + 1 : end]))
            i = end + 1
        elif text.startswith("](", i):
            end = i + 2
            while end < n and text[end] != ")":
                end += 2 if text[end] == "\\" else 1
            if end >= n:
                raise _parse_error(
                    f"Can't find end of a URL at byte offset {_byte_offset(text, i + 2)}"
                )
            i = end + 1
        elif char == "|" and text.startswith("||", i):
            i += 2
        elif char == "!" and text.startswith("![", i):
            i += 1  # custom emoji ![👍](tg://emoji?id=...)
        elif char == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1  # blockquote
        elif char in _MDV2_RESERVED:
            raise _parse_error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        elif char in _MDV2_FORMAT:
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _parse_markdown(text: str) -> str:
    """Validate legacy Markdown (unclosed entities) and return the plain text."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        offset = _byte_offset(text, i)
        if char == "\\" and i + 1 < n and text[i + 1] in "*_`[":
            out.append(text[i + 1])
            i += 2
        elif text.startswith("```", i):
            end = text.find("```", i + 3)
            if end == -1:
                raise _parse_error(f"Can't find end of the entity starting at byte offset {offset}")
            out.append(text[i + 3 : end])
            i = end + 3
        elif char in "*_`":
            end = text.find(char, i + 1)
            if end == -1:
                raise _parse_error(f"Can't find end of the entity starting at byte offset {offset}")
            out.append(text[i + 1 : end])
            i = end + 1
        elif char == "[":
            end = text.find("]", i + 1)
            if end == -1:
                raise _parse_error(f"Can't find end of the entity starting at byte offset {offset}")
            out.append(text[i + 1 : end])
            i = end + 1
            if text.startswith("(", i):
                close = text.find(")", i)
                i = n if close == -1 else close + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _render(text: str, parse_mode: str | None) -> str:
    """Plain text after entity parsing; raises ApiError like Telegram for invalid markup."""
    mode = (parse_mode or "").lower()
    if not mode:
        return text
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown(text)
    raise _bad(f"unsupported parse_mode {parse_mode!r}")


# --------------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------------


def _image_info(data: bytes) -> tuple[int, int, str | None] | None:
    """(width, height, format) read from the header, or None if Pillow cannot open it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.width, img.height, img.format
    except Image.DecompressionBombError:
        # Over 2 * MAX_IMAGE_PIXELS pixels: certainly more than 10000 in width + height.
        return (MAX_PHOTO_DIMENSIONS_SUM, MAX_PHOTO_DIMENSIONS_SUM, None)
    except Exception:
        return None


def _thumbnail(data: bytes) -> tuple[bytes, int, int] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                small = img.convert("RGB")
                small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                buf = io.BytesIO()
                small.save(buf, "JPEG", quality=80)
                return buf.getvalue(), small.width, small.height
    except Exception:
        return None


def _mime_for(data: bytes, filename: str | None, declared: str | None) -> str:
    if declared and declared != "application/octet-stream":
        return declared
    if filename:
        guessed = mimetypes.guess_type(filename, strict=False)[0]
        if guessed:
            return guessed
    info = _image_info(data)
    if info and info[2]:
        return Image.MIME.get(info[2], "application/octet-stream")
    return "application/octet-stream"


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


class FakeTelegram:
    """A fake Bot API server. Start with ``await fake.start()`` or ``run_fake_telegram()``."""

    def __init__(
        self,
        token: str = TOKEN,
        *,
        bot_id: int = BOT_ID,
        bot_username: str = BOT_USERNAME,
        bot_first_name: str = BOT_FIRST_NAME,
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.root = ""  # set by start()

        self.calls: list[Call] = []
        self.chats: dict[int, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[StoredFile] = []
        self.updates: list[dict[str, Any]] = []  # every injected update, delivered or not
        self.my_commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.blocked: dict[int, str] = {}
        self.long_polls = 0  # getUpdates requests currently waiting
        self.server_errors: list[BaseException] = []  # bugs in the fake itself

        self._messages: dict[int, dict[int, StoredMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._pending: list[dict[str, Any]] = []
        self._confirmed_offset = 0
        self._allowed_updates: list[str] | None = None
        self._callback_queries: dict[str, CallbackPress] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._failures: dict[str, list[ApiError]] = {}
        self._message_cursor: dict[int, int] = {}
        self._update_ids = itertools.count(10_000)
        self._file_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._media_groups = itertools.count(1)
        self._pulse_event = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.webhook = FakeWebhook(self)
        self.payments = FakePayments(self)

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"{self.root}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.root}/file/bot"

    @property
    def bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES * 2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.root = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        """Stop quickly: pending long polls return ``[]`` and test waiters are released."""
        self._closing = True
        self._pulse()
        await self.webhook.stop()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- notification

    def _pulse(self) -> None:
        event, self._pulse_event = self._pulse_event, asyncio.Event()
        event.set()

    async def _wait_pulse(self, seconds: float) -> None:
        event = self._pulse_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _wait(self, check: Callable[[], Any], seconds: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            result = check()
            if result is not None and result is not False:
                return result
            if self._closing:
                raise RuntimeError(f"FakeTelegram stopped while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"FakeTelegram: timed out after {seconds}s waiting for {what}\n"
                    + self.describe()
                )
            await self._wait_pulse(remaining)

    # ---------------------------------------------------------------- test-side inspection

    def sent(self, chat_id: int) -> list[StoredMessage]:
        """Messages the bot sent to ``chat_id``, in order (deleted ones included, flagged)."""
        return [m for m in self._messages.get(chat_id, {}).values() if m.from_bot]

    def messages(self, chat_id: int) -> list[StoredMessage]:
        """All messages of a chat (user's and bot's), in order."""
        return list(self._messages.get(chat_id, {}).values())

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        return self._messages[chat_id][message_id]

    def calls_of(self, method: str) -> list[Call]:
        wanted = method.lower()
        return [c for c in self.calls if c.method.lower() == wanted]

    def methods(self, *, include_polling: bool = False) -> list[str]:
        """Method names of all calls in order (without getUpdates unless asked)."""
        return [c.method for c in self.calls if include_polling or c.method != "getUpdates"]

    def chat_actions(self, chat_id: int) -> list[str]:
        return [
            c.params.get("action")
            for c in self.calls_of("sendChatAction")
            if c.ok and c.params.get("chat_id") == chat_id
        ]

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].data

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Injected updates not yet confirmed by the bot (via a getUpdates offset)."""
        return list(self._pending)

    def get_commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        return list(self.my_commands.get(self._commands_key(scope, language_code), []))

    def describe(self, last: int = 25) -> str:
        """A readable summary of recent calls and stored messages (used in timeout errors)."""
        lines = ["Recent calls (without getUpdates):"]
        lines += [f"  {c!r}" for c in [c for c in self.calls if c.method != "getUpdates"][-last:]]
        for chat_id, messages in self._messages.items():
            lines.append(f"Chat {chat_id}:")
            lines += [f"  {m!r}" for m in list(messages.values())[-last:]]
        lines.append(f"Pending updates: {[u['update_id'] for u in self._pending]}")
        if self.server_errors:
            lines.append(f"Errors in the fake itself: {self.server_errors!r}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- test-side waiting

    # The waiters take ``timeout=`` on purpose (test ergonomics, like aiogram's helpers).
    async def wait_for(
        self,
        predicate: Callable[[Any], Any],
        timeout: float = 10,
    ) -> Call | StoredMessage:
        """The first recorded ``Call`` or bot ``StoredMessage`` satisfying ``predicate``.

        Already recorded items count. Calls are checked before messages; predicates that only
        make sense for one kind should check ``isinstance``. Messages are re-checked after every
        request, so a predicate on mutable state (``m.edits``, ``m.deleted``) works.
        """

        def check() -> Call | StoredMessage | None:
            for call in self.calls:
                if predicate(call):
                    return call
            for messages in self._messages.values():
                for message in messages.values():
                    if message.from_bot and predicate(message):
                        return message
            return None

        return await self._wait(check, timeout, f"an item matching {predicate!r}")

    async def wait_until(
        self,
        condition: Callable[[], Any],
        timeout: float = 10,
    ) -> Any:
        """Wait until ``condition()`` returns something truthy; return it."""
        return await self._wait(lambda: condition() or None, timeout, f"condition {condition!r}")

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], Any] | None = None,
        timeout: float = 10,
    ) -> Call:
        """The first (already recorded or future) answered call of ``method`` matching."""

        def check() -> Call | None:
            for call in self.calls_of(method):
                if predicate is None or predicate(call):
                    return call
            return None

        return await self._wait(check, timeout, f"a {method} call")

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[StoredMessage], Any] | None = None,
        timeout: float = 10,
    ) -> StoredMessage:
        """The next bot message in ``chat_id`` (matching ``predicate``, if given).

        "Next" means after the message last returned by ``wait_for_message`` for this chat
        (a per-chat cursor), so messages sent before the call are not missed and each call
        moves forward: ``first = await wait_for_message(c); second = await wait_for_message(c)``.
        """

        def check() -> StoredMessage | None:
            sent = self.sent(chat_id)
            for index in range(self._message_cursor.get(chat_id, 0), len(sent)):
                if predicate is None or predicate(sent[index]):
                    self._message_cursor[chat_id] = index + 1
                    return sent[index]
            return None

        return await self._wait(check, timeout, f"a bot message in chat {chat_id}")

    async def wait_until_confirmed(
        self,
        update_id: int | StoredMessage,
        timeout: float = 10,
    ) -> None:
        """Wait until the bot confirmed an update (polled with an offset past it)."""
        uid = update_id.update_id if isinstance(update_id, StoredMessage) else update_id
        if uid is None:
            raise ValueError("message was not injected as an update")
        await self._wait(lambda: self._confirmed_offset > uid, timeout, f"update {uid} confirmed")

    # ---------------------------------------------------------------- test-side control

    def add_chat(
        self,
        chat_id: int,
        chat_type: str = "private",
        *,
        title: str | None = None,
        user: FakeUser | dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make a chat known (users' activity does this automatically)."""
        if chat_type == "private":
            u = _as_user(user) if user is not None else FakeUser(chat_id, f"User{chat_id}")
            if u.id != chat_id:
                raise ValueError(f"a private chat's id is the user's id ({u.id}), not {chat_id}")
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": u.first_name}
            if u.last_name:
                chat["last_name"] = u.last_name
            if u.username:
                chat["username"] = u.username
        elif chat_type in ("group", "supergroup", "channel"):
            if chat_id >= 0:
                raise ValueError(f"group and channel ids are negative, got {chat_id}")
            chat = {"id": chat_id, "type": chat_type, "title": title or f"Test group {-chat_id}"}
        else:
            raise ValueError(f"unknown chat type {chat_type!r}")
        existing = self.chats.get(chat_id)
        if existing is not None and existing["type"] == chat_type and title is None:
            return existing
        self.chats[chat_id] = chat
        self._messages.setdefault(chat_id, {})
        return chat

    def block(self, chat_id: int, description: str | None = None) -> None:
        """From now on the bot gets 403 for this chat (user blocked the bot / bot was kicked)."""
        if description is None:
            description = (
                "Forbidden: bot was blocked by the user"
                if chat_id > 0
                else "Forbidden: bot was kicked from the group chat"
            )
        self.blocked[chat_id] = description

    def unblock(self, chat_id: int) -> None:
        self.blocked.pop(chat_id, None)

    def fail_next(
        self,
        method: str,
        *,
        error_code: int = 400,
        description: str = "Bad Request: injected failure",
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (429 with retry_after)."""
        params = {"retry_after": retry_after} if retry_after is not None else None
        if retry_after is not None and error_code == 400:
            error_code = 429
            if description == "Bad Request: injected failure":
                description = f"Too Many Requests: retry after {retry_after}"
        errors = self._failures.setdefault(method.lower(), [])
        errors.extend(ApiError(error_code, description, params) for _ in range(times))

    def add_file(
        self, data: bytes, *, kind: str = "photos", ext: str = "jpg", mime: str | None = None
    ) -> StoredFile:
        """Store bytes as a Telegram file (resolvable by getFile and the download URL)."""
        n = next(self._file_ids)
        prefix = "AgACAgIAAxkBAAI" if kind == "photos" else "BQACAgIAAxkBAAI"
        stored = StoredFile(
            file_id=f"{prefix}{n:06d}",
            file_unique_id=f"AQAD{n:06d}",
            file_path=f"{kind}/file_{n}.{ext}",
            data=bytes(data),
            mime_type=mime,
        )
        self.files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    # ---------------------------------------------------------------- test-side injection

    def user_sends_text(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        text: str,
        reply_to: int | StoredMessage | None = None,
        chat_type: str = "private",
        sender_chat: dict[str, Any] | None = None,
    ) -> StoredMessage:
        """Inject a text message from ``user``; returns it (``.message_id``, ``.update_id``).
        ``sender_chat``: sent on behalf of that chat (Telegram's "send as")."""
        message = self._new_user_message(chat_id, user, chat_type, reply_to)
        message.sender_chat = sender_chat
        message.text = text
        message.entities = make_entities(text) or None
        return self._inject_message(message)

    def user_sends_photo(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        image_bytes: bytes,
        caption: str | None = None,
        reply_to: int | StoredMessage | None = None,
        chat_type: str = "private",
        as_document: bool = False,
        mime: str | None = None,
        filename: str | None = None,
        media_group_id: str | None = None,
        sender_chat: dict[str, Any] | None = None,
    ) -> StoredMessage:
        """Inject a photo (or, with ``as_document``, an image file) from ``user``.

        A photo gets a ``photo`` list of PhotoSize: a real JPEG thumbnail (longest side 320)
        when the image is larger, then the original, whose file_id resolves to ``image_bytes``
        exactly. A document gets ``document`` with ``mime_type`` and ``file_name``.
        """
        message = self._photo_message(
            chat_id, user, image_bytes, caption, reply_to, chat_type, as_document, mime,
            filename, media_group_id,
        )  # fmt: skip
        message.sender_chat = sender_chat
        return self._inject_message(message)

    def user_sends_album(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        images: list[bytes],
        caption: str | None = None,
        *,
        caption_on: int = 0,
        order: list[int] | None = None,
        chat_type: str = "private",
        media_group_id: str = "album-1",
        videos: Collection[int] = (),
        too_large: Collection[int] = (),
    ) -> list[StoredMessage]:
        """An album, as Telegram sends one: a message per picture (ids in the order sent),
        sharing a ``media_group_id``, the caption on one of them (``caption_on``); their
        updates come in ``order`` (indexes; default: as sent). The parts at ``videos`` are
        videos (their bytes as an MP4), those at ``too_large`` claim a size over the 20 MB bots
        may download. The messages, as sent."""
        messages = [
            self._photo_message(
                chat_id,
                user,
                data,
                caption if i == caption_on else None,
                None,
                chat_type,
                False,
                None,
                None,
                media_group_id,
            )
            for i, data in enumerate(images)
        ]
        for i in videos:  # a video instead of the photo, as a mixed album has
            stored = self.add_file(images[i], kind="videos", ext="mp4", mime="video/mp4")
            messages[i].photo = messages[i].photo_bytes = None
            messages[i].extras["video"] = {
                "file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "width": 320, "height": 240, "duration": 3, "mime_type": "video/mp4",
                "file_size": len(images[i]),
            }  # fmt: skip
        for i in too_large:
            photo = messages[i].photo
            assert photo is not None
            photo[-1]["file_size"] = 25 * 1024 * 1024
        for i in order if order is not None else range(len(messages)):
            self._inject_message(messages[i])
        return messages

    def _photo_message(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        image_bytes: bytes,
        caption: str | None,
        reply_to: int | StoredMessage | None,
        chat_type: str,
        as_document: bool,
        mime: str | None,
        filename: str | None,
        media_group_id: str | None,
    ) -> StoredMessage:
        message = self._new_user_message(chat_id, user, chat_type, reply_to)
        data = bytes(image_bytes)
        if as_document:
            mime_type = _mime_for(data, filename, mime)
            ext = (mimetypes.guess_extension(mime_type) or ".bin").lstrip(".")
            name = filename or f"image.{ext}"
            message.document, message.document_bytes = self._document_for(data, name, mime_type)
        else:
            message.photo, message.photo_bytes = self._photo_sizes(data), data
        if caption is not None:
            message.caption = caption
            message.caption_entities = make_entities(caption) or None
        message.media_group_id = media_group_id
        return message

    def user_sends_sticker(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        webp_bytes: bytes,
        reply_to: int | StoredMessage | None = None,
        chat_type: str = "private",
    ) -> StoredMessage:
        """Inject a static (WebP) sticker from ``user``; its file_id downloads ``webp_bytes``."""
        message = self._new_user_message(chat_id, user, chat_type, reply_to)
        info = _image_info(webp_bytes)
        width, height = (info[0], info[1]) if info else (512, 512)
        stored = self.add_file(webp_bytes, kind="stickers", ext="webp", mime="image/webp")
        message.sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "type": "regular",
            "width": width,
            "height": height,
            "is_animated": False,
            "is_video": False,
            "file_size": stored.size,
        }
        return self._inject_message(message)

    def user_edits_caption(self, message: StoredMessage, caption: str) -> StoredMessage:
        """The user edits the caption (or text) of a message they sent: an ``edited_message``."""
        if message.text is not None:
            message.text, message.entities = caption, make_entities(caption) or None
        else:
            message.caption = caption
            message.caption_entities = make_entities(caption) or None
        message.edit_date = int(time.time())
        update = {"update_id": next(self._update_ids), "edited_message": message.to_api()}
        message.update_id = update["update_id"]
        self._enqueue(update)
        return message

    def user_presses_button(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        message_id: int | StoredMessage,
        callback_data: str,
        *,
        check_button: bool = True,
    ) -> CallbackPress:
        """Inject a callback_query for a button of a bot message.

        With ``check_button`` (default) the message must currently show an inline button with
        this ``callback_data`` (as for a real user); otherwise LookupError.
        """
        u = _as_user(user)
        mid = message_id.message_id if isinstance(message_id, StoredMessage) else message_id
        message = self._messages.get(chat_id, {}).get(mid)
        if message is None or message.deleted:
            raise LookupError(f"no message {mid} in chat {chat_id}")
        if check_button and callback_data not in message.callback_data:
            raise LookupError(
                f"message {mid} has no button with callback_data {callback_data!r}; "
                f"it has {message.callback_data}"
            )
        query_id = str(4_000_000_000_000 + next(self._query_ids))
        update_id = next(self._update_ids)
        update = {
            "update_id": update_id,
            "callback_query": {
                "id": query_id,
                "from": u.to_api(),
                "message": message.to_api(),
                "chat_instance": str(-chat_id * 7 + 1_000_000),
                "data": callback_data,
            },
        }
        press = CallbackPress(query_id, update_id, chat_id, mid, callback_data, update)
        self._callback_queries[query_id] = press
        self._enqueue(update)
        return press

    def _new_user_message(
        self,
        chat_id: int,
        user: FakeUser | dict[str, Any] | None,
        chat_type: str,
        reply_to: int | StoredMessage | None,
    ) -> StoredMessage:
        u = _as_user(user)
        if chat_type == "private" and chat_id != u.id:
            raise ValueError(f"a private chat's id is the user's id ({u.id}), not {chat_id}")
        chat = self.chats.get(chat_id)
        if chat is None or chat["type"] != chat_type:
            chat = self.add_chat(chat_id, chat_type, user=u if chat_type == "private" else None)
        replied = None
        if reply_to is not None:
            rid = reply_to.message_id if isinstance(reply_to, StoredMessage) else reply_to
            replied = self._messages.get(chat_id, {}).get(rid)
            if replied is None:
                raise LookupError(f"no message {rid} in chat {chat_id} to reply to")
        return StoredMessage(
            chat_id=chat_id,
            message_id=self._allocate_message_id(chat_id),
            date=int(time.time()),
            from_bot=False,
            sender=u.to_api(),
            chat=chat,
            method="user",
            reply_to=replied,
        )

    def _inject_message(self, message: StoredMessage) -> StoredMessage:
        self._store(message)
        update = {"update_id": next(self._update_ids), "message": message.to_api()}
        message.update_id = update["update_id"]
        self._enqueue(update)
        return message

    def redeliver(self, message: StoredMessage, *, same_update: bool = False) -> None:
        """Send the update of `message` again, as the Bot API does when a bot crashed before
        confirming it (or a webhook is retried). A new update id, so this fake's offset
        bookkeeping lets it through; the message is the same. `same_update`: with the update
        id it had, as Telegram sends an update never confirmed (only a bot that polls from
        the start, as after a restart, gets it: one polling past it has confirmed it)."""
        original = next(u for u in self.updates if u.get("update_id") == message.update_id)
        update_id = original["update_id"] if same_update else next(self._update_ids)
        self._enqueue({**original, "update_id": update_id})

    def _enqueue(self, update: dict[str, Any]) -> None:
        self.updates.append(update)
        self._pending.append(update)
        self._pulse()

    # ---------------------------------------------------------------- storage helpers

    def _allocate_message_id(self, chat_id: int) -> int:
        next_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = next_id + 1
        return next_id

    def _store(self, message: StoredMessage) -> None:
        self._messages.setdefault(message.chat_id, {})[message.message_id] = message

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        info = _image_info(data)
        width, height = (info[0], info[1]) if info else (512, 512)
        sizes: list[dict[str, Any]] = []
        if max(width, height) > THUMBNAIL_SIDE:
            thumb = _thumbnail(data)
            if thumb is not None:
                stored = self.add_file(thumb[0], kind="photos", ext="jpg", mime="image/jpeg")
                sizes.append(self._photo_size(stored, thumb[1], thumb[2]))
        mime = Image.MIME.get(info[2] or "", "image/jpeg") if info else "image/jpeg"
        ext = (mimetypes.guess_extension(mime) or ".jpg").lstrip(".")
        stored = self.add_file(data, kind="photos", ext=ext, mime=mime)
        sizes.append(self._photo_size(stored, width, height))
        return sizes

    @staticmethod
    def _photo_size(stored: StoredFile, width: int, height: int) -> dict[str, Any]:
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "width": width,
            "height": height,
        }

    def _document_for(self, data: bytes, name: str, mime: str) -> tuple[dict[str, Any], bytes]:
        ext = name.rsplit(".", 1)[1] if "." in name else "bin"
        stored = self.add_file(data, kind="documents", ext=ext, mime=mime)
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": name,
            "mime_type": mime,
            "file_size": stored.size,
        }
        return document, stored.data

    # ---------------------------------------------------------------- HTTP layer

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/file/bot"):
            return self._handle_download(path[len("/file/bot") :])
        if not path.startswith("/bot"):
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        token, _, method = path[len("/bot") :].partition("/")
        if token != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        try:
            params, files = await self._parse(request)
        except (ValueError, UnicodeDecodeError) as exc:
            error = _bad(f"can't parse request: {exc}")
            return web.json_response(error.body(), status=400)
        call = Call(method=method, params=params, files=files)
        try:
            call.result = await self._dispatch(method, params, files)
        except ApiError as exc:
            call.http_status, call.error = exc.code, exc.body()
        except Exception as exc:  # a bug in the fake: answer 500, remember it for the fixture
            self.server_errors.append(exc)
            error = ApiError(500, f"Internal Server Error: fake failed: {exc!r}")
            call.http_status, call.error = error.code, error.body()
        self.calls.append(call)
        self._pulse()
        if call.error is not None:
            return web.json_response(call.error, status=call.http_status)
        return web.json_response({"ok": True, "result": call.result})

    def _handle_download(self, rest: str) -> web.StreamResponse:
        token, _, file_path = rest.partition("/")
        stored = self._files_by_path.get(file_path) if token == self.token else None
        if stored is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        self.downloads.append(stored)
        self._pulse()
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    async def _parse(self, request: web.Request) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
        raw: dict[str, str] = dict(request.query)
        params: dict[str, Any] = {}
        files: dict[str, UploadedFile] = {}
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.read()
            if body.strip():
                loaded = json.loads(body)
                if not isinstance(loaded, dict):
                    raise ValueError("JSON body must be an object")
                params.update(loaded)
        elif ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    files[part.name] = UploadedFile(
                        name=part.name,
                        filename=part.filename,
                        content_type=part.headers.get("Content-Type"),
                        data=bytes(await part.read()),
                    )
                else:
                    raw[part.name] = await part.text()
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    raw[key] = value
        for key, value in raw.items():
            params.setdefault(key, self._decode(key, value))
        return params, files

    @staticmethod
    def _decode(key: str, value: str) -> Any:
        if key in _TEXT_PARAMS:
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value

    async def _dispatch(
        self, method: str, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        name = method.lower()
        failures = self._failures.get(name)
        if failures:
            raise failures.pop(0)
        handler = self._handlers().get(name)
        if handler is not None:
            return await handler(params, files)
        if name in _HARMLESS:
            return True
        raise ApiError(404, "Not Found")

    def _handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "setwebhook": self.webhook.set_webhook,
            "deletewebhook": self.webhook.delete_webhook,
            "getwebhookinfo": self.webhook.get_webhook_info,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagecaption": self._edit_message_caption,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "editmessagemedia": self._edit_message_media,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "sendphoto": self._send_photo,
            "senddocument": self._send_document,
            "sendmediagroup": self._send_media_group,
            "answercallbackquery": self._answer_callback_query,
            "getfile": self._get_file,
            "setmessagereaction": self._set_message_reaction,
            "getchat": self._get_chat,
            **self.payments.handlers(),
            "close": self._true,
            "logout": self._true,
        }

    # ---------------------------------------------------------------- Bot API methods

    async def _true(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> bool:
        return True

    async def _get_me(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        if self.webhook.url:
            raise ApiError(409, GET_UPDATES_CONFLICT)
        offset = params.get("offset")
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = allowed or None
        if isinstance(offset, int) and offset != 0:
            if offset > 0:
                self._pending = [u for u in self._pending if u["update_id"] >= offset]
                self._confirmed_offset = max(self._confirmed_offset, offset)
            else:
                self._pending = self._pending[offset:]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._allowed_updates:
                self._pending = [
                    u for u in self._pending if any(k in u for k in self._allowed_updates)
                ]
            if self._pending or self._closing:
                return self._pending[:limit]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            self.long_polls += 1
            self._pulse()
            try:
                await self._wait_pulse(remaining)
            finally:
                self.long_polls -= 1

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    async def _set_my_commands(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("commands must be a JSON array of at most 100 BotCommand")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self.my_commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        return self.get_commands(params.get("scope"), params.get("language_code") or "")

    async def _delete_my_commands(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        self.my_commands.pop(
            self._commands_key(params.get("scope"), params.get("language_code")), None
        )
        return True

    # -- helpers shared by the send/edit methods

    def _chat_for(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        chat = None
        if isinstance(chat_id, int):
            chat = self.chats.get(chat_id)
        elif isinstance(chat_id, str) and chat_id.startswith("@"):
            chat = next((c for c in self.chats.values() if c.get("username") == chat_id[1:]), None)
        if chat is None:
            raise _bad("chat not found")
        if chat["id"] in self.blocked:
            raise ApiError(403, self.blocked[chat["id"]])
        return chat

    def _find_message(self, params: dict[str, Any], missing: str) -> StoredMessage:
        if params.get("inline_message_id"):
            raise _bad("inline messages are not supported by the fake")
        chat = self._chat_for(params)
        message_id = params.get("message_id")
        message = self._messages.get(chat["id"], {}).get(message_id) if message_id else None
        if message is None or message.deleted:
            raise _bad(missing)
        return message

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> StoredMessage | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = bool(reply.get("allow_sending_without_reply"))
            target_chat = reply.get("chat_id", chat_id)
            if target_chat != chat_id:
                raise _bad("cross-chat replies are not supported by the fake")
        else:
            message_id = params.get("reply_to_message_id")
            allow_missing = bool(params.get("allow_sending_without_reply"))
        if message_id is None:
            return None
        target = self._messages.get(chat_id, {}).get(message_id)
        if target is None or target.deleted:
            if allow_missing:
                return None
            raise _bad("message to be replied not found")
        return target

    @staticmethod
    def _check_markup(markup: Any) -> dict[str, Any] | None:
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup should be an Array')
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise _bad("can't parse inline keyboard button: Text buttons are unallowed")
                if not _BUTTON_ACTIONS & button.keys():
                    raise _bad("text buttons are unallowed in the inline keyboard")
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode("utf-8"))
                    if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                        raise _bad("BUTTON_DATA_INVALID")
                if "url" in button and not str(button["url"]).strip():
                    raise _bad("BUTTON_URL_INVALID")
        return markup

    @staticmethod
    def _check_text(text: Any, parse_mode: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise _bad("message text is empty")
        plain = _render(text, parse_mode)
        if not plain.strip():
            raise _bad("message text is empty")
        if len(plain) > MAX_TEXT:
            raise _bad("message is too long")
        return text

    @staticmethod
    def _check_caption(caption: Any, parse_mode: Any) -> str | None:
        if caption is None:
            return None
        caption = str(caption)
        if len(_render(caption, parse_mode)) > MAX_CAPTION:
            raise _bad("message caption is too long")
        return caption

    def _new_bot_message(
        self, chat: dict[str, Any], method: str, params: dict[str, Any]
    ) -> StoredMessage:
        return StoredMessage(
            chat_id=chat["id"],
            message_id=0,  # allocated in _commit once everything validated
            date=int(time.time()),
            from_bot=True,
            sender=self.bot_user,
            chat=chat,
            method=method,
            parse_mode=params.get("parse_mode") or None,
            params=params,
        )

    def _commit(self, message: StoredMessage) -> dict[str, Any]:
        message.message_id = self._allocate_message_id(message.chat_id)
        self._store(message)
        return message.to_api()

    def _input_file(
        self, value: Any, files: dict[str, UploadedFile], field_name: str
    ) -> tuple[bytes, str | None, str | None]:
        """Resolve a photo/document parameter: attach://name, a file part, or a file_id."""
        if isinstance(value, str) and value.startswith("attach://"):
            part = files.get(value[len("attach://") :])
            if part is None:
                raise _bad(f"file for {value} was not attached")
            return part.data, part.filename, part.content_type
        if field_name in files:
            part = files[field_name]
            return part.data, part.filename, part.content_type
        if isinstance(value, str) and value in self.files:
            stored = self.files[value]
            return stored.data, None, stored.mime_type
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            raise _bad("failed to get HTTP URL content")
        raise _bad("wrong file identifier/HTTP URL specified")

    def _checked_photo(self, data: bytes) -> bytes:
        if len(data) > MAX_PHOTO_BYTES:
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        info = _image_info(data)
        if info is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height, _ = info
        if width + height > MAX_PHOTO_DIMENSIONS_SUM:
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        if max(width, height) > MAX_PHOTO_RATIO * max(1, min(width, height)):
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        return data

    @staticmethod
    def _checked_document(data: bytes) -> bytes:
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        if not data:
            raise _bad("file must be non-empty")
        return data

    # -- send methods

    async def _send_message(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(params)
        message = self._new_bot_message(chat, "sendMessage", params)
        message.text = self._check_text(params.get("text"), message.parse_mode)
        message.reply_markup = self._check_markup(params.get("reply_markup"))
        message.reply_to = self._reply_target(chat["id"], params)
        return self._commit(message)

    async def _send_photo(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(params)
        message = self._new_bot_message(chat, "sendPhoto", params)
        message.caption = self._check_caption(params.get("caption"), message.parse_mode)
        message.reply_markup = self._check_markup(params.get("reply_markup"))
        message.reply_to = self._reply_target(chat["id"], params)
        data, _, _ = self._input_file(params.get("photo"), files, "photo")
        message.photo_bytes = self._checked_photo(data)
        message.photo = self._photo_sizes(data)
        return self._commit(message)

    async def _send_document(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(params)
        message = self._new_bot_message(chat, "sendDocument", params)
        message.caption = self._check_caption(params.get("caption"), message.parse_mode)
        message.reply_markup = self._check_markup(params.get("reply_markup"))
        message.reply_to = self._reply_target(chat["id"], params)
        data, filename, content_type = self._input_file(params.get("document"), files, "document")
        data = self._checked_document(data)
        mime = _mime_for(data, filename, content_type)
        name = filename or f"document.{(mimetypes.guess_extension(mime) or '.bin').lstrip('.')}"
        message.document, message.document_bytes = self._document_for(data, name, mime)
        return self._commit(message)

    def _apply_media(
        self, message: StoredMessage, media: dict[str, Any], files: dict[str, UploadedFile]
    ) -> None:
        kind = media.get("type")
        parse_mode = media.get("parse_mode") or None
        caption = self._check_caption(media.get("caption"), parse_mode)
        # A single attached part is accepted even when "media" does not reference it.
        fallback = next(iter(files)) if len(files) == 1 else "media"
        data, filename, content_type = self._input_file(media.get("media"), files, fallback)
        if kind == "photo":
            message.photo_bytes = self._checked_photo(data)
            message.photo = self._photo_sizes(data)
            message.document = message.document_bytes = None
        elif kind == "document":
            data = self._checked_document(data)
            mime = _mime_for(data, filename, content_type)
            message.document, message.document_bytes = self._document_for(
                data, filename or "document", mime
            )
            message.photo = message.photo_bytes = None
        else:
            raise _bad(f"media type {kind!r} is not supported by the fake")
        message.caption = caption
        message.parse_mode = parse_mode

    async def _send_media_group(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        chat = self._chat_for(params)
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("media must be an array of 2-10 InputMedia")
        reply_to = self._reply_target(chat["id"], params)
        group_id = str(13_000_000_000_000_000 + next(self._media_groups))
        built = []
        for item in media:
            message = self._new_bot_message(chat, "sendMediaGroup", params)
            self._apply_media(message, item, files)
            built.append(message)
        results = []
        for message in built:
            message.reply_to = reply_to
            message.media_group_id = group_id
            results.append(self._commit(message))
        return results

    # -- edit methods

    def _record_edit(self, message: StoredMessage, method: str, params: dict[str, Any]) -> None:
        message.edits.append(Edit(method=method, params=params, before=message.snapshot()))
        message.edit_date = int(time.time())

    def _editable(self, params: dict[str, Any]) -> StoredMessage:
        message = self._find_message(params, "message to edit not found")
        if not message.from_bot:
            raise _bad("message can't be edited")
        return message

    async def _edit_message_text(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        message = self._editable(params)
        if message.text is None:
            raise _bad("there is no text in the message to edit")
        parse_mode = params.get("parse_mode") or None
        text = self._check_text(params.get("text"), parse_mode)
        markup = self._check_markup(params.get("reply_markup"))
        if text == message.text and markup == message.reply_markup:
            raise _bad(NOT_MODIFIED[len("Bad Request: ") :])
        self._record_edit(message, "editMessageText", params)
        message.text, message.parse_mode, message.reply_markup = text, parse_mode, markup
        return message.to_api()

    async def _edit_message_caption(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        message = self._editable(params)
        if message.photo is None and message.document is None:
            raise _bad("there is no caption in the message to edit")
        parse_mode = params.get("parse_mode") or None
        caption = self._check_caption(params.get("caption"), parse_mode)
        markup = self._check_markup(params.get("reply_markup"))
        if caption == message.caption and markup == message.reply_markup:
            raise _bad(NOT_MODIFIED[len("Bad Request: ") :])
        self._record_edit(message, "editMessageCaption", params)
        message.caption, message.parse_mode, message.reply_markup = caption, parse_mode, markup
        return message.to_api()

    async def _edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        message = self._editable(params)
        markup = self._check_markup(params.get("reply_markup"))
        if markup == message.reply_markup:
            raise _bad(NOT_MODIFIED[len("Bad Request: ") :])
        self._record_edit(message, "editMessageReplyMarkup", params)
        message.reply_markup = markup
        return message.to_api()

    async def _edit_message_media(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        message = self._editable(params)
        if message.photo is None and message.document is None:
            raise _bad("there is no media in the message to edit")
        media = params.get("media")
        if not isinstance(media, dict):
            raise _bad("can't parse InputMedia: media must be a JSON object")
        markup = self._check_markup(params.get("reply_markup"))
        before = message.snapshot()
        scratch = self._new_bot_message(message.chat, "editMessageMedia", params)
        self._apply_media(scratch, media, files)  # validates before touching the message
        message.edits.append(Edit(method="editMessageMedia", params=params, before=before))
        message.edit_date = int(time.time())
        message.photo, message.photo_bytes = scratch.photo, scratch.photo_bytes
        message.document, message.document_bytes = scratch.document, scratch.document_bytes
        message.caption, message.parse_mode = scratch.caption, scratch.parse_mode
        message.reply_markup = markup
        return message.to_api()

    async def _delete_message(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        message = self._find_message(params, "message to delete not found")
        message.deleted = True
        return True

    # -- other methods

    async def _send_chat_action(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        self._chat_for(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    async def _answer_callback_query(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._callback_queries:
            raise _bad(QUERY_INVALID[len("Bad Request: ") :])
        if len(str(params.get("text") or "")) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        return True

    async def _get_file(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        stored = self.files.get(str(params.get("file_id", "")))
        if stored is None:
            raise _bad("wrong file_id or the file is temporarily unavailable")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }

    async def _set_message_reaction(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> Any:
        message = self._find_message(params, "message to react not found")
        reactions = params.get("reaction") or []
        if not isinstance(reactions, list):
            raise _bad("reaction must be an array of ReactionType")
        emoji = []
        for reaction in reactions:
            if not isinstance(reaction, dict):
                raise _bad("REACTION_INVALID")
            if reaction.get("type") == "emoji":
                if reaction.get("emoji") not in _REACTION_EMOJI:
                    raise _bad("REACTION_INVALID")
                emoji.append(reaction["emoji"])
            elif reaction.get("type") in ("custom_emoji", "paid"):
                emoji.append(str(reaction.get("custom_emoji_id", reaction["type"])))
            else:
                raise _bad("REACTION_INVALID")
        message.reactions = emoji
        return True

    async def _get_chat(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> Any:
        chat = self._chat_for(params)
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }


@contextlib.asynccontextmanager
async def run_fake_telegram(**kwargs: Any) -> AsyncIterator[FakeTelegram]:
    """``async with run_fake_telegram() as fake:`` — a started FakeTelegram, stopped on exit."""
    fake = FakeTelegram(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    """A started FakeTelegram on 127.0.0.1 (function scope)."""
    async with run_fake_telegram() as fake:
        yield fake
    if fake.server_errors:
        raise AssertionError(f"the fake Telegram server failed: {fake.server_errors!r}")
