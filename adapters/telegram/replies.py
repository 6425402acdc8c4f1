"""The one place a failure becomes the user's answer on Telegram: handlers raise, and PTB hands
what they raised to `on_error`; what the gate refuses is answered by `refuse`, and a payment
refused before Telegram takes the Stars by `decline`.

- a StepEditError is a refusal: its own words (bot/texts.py `error_text`);
- Ignored is nothing to say (someone the operator keeps out, told already; a pressed button
  only stops spinning);
- anything else is ours: logged with its trace, and the user gets an apology.

Errors of queued jobs are answered by the core."""

from __future__ import annotations

import contextlib
import logging

from telegram import PreCheckoutQuery, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from adapters.telegram.translate import lang_of
from bot import texts
from bot.errors import Ignored, StepEditError
from bot.texts import t

log = logging.getLogger("stepedit.telegram")


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A handler's error: a StepEditError (a refused request) is the user's answer; anything
    else is logged with its traceback and the user gets a generic apology."""
    error = context.error
    if not isinstance(update, Update):
        log.error("error outside an update: %s", error, exc_info=error)
        return
    if isinstance(error, Ignored):
        return  # someone the operator keeps out, told already (or in a group)
    if isinstance(error, StepEditError):
        text = texts.error_text(error, lang_of(update))
    else:
        log.error("unhandled error in update %s", update.update_id, exc_info=error)
        text = t("error_generic", lang_of(update))
    message = update.effective_message
    if message is not None:
        with contextlib.suppress(TelegramError):
            await message.reply_text(text, do_quote=True)


async def decline(query: PreCheckoutQuery, reason: BaseException) -> None:
    """Refuse a payment before Telegram takes the Stars, saying why (Telegram shows it)."""
    lang = texts.language_for(query.from_user.language_code)
    if isinstance(reason, StepEditError) and not isinstance(reason, Ignored):
        text = texts.error_text(reason, lang)
    else:
        text = t("checkout_declined", lang)
    await query.answer(ok=False, error_message=text)


async def refuse(update: Update, exc: Exception) -> None:
    """Answer what the gate refused: its reason (the button's popup, or a reply), nothing
    for what is ignored (a pressed button only stops spinning)."""
    text = None
    if isinstance(exc, StepEditError) and not isinstance(exc, Ignored):
        text = texts.error_text(exc, lang_of(update))
    elif not isinstance(exc, Ignored):
        log.error("update %s: the gate failed", update.update_id, exc_info=exc)
        text = t("error_generic", lang_of(update))
    with contextlib.suppress(Exception):  # cosmetic: the update is stopped all the same
        if update.pre_checkout_query is not None:  # Telegram waits for a verdict
            await decline(update.pre_checkout_query, exc)
        elif update.callback_query is not None:
            await update.callback_query.answer(text)
        elif text is not None and update.effective_message is not None:
            await update.effective_message.reply_text(text, do_quote=True)
