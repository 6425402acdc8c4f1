"""The progress notes' own rules: one note per user and chat, and a note from before a restart
does not stay behind when that user already has another one here."""

from __future__ import annotations

import asyncio

from bot.domain import Address
from bot.progress import WORKING, NoteBoard
from tests.fakes.messenger import FakeMessenger

TO = Address("test", "chat-1", "5")
KEY = ("test", "chat-1", 1)


async def test_a_note_from_before_a_restart_goes_when_the_user_has_another_one() -> None:
    messenger = FakeMessenger()
    stale = await messenger.send_note(TO, "⏳ Queued", 1)  # sent by the process that died
    saved: dict[int, str] = {}
    forgotten: list[str] = []

    async def on_sent(edit_ids: list[int], note_id: str) -> None:
        saved.update(dict.fromkeys(edit_ids, note_id))

    async def on_gone(to: Address, note_id: str) -> None:
        forgotten.append(note_id)

    board = NoteBoard(on_sent, on_gone, min_interval=0.01)
    board.show(2, KEY, TO, messenger, WORKING)  # this process's note for the user
    board.show(1, KEY, TO, messenger, 3, note_id=stale)  # resumed with the old one stored
    await board.drain(timeout=5)
    await asyncio.sleep(0)
    (current,) = messenger.open_notes()
    assert messenger.notes[stale].deleted and forgotten == [stale]
    assert saved == {1: saved[2], 2: saved[2]} and messenger.notes[saved[2]] is current
    board.done(1, KEY)
    board.done(2, KEY)
    await board.drain(timeout=5)
    assert messenger.all_notes_gone()
