"""Telegram adapter (python-telegram-bot): updates in, core requests out; and the Messenger the
core answers through."""

from adapters.telegram.bot import (
    Addressing,
    TelegramBot,
    TelegramMessenger,
    webhook_command,
    webhook_routes,
)

__all__ = ["Addressing", "TelegramBot", "TelegramMessenger", "webhook_command", "webhook_routes"]
