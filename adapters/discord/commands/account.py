"""A user's own commands: /quota, /seed, /settings, /help, /cancel and /forget. Their answers
are ephemeral: only whoever asked sees them. Refusals are raised: adapters/discord/replies.py
answers them."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from adapters.discord.commands.admin import run_admin
from adapters.discord.translate import PLATFORM, chat_ref, language, user_ref, view_of
from bot import presenter
from bot.service import EditService
from bot.texts import t


async def _private(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True)


def register(tree: app_commands.CommandTree[Any], service: EditService) -> None:
    @tree.command(name="forget", description=t("discord_forget"))
    async def forget(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        await interaction.response.send_message(
            t("forget_confirm", lang), view=view_of(presenter.forget_buttons(lang)), ephemeral=True
        )

    @tree.command(name="quota", description=t("discord_quota"))
    @app_commands.describe(user=t("discord_quota_user"))
    async def quota(interaction: discord.Interaction, user: str | None = None) -> None:
        lang = language(interaction.locale)
        if user is not None:  # an admin asking about someone: as /stats and the others
            await run_admin(service, interaction, "quota", [user])
            return
        status = await service.quota(user_ref(interaction.user))
        await _private(interaction, presenter.quota_text(status, lang))

    @tree.command(name="seed", description=t("discord_seed"))
    async def seed_command(interaction: discord.Interaction, value: str | None = None) -> None:
        lang = language(interaction.locale)
        user = user_ref(interaction.user)
        if value is None:
            settings = await service.settings(user)
        else:
            settings = await service.change_setting(user, "seed", value)
        await _private(interaction, presenter.seed_text(settings, lang, with_usage=value is None))

    @tree.command(name="settings", description=t("discord_settings"))
    async def settings_command(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        settings = await service.settings(user_ref(interaction.user))
        await interaction.response.send_message(
            presenter.settings_text(settings, lang, *service.offers),
            view=view_of(presenter.settings_buttons()),
            ephemeral=True,
        )

    @tree.command(name="help", description=t("discord_help"))
    async def help_command(interaction: discord.Interaction) -> None:
        await _private(interaction, presenter.help_text(PLATFORM, language(interaction.locale)))

    @tree.command(name="cancel", description=t("discord_cancel"))
    async def cancel(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        chat = chat_ref(interaction.channel_id, interaction.guild)
        if await service.cancel(user_ref(interaction.user), chat):
            await _private(interaction, t("cancelled", lang))
        else:
            await _private(interaction, t("nothing_to_cancel", lang))
