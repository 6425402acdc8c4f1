"""Commands whose answer is a text, in one table that both adapters register from (Telegram's
command menu and handlers, Discord's slash commands). Adding one takes three places: its texts
in bot/texts.py (`command_<name>`, its menu line, and what it answers), its handler here, and
its entry in TEXT_COMMANDS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata

from bot.context import Context
from bot.domain import MAX_PROMPT_CHARS, ChatRef, UserRef
from bot.texts import t


@dataclass(frozen=True)
class Asked:
    """Who asked, where, with what words after the command, in which language."""

    user: UserRef
    chat: ChatRef
    args: tuple[str, ...]
    lang: str


Answer = Callable[[Context, Asked], Awaitable[str]]


async def about(ctx: Context, asked: Asked) -> str:
    """/about: this bot's version, the edit backend and model, and the limits users meet."""
    quota = (
        t("about_quota", asked.lang, quota=ctx.daily_quota)
        if ctx.daily_quota
        else t("about_no_quota", asked.lang)
    )
    return t(
        "about", asked.lang, version=_version(), style=ctx.editor.style, model=ctx.editor.model,
        quota=quota, prompt=MAX_PROMPT_CHARS, side=ctx.max_side, waiting=ctx.max_waiting,
    )  # fmt: skip


TEXT_COMMANDS: dict[str, Answer] = {"about": about}


def _version() -> str:
    try:
        return metadata.version("stepedit")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
