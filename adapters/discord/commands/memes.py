"""The memes the bot draws itself: /caption and /bubble (no API call, no unit). Refusals are
raised: adapters/discord/replies.py answers them."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from adapters.discord.messenger import DiscordMessenger
from adapters.discord.translate import attachment_file, chat_ref, checked, language, user_ref
from bot.service import EditService
from bot.texts import t


def register(
    tree: app_commands.CommandTree[Any], service: EditService, messenger: DiscordMessenger
) -> None:
    async def draw(
        interaction: discord.Interaction, kind: str, words: str, image: discord.Attachment | None
    ) -> None:
        lang = language(interaction.locale, words)
        user, chat = user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild)
        upload = None
        if image is not None:  # only its user saw it: kept, never linked to a message
            # refused before "thinking…": only its user sees it
            upload = checked(attachment_file(image))
            service.check_claims(upload)
        await interaction.response.defer(thinking=True)
        to = messenger.hold(interaction, lang)
        await service.draw(user, chat, kind, words, to, upload=upload)

    @tree.command(name="caption", description=t("discord_caption"))
    @app_commands.describe(text=t("discord_caption_text"), image=t("discord_meme_image"))
    async def caption(
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 450],
        image: discord.Attachment | None = None,
    ) -> None:
        await draw(interaction, "caption", text, image)

    @tree.command(name="bubble", description=t("discord_bubble"))
    @app_commands.describe(text=t("discord_bubble_text"), image=t("discord_meme_image"))
    async def bubble(
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 450],
        image: discord.Attachment | None = None,
    ) -> None:
        await draw(interaction, "bubble", text, image)
