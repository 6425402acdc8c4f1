"""Telegram adapter (python-telegram-bot): updates in, core requests out; and the Messenger the
core answers through, which needs nothing but a stored address, so a job resumed after a restart
answers in its chat. Every rule (quota, seeds, sources, limits, queueing) lives in
bot/service.py; the adapter only decides *whether* a message is addressed to the bot and *how*
to show answers. Imports point one way:

    bot.py          the Application, start/stop, the gate, the handlers' table; `stepedit webhook`
      │
      ▼
    polling.py      getUpdates: each batch kept as received, then handed to the lanes
    webhook.py      webhook mode: setWebhook, the route, the update types the handlers take
    editing.py      photos, albums, texts, /edit, /imagine, /caption, /bubble
    commands.py     the commands that answer in the chat, the operator's among them
    buttons.py      a press on one of the core's buttons
    payments.py     Telegram Stars: /buy's invoice, pre-checkout, payments and refunds
      │
      ▼
    lanes.py        each user's updates in a chat handled in order; what is known of each
    replies.py      the one place a failure becomes the user's answer
    messenger.py    the core's Messenger port: answers by Address
      │
      ▼
    translate.py    Telegram objects -> core refs; what a message says; the core's buttons
"""

from adapters.telegram.bot import TelegramBot, webhook_command, webhook_routes
from adapters.telegram.messenger import TelegramMessenger
from adapters.telegram.translate import Addressing

__all__ = ["Addressing", "TelegramBot", "TelegramMessenger", "webhook_command", "webhook_routes"]
