"""The Discord bot as `stepedit run` wires it (the service from bot.cli.open_service, see
tests/wiring.py, and the adapter from bot.cli.platforms), against local fakes: the real
DiscordBot (discord.py) on the fake Discord, the real EditService, SqlStore and edit client
against the fake StepFun. The `bot` fixture is registered in conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.discord import DiscordBot
from bot.cli import platforms
from bot.domain import MessageRef, UserRef
from bot.ports import EditStore, ImageEditor
from bot.service import EditService
from tests.fakes.discord import (
    ALICE,
    GENERAL_ID,
    TOKEN,
    FakeDiscord,
    FakeUser,
    StoredMessage,
    Upload,
)
from tests.fakes.stepfun import FakeStepFun
from tests.images import make_image
from tests.wiring import Wired, until_known, wiring

GUILD_READY_TIMEOUT = 0.2  # seconds (see DiscordUnderTest.start)
PHOTO = make_image(320, 240)


@dataclass
class DiscordUnderTest:
    discord: FakeDiscord
    stepfun: FakeStepFun
    database_url: str
    service_options: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # DISCORD_* by name, e.g. shards
    store: EditStore | None = None
    client: ImageEditor | None = None
    _wired: Wired = field(default_factory=Wired)
    service: EditService | None = None
    bot: DiscordBot | None = None

    async def start(self) -> None:
        backend = {"style": "stepfun", "base_url": self.stepfun.base_url,
                   "api_key": self.stepfun.api_key, "retries": 1, "backoff": 0.01,
                   "timeout": 5.0}  # fmt: skip
        self.service = await self._wired.open(self.database_url, self.service_options, backend)
        self.store, self.client = self.service.store, self.service.editor
        self.bot = self.discord_bot(self.service)
        # discord.py waits this long after the fake's last GUILD_CREATE before it is ready (2 s
        # by default, which made every start of this harness cost 2 s); the fake sends them all
        # at once.
        self.bot.client._connection.guild_ready_timeout = GUILD_READY_TIMEOUT
        self.service.attach(self.bot.messenger)
        await self.bot.start()
        await self.service.start()

    def discord_bot(self, service: EditService) -> DiscordBot:
        """The adapter as `stepedit run` makes it from its settings."""
        settings, _ = wiring(
            {}, {}, discord_bot_token=TOKEN, discord_api_url=self.discord.rest_url,
            discord_gateway_url=str(self.discord.gateway_url), **self.settings,
        )  # fmt: skip
        (bot,) = platforms(settings, service)
        assert isinstance(bot, DiscordBot)
        return bot

    async def stop(self, grace: float = 5.0) -> None:
        await self._wired.stop(self.bot, self.service, grace)
        self.bot = self.client = self.store = self.service = None

    async def quota_used(self, user: FakeUser) -> int:
        assert self.service is not None
        return (await self.service.quota(UserRef("discord", str(user.id)))).used

    async def result(self, channel_id: int = GENERAL_ID, timeout: float = 10) -> StoredMessage:
        """The next picture the bot posts here, once it is linked (so a reply to it works)."""
        posted = await self.discord.next_message(
            channel_id, lambda m: m.from_bot and bool(m.attachments), timeout=timeout
        )
        assert self.service is not None
        ref = MessageRef("discord", str(posted.channel_id), str(posted.id))
        await until_known(self.service, ref, timeout)
        return posted

    async def text(self, channel_id: int = GENERAL_ID, timeout: float = 10) -> StoredMessage:
        """The next text the bot posts here that is not a progress note."""
        return await self.discord.next_message(
            channel_id,
            lambda m: m.from_bot and not m.attachments and not is_note(m),
            timeout=timeout,
        )


def is_note(message: StoredMessage) -> bool:
    return any(c.startswith("stepedit:cancel:") for c in message.custom_ids)


@pytest.fixture
async def bot(
    fake_discord: FakeDiscord, stepfun: FakeStepFun, sqlite_url: str
) -> AsyncIterator[DiscordUnderTest]:
    under_test = DiscordUnderTest(fake_discord, stepfun, sqlite_url)
    await under_test.start()
    try:
        yield under_test
    finally:
        await under_test.stop()


def photo(name: str = "cat.jpg", data: bytes = PHOTO) -> Upload:
    return Upload(name, data, "image/jpeg")


async def mention_and_wait(
    bot: DiscordUnderTest, fake: FakeDiscord, prompt: str = "make it snow"
) -> StoredMessage:
    """Alice mentions the bot on a photo with `prompt`; the result, once it is linked (what the
    bot did before is settled by then)."""
    fake.user_sends(GENERAL_ID, ALICE, prompt, attachments=[photo()], mentions_bot=True)
    return await bot.result()
