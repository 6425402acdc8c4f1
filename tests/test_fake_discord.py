"""The fake Discord works with a real discord.py client (REST, gateway, CDN), unchanged."""

from __future__ import annotations

import io
import re
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.fakes.discord import (
    ALICE,
    APP_ID,
    BOB,
    BOT_ID,
    EPHEMERAL,
    GENERAL_ID,
    GUILD_ID,
    OTHER_BOT,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    make_png,
    run_fake_discord,
    running_client,
    shard_of,
)

with warnings.catch_warnings():
    # discord.py imports the deprecated stdlib audioop; pytest turns the warning into an error.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands

PNG = make_png(40, 30)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """Like the ``fake_discord`` fixture of tests/fakes/discord.py (not in conftest.py yet)."""
    async with run_fake_discord() as started:
        yield started
    assert started.server_errors == []


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"stepedit:reroll:(?P<id>\d+)"
):
    """A button that survives restarts: its state lives in the custom_id."""

    def __init__(self, edit_id: int) -> None:
        super().__init__(discord.ui.Button(label="Reroll", custom_id=f"stepedit:reroll:{edit_id}"))
        self.edit_id = edit_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> RerollButton:
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        assert isinstance(client, Bot)
        client.events.append(("reroll", self.edit_id))
        await interaction.response.edit_message(content=f"rerolling {self.edit_id}")


class PromptModal(discord.ui.Modal, title="Edit image"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What to change", custom_id="prompt"
    )

    def __init__(self, target: discord.Message) -> None:
        super().__init__(custom_id=f"stepedit:prompt:{target.id}")
        self.target = target

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"editing {self.target.id}: {self.prompt.value}")


class Bot(discord.Client):
    """A small bot on the real discord.py code paths the adapter will use."""

    def __init__(self, *, message_content: bool = True, sync_to: int | None = None) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(intents=intents, guild_ready_timeout=0.05, chunk_guilds_at_startup=False)
        self.tree = app_commands.CommandTree(self)
        self.sync_to = sync_to
        self.events: list[tuple[str, Any]] = []
        self.errors: list[BaseException] = []
        self.seen: list[discord.Message] = []
        self._add_commands()

    def _add_commands(self) -> None:
        @self.tree.command(name="edit", description="Edit an image")
        async def edit(
            interaction: discord.Interaction, image: discord.Attachment, prompt: str
        ) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            self.events.append(("edit", (prompt, interaction.filesize_limit, interaction.locale)))
            await interaction.followup.send(
                f"done: {prompt}", file=discord.File(io.BytesIO(data), "result.png")
            )

        @self.tree.command(name="quota", description="Your quota")
        async def quota(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("10 left", ephemeral=True)
            original = await interaction.original_response()
            await interaction.edit_original_response(content=original.content.replace("10", "9"))

        @self.tree.context_menu(name="Edit image")
        async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_modal(PromptModal(message))

        @self.tree.error
        async def on_error(
            interaction: discord.Interaction, error: app_commands.AppCommandError
        ) -> None:
            self.errors.append(error)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(RerollButton)
        guild = discord.Object(self.sync_to) if self.sync_to else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        await self.tree.sync(guild=guild)

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        if message.author.bot or not message.attachments:
            return
        if message.guild is not None and self.user not in message.mentions:
            return
        async with message.channel.typing():
            data = await message.attachments[0].read()
        view = discord.ui.View(timeout=None)
        view.add_item(RerollButton(42))
        await message.reply(
            "here you go", file=discord.File(io.BytesIO(data), "edited.png"), view=view
        )

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        assert error is not None
        self.errors.append(error)


@asynccontextmanager
async def bot_running(fake: FakeDiscord, **kwargs: Any) -> AsyncIterator[Bot]:
    client = Bot(**kwargs)
    async with running_client(fake, client):
        yield client
    assert client.errors == []


async def eventually(condition: Callable[[], Any], fake: FakeDiscord) -> Any:
    return await fake.wait_until(condition, timeout=5)


# ------------------------------------------------------------------------------------------
# Raw HTTP: the wire format
# ------------------------------------------------------------------------------------------


async def test_raw_rest_content_type_auth_errors_and_faults(fake: FakeDiscord) -> None:
    auth = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.rest_url}/users/@me", headers=auth) as resp:
            assert resp.headers["Content-Type"] == "application/json"  # no charset
            assert (await resp.json())["id"] == str(BOT_ID)
        async with http.get(f"{fake.rest_url}/users/@me") as resp:
            assert resp.status == 401
            assert await resp.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{fake.rest_url}/no/such/route", headers=auth) as resp:
            assert resp.status == 404
        too_long = {"content": "x" * 2001}
        url = f"{fake.rest_url}/channels/{GENERAL_ID}/messages"
        async with http.post(url, json=too_long, headers=auth) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["code"] == 50035
            assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        fake.fail_next(status=500, route="/channels/{channel_id}/typing")
        async with http.post(f"{fake.rest_url}/channels/{GENERAL_ID}/typing", headers=auth) as resp:
            assert resp.status == 500
        fake.fail_next(retry_after=1.5)
        async with http.get(f"{fake.rest_url}/users/@me", headers=auth) as resp:
            assert resp.status == 429 and resp.headers["Via"]
            assert (await resp.json())["retry_after"] == 1.5
    assert [c.status for c in fake.calls] == [200, 401, 404, 400, 500, 429]
    assert fake.calls[3].route == "POST /channels/{channel_id}/messages"


