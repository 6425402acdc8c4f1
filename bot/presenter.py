"""What the bot's answers say and which buttons they carry, the same on every platform.

Adapters draw these with their own widgets (Telegram's inline keyboards, Discord's components)
and hand a pressed button's data back to `parse_press`; the core decides what a press does. A
button's data names a stored edit ("reroll:42"), so buttons keep working after a restart; the
core checks the edit belongs to the chat where it was pressed, and acts only for whoever asked
for that edit (EditService.press).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bot.backends.base import Capabilities
from bot.domain import Picture, QuotaStatus, UserSettings
from bot.texts import describe_settings, t

# The settings offered as buttons under /settings: (name, value) rows.
SETTING_CHOICES = (
    (("text", "auto"), ("text", "on"), ("text", "off")),
    (("steps", "8"), ("steps", "16"), ("steps", "30")),
    (("cfg", "1.0"), ("cfg", "3.0"), ("cfg", "5.0")),
)
PNG, JPEG = "image/png", "image/jpeg"
_PRESS = re.compile(
    r"(reroll|undo|full|compare|cancel):(\d{1,18})|set:(reset|(\w+):([\w.]+))|forget:(yes|no)"
)


class Action(StrEnum):
    REROLL = "reroll"  # the same prompt on the same source, with a new seed
    UNDO = "undo"  # show the image before this edit again
    FULL = "full"  # the full-quality file of this result (its own JPEG, or a lossless PNG)
    COMPARE = "compare"  # this result beside the picture it was made from, drawn by the bot
    CANCEL = "cancel"  # the progress note's button: cancel its user's edits in this chat
    SET = "set"  # one of the /settings buttons
    FORGET = "forget"  # /forget's confirmation: ("confirm", "yes" or "no")


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # what the platform hands back when it is pressed (at most 64 bytes on Telegram)


@dataclass(frozen=True)
class Press:
    """A pressed button, decoded: an action on an edit, or a setting (name, value)."""

    action: Action
    edit_id: int = 0
    setting: tuple[str, str] = ("", "")  # ("reset", "") resets every setting


def parse_press(data: str) -> Press | None:
    """The press a button's data stands for; None for data that is not one of ours."""
    match = _PRESS.fullmatch(data)
    if match is None:
        return None
    action, edit_id, setting, name, value, forget = match.groups()
    if forget is not None:
        return Press(Action.FORGET, setting=("confirm", forget))
    if action is not None:
        return Press(Action(action), int(edit_id))
    if setting == "reset":
        return Press(Action.SET, setting=("reset", ""))
    return Press(Action.SET, setting=(name, value))


def result_buttons(
    edit_id: int | None, lang: str, *, full_mime: str = PNG, comparable: bool = False
) -> list[list[Button]]:
    """Under a result: Reroll, Undo, Full quality, and Compare below them where the chat saw
    the source (none under a picture no edit made). Full quality says JPEG when the file it
    sends is a JPEG (`full_mime`): then it is not lossless."""
    if edit_id is None:
        return []
    full = "btn_full_jpeg" if full_mime == JPEG else "btn_full"
    rows = [
        [
            Button(t("btn_reroll", lang), f"{Action.REROLL}:{edit_id}"),
            Button(t("btn_undo", lang), f"{Action.UNDO}:{edit_id}"),
            Button(t(full, lang), f"{Action.FULL}:{edit_id}"),
        ]
    ]
    if comparable:
        rows.append([Button(t("btn_compare", lang), f"{Action.COMPARE}:{edit_id}")])
    return rows


def picture_buttons(picture: Picture, lang: str) -> list[list[Button]]:
    """The buttons under a picture sent to a chat."""
    return result_buttons(
        picture.edit_id, lang, full_mime=picture.full_mime, comparable=picture.comparable
    )


def cancel_buttons(edit_id: int, lang: str) -> list[list[Button]]:
    """Under a progress note."""
    return [[Button(t("btn_cancel", lang), f"{Action.CANCEL}:{edit_id}")]]


def settings_buttons() -> list[list[Button]]:
    rows = [
        [Button(f"{name} {value}", f"{Action.SET}:{name}:{value}") for name, value in row]
        for row in SETTING_CHOICES
    ]
    return [*rows, [Button("reset", f"{Action.SET}:reset")]]


def forget_buttons(lang: str) -> list[list[Button]]:
    """Under /forget's question: nothing is deleted without a second, deliberate press."""
    return [
        [
            Button(t("btn_forget_yes", lang), f"{Action.FORGET}:yes"),
            Button(t("btn_forget_no", lang), f"{Action.FORGET}:no"),
        ]
    ]


def caption(picture: Picture, lang: str, limit: int = 1024) -> str:
    """What a picture says about itself: its prompt and seed, and notes on its input."""
    if picture.headline is not None:
        lines = [t(picture.headline, lang, prompt=picture.prompt or "")]
    elif picture.prompt is None:
        lines = [t("caption_original", lang)]
    elif picture.seed is None:  # a server that does not tell its seed
        lines = [picture.prompt]
    else:
        lines = [t("caption", lang, prompt=picture.prompt, seed=picture.seed)]
    lines += [t(note, lang) for note in picture.notes]
    if picture.stand_in:  # the usual model was down: say which one made it
        lines.append(t("caption_stand_in", lang, model=picture.stand_in))
    return "\n\n".join(lines)[:limit]


def full_caption(picture: Picture, lang: str) -> str:
    """What the Full quality file says: a lossless PNG, or the original JPEG (not lossless)."""
    key = "caption_full_jpeg" if picture.mime == JPEG else "caption_full"
    if picture.seed is None:
        return t(f"{key}_plain", lang)
    return t(key, lang, seed=picture.seed)


def quota_text(quota: QuotaStatus, lang: str) -> str:
    if quota.remaining is None:
        return t("quota_unlimited", lang, used=quota.used)
    resets = quota.resets_at.strftime("%H:%M")
    text = t("quota", lang, remaining=quota.remaining, limit=quota.limit, resets=resets)
    return text + (t("quota_bought", lang, bought=quota.bought) if quota.bought else "")


def seed_text(settings: UserSettings, lang: str, *, with_usage: bool) -> str:
    """/seed's answer: the seed in use; with how to change it when none was given."""
    if settings.seed is None:
        text = t("seed_random", lang)
    else:
        text = t("seed_fixed", lang, seed=settings.seed)
    return text + "\n\n" + t("seed_usage", lang) if with_usage else text


def settings_text(
    settings: UserSettings, lang: str, offered: Capabilities, models: tuple[str, ...]
) -> str:
    return describe_settings(settings, lang, offered, models)


def help_text(platform: str, lang: str) -> str:
    """How to use the bot where the user is: each platform has its own gestures."""
    return t(f"help_{platform}", lang)


def addressed(*, private: bool, command: bool, mentioned: bool, replies_to_our_image: bool) -> bool:
    """Whether a message is meant for the bot. In a private chat (a DM) everything is; in a
    group only a command, a mention, or a reply to one of the bot's own pictures: a reply to
    someone else's photo is chatter, unless it mentions the bot (a group meme)."""
    return private or command or mentioned or replies_to_our_image
