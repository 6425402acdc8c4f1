"""Editing from an interaction: /edit, the "Edit image" message menu and its form, and /imagine.
"Thinking…" at once (Discord wants an answer within 3 s), then the core's note replaces it and
the picture follows. Refusals are raised: adapters/discord/replies.py answers them."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import discord
from discord import app_commands

from adapters.discord.messenger import DiscordMessenger
from adapters.discord.translate import (
    PLATFORM,
    PromptModal,
    attachment_file,
    chat_ref,
    checked,
    image_attachment,
    image_file,
    language,
    submitted,
    user_ref,
)
from bot.domain import (
    CFG_RANGE,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    STEPS_RANGE,
    EditRequest,
    FileRef,
    MessageRef,
    Upload,
)
from bot.service import EditService
from bot.texts import t


async def edit_from_interaction(
    service: EditService,
    messenger: DiscordMessenger,
    interaction: discord.Interaction,
    prompt: str,
    upload: FileRef,
    origin: MessageRef | None,
    overrides: tuple[tuple[str, str], ...] = (),
    more: tuple[Upload, ...] = (),
) -> None:
    """/edit and the "Edit image" form: queue the edit, answered through the interaction."""
    lang = language(interaction.locale, prompt)
    await interaction.response.defer(thinking=True)
    to = messenger.hold(interaction, lang)
    request = EditRequest(
        user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild), prompt,
        upload=upload, origin=origin, key=f"{PLATFORM}:i:{interaction.id}",
        answer_to=to.reply_to, language=lang, overrides=overrides, more=more,
    )  # fmt: skip
    admission = await service.submit(request)
    if admission is not None and admission.ignored:
        note = t("note_options_ignored", lang, names=", ".join(admission.ignored))
        with contextlib.suppress(discord.HTTPException):
            await interaction.followup.send(note, ephemeral=True)


async def edit_from_form(
    service: EditService,
    messenger: DiscordMessenger,
    interaction: discord.Interaction,
    target: re.Match[str],
) -> None:
    """The "Edit image" form, submitted: `target` (translate.MODAL_ID) names the message and
    the attachment, so it needs no memory of the form: any number of users may fill one in for
    the same image, and one submitted after a restart still edits."""
    data: dict[str, Any] = dict(interaction.data or {})
    prompt = submitted(list(data.get("components") or []), "prompt")
    channel_id = str(interaction.channel_id)
    file_id = f"{channel_id}:{target['message']}:{target['attachment']}"
    origin = MessageRef(PLATFORM, channel_id, target["message"])
    upload = FileRef(PLATFORM, file_id)
    await edit_from_interaction(service, messenger, interaction, prompt, upload, origin)


def register(
    tree: app_commands.CommandTree[Any], service: EditService, messenger: DiscordMessenger
) -> None:
    @tree.command(name="imagine", description=t("discord_imagine"))
    async def imagine(
        interaction: discord.Interaction, prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS]
    ) -> None:
        lang = language(interaction.locale, prompt)
        await interaction.response.defer(thinking=True)
        to = messenger.hold(interaction, lang)
        request = EditRequest(
            user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild),
            prompt, imagine=True, key=f"{PLATFORM}:i:{interaction.id}", answer_to=to.reply_to,
            language=lang,
        )  # fmt: skip
        await service.submit(request)

    @tree.command(name="edit", description=t("discord_edit"))
    @app_commands.describe(
        image=t("discord_edit_image"),
        prompt=t("discord_edit_prompt"),
        seed=t("discord_edit_seed"),
        steps=t("discord_edit_steps"),
        cfg=t("discord_edit_cfg"),
        text_mode=t("discord_edit_text_mode"),
        negative=t("discord_edit_negative"),
        image2=t("discord_edit_image_more"),
        image3=t("discord_edit_image_more"),
        image4=t("discord_edit_image_more"),
    )
    async def edit(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, STEPS_RANGE[0], STEPS_RANGE[1]] | None = None,
        cfg: app_commands.Range[float, CFG_RANGE[0], CFG_RANGE[1]] | None = None,
        text_mode: bool | None = None,
        negative: app_commands.Range[str, 1, MAX_NEGATIVE_PROMPT_CHARS] | None = None,
        image2: discord.Attachment | None = None,  # (options are fixed when registered:
        image3: discord.Attachment | None = None,  # four images in all)
        image4: discord.Attachment | None = None,
    ) -> None:
        given = {"seed": seed, "steps": steps, "cfg": cfg, "negative": negative}
        overrides = [(name, str(value)) for name, value in given.items() if value is not None]
        if text_mode is not None:
            overrides.append(("text", "on" if text_mode else "off"))
        # refused before "thinking…": only its user sees it
        upload = checked(attachment_file(image))
        more = tuple(
            Upload(checked(attachment_file(each))) for each in (image2, image3, image4) if each
        )
        for each in (upload, *(picture.file for picture in more)):
            service.check_claims(each)
        await edit_from_interaction(
            service, messenger, interaction, prompt, upload, None, tuple(overrides), more
        )

    async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
        attachment = image_attachment(message)
        service.check_claims(checked(image_file(message)))  # refused before the form
        assert attachment is not None  # checked() refused a message without one
        await interaction.response.send_modal(PromptModal(message, attachment))

    tree.add_command(app_commands.ContextMenu(name=t("discord_edit_menu"), callback=edit_image))
