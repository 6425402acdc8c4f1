"""The operator's slash commands: /stats, /grant, /ban, /unban (and /quota for someone, see
account.py). Only server admins see them by default; ADMIN_IDS decides who may use them, and
bot/service.py answers them. Refusals are raised: adapters/discord/replies.py answers them."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from adapters.discord.translate import chat_ref, user_ref
from bot.errors import AdminsOnly, Ignored
from bot.operator import MAX_GRANT
from bot.service import EditService
from bot.texts import t


async def run_admin(
    service: EditService, interaction: discord.Interaction, command: str, args: list[str]
) -> None:
    """An admin command; anyone else hears "admins only": the core keeps quiet to them in a
    server's channel, but an interaction's answer is private, as in a DM (and must be given)."""
    chat = chat_ref(interaction.channel_id, interaction.guild)
    try:
        answer = await service.admin(user_ref(interaction.user), chat, command, args)
    except Ignored:
        raise AdminsOnly() from None
    await interaction.response.send_message(answer, ephemeral=True)


def register(tree: app_commands.CommandTree[Any], service: EditService) -> None:
    async def run(interaction: discord.Interaction, command: str, args: list[str]) -> None:
        await run_admin(service, interaction, command, args)

    admins_only = app_commands.default_permissions(administrator=True)

    @tree.command(name="stats", description=t("discord_stats"))
    @admins_only
    async def stats(interaction: discord.Interaction) -> None:
        await run(interaction, "stats", [])

    @tree.command(name="grant", description=t("discord_grant"))
    @admins_only
    async def grant(
        interaction: discord.Interaction, user: str, edits: app_commands.Range[int, 1, MAX_GRANT]
    ) -> None:
        await run(interaction, "grant", [user, str(edits)])

    @tree.command(name="ban", description=t("discord_ban"))
    @admins_only
    async def ban(interaction: discord.Interaction, user: str) -> None:
        await run(interaction, "ban", [user])

    @tree.command(name="unban", description=t("discord_unban"))
    @admins_only
    async def unban(interaction: discord.Interaction, user: str) -> None:
        await run(interaction, "unban", [user])
