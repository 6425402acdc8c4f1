"""The webhook side of the fake Telegram (tests/fakes/telegram.py): setWebhook, getWebhookInfo,
deleteWebhook, and delivery by POST as Telegram does it.

While a webhook is set, getUpdates answers 409 and every pending update is POSTed, JSON, with
the `X-Telegram-Bot-Api-Secret-Token` header: one update of a chat at a time (the next only
after the last was answered 2xx), chats side by side up to `max_connections`, and an update
answered otherwise (or not at all) sent again after `retry_seconds`, with the same update id.

Telegram only takes https URLs on ports 443, 80, 88 and 8443, and so does this fake; what
stands between it and the bot is a reverse proxy. The test says where that proxy forwards
(`forward_to`: one upstream, or several for replicas behind a load balancer, taken in turn);
the URL's path and query go along, as a proxy forwards them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

if TYPE_CHECKING:
    from tests.fakes.telegram import FakeTelegram

PORTS = (443, 80, 88, 8443)
SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")
GET_UPDATES_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)
POST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Post:
    """One delivery attempt: the update, where it went, and what came back."""

    update_id: int
    chat: object
    upstream: str
    status: int | None  # None: no answer (connection failed, or the answer was lost)
    delivered: bool
    at: float


class FakeWebhook:
    def __init__(self, fake: FakeTelegram, *, retry_seconds: float = 0.05) -> None:
        self.fake = fake
        self.retry_seconds = retry_seconds
        self.url = ""
        self.secret_token: str | None = None
        self.allowed_updates: list[str] | None = None
        self.max_connections = 40
        self.set_calls = 0  # setWebhook calls that set a URL
        self.upstreams: list[str] = []  # where the reverse proxy forwards
        self.posts: list[Post] = []
        self.last_error: tuple[int, str] | None = None
        self._lose = 0  # answers to treat as lost (as if the connection dropped)
        self._turns = itertools.count()
        self._in_flight: dict[object, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------- test-side control

    def forward_to(self, *upstreams: str) -> None:
        """Where the reverse proxy in front of the bot forwards (e.g. http://127.0.0.1:8080)."""
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.fake._pulse()

    def lose_next_answers(self, times: int = 1) -> None:
        """Treat the next `times` answers as never received: the bot handled the update, but
        Telegram sends it again, as after a dropped connection."""
        self._lose += times

    def delivered(self, update_id: int) -> list[Post]:
        return [p for p in self.posts if p.update_id == update_id]

    # ---------------------------------------------------------------- Bot API methods

    async def set_webhook(self, params: dict[str, Any], files: object) -> bool:
        from tests.fakes.telegram import ApiError, _bad  # (here: that module imports this one)

        url = str(params.get("url") or "")
        if not url:
            return await self.delete_webhook(params, files)
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        if (parts.port or 443) not in PORTS:
            raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        secret = params.get("secret_token")
        if secret is not None and not SECRET.fullmatch(str(secret)):
            raise _bad("secret token contains unallowed characters")
        connections = int(params.get("max_connections") or 40)
        if not 1 <= connections <= 100:
            raise ApiError(400, "Bad Request: max_connections must be between 1 and 100")
        allowed = params.get("allowed_updates")
        if params.get("drop_pending_updates"):
            self.fake._pending.clear()
        self.url, self.secret_token, self.max_connections = url, secret, connections
        self.allowed_updates = allowed if isinstance(allowed, list) else self.allowed_updates
        self.set_calls += 1
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._deliver())
        self.fake._pulse()
        return True

    async def delete_webhook(self, params: dict[str, Any], files: object) -> bool:
        self.url, self.secret_token = "", None
        if params.get("drop_pending_updates"):
            self.fake._pending.clear()
        self.fake._pulse()  # the delivery loop ends
        return True

    async def get_webhook_info(self, params: dict[str, Any], files: object) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.fake._pending),
        }
        if self.url:  # Telegram never tells the secret
            info["max_connections"] = self.max_connections
            if self.allowed_updates is not None:
                info["allowed_updates"] = self.allowed_updates
        if self.last_error is not None:
            info["last_error_date"], info["last_error_message"] = self.last_error
        return info

    # ---------------------------------------------------------------- delivery

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _deliver(self) -> None:
        """While a webhook is set: POST each chat's first pending update, when it has none in
        flight and a connection is free."""
        self._session = self._session or aiohttp.ClientSession()
        while self.url and not self.fake._closing:
            if self.allowed_updates:  # Telegram never keeps the others
                self.fake._pending = [u for u in self.fake._pending
                                      if any(k in u for k in self.allowed_updates)]  # fmt: skip
            chats_seen: set[object] = set()
            for update in list(self.fake._pending) if self.upstreams else []:
                chat = _chat_of(update)
                if chat in chats_seen:
                    continue  # behind an earlier update of its chat
                chats_seen.add(chat)
                if chat not in self._in_flight and len(self._in_flight) < self.max_connections:
                    self._in_flight[chat] = asyncio.create_task(self._post(update, chat))
            await self.fake._wait_pulse(0.5)

    async def _post(self, update: dict[str, Any], chat: object) -> None:
        assert self._session is not None
        upstream = self.upstreams[next(self._turns) % len(self.upstreams)]
        parts = urlsplit(self.url)
        target = f"{upstream}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.secret_token or ""}
        status: int | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_SECONDS)
            async with self._session.post(
                target, json=update, headers=headers, timeout=timeout
            ) as answer:
                status = answer.status
                await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = (int(time.time()), f"Connection failed: {exc!r}")
        delivered = status is not None and 200 <= status < 300
        if delivered and self._lose:
            self._lose -= 1
            delivered, status = False, None  # handled there, but Telegram never heard
        try:
            self.posts.append(Post(update["update_id"], chat, upstream, status, delivered,
                                   time.monotonic()))  # fmt: skip
            if delivered:
                with contextlib.suppress(ValueError):
                    self.fake._pending.remove(update)
                return
            if status is not None:
                self.last_error = (int(time.time()), f"Wrong response from the webhook: {status}")
            await asyncio.sleep(self.retry_seconds)
        finally:
            self._in_flight.pop(chat, None)
            self.fake._pulse()


def _chat_of(update: dict[str, Any]) -> object:
    """The chat an update belongs to, whose updates Telegram sends one at a time."""
    for kind in ("message", "edited_message", "channel_post", "edited_channel_post"):
        if kind in update:
            return update[kind]["chat"]["id"]
    query = update.get("callback_query")
    if query is not None and "message" in query:
        return query["message"]["chat"]["id"]
    return ("update", update["update_id"])
