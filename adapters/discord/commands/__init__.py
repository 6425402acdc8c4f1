"""Discord's slash commands, message menu, form and buttons, one module per concern:

    editing.py   /edit, the "Edit image" menu and its form, /imagine
    memes.py     /caption, /bubble (drawn by the bot)
    account.py   /quota, /seed, /settings, /help, /cancel, /forget
    admin.py     /stats, /grant, /ban, /unban (the operator's)
    answers.py   the commands that only answer a text (bot/commands.py's table)
    buttons.py   a press on any of the core's buttons

They translate only (bot/service.py decides) and raise what refuses them: the one place that
answers a failure is adapters/discord/replies.py. They import translate.py and messenger.py,
never adapters/discord/bot.py (which wires them)."""

from __future__ import annotations

from typing import Any

from discord import app_commands

from adapters.discord.commands import account, admin, answers, editing, memes
from adapters.discord.messenger import DiscordMessenger
from bot.service import EditService


def add_commands(
    tree: app_commands.CommandTree[Any], service: EditService, messenger: DiscordMessenger
) -> None:
    """Every slash command and the message menu; their answers are only for whoever asked."""
    admin.register(tree, service)
    memes.register(tree, service, messenger)
    editing.register(tree, service, messenger)
    account.register(tree, service)
    answers.register(tree, service)
