"""Discord adapter (discord.py): messages, slash commands, the "Edit image" menu and buttons in;
core requests out; and the Messenger the core answers through. Like adapters/telegram/ it only
translates: every rule lives in the core (bot/service.py, bot/presenter.py). Imports point one
way:

    bot.py          the client, its lifecycle, the gate, events wired to handlers; messages
      │
      ▼
    commands/       slash commands, the message menu and its form, buttons (one module each)
      │
      ▼
    replies.py      the one place a failure becomes the user's answer
    messenger.py    the core's Messenger port: answers by Address (channel or interaction)
    translate.py    Discord objects -> core refs; the core's buttons and forms as components
"""

from adapters.discord.bot import DiscordBot
from adapters.discord.messenger import DiscordMessenger

__all__ = ["DiscordBot", "DiscordMessenger"]
