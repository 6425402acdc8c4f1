"""Discord shards (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS): processes built as `stepedit run`
builds them (tests/discord_harness.py), each holding some shards of one fake Discord that routes
events as Discord does: a guild's to the shard `(guild_id >> 22) % count`, DMs to shard 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import discord
import httpx
import pytest

from adapters.http_server import HttpServer
from bot.errors import StartupError
from tests.discord_harness import DiscordUnderTest, photo
from tests.fakes.discord import (
    ALICE,
    BOB,
    GENERAL_ID,
    GUILD_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    run_fake_discord,
    shard_of,
)
from tests.fakes.stepfun import FakeStepFun

SHARD_ONE_GUILD = GUILD_ID + (1 << 22)  # made just after GUILD_ID: the other shard of two
SHARD_ONE_CHANNEL = GENERAL_ID + (1 << 22)
COMMAND_SYNC = "PUT /applications/{app_id}/commands"


def two_guilds() -> list[FakeGuild]:
    zero = FakeGuild(GUILD_ID, "Zero", [FakeChannel(GENERAL_ID, "general")], [ALICE, BOB])
    one = FakeGuild(SHARD_ONE_GUILD, "One", [FakeChannel(SHARD_ONE_CHANNEL, "general")], [ALICE])
    assert (shard_of(zero.id, 2), shard_of(one.id, 2)) == (0, 1)
    return [zero, one]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with run_fake_discord(guilds=two_guilds()) as started:
        yield started
    assert started.server_errors == []


@contextlib.asynccontextmanager
async def processes(
    fake: FakeDiscord, stepfun: FakeStepFun, database_url: str, *shard_ids: str, count: int = 2
) -> AsyncIterator[list[DiscordUnderTest]]:
    """One process per entry of `shard_ids` (DISCORD_SHARD_IDS), all with DISCORD_SHARD_COUNT
    `count` on one database, started in that order and stopped afterwards."""
    started: list[DiscordUnderTest] = []
    try:
        for ids in shard_ids:
            settings = {"discord_shard_count": count, "discord_shard_ids": ids}
            process = DiscordUnderTest(fake, stepfun, database_url, settings=settings)
            started.append(process)
            await process.start()
        yield started
    finally:
        for process in reversed(started):
            await process.stop()


def received(process: DiscordUnderTest) -> set[int]:
    """The ids of the messages this process's gateway brought (discord.py's message cache)."""
    assert process.bot is not None
    return {message.id for message in process.bot.client.cached_messages}


def pictures(fake: FakeDiscord, channel_id: int) -> int:
    return sum(1 for message in fake.sent(channel_id) if message.attachments)


@pytest.mark.postgres
async def test_each_message_is_answered_once_by_the_process_holding_its_shard(
    fake: FakeDiscord, stepfun: FakeStepFun, postgres_url: str
) -> None:
    async with processes(fake, stepfun, postgres_url, "0", "1") as (zero, one):
        on_one = fake.user_sends(
            SHARD_ONE_CHANNEL, ALICE, "make it snow", attachments=[photo()], mentions_bot=True
        )
        assert (await one.result(SHARD_ONE_CHANNEL)).reply_to == on_one.id
        on_zero = fake.user_sends(
            GENERAL_ID, BOB, "make it rain", attachments=[photo()], mentions_bot=True
        )
        assert (await zero.result(GENERAL_ID)).reply_to == on_zero.id
        dm = fake.dm_channel(ALICE)
        private = fake.user_sends(dm.id, ALICE, "make it night", attachments=[photo()])
        assert (await zero.result(dm.id)).reply_to == private.id

        assert fake.shards_that_got("MESSAGE_CREATE", on_one.id) == [(1, 2)]
        assert fake.shards_that_got("MESSAGE_CREATE", on_zero.id) == [(0, 2)]
        assert fake.shards_that_got("MESSAGE_CREATE", private.id) == [(0, 2)]  # DMs: shard 0
        assert on_one.id in received(one) and on_one.id not in received(zero)
        assert {on_zero.id, private.id} <= received(zero) - received(one)
        assert [pictures(fake, c) for c in (SHARD_ONE_CHANNEL, GENERAL_ID, dm.id)] == [1, 1, 1]
        assert len(stepfun.requests) == 3
        assert (await one.quota_used(ALICE), await zero.quota_used(BOB)) == (2, 1)


@pytest.mark.postgres
async def test_only_the_process_holding_shard_zero_registers_the_slash_commands(
    fake: FakeDiscord, stepfun: FakeStepFun, postgres_url: str
) -> None:
    async with processes(fake, stepfun, postgres_url, "1") as (one,):
        assert one.bot is not None and one.bot.connected
        assert fake.calls_to(COMMAND_SYNC) == [] and fake.commands == {}
        async with processes(fake, stepfun, postgres_url, "0"):
            assert [c.status for c in fake.calls_to(COMMAND_SYNC)] == [200]
            in_guild = fake.user_runs_slash_command("quota", channel_id=SHARD_ONE_CHANNEL)
            in_dm = fake.user_runs_slash_command("quota", channel_id=fake.dm_channel(BOB).id)
            for asked in (in_guild, in_dm):
                await fake.wait_for_response(asked)
                assert asked.ephemeral and asked.original is not None
            assert fake.shards_that_got("INTERACTION_CREATE", in_guild.id) == [(1, 2)]
            assert fake.shards_that_got("INTERACTION_CREATE", in_dm.id) == [(0, 2)]
    assert len(fake.calls_to(COMMAND_SYNC)) == 1  # nothing else touched them


async def test_the_process_is_ready_only_once_all_its_shards_are(
    fake: FakeDiscord, stepfun: FakeStepFun, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # discord.py waits 5 s before each IDENTIFY after a process's first; here until released.
    release = asyncio.Event()

    async def identify_when_released(client: Any, shard_id: int | None, *, initial: bool) -> None:
        if not initial:
            await release.wait()

    monkeypatch.setattr(discord.Client, "before_identify_hook", identify_when_released)
    process = DiscordUnderTest(
        fake, stepfun, sqlite_url, settings={"discord_shard_count": 2, "discord_shard_ids": "0-1"}
    )
    starting = asyncio.create_task(process.start())
    try:
        await fake.wait_connected(shard=(0, 2))
        bot = process.bot
        assert bot is not None and process.service is not None
        await fake.wait_until(lambda: bot.client.get_guild(GUILD_ID))  # shard 0 is in
        server = HttpServer(process.service, [bot], host="127.0.0.1", port=0)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                waiting = await http.get("/readyz")
                assert not bot.connected and not starting.done()
                release.set()
                await starting
                ready = await http.get("/readyz")
                release.clear()  # shard 1's next IDENTIFY waits again
                fake.invalidate_sessions(shard=(1, 2))
                await fake.wait_until(lambda: not bot.connected)
                dropped = await http.get("/readyz")
                release.set()
                await fake.wait_until(lambda: bot.connected)
                back = await http.get("/readyz")
        finally:
            await server.stop()
        assert waiting.status_code == 503 and "discord not connected" in waiting.json()["reasons"]
        assert ready.status_code == 200
        assert dropped.json() == {"ok": False, "reasons": ["discord not connected"]}
        assert back.status_code == 200
        assert sorted(bot.client.shards) == [0, 1] and len(bot.client.guilds) == 2
        assert [c.status for c in fake.calls_to(COMMAND_SYNC)] == [200]  # it holds shard 0
    finally:
        release.set()
        await asyncio.gather(starting, return_exceptions=True)
        await process.stop()


async def test_a_connection_discord_refuses_for_its_shards_stops_start_up_with_one_line(
    stepfun: FakeStepFun, sqlite_url: str
) -> None:
    async with run_fake_discord(guilds=two_guilds(), max_guilds_per_shard=1) as fake:
        unsharded = DiscordUnderTest(fake, stepfun, sqlite_url)
        with pytest.raises(StartupError) as too_few:
            await unsharded.start()
        await unsharded.stop()
        async with processes(fake, stepfun, sqlite_url, "0"):
            other = sqlite_url.replace("stepedit.sqlite3", "other.sqlite3")
            disagrees = DiscordUnderTest(
                fake, stepfun, other, settings={"discord_shard_count": 3, "discord_shard_ids": "1"}
            )
            with pytest.raises(StartupError) as invalid:
                await disagrees.start()
            await disagrees.stop()
    assert str(too_few.value) == (
        "Discord requires more shards: the bot is in too many servers for one connection. Set "
        "DISCORD_SHARD_COUNT to about one shard per 1,000 servers (see the README's Discord "
        "shards)"
    )
    assert str(invalid.value) == (
        "Discord refused shards [1] of DISCORD_SHARD_COUNT 3 (invalid shard): every process "
        "needs the same DISCORD_SHARD_COUNT"
    )
