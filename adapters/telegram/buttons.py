"""A press on one of the core's buttons (under a result, a note, /settings or /forget), known
from its callback data alone ("reroll:42": the stored edit id, so buttons keep working after a
restart; the core checks that the edit belongs to the chat where the button was pressed)."""

from __future__ import annotations

import contextlib

from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from adapters.telegram.translate import PLATFORM, chat_ref, keyboard, lang_of, user_ref
from bot import presenter
from bot.domain import Address, ChatRef, UserRef
from bot.presenter import Action
from bot.service import EditService
from bot.texts import t


class Buttons:
    def __init__(self, service: EditService) -> None:
        self.service = service

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        message = query.message if isinstance(query.message, Message) else None
        press = presenter.parse_press(query.data)
        lang = lang_of(update)
        if message is None or press is None:
            await self._answer(query)
            return
        user, chat = user_ref(query.from_user), chat_ref(message)
        if press.action == Action.SET:
            await self._apply_setting_button(query, message, user, press.setting, lang)
            return
        if press.action == Action.FORGET:  # the presser's own data, whoever asked
            await self._answer(query)
            answer = await self.service.forget(user, confirmed=press.setting[1] == "yes")
            with contextlib.suppress(BadRequest):
                await message.edit_text(answer)
            return
        to = Address(PLATFORM, chat.id, str(message.message_id), lang)
        toast = None  # the core's word for the presser only (e.g. "not your button")
        try:
            toast = await self._press(user, chat, press, to, query)
        finally:  # the button stops spinning whatever happened (a failure is told below it)
            await self._answer(query, toast)

    async def _press(
        self, user: UserRef, chat: ChatRef, press: presenter.Press, to: Address,
        query: CallbackQuery,
    ) -> str | None:  # fmt: skip
        return await self.service.press(user, chat, press, to, key=f"{PLATFORM}:cb:{query.id}")

    async def _apply_setting_button(
        self,
        query: CallbackQuery,
        message: Message,
        user: UserRef,
        setting: tuple[str, str],
        lang: str,
    ) -> None:
        asker = message.reply_to_message.from_user if message.reply_to_message else None
        if asker is not None and asker.id != query.from_user.id:
            await self._answer(query, t("not_your_settings", lang))  # someone else's /settings
            return
        await self._answer(query)
        name, value = setting
        if name == "reset":
            settings = await self.service.reset_settings(user)
        else:
            settings = await self.service.change_setting(user, name, value)
        with contextlib.suppress(BadRequest):  # "message is not modified"
            await message.edit_text(
                presenter.settings_text(settings, lang, *self.service.offers),
                reply_markup=keyboard(presenter.settings_buttons()),
            )

    @staticmethod
    async def _answer(query: CallbackQuery, text: str | None = None) -> None:
        """Stop the button's spinner. A press answered late (e.g. queued while the bot was
        down) is "too old" for Telegram, but the action itself must still happen."""
        with contextlib.suppress(BadRequest):
            await query.answer(text)