# ------------------------------------------------------------------------------------------
# A real discord.py client end to end
# ------------------------------------------------------------------------------------------


async def test_client_logs_in_identifies_and_becomes_ready_quickly(fake: FakeDiscord) -> None:
    started = time.monotonic()
    async with bot_running(fake) as bot:
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        assert bot.user is not None and bot.user.id == BOT_ID and bot.user.bot
        assert bot.application_id == APP_ID
        guild = bot.get_guild(GUILD_ID)
        assert guild is not None and not guild.unavailable
        assert [c.name for c in guild.text_channels] == ["general"]
        assert guild.member_count == 4  # Alice, Bob, another bot and ours
        assert [m.id for m in guild.members] == [BOT_ID]  # listed without the members intent
        assert bot.application_flags.gateway_message_content_limited
        await eventually(lambda: fake.heartbeats >= 1, fake)  # sent right after HELLO
        await eventually(lambda: bot.latency != float("inf"), fake)  # op 11 came back
        fake.request_heartbeat()
        await eventually(lambda: fake.heartbeats >= 2, fake)
    assert fake.routes()[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    connection = fake.connections[0]
    assert connection.kind == "identify" and connection.query["encoding"] == "json"
    # Client.close() interrupts the pending receive, whose handler closes with 4000 before the
    # intended 1000 is sent: Discord then keeps the session resumable for a while.
    assert connection.close_code in (1000, 4000)


async def test_rejected_token_and_disallowed_intent() -> None:
    async with run_fake_discord(privileged_intents=()) as fake:
        with pytest.raises(discord.LoginFailure):
            async with running_client(fake, Bot(), token="not-the-token"):
                pass
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running_client(fake, Bot(message_content=True)):
                pass
        async with bot_running(fake, message_content=False) as bot:
            assert bot.is_ready()


async def test_mention_with_attachment_gets_a_reply_with_file_and_button(fake: FakeDiscord) -> None:
    async with bot_running(fake) as bot:
        ignored = fake.user_sends(GENERAL_ID, ALICE, "no mention", attachments=[("a.png", PNG)])
        asked = fake.user_sends(
            GENERAL_ID,
            ALICE,
            "make it blue",
            attachments=[("my photo.png", PNG)],
            mentions_bot=True,
        )
        assert asked.content == f"<@{BOT_ID}> make it blue"
        assert asked.attachments[0].filename == "my_photo.png"  # Discord's renaming
        result = await fake.next_message(GENERAL_ID)
        assert result.reply_to == asked.id
        assert result.content == "here you go"
        assert result.files == [("edited.png", PNG)]
        assert result.attachments[0].content_type == "image/png"
        assert (result.attachments[0].width, result.attachments[0].height) == (40, 30)
        assert result.custom_ids == ["stepedit:reroll:42"]
        assert fake.typing_in(GENERAL_ID) >= 1
        assert [d.id for d in fake.downloads] == [asked.attachments[0].id]
        # The bot's own message comes back through the gateway (and is ignored by the bot).
        echo = await eventually(lambda: [m for m in bot.seen if m.id == result.id], fake)
        assert echo[0].author.id == BOT_ID and echo[0].reference is not None
        assert echo[0].attachments[0].url.startswith(fake.root)
        assert [m.id for m in bot.seen[:2]] == [ignored.id, asked.id]
        assert len(fake.sent(GENERAL_ID)) == 1


async def test_reply_to_the_bot_in_a_dm_downloads_the_referenced_result(fake: FakeDiscord) -> None:
    dm = fake.dm_channel(BOB)
    async with bot_running(fake, message_content=False) as bot:
        first = fake.user_sends(dm.id, BOB, "", attachments=[("cat.png", PNG)])  # DM: no mention
        result = await fake.next_message(dm.id)
        assert result.reply_to == first.id and result.guild_id is None
        reply = fake.user_sends(dm.id, BOB, "bluer", reply_to=result)
        assert reply.mentions == [fake.bot]  # a reply pings the replied-to author
        received = await eventually(lambda: [m for m in bot.seen if m.id == reply.id], fake)
        message = received[0]
        assert message.guild is None and isinstance(message.channel, discord.DMChannel)
        assert message.content == "bluer"  # DMs keep content without the intent
        assert message.reference is not None
        referenced = message.reference.resolved
        assert isinstance(referenced, discord.Message)
        assert await referenced.attachments[0].read() == PNG


async def test_without_message_content_intent_guild_messages_arrive_stripped(
    fake: FakeDiscord,
) -> None:
    async with bot_running(fake, message_content=False) as bot:
        plain = fake.user_sends(GENERAL_ID, BOB, "hello all", attachments=[("a.png", PNG)])
        other = fake.user_sends(GENERAL_ID, OTHER_BOT, f"<@{BOT_ID}> hi", mentions_bot=True)
        await eventually(lambda: len(bot.seen) == 2, fake)
        by_id = {m.id: m for m in bot.seen}
        assert by_id[plain.id].content == "" and by_id[plain.id].attachments == []
        assert by_id[other.id].content == f"<@{BOT_ID}> hi" and by_id[other.id].author.bot
        assert bot.user in by_id[other.id].mentions


async def test_slash_command_is_deferred_and_answered_with_a_followup_file(
    fake: FakeDiscord,
) -> None:
    async with bot_running(fake) as bot:
        assert [c["name"] for c in fake.commands[None]] == ["edit", "quota", "Edit image"]
        options = fake.commands[None][0]["options"]
        assert [(o["name"], o["type"]) for o in options] == [("image", 11), ("prompt", 3)]

        run = fake.user_runs_slash_command(
            "edit",
            {"image": ("in.png", PNG, "image/png"), "prompt": "sepia"},
            user=BOB,
            attachment_size_limit=25 * 1024 * 1024,
        )
        answer = await fake.wait_for_followup(run)
        assert run.thinking and not run.ephemeral
        assert run.ack_delay is not None and run.ack_delay < 3
        assert answer is run.original  # the first follow-up replaced the "thinking" message
        assert answer.content == "done: sepia" and answer.files == [("result.png", PNG)]
        assert answer.type == 20 and not answer.loading
        assert bot.events == [("edit", ("sepia", 25 * 1024 * 1024, discord.Locale.chinese))]
        assert await fake.next_message(GENERAL_ID) is answer

        dm = fake.dm_channel(ALICE)
        quota = fake.user_runs_slash_command("quota", channel_id=dm.id)
        assert "user" in quota.payload and "member" not in quota.payload  # a DM interaction
        edited = await fake.wait_for_call("PATCH /webhooks/{app_id}/{token}/messages/{message_id}")
        assert edited.params["message_id"] == "@original" and edited.ok
        assert quota.response_type == 4 and quota.ephemeral
        assert quota.original is not None and quota.original.flags & EPHEMERAL
        assert quota.original.content == "9 left"
        assert quota.original.edits[0].before["content"] == "10 left"
        with pytest.raises(AssertionError, match="Recent REST calls"):
            await fake.next_message(dm.id, lambda m: not m.ephemeral, timeout=0.05)


async def test_interaction_deadlines_and_expired_tokens(fake: FakeDiscord) -> None:
    async with bot_running(fake) as bot:
        fake.ack_deadline = 0.0  # answered too late: Discord has forgotten the interaction
        late = fake.user_runs_slash_command("quota")
        await eventually(lambda: bot.errors, fake)
        error = bot.errors.pop()
        assert isinstance(error, app_commands.CommandInvokeError)
        assert isinstance(error.original, discord.NotFound) and error.original.code == 10062
        assert not late.acknowledged

        fake.ack_deadline = 3.0
        run = fake.user_runs_slash_command("edit", {"image": ("a.png", PNG), "prompt": "x"})
        await fake.wait_for_followup(run)
        fake.expire_interactions()  # 15 minutes later
        async with aiohttp.ClientSession() as http:
            url = f"{fake.rest_url}/webhooks/{APP_ID}/{run.token}?wait=true"
            async with http.post(url, json={"content": "late"}) as resp:
                assert resp.status == 401 and (await resp.json())["code"] == 50027


async def test_message_context_menu_opens_a_modal_and_the_submit_is_answered(
    fake: FakeDiscord,
) -> None:
    async with bot_running(fake):
        photo = fake.user_sends(GENERAL_ID, BOB, "look", attachments=[("dog.png", PNG)])
        menu = fake.user_runs_message_command("Edit image", photo, user=ALICE)
        await fake.wait_for_response(menu)
        assert menu.response_type == 9 and menu.original is None
        assert menu.modal is not None and menu.modal["title"] == "Edit image"
        custom_id = f"stepedit:prompt:{photo.id}"
        assert fake.modals == [menu.modal] and menu.modal["custom_id"] == custom_id

        with pytest.raises(ValueError, match="left empty"):
            fake.user_submits_modal(custom_id, {})
        submit = fake.user_submits_modal(custom_id, {"prompt": "add a hat"})
        answer = await fake.next_message(GENERAL_ID)
        assert submit.response_type == 4 and submit.user == ALICE
        assert answer.content == f"editing {photo.id}: add a hat"


async def test_dynamic_button_works_after_a_restart(fake: FakeDiscord) -> None:
    async with bot_running(fake):
        asked = fake.user_sends(
            GENERAL_ID, ALICE, "hi", attachments=[("a.png", PNG)], mentions_bot=True
        )
        result = await fake.next_message(GENERAL_ID, lambda m: m.reply_to == asked.id)

    async with bot_running(fake) as restarted:  # a new Client instance, the same fake
        assert [c.kind for c in fake.connections] == ["identify", "identify"]
        assert fake.sessions[0].id != fake.sessions[1].id
        click = fake.user_clicks_button(result, "stepedit:reroll:42", user=BOB)
        await fake.wait_for_response(click)
        assert restarted.events == [("reroll", 42)]
        assert click.response_type == 7 and click.original is result
        assert result.content == "rerolling 42" and result.edits[0].source == "callback 7"
        assert result.custom_ids == ["stepedit:reroll:42"]  # components kept by the update
        with pytest.raises(LookupError):
            fake.user_clicks_button(result, "stepedit:reroll:43")


async def test_tree_sync_to_a_guild_is_recorded_and_ids_are_stable(fake: FakeDiscord) -> None:
    async with bot_running(fake, sync_to=GUILD_ID) as bot:
        assert [guild for guild, _ in fake.command_syncs] == [GUILD_ID]
        first_ids = [c["id"] for c in fake.commands[GUILD_ID]]
        await bot.tree.sync(guild=discord.Object(GUILD_ID))
        assert [c["id"] for c in fake.commands[GUILD_ID]] == first_ids
        run = fake.user_runs_slash_command("quota")
        assert run.data["guild_id"] == str(GUILD_ID)  # guild commands say so
        await fake.wait_until(lambda: run.original and run.original.edits)
        with pytest.raises(LookupError, match="no synced command"):
            fake.user_runs_slash_command("nope")


async def test_limits_rate_limits_and_edits_through_discord_py(fake: FakeDiscord) -> None:
    big = b"\0" * (10 * 1024 * 1024 + 1)
    fake.add_guild(
        FakeGuild(
            GUILD_ID + 1000,
            "Boosted",
            channels=[FakeChannel(GENERAL_ID + 1000, "boosted")],
            premium_tier=2,
        )
    )
    async with bot_running(fake) as bot:
        channel = bot.get_channel(GENERAL_ID)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_big:
            await channel.send(file=discord.File(io.BytesIO(big), "big.bin"))
        assert too_big.value.status == 413 and too_big.value.code == 40005
        boosted = bot.get_channel(GENERAL_ID + 1000)
        assert isinstance(boosted, discord.TextChannel)
        await boosted.send(file=discord.File(io.BytesIO(big), "big.bin"))

        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.code == 50035 and "2000 or fewer" in str(too_long.value)
        view = discord.ui.View()
        view.add_item(discord.ui.Button(label="x", custom_id="c" * 101))
        with pytest.raises(discord.HTTPException, match="between 1 and 100"):
            await channel.send("buttons", view=view)

        fake.fail_next(2, retry_after=0.01, route="/channels/{channel_id}/messages")
        sent = await channel.send("after two 429s")
        assert [c.status for c in fake.calls_to("POST /channels/{channel_id}/messages")][-3:] == [
            429,
            429,
            200,
        ]
        await sent.edit(content="edited")
        await sent.add_reaction("👍")
        stored = fake.message(sent.id)
        assert stored.content == "edited" and stored.edits[0].before["content"] == "after two 429s"
        assert stored.reactions == ["👍"]
        fetched = await channel.fetch_message(sent.id)
        assert fetched.content == "edited"
        await sent.delete()
        assert stored.deleted
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(sent.id)


async def test_reconnect_resumes_and_replays_missed_events(fake: FakeDiscord) -> None:
    async with bot_running(fake) as bot:
        fake.request_reconnect()
        missed = fake.user_sends(GENERAL_ID, ALICE, "while away")
        await eventually(lambda: any(m.id == missed.id for m in bot.seen), fake)
        await eventually(lambda: len(fake.connections) == 2 and fake.connections[1].kind, fake)
        resumed = fake.connections[1]
        assert resumed.kind == "resume" and resumed.path == "/resume/"
        replayed = [(f.get("t"), f.get("d", {}).get("id")) for f in resumed.sent if f["op"] == 0]
        assert replayed == [("MESSAGE_CREATE", str(missed.id)), ("RESUMED", None)]
        assert len(fake.sessions) == 1 and not fake.sessions[0].invalid
        assert [m.id for m in bot.seen].count(missed.id) == 1
        later = fake.user_sends(GENERAL_ID, ALICE, "after")
        await eventually(lambda: any(m.id == later.id for m in bot.seen), fake)


# ------------------------------------------------------------------------------------------
# Shards
# ------------------------------------------------------------------------------------------

NEXT_GUILD_ID = GUILD_ID + (1 << 22)  # the guild after GUILD_ID's in time: the other of 2 shards
NEXT_CHANNEL_ID = GENERAL_ID + (1 << 22)


def two_guilds() -> list[FakeGuild]:
    """GUILD_ID (shard 0 of 2) and another guild on shard 1 of 2."""
    first = FakeGuild(GUILD_ID, "Zero", [FakeChannel(GENERAL_ID, "general")], [ALICE, BOB])
    second = FakeGuild(NEXT_GUILD_ID, "One", [FakeChannel(NEXT_CHANNEL_ID, "general")], [ALICE])
    assert (shard_of(first.id, 2), shard_of(second.id, 2)) == (0, 1)
    return [first, second]


class ShardedBot(discord.AutoShardedClient):
    """discord.py's sharded client, as several processes run it: each with some of the shards."""

    def __init__(self, *, sync: bool = False, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(
            intents=intents, guild_ready_timeout=0.05, chunk_guilds_at_startup=False, **options
        )
        self.tree = app_commands.CommandTree(self)
        self.sync = sync
        self.seen: list[discord.Message] = []
        self.pinged: list[int | None] = []  # the guild of each /ping (None: a DM)

        @self.tree.command(name="ping", description="Pong")
        async def ping(interaction: discord.Interaction) -> None:
            self.pinged.append(interaction.guild_id)
            await interaction.response.send_message("pong")

    async def setup_hook(self) -> None:
        if self.sync:
            await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No wait between shards' IDENTIFYs (5 s in discord.py): the fake has no such limit."""

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)


async def test_each_shard_gets_its_guilds_events_and_dms_come_on_shard_zero() -> None:
    async with (
        run_fake_discord(guilds=two_guilds()) as fake,
        running_client(fake, ShardedBot(shard_count=2, shard_ids=[0], sync=True)) as zero,
        running_client(fake, ShardedBot(shard_count=2, shard_ids=[1])) as one,
    ):
        assert isinstance(zero, ShardedBot) and isinstance(one, ShardedBot)
        assert [g.id for g in zero.guilds] == [GUILD_ID]  # READY and GUILD_CREATE: its own
        assert [g.id for g in one.guilds] == [NEXT_GUILD_ID]
        assert [s.shard for s in fake.sessions] == [(0, 2), (1, 2)]
        ready = [s.events[0] for s in fake.sessions]
        assert [(f["t"], f["d"]["shard"]) for f in ready] == [("READY", [0, 2]), ("READY", [1, 2])]

        there = fake.user_sends(NEXT_CHANNEL_ID, ALICE, "on shard one")
        here = fake.user_sends(GENERAL_ID, BOB, "on shard zero")
        private = fake.user_sends(fake.dm_channel(BOB).id, BOB, "a DM")
        await eventually(lambda: len(zero.seen) == 2 and len(one.seen) == 1, fake)
        assert [m.id for m in zero.seen] == [here.id, private.id]
        assert [m.id for m in one.seen] == [there.id]
        assert fake.shards_that_got("MESSAGE_CREATE", there.id) == [(1, 2)]
        assert fake.shards_that_got("MESSAGE_CREATE", private.id) == [(0, 2)]

        in_guild = fake.user_runs_slash_command("ping", channel_id=NEXT_CHANNEL_ID)
        in_dm = fake.user_runs_slash_command("ping", channel_id=fake.dm_channel(BOB).id)
        await fake.wait_until(lambda: in_guild.acknowledged and in_dm.acknowledged)
        assert (zero.pinged, one.pinged) == ([None], [NEXT_GUILD_ID])
        assert fake.shards_that_got("INTERACTION_CREATE", in_guild.id) == [(1, 2)]
        assert fake.shards_that_got("INTERACTION_CREATE", in_dm.id) == [(0, 2)]
        late = fake.add_guild(
            FakeGuild(NEXT_GUILD_ID + (2 << 22), "Late", [FakeChannel(GENERAL_ID + 7, "late")])
        )
        await eventually(lambda: one.get_guild(late.id), fake)  # shard 1 of 2 again
        assert zero.get_guild(late.id) is None


async def test_gateway_bot_recommends_a_shard_count_that_discord_py_follows() -> None:
    async with (
        run_fake_discord(guilds=two_guilds(), recommended_shards=2) as fake,
        running_client(fake, ShardedBot()) as bot,
    ):
        assert isinstance(bot, ShardedBot)
        assert "GET /gateway/bot" in fake.routes()
        assert bot.shard_count == 2 and sorted(bot.shards) == [0, 1]
        assert sorted(g.id for g in bot.guilds) == [GUILD_ID, NEXT_GUILD_ID]
        assert sorted(s.shard for s in fake.sessions) == [(0, 2), (1, 2)]
    async with run_fake_discord(guilds=[]) as fake, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {fake.token}"}
        async with http.get(f"{fake.rest_url}/gateway/bot", headers=auth) as resp:
            assert (await resp.json())["shards"] == 1  # one per 1,000 guilds, at least one


async def test_a_shard_discord_would_refuse_is_closed_with_its_code() -> None:
    async with run_fake_discord(guilds=two_guilds(), max_guilds_per_shard=1) as fake:
        with pytest.raises(discord.ConnectionClosed) as not_below:
            async with running_client(fake, ShardedBot(shard_count=2, shard_ids=[2])):
                pass
        assert not_below.value.code == 4010  # invalid shard
        with pytest.raises(discord.ConnectionClosed) as too_many:
            async with running_client(fake, Bot()):  # unsharded: both guilds on one connection
                pass
        assert too_many.value.code == 4011  # sharding required
        async with running_client(fake, ShardedBot(shard_count=2, shard_ids=[0])):
            with pytest.raises(discord.ConnectionClosed) as disagrees:
                async with running_client(fake, ShardedBot(shard_count=3, shard_ids=[1])):
                    pass
            assert disagrees.value.code == 4010  # another process counts 2 shards
    assert [c.close_code for c in fake.connections][:2] == [4010, 4011]
