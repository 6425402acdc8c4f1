"""The commands of bot/commands.py's table (TEXT_COMMANDS), each a slash command whose answer
is its text, shown only to whoever asked. A new entry there is registered here by itself."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from adapters.discord.translate import chat_ref, language, user_ref
from bot.commands import TEXT_COMMANDS, Asked
from bot.service import EditService
from bot.texts import t


def register(tree: app_commands.CommandTree[Any], service: EditService) -> None:
    for name in TEXT_COMMANDS:
        tree.add_command(_command(name, service))


def _command(name: str, service: EditService) -> app_commands.Command[Any, Any, None]:
    async def answer(interaction: discord.Interaction) -> None:
        chat = chat_ref(interaction.channel_id, interaction.guild)
        asked = Asked(user_ref(interaction.user), chat, (), language(interaction.locale))
        text = await service.answer(name, asked)
        await interaction.response.send_message(text, ephemeral=True)

    return app_commands.Command(name=name, description=t(f"command_{name}"), callback=answer)
