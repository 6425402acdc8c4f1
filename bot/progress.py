"""Progress notes ("⏳ Queued, place 7", "🎨 Editing…") that never hold up the work they describe.

Every note has one pump task that brings the chat up to date with the latest wanted text: the
work only says what it wants (`show`, `close`) and goes on at once. A note changes at most every
`min_interval` seconds unless the change is urgent (work started), and texts in between are
skipped, so hundreds of waiting jobs cost a small share of a platform's send budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.domain import Address
from bot.ports import Messenger

log = logging.getLogger("stepedit.progress")

OnNoteChange = Callable[[int, str | None], Awaitable[None]]  # (edit id, note id or None)
_CLOSE = ""  # the wanted text of a note to delete


@dataclass
class _Note:
    to: Address
    messenger: Messenger
    note_id: str | None
    wanted: str
    shown: str | None = None
    urgent: bool = False
    last_change: float = field(default=-1e9)
    pump: asyncio.Task[None] | None = None


class NoteBoard:
    def __init__(self, on_change: OnNoteChange, *, min_interval: float = 4.0) -> None:
        """`on_change` keeps each note's id (None once deleted), so another process can
        delete a note this one could not."""
        self._notes: dict[int, _Note] = {}
        self._on_change = on_change
        self.min_interval = min_interval

    def show(
        self,
        edit_id: int,
        to: Address,
        messenger: Messenger,
        text: str,
        *,
        note_id: str | None = None,
        urgent: bool = False,
    ) -> None:
        """Make the note of `edit_id` say `text` (sending it first if there is none yet)."""
        note = self._notes.get(edit_id)
        if note is None:
            note = self._notes[edit_id] = _Note(to, messenger, note_id, text)
        elif note.wanted == _CLOSE:
            return  # closed already: a late place report must not bring it back
        note.wanted = text
        note.urgent = note.urgent or urgent
        self._pump(edit_id, note)

    def close(self, edit_id: int, *, note_id: str | None = None, to: Address | None = None,
              messenger: Messenger | None = None) -> None:  # fmt: skip
        """Delete the note (once any send in flight is done). A note this process never
        showed, e.g. one sent before a restart, is deleted by its stored id."""
        note = self._notes.get(edit_id)
        if note is None:
            if note_id is None or to is None or messenger is None:
                return
            note = self._notes[edit_id] = _Note(to, messenger, note_id, _CLOSE)
        note.wanted = _CLOSE
        note.urgent = True
        self._pump(edit_id, note)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for every pending note change, e.g. before shutting down."""
        pumps = [n.pump for n in self._notes.values() if n.pump is not None and not n.pump.done()]
        if pumps:
            await asyncio.wait(pumps, timeout=timeout)

    def _pump(self, edit_id: int, note: _Note) -> None:
        if note.pump is None or note.pump.done():
            note.pump = asyncio.create_task(self._bring_up_to_date(edit_id, note))

    async def _bring_up_to_date(self, edit_id: int, note: _Note) -> None:
        while note.shown != note.wanted:
            if not note.urgent:
                wait = note.last_change + self.min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # the wanted text may have changed meanwhile
            text, note.urgent = note.wanted, False
            with contextlib.suppress(Exception):  # cosmetic: a failed note never fails work
                await self._apply(edit_id, note, text)
            note.shown = text
            note.last_change = time.monotonic()
        if note.wanted == _CLOSE:
            self._notes.pop(edit_id, None)

    async def _apply(self, edit_id: int, note: _Note, text: str) -> None:
        messenger, to = note.messenger, note.to
        try:
            if text == _CLOSE:
                if note.note_id is not None:
                    await messenger.delete_note(to, note.note_id)
                    await self._on_change(edit_id, None)
            elif note.note_id is None:
                note.note_id = await messenger.send_note(to, text, edit_id)
                await self._on_change(edit_id, note.note_id)
            else:
                await messenger.edit_note(to, note.note_id, text, edit_id)
        except Exception as exc:
            log.debug("progress note of edit %s: %s", edit_id, exc)
            raise
