"""Discord's slash commands beyond editing: the operator's (/stats, /grant, /ban, /unban, and
/quota for someone), /forget, and the memes drawn by the bot (/caption, /bubble). They translate
only; bot/service.py decides. Answers are ephemeral: only whoever asked sees them."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import presenter, texts
from bot.domain import EditRequest
from bot.errors import Ignored, StepEditError
from bot.texts import t

if TYPE_CHECKING:
    from adapters.discord import DiscordBot


def add_extra_commands(bot: DiscordBot) -> None:
    _add_admin_commands(bot)
    _add_forget(bot)
    _add_meme_commands(bot)
    _add_imagine(bot)


def _add_imagine(bot: DiscordBot) -> None:
    from adapters.discord import chat_ref, language, user_ref

    @bot.tree.command(name="imagine", description="A new image from your words")
    async def imagine(
        interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 512]
    ) -> None:
        lang = language(interaction.locale, prompt)
        await interaction.response.defer(thinking=True)
        to = bot.messenger.hold(interaction, lang)
        request = EditRequest(
            user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild),
            prompt, imagine=True, key=f"discord:i:{interaction.id}", answer_to=to.reply_to,
            language=lang,
        )  # fmt: skip
        try:
            await bot.service.submit(request)
        except StepEditError as exc:  # refused: only the user sees why
            bot.messenger.release(to)
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            text = t("error_not_allowed", lang) if isinstance(exc, Ignored) else None
            await interaction.followup.send(text or texts.error_text(exc, lang), ephemeral=True)


async def run_admin(
    bot: DiscordBot, interaction: discord.Interaction, command: str, args: list[str]
) -> None:
    """An admin command; anyone else hears "admins only" (privately: a slash command must be
    answered)."""
    from adapters.discord import chat_ref, language, user_ref

    lang = language(interaction.locale)
    chat = chat_ref(interaction.channel_id, interaction.guild)
    try:
        answer = await bot.service.admin(user_ref(interaction.user), chat, command, args)
    except Ignored:
        answer = t("error_admins_only", lang)
    except StepEditError as exc:
        answer = texts.error_text(exc, lang)
    await interaction.response.send_message(answer, ephemeral=True)


def _add_admin_commands(bot: DiscordBot) -> None:
    async def run(interaction: discord.Interaction, command: str, args: list[str]) -> None:
        await run_admin(bot, interaction, command, args)

    # Only server admins see these by default; ADMIN_IDS decides who may use them.
    admins_only = app_commands.default_permissions(administrator=True)

    @bot.tree.command(name="stats", description="Edits today and in total, top users, budget")
    @admins_only
    async def stats(interaction: discord.Interaction) -> None:
        await run(interaction, "stats", [])

    @bot.tree.command(name="grant", description="Give a user extra edits for today")
    @admins_only
    async def grant(
        interaction: discord.Interaction, user: str, edits: app_commands.Range[int, 1, 1000]
    ) -> None:
        await run(interaction, "grant", [user, str(edits)])

    @bot.tree.command(name="ban", description="Stop a user from using the bot")
    @admins_only
    async def ban(interaction: discord.Interaction, user: str) -> None:
        await run(interaction, "ban", [user])

    @bot.tree.command(name="unban", description="Let a banned user use the bot again")
    @admins_only
    async def unban(interaction: discord.Interaction, user: str) -> None:
        await run(interaction, "unban", [user])


def _add_forget(bot: DiscordBot) -> None:
    from adapters.discord import language, view_of

    @bot.tree.command(name="forget", description="Delete your photos, history and settings")
    async def forget(interaction: discord.Interaction) -> None:
        lang = language(interaction.locale)
        await interaction.response.send_message(
            t("forget_confirm", lang), view=view_of(presenter.forget_buttons(lang)), ephemeral=True
        )


async def answer_forget(bot: DiscordBot, interaction: discord.Interaction, confirmed: bool) -> None:
    """A press on /forget's buttons: the presser's own data, whoever asked."""
    from adapters.discord import user_ref

    answer = await bot.service.forget(user_ref(interaction.user), confirmed=confirmed)
    await interaction.response.edit_message(content=answer, view=None)


def _add_meme_commands(bot: DiscordBot) -> None:
    from adapters.discord import attachment_file, chat_ref, checked, language, user_ref

    async def draw(
        interaction: discord.Interaction, kind: str, words: str, image: discord.Attachment | None
    ) -> None:
        lang = language(interaction.locale, words)
        user, chat = user_ref(interaction.user), chat_ref(interaction.channel_id, interaction.guild)
        upload = None
        if image is not None:  # only its user saw it: kept, never linked to a message
            try:  # refused before "thinking…": only its user sees it
                upload = checked(attachment_file(image))
                bot.service.check_claims(upload)
            except StepEditError as exc:
                await interaction.response.send_message(texts.error_text(exc, lang), ephemeral=True)
                return
        await interaction.response.defer(thinking=True)
        to = bot.messenger.hold(interaction, lang)
        try:
            await bot.service.draw(user, chat, kind, words, to, upload=upload)
        except StepEditError as exc:
            bot.messenger.release(to)
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            if not isinstance(exc, Ignored):  # (too fast, and told so already: nothing)
                await interaction.followup.send(texts.error_text(exc, lang), ephemeral=True)

    @bot.tree.command(name="caption", description="Meme caption: top | bottom, drawn exactly")
    @app_commands.describe(text="top text | bottom text", image="An image (else your last one)")
    async def caption(
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 450],
        image: discord.Attachment | None = None,
    ) -> None:
        await draw(interaction, "caption", text, image)

    @bot.tree.command(name="bubble", description="A speech bubble with your words")
    @app_commands.describe(
        text="The words (start with left or right to choose the side)",
        image="An image (else your last one)",
    )
    async def bubble(
        interaction: discord.Interaction,
        text: app_commands.Range[str, 1, 450],
        image: discord.Attachment | None = None,
    ) -> None:
        await draw(interaction, "bubble", text, image)
