"""The Discord adapter under hostile inputs, odd orderings, redeliveries and failures: what a user
sees in the fake Discord, what the service charged and what reached the fake StepFun API."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest

import adapters.discord.messenger
from bot.domain import MAX_SEED, Address, UserRef
from bot.ports import NoteGone
from bot.texts import t
from tests.discord_harness import DiscordUnderTest, is_note, mention_and_wait, photo
from tests.fakes.discord import (
    ALICE,
    BOB,
    GENERAL_ID,
    TOKEN,
    FakeDiscord,
    FakeUser,
    StoredMessage,
    Upload,
)
from tests.fakes.stepfun import FakeStepFun
from tests.images import decode, make_image, make_noise

CAROL = FakeUser(1_300_000_000_000_000_299, "carol", "Carol")  # in no guild the bot is in


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


def texts_to(fake: FakeDiscord, channel_id: int, message: StoredMessage) -> list[str]:
    """What the bot said (in words, not pictures or notes) in reply to `message`."""
    return [
        m.content
        for m in fake.sent(channel_id)
        if m.reply_to == message.id and not m.attachments and not is_note(m)
    ]


# --- hostile messages ---------------------------------------------------------------------


async def test_a_non_image_attachment_gets_a_clear_answer_and_costs_nothing(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    notes = Upload("notes.txt", b"hello", "text/plain")
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=[notes],
                                   mentions_bot=True)  # fmt: skip
    answer = await bot.text()
    assert answer.reply_to == sent.id
    assert answer.content == t("error_not_image", "en")
    assert not stepfun.requests
    assert await bot.quota_used(ALICE) == 0


async def test_several_images_in_one_message_are_one_request_and_come_back_in_one_message(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sizes = [(320, 240), (300, 200)]
    images = [photo(f"p{i}.jpg", make_image(*size)) for i, size in enumerate(sizes)]
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=images,
                            mentions_bot=True)  # fmt: skip
    result = await bot.result()
    assert [decode(request.image).size for request in stepfun.requests] == sizes  # one each
    assert [decode(file.data).size for file in result.attachments] == sizes
    assert any(":reroll:" in i for i in result.custom_ids)  # the request's buttons
    assert await bot.quota_used(ALICE) == 2  # one unit per picture delivered


async def test_several_images_without_words_are_asked_about_once_and_the_answer_edits_all(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    sizes = [(320, 240), (300, 200)]
    images = [photo(f"p{i}.jpg", make_image(*size)) for i, size in enumerate(sizes)]
    fake_discord.user_sends(dm.id, ALICE, "", attachments=images)
    question = await bot.text(dm.id)
    assert question.content == t("ask_prompt", "en")
    fake_discord.user_sends(dm.id, ALICE, "make it snow")  # (the next words, no reply)
    result = await bot.result(dm.id)
    assert [decode(request.image).size for request in stepfun.requests] == sizes  # one each
    assert [decode(file.data).size for file in result.attachments] == sizes
    assert await bot.quota_used(ALICE) == 2


async def test_slash_edit_takes_up_to_four_images(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sizes = [(320, 240), (300, 200), (200, 300)]
    images = [photo(f"p{i}.jpg", make_image(*size)) for i, size in enumerate(sizes)]
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": images[0], "image2": images[1], "image4": images[2],
                 "prompt": "make it night"},
    )  # fmt: skip
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages))
    shown = next(m for m in interaction.messages if m.attachments)
    assert [decode(request.image).size for request in stepfun.requests] == sizes
    assert [decode(file.data).size for file in shown.attachments] == sizes
    assert await bot.quota_used(ALICE) == 3


async def test_images_mixed_with_other_files_get_one_answer_and_cost_nothing(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sent = fake_discord.user_sends(
        GENERAL_ID, ALICE, "make it snow",
        attachments=[Upload("notes.txt", b"hello", "text/plain"), photo()], mentions_bot=True,
    )  # fmt: skip
    answer = await bot.text()
    assert answer.reply_to == sent.id and answer.content == t("error_mixed_album", "en")
    assert not stepfun.requests and not fake_discord.downloads
    assert await bot.quota_used(ALICE) == 0


async def test_a_huge_attachment_is_refused_before_any_download(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    huge = Upload("huge.png", b"\x89PNG" + bytes(21 * 1024 * 1024), "image/png")
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=[huge],
                                   mentions_bot=True)  # fmt: skip
    answer = await bot.text()
    assert answer.reply_to == sent.id
    assert answer.content == t("error_image_too_large", "en")
    assert not fake_discord.downloads
    assert await bot.quota_used(ALICE) == 0


async def test_an_empty_mention_with_nothing_to_edit_gets_an_answer(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "", mentions_bot=True)
    answer = await bot.text()
    assert answer.reply_to == sent.id
    assert answer.content in (t("error_prompt_empty", "en"), t("error_nothing_to_edit", "en"))
    assert await bot.quota_used(ALICE) == 0


async def test_a_600_character_prompt_is_refused_with_its_length(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "a" * 600, attachments=[photo()],
                                   mentions_bot=True)  # fmt: skip
    answer = await bot.text()
    assert answer.reply_to == sent.id
    assert answer.content == t("error_prompt_too_long", "en", length=600, limit=512)
    assert not stepfun.requests
    assert await bot.quota_used(ALICE) == 0


async def test_a_prompt_cannot_make_the_bot_ping_everyone_or_anyone(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    result = await mention_and_wait(bot, fake_discord, f"write @everyone and {BOB.mention} on it")
    allowed = result.payload.get("allowed_mentions")
    assert allowed is not None and allowed.get("parse") == []  # no @everyone, no users, no roles
    assert not allowed.get("users")


async def test_other_users_mentions_reach_the_api_as_names_not_ids(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    await mention_and_wait(bot, fake_discord, f"give {BOB.mention} a crown")
    prompt = stepfun.requests[-1].fields["prompt"]
    assert str(BOB.id) not in prompt and "Bob" in prompt


async def test_messages_by_the_bot_itself_are_ignored(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    fake_discord.user_sends(GENERAL_ID, fake_discord.bot, "make it snow", attachments=[photo()],
                            mentions_bot=True)  # fmt: skip
    await mention_and_wait(bot, fake_discord, "make it rain")
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it rain"]


async def test_a_dm_from_a_user_in_no_shared_guild_is_answered(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(CAROL)
    sent = fake_discord.user_sends(dm.id, CAROL, "make it snow", attachments=[photo()])
    result = await bot.result(dm.id)
    assert result.reply_to == sent.id
    assert await bot.quota_used(CAROL) == 1


async def test_a_reply_whose_message_was_deleted_still_gets_its_picture(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    first.deleted = True  # a moderator removed the result; the reply arrives without it
    stepfun.delay = 0.5
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "add a hat", reply_to=first,
                                   mentions_bot=True)  # fmt: skip
    await fake_discord.wait_until(lambda: len(stepfun.requests) == 2)
    sent.deleted = True  # and the user deleted their request while it ran
    result = await bot.result()
    assert result.reply_to is None
    assert await bot.quota_used(ALICE) == 2


async def test_an_image_whose_message_is_gone_when_its_edit_runs_gets_a_clear_answer(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    image = fake_discord.user_sends(dm.id, ALICE, "", attachments=[photo()])
    question = await bot.text(dm.id)
    image.deleted = True
    fake_discord.user_sends(dm.id, ALICE, "make it snow", reply_to=question)
    answer = await bot.text(dm.id)
    assert answer.content == t("error_unknown_edit", "en")
    assert await bot.quota_used(ALICE) == 0


async def test_a_reply_the_bot_cannot_read_is_not_answered_with_an_empty_prompt_error(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    """Without the message content intent, a reply that switched the ping off arrives empty:
    the bot cannot tell what it says, so it must not claim it said nothing."""
    first = await mention_and_wait(bot, fake_discord)
    fake_discord.user_sends(GENERAL_ID, ALICE, "add a hat", reply_to=first, reply_pings=False)
    await mention_and_wait(bot, fake_discord, "make it rain")
    said = [m.content for m in fake_discord.sent(GENERAL_ID) if not m.attachments]
    assert t("error_prompt_empty", "en") not in said
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow", "make it rain"]


async def test_a_system_message_in_a_dm_is_not_taken_for_a_request(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    fake_discord.user_sends(dm.id, ALICE, "make it snow", attachments=[photo()])
    result = await bot.result(dm.id)
    rain = fake_discord.user_sends(dm.id, ALICE, "make it rain", attachments=[photo()])
    # "Alice pinned a message" (type 6), which the fake cannot send by itself.
    pinned = dataclasses.replace(rain, id=rain.id + 1, type=6, content="", attachments=[],
                                 referenced=result)  # fmt: skip
    fake_discord._dispatch_message("MESSAGE_CREATE", pinned)
    fake_discord.user_sends(dm.id, ALICE, "make it a painting", attachments=[photo()])
    await bot.result(dm.id)
    await bot.result(dm.id)
    said = [m.content for m in fake_discord.sent(dm.id) if not m.attachments and not is_note(m)]
    assert said == []


# --- ordering and redelivery ----------------------------------------------------------------


async def test_a_text_right_after_an_uncaptioned_image_edits_that_image(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    fake_discord.user_sends(dm.id, ALICE, "", attachments=[photo("dog.jpg", make_image(200, 100))])
    fake_discord.user_sends(dm.id, ALICE, "make it snow")
    await bot.result(dm.id)
    assert decode(stepfun.requests[-1].image).size == (200, 100)
    said = [m.content for m in fake_discord.sent(dm.id) if not m.attachments]
    assert t("error_nothing_to_edit", "en") not in said


async def test_a_redelivered_message_makes_one_edit_and_one_charge(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=[photo()],
                                   mentions_bot=True)  # fmt: skip
    fake_discord._dispatch_message("MESSAGE_CREATE", sent)  # the fake has no public redelivery
    await bot.result()
    await mention_and_wait(bot, fake_discord, "make it rain")
    assert [r.fields["prompt"] for r in stepfun.requests] == ["make it snow", "make it rain"]
    assert len([m for m in fake_discord.sent(GENERAL_ID) if m.attachments]) == 2
    assert await bot.quota_used(ALICE) == 2


async def test_a_redelivered_uncaptioned_image_is_asked_about_once(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    sent = fake_discord.user_sends(dm.id, ALICE, "", attachments=[photo()])
    fake_discord._dispatch_message("MESSAGE_CREATE", sent)
    fake_discord.user_sends(dm.id, ALICE, "make it snow", attachments=[photo()])
    await bot.result(dm.id)
    assert texts_to(fake_discord, dm.id, sent) == [t("ask_prompt", "en")]


# --- failures of Discord itself -----------------------------------------------------------


async def test_a_server_error_on_sending_the_result_is_retried_not_reported(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.3
    sent = fake_discord.user_sends(GENERAL_ID, ALICE, "make it snow", attachments=[photo()],
                                   mentions_bot=True)  # fmt: skip
    await fake_discord.wait_until(lambda: bool(stepfun.requests))
    fake_discord.fail_next(1, status=500, method="POST", route="/channels/{channel_id}/messages")
    result = await bot.result(timeout=15)
    assert result.reply_to == sent.id
    assert texts_to(fake_discord, GENERAL_ID, sent) == []
    assert await bot.quota_used(ALICE) == 1


async def test_a_server_error_on_an_interactions_picture_is_retried_not_reported(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.3
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_until(lambda: interaction.original and is_note(interaction.original))
    fake_discord.fail_next(1, status=500, method="POST", route="/webhooks/{app_id}/{token}")
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages), 15)
    assert not [m for m in interaction.followups if m.ephemeral]
    assert await bot.quota_used(ALICE) == 1


async def test_a_failure_behind_a_button_is_answered_to_its_presser(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    first = await mention_and_wait(bot, fake_discord)
    undo = next(c for c in first.custom_ids if ":undo:" in c)
    fake_discord.fail_next(1, status=403, code=50013, message="Missing Permissions",
                           method="POST", route="/channels/{channel_id}/messages")  # fmt: skip
    pressed = fake_discord.user_clicks_button(first, undo)
    answer = await fake_discord.wait_for_followup(pressed)
    assert answer.ephemeral
    assert answer.content == t("error_generic", "en")


# --- buttons -----------------------------------------------------------------------------


async def test_a_button_of_another_channels_edit_does_nothing_here(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    dm = fake_discord.dm_channel(ALICE)
    fake_discord.user_sends(dm.id, ALICE, "make it snow", attachments=[photo()])
    private = await bot.result(dm.id)
    public = await mention_and_wait(bot, fake_discord, "make it rain")
    public.components = private.components  # a forged message carrying the DM's buttons
    reroll = next(c for c in private.custom_ids if ":reroll:" in c)
    pressed = fake_discord.user_clicks_button(public, reroll, user=BOB)
    answer = await fake_discord.wait_for_followup(pressed)
    assert answer.ephemeral
    assert answer.content == t("error_unknown_edit", "zh")  # Bob's Discord speaks Chinese
    assert len(stepfun.requests) == 2
    assert await bot.quota_used(BOB) == 0


async def test_result_buttons_do_not_pile_up_in_memory(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    await mention_and_wait(bot, fake_discord)
    await mention_and_wait(bot, fake_discord, "make it rain")
    assert bot.bot is not None
    assert not bot.bot.client.persistent_views  # the dynamic buttons answer every press


# --- interactions ------------------------------------------------------------------------


async def test_the_thinking_message_becomes_the_note_and_the_picture_follows(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_until(
        lambda: interaction.original is not None and is_note(interaction.original)
    )
    assert interaction.original is not None
    assert interaction.original.content == t("working", "en")
    picture = await fake_discord.wait_until(
        lambda: next((m for m in interaction.messages if m.attachments), None)
    )
    assert not picture.ephemeral and "make it night" in picture.content
    note = interaction.original
    await fake_discord.wait_until(lambda: note.deleted)


async def test_an_expired_interaction_answers_in_the_channel_mentioning_its_user(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_for_response(interaction)
    await fake_discord.wait_until(lambda: bool(stepfun.requests))
    fake_discord.expire_interactions()
    result = await bot.result()
    assert result.interaction is None
    assert result.content.startswith(ALICE.mention)
    assert [int(u) for u in result.payload["allowed_mentions"]["users"]] == [ALICE.id]
    assert await bot.quota_used(ALICE) == 1
    await mention_and_wait(bot, fake_discord, "make it rain")  # and the bot carries on


async def test_a_slash_edit_finished_after_a_restart_leaves_no_note_standing(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 3.0
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_until(lambda: bool(stepfun.requests))
    await fake_discord.wait_until(lambda: interaction.original and is_note(interaction.original))
    await bot.stop(grace=0)  # the job waits for the next start; its note is in "thinking…"
    stepfun.delay = 0.0
    await bot.start()
    await bot.result(timeout=15)
    note = interaction.original
    assert note is not None
    await fake_discord.wait_until(lambda: note.deleted, timeout=10)


async def test_interactions_past_their_tokens_life_answer_in_the_channel_and_are_forgotten(
    bot: DiscordUnderTest,
    fake_discord: FakeDiscord,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    assert (await bot.result()).interaction is first
    fresh = 0.0  # 15 minutes on
    monkeypatch.setattr(adapters.discord.messenger, "INTERACTION_FRESH_SECONDS", fresh)
    fake_discord.user_runs_slash_command("edit", {"image": photo(), "prompt": "make it day"})
    result = await bot.result()
    assert result.interaction is None and result.content.startswith(ALICE.mention)
    assert bot.bot is not None
    assert not bot.bot.messenger._held  # no interaction is kept once its token is useless


async def test_a_refusal_after_the_interaction_expired_is_still_answered(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    # Said to be a PNG (so admitted): its bytes are found out only once fetched.
    mislabelled = Upload("notes.png", b"not an image", "image/png")
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": mislabelled, "prompt": "x"}
    )
    await fake_discord.wait_for_response(interaction)
    fake_discord.expire_interactions()
    answer = await bot.text()
    assert answer.content == f"{ALICE.mention} {t('error_not_image', 'en')}"
    assert await bot.quota_used(ALICE) == 0


async def test_a_modal_submitted_with_a_blank_prompt_is_refused_privately(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    target = fake_discord.user_sends(GENERAL_ID, BOB, "", attachments=[photo()])
    menu = fake_discord.user_runs_message_command("Edit image", target)
    await fake_discord.wait_until(lambda: menu.modal is not None)
    assert menu.modal is not None
    submitted = fake_discord.user_submits_modal(menu.modal["custom_id"], {"prompt": "   "})
    answer = await fake_discord.wait_until(
        lambda: next((m for m in submitted.followups if not m.loading and not m.deleted), None)
    )
    assert answer.ephemeral
    assert answer.content == t("error_prompt_empty", "en")
    assert await bot.quota_used(ALICE) == 0


async def test_two_users_editing_the_same_image_from_the_menu_both_get_their_edit(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    target = fake_discord.user_sends(GENERAL_ID, BOB, "", attachments=[photo()])
    menus = [fake_discord.user_runs_message_command("Edit image", target, user=u)
             for u in (ALICE, BOB)]  # fmt: skip
    await fake_discord.wait_until(lambda: all(m.modal is not None for m in menus))
    for menu, prompt in zip(menus, ("make it snow", "make it rain"), strict=True):
        assert menu.modal is not None
        fake_discord.user_submits_modal(menu.modal["custom_id"], {"prompt": prompt}, user=menu.user)
    # (the fake records a request when it arrives, and its fields once it has read them)
    await fake_discord.wait_until(lambda: both_read(stepfun), timeout=10)
    assert sorted(r.fields["prompt"] for r in stepfun.requests) == ["make it rain", "make it snow"]


def both_read(stepfun: FakeStepFun) -> bool:
    return len(stepfun.requests) == 2 and all("prompt" in r.fields for r in stepfun.requests)


async def test_a_modal_submitted_after_a_restart_still_edits(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    target = fake_discord.user_sends(GENERAL_ID, BOB, "", attachments=[photo()])
    menu = fake_discord.user_runs_message_command("Edit image", target)
    await fake_discord.wait_until(lambda: menu.modal is not None)
    assert menu.modal is not None
    await bot.stop()
    await bot.start()
    fake_discord.user_submits_modal(menu.modal["custom_id"], {"prompt": "make it a painting"})
    await bot.result()
    assert stepfun.requests[-1].fields["prompt"] == "make it a painting"
    assert decode(stepfun.requests[-1].image).size == (320, 240)


async def test_seed_with_garbage_is_refused_privately(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    interaction = fake_discord.user_runs_slash_command("seed", {"value": "lots"})
    await fake_discord.wait_for_response(interaction)
    assert interaction.ephemeral
    assert interaction.original is not None
    assert interaction.original.content == t(
        "error_setting_int", "en", field="seed", low=0, high=MAX_SEED
    )


async def test_no_token_reaches_the_logs(
    bot: DiscordUnderTest,
    fake_discord: FakeDiscord,
    stepfun: FakeStepFun,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_discord.fail_next(1, status=429, retry_after=0.01, route="/webhooks/{app_id}/{token}")
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages))
    secret = interaction.token.split(":", 1)[1]
    assert secret not in caplog.text
    assert TOKEN not in caplog.text


async def test_cancel_on_the_note_after_the_request_left_is_answered_privately(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 1.0
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    note = await fake_discord.wait_until(
        lambda: interaction.original if interaction.original and is_note(interaction.original)
        else None
    )  # fmt: skip
    await fake_discord.wait_until(lambda: stepfun.requests)  # the API has it: past cancelling
    press = fake_discord.user_clicks_button(
        note, next(c for c in note.custom_ids if ":cancel:" in c)
    )
    answer = await fake_discord.wait_until(
        lambda: next((m for m in press.followups if m.ephemeral), None)
    )
    assert answer.content == t("nothing_to_cancel", "en")  # only the presser sees it
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages))
    assert await bot.quota_used(ALICE) == 1  # delivered, and counted


async def test_a_rate_limited_acknowledgement_still_thinks_and_answers(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    fake_discord.fail_next(1, status=429, retry_after=0.05,
                           route="/interactions/{interaction_id}/{token}/callback")  # fmt: skip
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": photo(), "prompt": "make it night"}
    )
    await fake_discord.wait_for_response(interaction)
    assert interaction.thinking
    await fake_discord.wait_until(lambda: any(m.attachments for m in interaction.messages))
    assert not [m for m in interaction.followups if m.ephemeral]


async def test_a_slash_edit_over_the_quota_is_refused_privately(
    fake_discord: FakeDiscord, stepfun: FakeStepFun, sqlite_url: str
) -> None:
    under_test = DiscordUnderTest(fake_discord, stepfun, sqlite_url, {"daily_quota": 1})
    await under_test.start()
    try:
        await mention_and_wait(under_test, fake_discord)
        interaction = fake_discord.user_runs_slash_command(
            "edit", {"image": photo(), "prompt": "make it night"}
        )
        answer = await fake_discord.wait_until(
            lambda: next((m for m in interaction.followups if m.ephemeral), None)
        )
        before_time = t("error_quota", "en", limit=1, resets="\0").split("\0")[0]
        assert answer.content.startswith(before_time)
        assert interaction.original is not None and interaction.original.deleted
        assert len(stepfun.requests) == 1
    finally:
        await under_test.stop()


async def test_a_settings_button_changes_the_private_settings_message(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    asked = fake_discord.user_runs_slash_command("settings", {})
    await fake_discord.wait_for_response(asked)
    shown = asked.original
    assert shown is not None and shown.ephemeral
    fake_discord.user_clicks_button(shown, "stepedit:set:steps:16")
    await fake_discord.wait_until(lambda: "steps: 16" in shown.content)
    assert bot.service is not None
    assert (await bot.service.settings(UserRef("discord", str(ALICE.id)))).steps == 16


# --- whose buttons, and which pictures they may show ---------------------------------------


def pictures_in(fake: FakeDiscord, channel_id: int = GENERAL_ID) -> list[StoredMessage]:
    return [m for m in fake.sent(channel_id) if m.attachments]


def button_of(message: StoredMessage, action: str) -> str:
    return next(c for c in message.custom_ids if f":{action}:" in c)


async def slash_edit(bot: DiscordUnderTest, fake: FakeDiscord) -> StoredMessage:
    """Alice's `/edit` of a photo only she saw (a slash command's attachment); the result."""
    fake.user_runs_slash_command("edit", {"image": photo(), "prompt": "make it night"})
    return await bot.result()


@pytest.mark.parametrize("action", ["undo", "reroll", "full"])
async def test_someone_elses_result_buttons_answer_them_privately_and_do_nothing(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun, action: str
) -> None:
    result = await slash_edit(bot, fake_discord)
    shown = len(pictures_in(fake_discord))
    pressed = fake_discord.user_clicks_button(result, button_of(result, action), user=BOB)
    answer = await fake_discord.wait_for_followup(pressed)
    assert answer.ephemeral
    assert answer.content == t("not_your_button", "zh")  # Bob's Discord speaks Chinese
    assert len(pictures_in(fake_discord)) == shown  # Alice's photo was not posted
    assert len(fake_discord.downloads) == 1  # fetched once, for the edit
    assert len(stepfun.requests) == 1
    assert (await bot.quota_used(ALICE), await bot.quota_used(BOB)) == (1, 0)


async def test_undo_of_a_slash_edit_never_posts_the_photo_only_its_owner_saw(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    result = await slash_edit(bot, fake_discord)
    shown = len(pictures_in(fake_discord))
    pressed = fake_discord.user_clicks_button(result, button_of(result, "undo"))
    answer = await fake_discord.wait_for_followup(pressed)
    assert answer.ephemeral and answer.content == t("undo_not_shown", "en")
    assert not answer.attachments
    assert len(pictures_in(fake_discord)) == shown
    # Undone all the same: what Alice asks next edits her photo, not the result.
    fake_discord.user_sends(GENERAL_ID, ALICE, "make it blue", mentions_bot=True)
    await bot.result()
    assert stepfun.requests[-1].image == stepfun.requests[0].image
    assert await bot.quota_used(ALICE) == 2


async def test_undo_of_a_caption_on_a_command_image_never_posts_the_plain_image(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    fake_discord.user_runs_slash_command("caption", {"text": "top | bottom", "image": photo()})
    drawn = await bot.result()
    shown = len(pictures_in(fake_discord))
    by_bob = fake_discord.user_clicks_button(drawn, button_of(drawn, "undo"), user=BOB)
    assert (await fake_discord.wait_for_followup(by_bob)).content == t("not_your_button", "zh")
    by_alice = fake_discord.user_clicks_button(drawn, button_of(drawn, "undo"))
    answer = await fake_discord.wait_for_followup(by_alice)
    assert answer.ephemeral and answer.content == t("undo_not_shown", "en")
    assert len(pictures_in(fake_discord)) == shown
    assert not stepfun.requests


async def test_new_words_on_someones_caption_never_uncover_a_picture_the_channel_never_saw(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    """`/caption` on a captioned picture redraws the plain picture under it, unless that one
    is someone else's and was never seen here: then the words go on top of the old ones."""
    fake_discord.user_runs_slash_command("caption", {"text": "top | bottom", "image": photo()})
    alices = await bot.result()
    fake_discord.user_sends(GENERAL_ID, BOB, "make it snow", reply_to=alices, mentions_bot=True)
    bobs = await bot.result()
    fake_discord.user_clicks_button(bobs, button_of(bobs, "undo"), user=BOB)
    await bot.result()  # Alice's captioned picture again: Bob's current one now
    fake_discord.user_runs_slash_command("caption", {"text": "new | words"}, user=BOB)
    redrawn = await bot.result()
    assert bot.store is not None
    alices_edit = await bot.store.get_edit(int(button_of(alices, "undo").rsplit(":", 1)[1]))
    bobs_edit = await bot.store.get_edit(int(button_of(redrawn, "undo").rsplit(":", 1)[1]))
    assert alices_edit is not None and bobs_edit is not None
    assert bobs_edit.source_image_id == alices_edit.result_image_id  # not the plain photo


