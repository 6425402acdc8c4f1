"""Telegram webhook mode: which updates the bot asks for, keeping Telegram's webhook as the
settings say, and the route Telegram posts updates to.

Telegram posts each update to TELEGRAM_WEBHOOK_URL with the secret in a header, one update of a
chat at a time (the next only after the last was answered 2xx), and sends it again after any
other answer. So the route answers 200 only once the update is handled and written down as
handled: each chat's order then holds across any number of replicas behind one URL, and an
update a replica dies on comes again, to be recognised where it was handled.

Telegram's getWebhookInfo tells the URL and the update types but never the secret. To tell a
changed secret without storing it, the URL Telegram is told carries a one-way fingerprint of it
(`?secret_id=`); a replica sets the webhook at start only when that URL or the update types
differ from what Telegram reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from telegram import Bot, Update, WebhookInfo
from telegram.error import TelegramError
from telegram.ext import (
    BaseHandler,
    BusinessConnectionHandler,
    BusinessMessagesDeletedHandler,
    CallbackQueryHandler,
    ChatBoostHandler,
    ChatJoinRequestHandler,
    ChatMemberHandler,
    ChosenInlineResultHandler,
    CommandHandler,
    InlineQueryHandler,
    MessageHandler,
    MessageReactionHandler,
    PaidMediaPurchasedHandler,
    PollAnswerHandler,
    PollHandler,
    PreCheckoutQueryHandler,
    PrefixHandler,
    ShippingQueryHandler,
    TypeHandler,
)
from telegram.ext.filters import BaseFilter, UpdateFilter

# PTB's combined filters (a & b, a | b) are private classes; their parts are read to see which
# message updates a filter can let through.
from telegram.ext.filters import _MergedFilter as MergedFilter

from bot.errors import StartupError

log = logging.getLogger("stepedit.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# An update is a few KB: a long text (4096 characters, escaped) with its entities, and the
# message it replies to. A body past this is no update of Telegram's: 413, unread.
MAX_UPDATE_BYTES = 1024 * 1024
FINGERPRINT_PARAM = "secret_id"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The updates that carry a message, which MessageHandler and CommandHandler see (their filters
# say which), and the update types each other handler takes.
MESSAGE_TYPES = (
    Update.MESSAGE, Update.EDITED_MESSAGE, Update.CHANNEL_POST, Update.EDITED_CHANNEL_POST,
    Update.BUSINESS_MESSAGE, Update.EDITED_BUSINESS_MESSAGE, Update.GUEST_MESSAGE,
)  # fmt: skip
HANDLER_TYPES: dict[type[BaseHandler[Any, Any, Any]], tuple[str, ...]] = {
    CallbackQueryHandler: (Update.CALLBACK_QUERY,),
    InlineQueryHandler: (Update.INLINE_QUERY,),
    ChosenInlineResultHandler: (Update.CHOSEN_INLINE_RESULT,),
    ShippingQueryHandler: (Update.SHIPPING_QUERY,),
    PreCheckoutQueryHandler: (Update.PRE_CHECKOUT_QUERY,),
    PollHandler: (Update.POLL,),
    PollAnswerHandler: (Update.POLL_ANSWER,),
    ChatJoinRequestHandler: (Update.CHAT_JOIN_REQUEST,),
    ChatBoostHandler: (Update.CHAT_BOOST, Update.REMOVED_CHAT_BOOST),
    MessageReactionHandler: (Update.MESSAGE_REACTION, Update.MESSAGE_REACTION_COUNT),
    BusinessConnectionHandler: (Update.BUSINESS_CONNECTION,),
    BusinessMessagesDeletedHandler: (Update.DELETED_BUSINESS_MESSAGES,),
    PaidMediaPurchasedHandler: (Update.PURCHASED_PAID_MEDIA,),
}
CHAT_MEMBER_TYPES = {
    ChatMemberHandler.MY_CHAT_MEMBER: (Update.MY_CHAT_MEMBER,),
    ChatMemberHandler.CHAT_MEMBER: (Update.CHAT_MEMBER,),
    ChatMemberHandler.ANY_CHAT_MEMBER: (Update.MY_CHAT_MEMBER, Update.CHAT_MEMBER),
}


# --- which updates the bot asks for --------------------------------------------------------


def update_types(handlers: dict[int, list[BaseHandler[Any, Any, Any]]]) -> list[str]:
    """Every update type some handler takes (`Application.handlers`), in the Bot API's order:
    what the bot asks Telegram for, so a handler added later brings its updates along. A
    TypeHandler (the gate) sees whatever the others asked for and asks for nothing itself."""
    wanted: set[str] = set()
    for handler in (h for group in handlers.values() for h in group):
        if isinstance(handler, TypeHandler):
            continue
        if isinstance(handler, MessageHandler | CommandHandler | PrefixHandler):
            wanted |= _message_types(handler.filters)
        elif isinstance(handler, ChatMemberHandler):
            which = handler.chat_member_types
            wanted.update(CHAT_MEMBER_TYPES[ChatMemberHandler.MY_CHAT_MEMBER if which is None
                                            else which])  # fmt: skip
        elif type(handler) in HANDLER_TYPES:
            wanted.update(HANDLER_TYPES[type(handler)])
        else:
            raise TypeError(f"cannot tell which updates {type(handler).__name__} takes")
    return [kind for kind in Update.ALL_TYPES if kind in wanted]


def _message_types(given: BaseFilter) -> set[str]:
    """The message updates `given` may let through: an UpdateType filter says which (tried on
    an update of each type); `&` and `|` combine them; any other filter (content, `~`) may let
    any through, so it is counted as all (asking for too much is safe, too little is not)."""
    if isinstance(given, MergedFilter):
        base = _message_types(given.base_filter)
        other = given.and_filter or given.or_filter
        others = _message_types(other) if isinstance(other, BaseFilter) else set(MESSAGE_TYPES)
        return base & others if given.and_filter else base | others
    if isinstance(given, UpdateFilter) and type(given).__qualname__.startswith("UpdateType."):
        return {kind for kind in MESSAGE_TYPES if given.check_update(_sample(kind))}
    return set(MESSAGE_TYPES)


def _sample(kind: str) -> Update:
    message = {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}
    return Update.de_json({"update_id": 1, kind: message}, None)


# --- Telegram's webhook, as the settings say ------------------------------------------------


class Webhook:
    """TELEGRAM_WEBHOOK_URL and its secret, for one bot: set, read, delete; and the route."""

    def __init__(self, bot: Bot, url: str, secret: str) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret")
        self.bot = bot
        self.url = url
        self._secret = secret.encode()
        parts = urlsplit(url)
        self.path = parts.path or "/"  # where Telegram (through any proxy) posts
        fingerprint = hmac.new(self._secret, b"stepedit webhook secret id", hashlib.sha256)
        query = [*parse_qsl(parts.query), (FINGERPRINT_PARAM, fingerprint.hexdigest()[:16])]
        self.told_url = urlunsplit(parts._replace(query=urlencode(query)))

    async def ensure(self, types: list[str]) -> None:
        """At start: set the webhook, unless Telegram has it already as wanted (the same URL,
        whose fingerprint covers the secret, and the same update types)."""
        try:
            info = await self.bot.get_webhook_info()
            if info.url == self.told_url and set(info.allowed_updates or ()) == set(types):
                log.info("Telegram's webhook is set as wanted (%s)", self.url)
                return
            await self.set(types)
        except TelegramError as exc:
            raise StartupError(f"Telegram refused the webhook {self.url}: {exc}") from None

    async def set(self, types: list[str]) -> None:
        await self.bot.set_webhook(
            self.told_url,
            secret_token=self._secret.decode(),
            allowed_updates=types,
            drop_pending_updates=False,  # updates waiting since the last run are still wanted
        )
        log.info("Telegram's webhook set to %s for %s", self.url, ", ".join(types))

    def route(self, deliver: Callable[[Update], Awaitable[bool]]) -> Handler:
        """The POST handler of `path`: `deliver` handles an update and says whether it was
        handled (and written down as handled); until then Telegram holds the chat's next."""

        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._secret):  # before a byte of the body
                raise web.HTTPForbidden()
            body = await _bounded_body(request, MAX_UPDATE_BYTES)
            try:
                update = Update.de_json(json.loads(body), self.bot)
            except Exception:  # not JSON, or not an update
                raise web.HTTPBadRequest(text="not a Telegram update") from None
            if not await deliver(update):  # Telegram sends it again (maybe to another replica)
                return web.Response(status=503, text="not handled; send it again")
            return web.Response(status=200)

        return receive


async def _bounded_body(request: web.Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is known to pass `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(limit, len(body))
    return bytes(body)


def describe(info: WebhookInfo) -> str:
    """What getWebhookInfo reports, for `stepedit webhook info` (Telegram never reports the
    secret; the URL's secret_id is a one-way fingerprint of it)."""
    lines = [
        f"url: {info.url or '(none: the bot polls)'}",
        f"pending updates: {info.pending_update_count}",
        f"allowed updates: {', '.join(info.allowed_updates or ()) or '(all but chat_member)'}",
    ]
    if info.max_connections:
        lines.append(f"max connections: {info.max_connections}")
    if info.last_error_date is not None:
        lines.append(f"last error: {info.last_error_date:%Y-%m-%d %H:%M:%S %Z} "
                     f"{info.last_error_message}")  # fmt: skip
    return "\n".join(lines)
