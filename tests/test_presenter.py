"""Buttons and texts the core gives every adapter: a button's data round-trips, and data a user
forged or another bot made is not taken for ours."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import presenter
from bot.domain import Picture
from bot.presenter import Action, Press
from bot.texts import EN, ZH, t


def all_buttons() -> list[presenter.Button]:
    rows = presenter.result_buttons(42, EN) + presenter.cancel_buttons(7, ZH)
    return [button for row in rows + presenter.settings_buttons() for button in row]


def test_every_button_parses_back_to_its_press() -> None:
    presses = [presenter.parse_press(b.data) for b in all_buttons()]
    assert presses[:4] == [
        Press(Action.REROLL, 42),
        Press(Action.UNDO, 42),
        Press(Action.FULL, 42),
        Press(Action.CANCEL, 7),
    ]
    assert Press(Action.SET, setting=("steps", "16")) in presses
    assert presses[-1] == Press(Action.SET, setting=("reset", ""))
    assert all(len(b.data.encode()) <= 64 for b in all_buttons())  # Telegram's limit


@pytest.mark.parametrize(
    "data", ["", "reroll", "reroll:", "reroll:-1", "reroll:1x", "delete:1", "undo:1:2", "set:"]
)
def test_data_that_is_not_ours_is_no_press(data: str) -> None:
    assert presenter.parse_press(data) is None


def test_help_describes_the_platform_the_user_is_on() -> None:
    assert "/edit" in presenter.help_text("discord", EN)
    assert "Edit image" in presenter.help_text("discord", EN)
    assert "Edit image" not in presenter.help_text("telegram", EN)
    assert presenter.help_text("telegram", ZH) != presenter.help_text("telegram", EN)


def test_a_caption_fits_the_platforms_limit() -> None:
    picture = Picture(b"", "image/jpeg", "x.jpg", 1, 2, prompt="p" * 3000, seed=5)
    assert len(presenter.caption(picture, EN, limit=1024)) == 1024
    assert presenter.caption(Picture(b"", "image/jpeg", "x.jpg", 1, None), EN) == t(
        "caption_original", EN
    )


@pytest.mark.parametrize("lang", [EN, ZH])
def test_full_quality_says_jpeg_when_it_sends_the_apis_jpeg(lang: str) -> None:
    jpeg = Picture(b"", "image/jpeg", "x.jpg", 1, 2, full_mime="image/jpeg")
    png = Picture(b"", "image/jpeg", "x.jpg", 1, 2)
    (jpeg_row,), (png_row,) = (
        presenter.picture_buttons(jpeg, lang),
        presenter.picture_buttons(png, lang),
    )
    assert "JPEG" in jpeg_row[2].label and "JPEG" not in png_row[2].label
    assert jpeg_row[2].data == png_row[2].data == f"{Action.FULL}:2"
    full_jpeg = Picture(b"", "image/jpeg", "stepedit-2.jpg", 1, 2, seed=7)
    full_png = Picture(b"", "image/png", "stepedit-2.png", 1, 2, seed=7)
    assert "JPEG" in presenter.full_caption(full_jpeg, lang)
    assert "PNG" in presenter.full_caption(full_png, lang)
    assert "7" in presenter.full_caption(full_jpeg, lang)
    assert "JPEG" in presenter.full_caption(replace(full_jpeg, seed=None), lang)


def test_a_group_message_is_for_the_bot_only_when_addressed() -> None:
    def addressed(
        private: bool = False, command: bool = False, mentioned: bool = False, reply: bool = False
    ) -> bool:
        return presenter.addressed(
            private=private, command=command, mentioned=mentioned, replies_to_our_image=reply
        )

    assert addressed(private=True)
    assert addressed(command=True) and addressed(mentioned=True) and addressed(reply=True)
    assert not addressed()
