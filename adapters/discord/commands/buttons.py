"""A press on one of the core's buttons (under a result, a note, /settings or /forget), known
from its custom_id alone. Refusals are raised: adapters/discord/replies.py answers them, only
to the presser."""

from __future__ import annotations

import discord

from adapters.discord.translate import PLATFORM, chat_ref, language, user_ref, view_of
from bot import presenter
from bot.domain import Address
from bot.domain import UserRef as CoreUser
from bot.presenter import Action
from bot.service import EditService


async def press(service: EditService, interaction: discord.Interaction, data: str) -> None:
    parsed = presenter.parse_press(data)
    message = interaction.message
    lang = language(interaction.locale)
    if parsed is None or message is None:
        await interaction.response.defer()
        return
    user, chat = user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild)
    if parsed.action == Action.SET:
        await _apply_setting(service, interaction, user, parsed.setting, lang)
        return
    if parsed.action == Action.FORGET:  # the presser's own data, whoever asked
        confirmed = parsed.setting[1] == "yes"
        answer = await service.forget(user, confirmed=confirmed)
        await interaction.response.edit_message(content=answer, view=None)
        return
    await interaction.response.defer()  # an acknowledgement the user does not see
    to = Address(PLATFORM, chat.id, str(message.id), lang)
    toast = await service.press(user, chat, parsed, to, key=f"{PLATFORM}:i:{interaction.id}")
    if toast:
        await interaction.followup.send(toast, ephemeral=True)


async def _apply_setting(
    service: EditService,
    interaction: discord.Interaction,
    user: CoreUser,
    setting: tuple[str, str],
    lang: str,
) -> None:
    name, value = setting
    if name == "reset":
        settings = await service.reset_settings(user)
    else:
        settings = await service.change_setting(user, name, value)
    await interaction.response.edit_message(
        content=presenter.settings_text(settings, lang, *service.offers),
        view=view_of(presenter.settings_buttons()),
    )
