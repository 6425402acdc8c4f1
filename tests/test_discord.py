"""The Discord adapter end to end: the real DiscordBot (discord.py) against the fake Discord
(REST, gateway, CDN), the real EditService and SqlStore, and the fake StepFun API."""

from __future__ import annotations

from importlib import metadata

from bot.config import IdSet, OperatorRules
from bot.texts import t
from tests.discord_harness import DiscordUnderTest, is_note, mention_and_wait, photo
from tests.fakes.discord import (
    ALICE,
    BOB,
    GENERAL_ID,
    OTHER_BOT,
    FakeDiscord,
    Upload,
)
from tests.fakes.stepfun import FakeStepFun
from tests.images import decode, make_image, make_noise


async def test_a_mention_with_an_image_gets_the_edited_image_as_a_reply_with_buttons(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sent = fake_discord.user_sends(
        GENERAL_ID, ALICE, "make it snow", attachments=[photo()], mentions_bot=True
    )
    result = await bot.result()
    assert result.reply_to == sent.id
    assert "make it snow" in result.content
    (_, data), *_ = result.files
    assert decode(data).size == (320, 240)
    assert [c.split(":")[1] for c in result.custom_ids] == ["reroll", "undo", "full", "compare"]
    assert stepfun.requests[-1].fields["prompt"] == "make it snow"
    assert await bot.quota_used(ALICE) == 1
    await fake_discord.wait_until(
        lambda: all(m.deleted for m in fake_discord.sent(GENERAL_ID) if is_note(m))
    )
    assert fake_discord.typing_in(GENERAL_ID) >= 1


async def test_messages_not_meant_for_the_bot_are_ignored(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    fake_discord.user_sends(GENERAL_ID, ALICE, "look at my cat", attachments=[photo()])
    fake_discord.user_sends(GENERAL_ID, OTHER_BOT, "edit this", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    fake_discord.user_sends(GENERAL_ID, BOB, "make it snow", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    result = await bot.result()  # only Bob's
    assert result.referenced is not None and result.referenced.author == BOB
    assert len(stepfun.requests) == 1


async def test_a_reply_to_a_result_refines_exactly_that_result_also_after_a_restart(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    await bot.stop()
    await bot.start()
    fake_discord.user_sends(GENERAL_ID, ALICE, "add a hat", reply_to=first)
    second = await bot.result()
    assert second.reply_to is not None
    assert stepfun.requests[-1].image == stepfun.results[0]  # the first result, as it was
    assert await bot.quota_used(ALICE) == 2


async def test_a_reply_mentioning_the_bot_under_someones_image_edits_that_image(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    theirs = fake_discord.user_sends(GENERAL_ID, BOB, "my cat", attachments=[photo()])
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it wear a crown", reply_to=theirs,
                            mentions_bot=True, reply_pings=False)  # fmt: skip
    await bot.result()
    assert stepfun.requests[-1].fields["prompt"] == "make it wear a crown"
    assert (await bot.quota_used(ALICE), await bot.quota_used(BOB)) == (1, 0)


async def test_slash_edit_thinks_at_once_then_answers_with_the_picture(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.3
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night", "steps": 12, "seed": 7}
    )
    await fake_discord.wait_for_response(interaction)
    assert interaction.thinking
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages))
    fields = stepfun.requests[-1].fields
    assert (fields["prompt"], fields["steps"], fields["seed"]) == ("make it night", "12", "7")
    assert await bot.quota_used(ALICE) == 1


async def test_a_refused_slash_edit_is_answered_only_to_its_user(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": Upload("notes.txt", b"not an image at all", "text/plain"),
                 "prompt": "x" * 300 + "!"},
    )  # fmt: skip
    await fake_discord.wait_for_response(interaction)
    assert interaction.ephemeral and not interaction.thinking  # refused before "thinking…"
    assert interaction.original is not None
    assert interaction.original.content == t("error_not_image", "en")
    assert not stepfun.requests
    assert await bot.quota_used(ALICE) == 0


async def test_the_edit_image_menu_asks_for_the_prompt_in_a_modal(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    target = fake_discord.user_sends(GENERAL_ID, BOB, "", attachments=[photo()])
    menu = fake_discord.user_runs_message_command("Edit image", target)
    await fake_discord.wait_until(lambda: menu.modal is not None)
    assert not menu.thinking  # a modal must be the first answer
    modal = menu.modal
    assert modal is not None
    fake_discord.user_submits_modal(modal["custom_id"], {"prompt": "make it a painting"})
    await fake_discord.wait_until(lambda: bool(stepfun.requests))
    assert stepfun.requests[-1].fields["prompt"] == "make it a painting"


async def test_reroll_after_a_restart_and_a_forged_button_from_another_channel(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    await bot.stop()
    await bot.start()
    reroll = next(c for c in first.custom_ids if ":reroll:" in c)
    fake_discord.user_clicks_button(first, reroll)
    again = await bot.result()
    assert again.reply_to == first.id
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow"] * 2
    assert stepfun.requests[1].fields["seed"] != stepfun.requests[0].fields["seed"]


async def test_slash_commands_answer_privately(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    for name in ("quota", "help", "settings", "cancel", "seed"):
        interaction = fake_discord.user_runs_slash_command(name, {})
        await fake_discord.wait_for_response(interaction)
        assert interaction.ephemeral, name
    helped = fake_discord.user_runs_slash_command("help", {}, user=BOB)  # zh-CN
    await fake_discord.wait_for_response(helped)
    assert helped.original is not None
    assert helped.original.content == t("help_discord", "zh")


async def test_about_answers_privately_with_the_version_model_and_limits(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    assert bot.service is not None
    editor = bot.service.editor
    asked = fake_discord.user_runs_slash_command("about", {})
    await fake_discord.wait_for_response(asked)
    assert asked.ephemeral and asked.original is not None
    text = asked.original.content
    assert f"stepedit {metadata.version('stepedit')}" in text
    assert f"Image model: {editor.model} ({editor.style})" in text and "5 edits a day" in text
    chinese = fake_discord.user_runs_slash_command("about", {}, user=BOB)  # zh-CN
    await fake_discord.wait_for_response(chinese)
    assert chinese.original is not None and "每天 5 次修改" in chinese.original.content


async def test_full_quality_sends_the_lossless_file(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    full = next(c for c in first.custom_ids if ":full:" in c)
    fake_discord.user_clicks_button(first, full)
    lossless = await fake_discord.next_message(
        GENERAL_ID, lambda m: m.from_bot and bool(m.attachments)
    )
    assert lossless.reply_to == first.id
    (name, data), *_ = lossless.files
    assert name.endswith(".png")
    assert decode(data).tobytes() == decode(stepfun.results[0]).tobytes()


async def test_a_slash_edit_whose_bot_restarted_answers_in_the_channel_mentioning_its_user(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 3.0
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_until(lambda: bool(stepfun.requests))
    await bot.stop(grace=0)  # its API call is abandoned: the job waits for the next start
    stepfun.delay = 0.0
    await bot.start()
    result = await fake_discord.next_message(
        GENERAL_ID, lambda m: m.from_bot and bool(m.attachments), timeout=15
    )
    assert result.interaction is not interaction
    assert result.content.startswith(f"<@{ALICE.id}>")
    assert "make it night" in result.content
    assert await bot.quota_used(ALICE) == 1


async def test_discords_rate_limits_never_reach_the_user(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    fake_discord.fail_next(2, status=429, retry_after=0.05)
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    result = await bot.result()
    assert "make it snow" in result.content
    assert not [m for m in fake_discord.sent(GENERAL_ID) if not m.attachments and not is_note(m)]


async def test_in_a_dm_an_image_needs_no_mention_and_an_uncaptioned_one_gets_a_question(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    fake_discord.user_sends(dm.id, ALICE, "make it snow", attachments=[photo()])
    await bot.result(dm.id)
    fake_discord.user_sends(dm.id, ALICE, "", attachments=[photo("dog.jpg", make_image(200, 100))])
    question = await bot.text(dm.id)
    assert question.content == t("ask_prompt", "en")
    fake_discord.user_sends(dm.id, ALICE, "give it a hat", reply_to=question)
    await bot.result(dm.id)
    assert decode(stepfun.requests[-1].image).size == (200, 100)
    assert await bot.quota_used(ALICE) == 2


async def test_forget_caption_and_admin_commands_on_discord(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    await mention_and_wait(bot, fake_discord)
    drawn = fake_discord.user_runs_slash_command("caption", {"text": "top words | bottom words"})
    await fake_discord.wait_until(lambda: any(m.attachments for m in drawn.messages))
    assert len(stepfun.requests) == 1 and await bot.quota_used(ALICE) == 1  # drawn: free
    for name, options in (("stats", {}), ("quota", {"user": str(BOB.id)})):
        refused = fake_discord.user_runs_slash_command(name, options)
        await fake_discord.wait_for_response(refused)
        assert refused.ephemeral and refused.original is not None
        assert refused.original.content == t("error_admins_only", "en")
    forget = fake_discord.user_runs_slash_command("forget", {})
    await fake_discord.wait_for_response(forget)
    assert forget.ephemeral and forget.original is not None
    fake_discord.user_clicks_button(forget.original, "stepedit:forget:yes")
    await fake_discord.wait_until(
        lambda: forget.original is not None and forget.original.content.startswith("Done")
    )
    assert await bot.quota_used(ALICE) == 1  # the quota is not forgotten


async def test_where_edits_cannot_be_bought_no_answer_mentions_buy_or_refund(
    fake_discord: FakeDiscord, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    """The bot sells edits for Telegram Stars (set), but not on Discord: the day's quota spent
    says nothing of /buy, and the operator's commands there do not include /refund."""
    selling = OperatorRules(
        stars_pack_price=50, stars_pack_edits=3, admins=IdSet.parse(str(BOB.id))
    )
    bot = DiscordUnderTest(fake_discord, stepfun, sqlite_url, {"daily_quota": 1, "rules": selling})
    await bot.start()
    try:
        await mention_and_wait(bot, fake_discord)
        fake_discord.user_sends(
            GENERAL_ID, ALICE, "make it rain", attachments=[photo()], mentions_bot=True
        )
        refused = await bot.text()
        assert refused.content == t("error_quota", limit=1, resets="00:00 (UTC)")
        assert "/buy" not in refused.content
        usage = fake_discord.user_runs_slash_command("quota", {"user": "nobody"}, user=BOB)
        await fake_discord.wait_for_response(usage)
        assert usage.original is not None
        assert usage.original.content == t("admin_usage")
        assert "/refund" not in usage.original.content
    finally:
        await bot.stop()


async def test_imagine_on_discord_makes_a_new_image(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    made = fake_discord.user_runs_slash_command("imagine", {"prompt": "a lighthouse at dawn"})
    await fake_discord.wait_until(lambda: any(m.attachments for m in made.messages))
    assert stepfun.requests[-1].path.endswith("/images/generations")
    assert await bot.quota_used(ALICE) == 1


async def test_an_oversize_result_is_fitted_and_its_lossless_file_refused_with_a_reason(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    noisy = make_noise(2400, 2400, fmt="JPEG")
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", mentions_bot=True,
                            attachments=[photo("noise.jpg", noisy)])  # fmt: skip
    result = await bot.result(timeout=30)
    (_, shown), *_ = result.files
    assert len(shown) <= 10 * 1024 * 1024 < len(stepfun.results[0])  # fitted to the limit
    assert decode(shown).size[0] / decode(shown).size[1] == 1.0
    full = next(c for c in result.custom_ids if ":full:" in c)
    press = fake_discord.user_clicks_button(result, full)
    await fake_discord.wait_until(lambda: bool(press.followups), timeout=20)
    (said,) = press.followups
    assert said.ephemeral and "MB" in said.content  # says why, only to the presser


async def test_undo_works_after_a_restart(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    await bot.stop()
    await bot.start()
    undo = next(c for c in first.custom_ids if ":undo:" in c)
    fake_discord.user_clicks_button(first, undo)
    back = await bot.result()
    assert back.reply_to == first.id
    assert decode(back.files[0][1]).size == (320, 240)
    assert len(stepfun.requests) == 1
