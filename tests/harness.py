"""The whole bot as `stepedit run` wires it (the service from bot.cli.open_service, see
tests/wiring.py), against local fakes: the real TelegramBot (PTB) polling the fake Bot API, the
real EditService, SqlStore on a SQLite file and the httpx client calling the fake StepFun API.
`restart()` stops everything but the database and starts it again. With `webhook_url` set, the
bot takes updates by webhook instead, on its own HTTP server (`http_port`, kept over restarts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.http_server import HttpServer
from adapters.telegram import TelegramBot
from bot.domain import MessageRef, UserRef
from bot.ports import EditStore, ImageEditor
from bot.service import EditService
from tests.fakes.stepfun import FakeStepFun
from tests.fakes.telegram import FakeTelegram, FakeUser, StoredMessage
from tests.wiring import Wired, until_known


@dataclass
class BotUnderTest:
    telegram: FakeTelegram
    stepfun: FakeStepFun
    database_url: str
    service_options: dict[str, Any] = field(default_factory=dict)
    client_options: dict[str, Any] = field(default_factory=dict)
    # FALLBACK_*: make_backend's options for the fallback (the harness's timeouts and retries
    # unless given); "cooldown" is the FallbackEditor's own
    fallback_options: dict[str, Any] | None = None
    rate_limit: bool = False  # PTB's rate limiter, as `stepedit run` has it (it waits on a 429)
    store: EditStore | None = None
    client: ImageEditor | None = None
    _wired: Wired = field(default_factory=Wired)
    service: EditService | None = None
    bot: TelegramBot | None = None
    webhook_url: str | None = None  # webhook mode: the public URL, whose path is the route
    webhook_secret: str = "webhook-secret_0123"
    http_port: int = 0  # 0: any free port, then the one it took
    http: HttpServer | None = None

    async def start(self) -> None:
        backend: dict[str, Any] = {
            "retries": 2,
            "backoff": 0.01,
            "max_backoff": 1.0,
            "timeout": 2.0,
            "style": "stepfun",  # another style names its fake's base_url and api_key too
            "base_url": self.stepfun.base_url,
            "api_key": self.stepfun.api_key,
        }
        self.service = await self._wired.open(
            self.database_url, self.service_options, backend | self.client_options,
            self.fallback_options,
        )  # fmt: skip
        self.store, self.client = self.service.store, self.service.editor
        self.bot = TelegramBot(
            self.service,
            token=self.telegram.token,
            api_url=self.telegram.root,
            rate_limit=self.rate_limit,
            webhook_url=self.webhook_url,
            webhook_secret=self.webhook_secret,
        )
        self.service.attach(self.bot.messenger)
        if self.webhook_url is not None:  # as `stepedit run`: the server first
            self.http = HttpServer(self.service, [self.bot], host="127.0.0.1",
                                   port=self.http_port, posts=self.bot.routes)  # fmt: skip
            await self.http.start()
            self.http_port = self.http.port
        await self.bot.start(poll_timeout=0, poll_interval=0.01)
        await self.service.start()

    @property
    def upstream(self) -> str:
        """Where a reverse proxy in front of this bot forwards Telegram's posts."""
        return f"http://127.0.0.1:{self.http_port}"

    async def stop(self, grace: float = 5.0) -> None:
        await self._wired.stop(self.bot, self.service, grace)
        if self.http is not None:
            await self.http.stop()
        self.bot = self.client = self.store = self.service = self.http = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def quota_used(self, user: FakeUser) -> int:
        assert self.service is not None
        return (await self.service.quota(UserRef("telegram", str(user.id)))).used

    async def idle(self, timeout: float = 10) -> None:
        """Wait until the bot has fetched every update and finished handling all of them, so a
        test can assert that something did *not* happen."""
        assert self.bot is not None
        application = self.bot.app
        async with asyncio.timeout(timeout):
            while (  # noqa: ASYNC110 - PTB offers no event for "all handlers done"
                self.telegram.pending_updates  # confirmed only once handled (see Polling._poll)
                or self.bot.handling
                or application.update_processor.current_concurrent_updates
            ):
                await asyncio.sleep(0.005)
            if self.service is not None:  # and written down as handled
                await self.service.settled(timeout)

    async def wait_linked(self, message: StoredMessage, timeout: float = 10) -> None:
        """Wait until the bot has recorded which image `message` (one of its own) stands for."""
        assert self.service is not None
        ref = MessageRef("telegram", str(message.chat_id), str(message.message_id))
        await until_known(self.service, ref, timeout)

    async def photo_reply(self, chat_id: int, timeout: float = 10) -> StoredMessage:
        """The next photo the bot sends in this chat, once the bot has finished with it: the
        status note is gone and the photo is linked to its image, so a reply to it works."""
        photo = await self.telegram.wait_for_message(
            chat_id, lambda m: m.kind == "photo", timeout=timeout
        )
        await self.telegram.wait_until(
            lambda: all(m.deleted for m in self.telegram.sent(chat_id) if is_note(m)),
            timeout=timeout,
        )
        await self.wait_linked(photo, timeout)
        return photo

    async def text_reply(self, chat_id: int, timeout: float = 10) -> StoredMessage:
        """The next text message the bot sends and does not delete (status messages go away)."""
        return await self.telegram.wait_for_message(
            chat_id, lambda m: m.kind == "text" and not is_note(m), timeout=timeout
        )


def is_note(message: StoredMessage) -> bool:
    """One of the bot's progress notes ("queued" / "editing"): the texts with a Cancel button."""
    return message.kind == "text" and any(
        data.startswith("cancel:") for data in message.callback_data
    )


@pytest.fixture
async def app(
    telegram: FakeTelegram, stepfun: FakeStepFun, sqlite_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[BotUnderTest]:
    service = request.node.get_closest_marker("service")
    client = request.node.get_closest_marker("client")
    bot = BotUnderTest(
        telegram,
        stepfun,
        sqlite_url,
        dict(service.kwargs) if service else {},
        dict(client.kwargs) if client else {},
    )
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()
