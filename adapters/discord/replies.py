"""The one place a failure becomes the user's answer on Discord (as adapters/telegram/replies.py's
`on_error`): handlers raise, and the command tree's error handler, the buttons, the form and the
gate hand what they caught to `answer_error`; a channel message's refusal uses `refusal_text`.

- a StepEditError is a refusal: its own words (bot/texts.py `error_text`);
- Ignored is nothing to say (someone the operator keeps out, told already; too fast, told
  already): nothing, as on Telegram, once the interaction is acknowledged (a button's silent
  deferral, a command's "thinking…"); one not acknowledged yet must be answered, and hears what
  the gate says of whoever it keeps out: "not allowed";
- anything else is ours: logged with its trace, and the user gets an apology.

Answers to an interaction are ephemeral: only its user sees them. A "thinking…" shown for a
refused request is taken away first (everyone in the channel sees it)."""

from __future__ import annotations

import contextlib
import logging

import discord

from adapters.discord.messenger import DiscordMessenger
from adapters.discord.translate import language
from bot import texts
from bot.errors import Ignored, StepEditError
from bot.texts import t

log = logging.getLogger("stepedit.discord")


def refusal_text(error: BaseException, lang: str) -> str | None:
    """What the user hears of `error`: None for Ignored, else a refusal's words or, for a
    failure of ours, an apology (the caller logs it: see `log_failure`)."""
    if isinstance(error, Ignored):
        return None
    if isinstance(error, StepEditError):
        return texts.error_text(error, lang)
    return t("error_generic", lang)


def log_failure(error: BaseException, what: str) -> None:
    """A failure of ours (not a refusal) goes to the operator's log with its trace."""
    if not isinstance(error, StepEditError):
        log.error("%s could not be handled", what, exc_info=error)


async def answer_error(
    interaction: discord.Interaction, error: BaseException, messenger: DiscordMessenger
) -> None:
    """Answer `interaction` for `error`, privately (an answer Discord refuses is let be)."""
    log_failure(error, f"interaction {interaction.id}")
    lang = language(interaction.locale)
    response = interaction.response
    thinking = response.type is discord.InteractionResponseType.deferred_channel_message
    if thinking and messenger.let_go(interaction):  # "thinking…" is seen by all: taken away
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    text = refusal_text(error, lang)
    if text is None:
        if response.is_done():
            return
        text = t("error_not_allowed", lang)  # a command must be answered: the gate's word
    with contextlib.suppress(discord.HTTPException):
        if response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await response.send_message(text, ephemeral=True)
