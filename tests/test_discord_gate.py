"""The one gate on Discord: every slash command, button, form and message passes it before it
is deferred or anything of it kept. Someone banned (also ahead of their first message) or off
the allowlist hears it privately, and no public "thinking…" is shown first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import pytest
from sqlalchemy import func, select

from bot.config import IdSet, OperatorRules
from bot.domain import ChatRef, UserRef
from bot.errors import Ignored
from bot.texts import t
from storage.models import User
from tests.discord_harness import DiscordUnderTest, photo
from tests.fakes.discord import ALICE, BOB, GENERAL_ID, FakeDiscord, FakeInteraction
from tests.fakes.stepfun import FakeStepFun

ADMIN = UserRef("discord", "9", "Admin", None)


@pytest.fixture
async def gated(
    fake_discord: FakeDiscord, stepfun: FakeStepFun, sqlite_url: str
) -> AsyncIterator[DiscordUnderTest]:
    rules = OperatorRules(admins=IdSet.parse("9"), allowed_users=IdSet.parse(f"{ALICE.id},9"))
    under_test = DiscordUnderTest(fake_discord, stepfun, sqlite_url, {"rules": rules})
    await under_test.start()
    try:
        yield under_test
    finally:
        await under_test.stop()


async def _users(bot: DiscordUnderTest) -> int:
    assert bot.store is not None
    async with bot.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(User))).scalar_one())


async def test_someone_kept_out_hears_it_privately_before_any_thinking(
    gated: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    for name, options in (("edit", {"image": photo(), "prompt": "snow"}), ("settings", {}),
                          ("caption", {"text": "top | bottom", "image": photo()})):  # fmt: skip
        interaction = fake_discord.user_runs_slash_command(name, options, user=BOB)
        await fake_discord.wait_for_response(interaction)
        assert interaction.ephemeral and not interaction.thinking
        assert interaction.callbacks[0].data.get("content") == t("error_not_allowed", "zh")
    fake_discord.user_sends(GENERAL_ID, BOB, "make it snow", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    assert await _users(gated) == 0  # nothing of Bob was kept
    # Alice's message after Bob's in the channel is handled after his: by her result, his is.
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it rain", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    await gated.result()
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it rain"]
    assert await _users(gated) == 1
    said = [m.content for m in fake_discord.messages(GENERAL_ID) if m.from_bot]
    assert not [text for text in said if "snow" in (text or "") or "private" in (text or "")]


async def test_a_user_banned_ahead_is_refused_privately_from_the_first_command(
    gated: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    assert gated.service is not None
    banned = await gated.service.admin(ADMIN, ChatRef("discord", "9", True), "ban", [str(ALICE.id)])
    assert banned == t("admin_banned", who=f"discord:{ALICE.id}")
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "snow"}, user=ALICE
    )
    await fake_discord.wait_for_response(interaction)
    assert interaction.ephemeral and not interaction.thinking
    assert interaction.callbacks[0].data.get("content") == t("error_banned")
    assert stepfun.requests == []


async def test_past_the_gate_a_request_the_core_keeps_quiet_about_gets_nothing_more(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused with Ignored after "thinking…" (banned meanwhile and told already, too fast and
    told already): every command alike takes "thinking…" away and says nothing more."""
    assert bot.service is not None

    async def told_already(*args: object, **kwargs: object) -> None:
        raise Ignored("banned, told already")

    monkeypatch.setattr(bot.service, "submit", told_already)
    monkeypatch.setattr(bot.service, "draw", told_already)
    for name, options in (("edit", {"image": photo(), "prompt": "snow"}),
                          ("imagine", {"prompt": "a lighthouse"}),
                          ("caption", {"text": "top | bottom"})):  # fmt: skip
        interaction = fake_discord.user_runs_slash_command(name, options)
        await fake_discord.wait_until(partial(_thinking_taken_away, interaction))
        await asyncio.sleep(0.2)  # an answer would follow the deletion at once
        assert interaction.thinking
        assert [m for m in interaction.followups if not m.deleted] == [], name


def _thinking_taken_away(interaction: FakeInteraction) -> bool:
    return interaction.original is not None and interaction.original.deleted