async def test_undo_still_posts_a_photo_the_channel_saw(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    """The other side of the rule: a photo posted as a message may be shown again by its
    owner's Undo (and the Edit image menu's photo likewise)."""
    target = fake_discord.user_sends(GENERAL_ID, ALICE, "", attachments=[photo()])
    menu = fake_discord.user_runs_message_command("Edit image", target)
    await fake_discord.wait_until(lambda: menu.modal is not None)
    assert menu.modal is not None
    fake_discord.user_submits_modal(menu.modal["custom_id"], {"prompt": "make it a painting"})
    result = await bot.result()
    fake_discord.user_clicks_button(result, button_of(result, "undo"))
    back = await bot.result()
    assert back.reply_to == result.id
    assert decode(back.files[0][1]).size == (320, 240)


# --- what an interaction says before the bot answers in public --------------------------------


@pytest.mark.parametrize(
    ("command", "upload", "text"),
    [
        ("edit", Upload("notes.txt", b"hello", "text/plain"), t("error_not_image", "en")),
        ("caption", Upload("notes.txt", b"hello", "text/plain"), t("error_not_image", "en")),
        ("edit", photo("tiny.jpg", make_image(40, 40)), t("error_image_too_small", "en",
                                                             min_side=64)),
    ],
)  # fmt: skip
async def test_a_slash_command_file_that_is_surely_no_picture_is_refused_privately_at_once(
    bot: DiscordUnderTest,
    fake_discord: FakeDiscord,
    stepfun: FakeStepFun,
    command: str,
    upload: Upload,
    text: str,
) -> None:
    options = {"image": upload, "prompt": "make it snow", "text": "top | bottom"}
    names = ("image", "prompt") if command == "edit" else ("image", "text")
    interaction = fake_discord.user_runs_slash_command(command, {n: options[n] for n in names})
    await fake_discord.wait_for_response(interaction)
    assert interaction.ephemeral and not interaction.thinking  # no public "Editing…" first
    assert interaction.original is not None and interaction.original.content == text
    await bot.stop()  # all it did is done
    assert not fake_discord.downloads
    assert not [m for m in fake_discord.sent(GENERAL_ID) if not m.ephemeral]
    assert not stepfun.requests


# --- the upload limit an interaction states ----------------------------------------------------


async def test_a_lower_upload_limit_stated_by_the_interaction_is_the_limit(
    bot: DiscordUnderTest, fake_discord: FakeDiscord, stepfun: FakeStepFun
) -> None:
    limit = 1024 * 1024
    noisy = photo("noise.jpg", make_noise(1500, 1500, fmt="JPEG", seed=1))
    interaction = fake_discord.user_runs_slash_command(
        "edit", {"image": noisy, "prompt": "make it snow"}, attachment_size_limit=limit
    )
    picture = await fake_discord.wait_until(
        lambda: next((m for m in interaction.messages if m.attachments), None), timeout=20
    )
    (_, data), *_ = picture.files
    assert len(stepfun.results[0]) > limit >= len(data)  # fitted to the stated limit
    assert decode(data).size[0] == decode(data).size[1]
    assert not picture.ephemeral
    assert await bot.quota_used(ALICE) == 1


async def test_a_note_deleted_by_someone_else_says_so_when_it_is_changed(
    bot: DiscordUnderTest, fake_discord: FakeDiscord
) -> None:
    """Discord's "Unknown Message" is NoteGone (the board then sends a new note)."""
    assert bot.bot is not None
    messenger, to = bot.bot.messenger, Address("discord", str(GENERAL_ID))
    note_id = await messenger.send_note(to, "⏳ Queued, place 2", 1)
    await messenger.delete_note(to, note_id)  # by another process
    with pytest.raises(NoteGone):
        await messenger.edit_note(to, note_id, "⏳ Queued, place 1", 1)
