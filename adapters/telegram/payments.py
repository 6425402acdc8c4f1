"""Telegram Stars payments (python-telegram-bot): /buy sends the core's invoice, Telegram's
pre-checkout query gets the core's verdict (within its 10 s: nothing slow stands before it),
payments and refunds (service messages) go to the core, and /paysupport answers with the
operator's contact. adapters/telegram/bot.py registers these handlers; every rule is bot/shop.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import LabeledPrice, Update
from telegram.ext import (
    BaseHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from adapters.telegram.replies import decline
from adapters.telegram.translate import chat_ref, lang_of, user_ref
from bot.errors import StepEditError
from bot.service import EditService

log = logging.getLogger("stepedit.telegram")

COMMANDS = ("buy", "paysupport")  # in the menu while the bot sells


class TelegramPayments:
    def __init__(self, service: EditService, leave_unhandled: Callable[[int], None]) -> None:
        self.service = service
        # A payment or refund not written down must come again (webhook: Telegram sends it
        # again; polling: the next start), never be marked handled: crediting is idempotent.
        self._leave_unhandled = leave_unhandled

    def handlers(self) -> list[BaseHandler[Any, Any, Any]]:
        new = filters.UpdateType.MESSAGE
        return [
            CommandHandler("buy", self.on_buy, filters=new),
            CommandHandler("paysupport", self.on_paysupport, filters=new),
            PreCheckoutQueryHandler(self.on_pre_checkout),
            MessageHandler(new & filters.SUCCESSFUL_PAYMENT, self.on_paid),
            MessageHandler(new & filters.StatusUpdate.REFUNDED_PAYMENT, self.on_refunded),
        ]

    async def on_buy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The offer in words (the bot's own limits still apply), then the invoice in Stars."""
        message, who = update.effective_message, update.effective_user
        if message is None or who is None or message.sender_chat is not None:
            return
        invoice = await self.service.shop.invoice(user_ref(who), chat_ref(message), lang_of(update))
        await message.reply_text(invoice.intro)
        offer = invoice.offer
        await context.bot.send_invoice(
            message.chat_id, invoice.title, invoice.description, offer.payload,
            invoice.currency, [LabeledPrice(invoice.label, offer.price)],
        )  # fmt: skip

    async def on_pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.pre_checkout_query
        if query is None:
            return
        try:
            await self.service.shop.checkout(
                user_ref(query.from_user), query.invoice_payload, query.currency, query.total_amount
            )
        except Exception as exc:  # declined, never left unanswered (Telegram waits 10 s)
            if not isinstance(exc, StepEditError):
                log.error("update %s: the checkout failed", update.update_id, exc_info=exc)
            await decline(query, exc)
            return
        await query.answer(ok=True)

    async def on_paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, who = update.effective_message, update.effective_user
        paid = message.successful_payment if message else None
        if message is None or who is None or paid is None:
            return
        charge = paid.telegram_payment_charge_id
        paying = self.service.shop.paid(
            user_ref(who), charge, paid.invoice_payload, paid.total_amount, lang_of(update)
        )
        thanks = await self._recorded(update, charge, paying)
        await message.reply_text(thanks)

    async def on_refunded(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, who = update.effective_message, update.effective_user
        refunded = message.refunded_payment if message else None
        if message is None or who is None or refunded is None:
            return
        charge = refunded.telegram_payment_charge_id
        text = await self._recorded(
            update, charge, self.service.shop.refunded(user_ref(who), charge, lang_of(update))
        )
        await message.reply_text(text)

    async def _recorded(self, update: Update, charge: str, recording: Awaitable[str]) -> str:
        """The answer to a payment or refund once it is written down; if that fails (the
        database), the update is left unhandled, to come again, and the error goes on."""
        try:
            return await recording
        except StepEditError:
            raise
        except Exception:
            log.error("payment %s could not be recorded; it will be handled again", charge)
            self._leave_unhandled(update.update_id)
            raise

    async def on_paysupport(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(self.service.shop.support(lang_of(update)))
