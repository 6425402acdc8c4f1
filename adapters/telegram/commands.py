"""The commands that answer in the chat: /start, /help, /quota, /seed, /settings, /cancel,
/forget, bot/commands.py's text answers, and the operator's (/stats, /grant, /ban, /unban,
/refund, /quota <id>). Refusals are raised, for adapters/telegram/replies.py."""

from __future__ import annotations

from collections.abc import Callable

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import ContextTypes

from adapters.telegram.translate import (
    PLATFORM,
    chat_ref,
    command_of,
    keyboard,
    lang_of,
    sender_ref,
)
from bot import presenter
from bot.commands import Asked
from bot.domain import Incoming
from bot.service import EditService
from bot.texts import t

COMMANDS = (
    "edit", "imagine", "caption", "bubble", "help", "quota", "seed", "settings", "cancel", "forget",
)  # fmt: skip
ADMIN_COMMANDS = ("stats", "grant", "ban", "unban", "refund")  # and /quota <id>; not in the menu


class Commands:
    def __init__(self, service: EditService, event_of: Callable[[int], Incoming | None]) -> None:
        self.service = service
        self._event_of = event_of  # an update's event, as kept when it was received

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        name = user.first_name if user else ""
        await self._reply(update, t("start", lang_of(update), name=name))

    async def on_text_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command of bot/commands.py's table: its text answer."""
        user, message = sender_ref(update), update.effective_message
        if user is None or message is None or not message.text:
            return
        name = message.text.split()[0].removeprefix("/").partition("@")[0].lower()
        asked = Asked(user, chat_ref(message), tuple(context.args or ()), lang_of(update))
        await self._reply(update, await self.service.answer(name, asked))

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._reply(update, presenter.help_text(PLATFORM, lang_of(update)))

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        lang = lang_of(update)
        buttons = keyboard(presenter.forget_buttons(lang))
        await self._reply(update, t("forget_confirm", lang), reply_markup=buttons)

    async def on_admin(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if user is None or message is None or not message.text:
            return
        command = command_of(message.text)
        event = self._event_of(update.update_id)
        answer = await self.service.admin(
            user, chat_ref(message), command, context.args or [], event=event
        )
        await self._reply(update, answer)

    async def on_quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        message = update.effective_message
        if user is None or message is None:
            return
        if context.args:  # an admin asking about someone
            answer = await self.service.admin(user, chat_ref(message), "quota", context.args)
            await self._reply(update, answer)
            return
        quota = await self.service.quota(user)
        await self._reply(update, presenter.quota_text(quota, lang_of(update)))

    async def on_seed(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        if user is None:
            return
        if context.args:
            settings = await self.service.change_setting(user, "seed", context.args[0])
        else:
            settings = await self.service.settings(user)
        text = presenter.seed_text(settings, lang_of(update), with_usage=not context.args)
        await self._reply(update, text)

    async def on_settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = sender_ref(update)
        if user is None:
            return
        args = context.args or []
        if args and args[0].lower() == "reset":
            settings = await self.service.reset_settings(user)
        elif args:
            settings = await self.service.change_setting(user, args[0], " ".join(args[1:]))
        else:
            settings = await self.service.settings(user)
        text = presenter.settings_text(settings, lang_of(update), *self.service.offers)
        await self._reply(update, text, reply_markup=keyboard(presenter.settings_buttons()))

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = sender_ref(update)
        if user is None or message is None:
            return
        if not await self.service.cancel(user, chat_ref(message)):
            await self._reply(update, t("nothing_to_cancel", lang_of(update)))
        # otherwise each cancelled request is answered by the core, replying to it

    async def _reply(
        self, update: Update, text: str, reply_markup: InlineKeyboardMarkup | None = None
    ) -> None:
        if update.effective_message:
            await update.effective_message.reply_text(text, reply_markup=reply_markup)
