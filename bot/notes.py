"""Each job's progress note as the job engine knows it: shown when the job is admitted (its
place in line, or that work starts), changed when work starts, closed when the job ends, and
the places of jobs waiting here kept up to date. The notes themselves: bot/progress.py."""

from __future__ import annotations

import asyncio
import logging

from bot.context import Context
from bot.domain import Address, Admission, EditRecord
from bot.ports import Messenger
from bot.progress import SENT, WORKING, NoteBoard, NoteKey

log = logging.getLogger("stepedit.service")

PLACE_EVERY = 2.0  # seconds between place updates of waiting jobs' notes
QUIET_START = 0.3  # seconds before a note that says work started (see bot/progress.py)


class JobNotes:
    def __init__(
        self, ctx: Context, *, min_interval: float = 4.0, quiet_start: float = QUIET_START
    ) -> None:
        self.ctx = ctx
        self.board = NoteBoard(
            ctx.store.set_note, self._forget, min_interval=min_interval, quiet_start=quiet_start
        )
        self._waiting: dict[int, NoteKey] = {}  # queued jobs admitted here, for their places

    def admitted(
        self, admission: Admission, key: NoteKey, to: Address, *, started: bool, idle: int
    ) -> None:
        """The request's place in line, or that work starts (`started`: claimed, with an API
        slot free), on its user's note in this chat; `idle` workers take the ones ahead."""
        messenger = self.ctx.messengers.get(to.platform)
        if messenger is None:
            return
        edit_id = admission.edit_id
        if started:
            self.board.show(edit_id, key, to, messenger, WORKING)
            return
        place = admission.place - idle
        if place > 0:
            self._waiting[edit_id] = key
        self.board.show(edit_id, key, to, messenger, max(place, WORKING))

    def taken(self, edit_id: int) -> None:
        """The job left the line (work starts, or it was cancelled)."""
        self._waiting.pop(edit_id, None)

    def working(self, edit: EditRecord, messenger: Messenger, *, sent: bool = False) -> None:
        """Its note says it is at work (`sent`: the image model has it, past cancelling)."""
        self.board.show(edit.id, note_key(edit), edit.address, messenger,
                        SENT if sent else WORKING, note_id=edit.note_id)  # fmt: skip

    def close(self, edit: EditRecord, messenger: Messenger) -> None:
        self.board.done(edit.id, note_key(edit), note_id=edit.note_id, to=edit.address,
                        messenger=messenger)  # fmt: skip

    async def drain(self, timeout: float) -> None:
        await self.board.drain(timeout=timeout)

    async def report_places(self) -> None:
        """Tell waiting users their place when it changed enough to matter (the notes' own
        budget decides how often that reaches the chat), and close what ended elsewhere."""
        while True:
            await asyncio.sleep(PLACE_EVERY)
            await self._close_ended()
            if not self._waiting:
                continue
            try:
                places = await self.ctx.store.queue_places(list(self._waiting))
            except Exception:
                log.exception("could not read queue places")
                continue
            for edit_id, key in list(self._waiting.items()):
                place, shown = places.get(edit_id), self.board.place_of(key, edit_id)
                if place is None or shown is None:  # claimed or ended meanwhile
                    self._waiting.pop(edit_id, None)
                elif place < shown and (place <= 3 or place <= shown * 3 // 4):
                    self.board.show_place(edit_id, key, place)

    async def _close_ended(self) -> None:
        """A request admitted here may be taken and ended by another process, which this
        board never hears of: ended requests are read from the database, and their notes go
        once nothing they stand for is open."""
        shown = self.board.open_edits()
        if not shown:
            return
        try:
            still = await self.ctx.store.still_open(list(shown))
        except Exception:
            log.exception("could not read which requests ended")
            return
        for edit_id, key in shown.items():
            if edit_id not in still:
                self._waiting.pop(edit_id, None)
                self.board.done(edit_id, key)

    async def _forget(self, where: Address, note_id: str) -> None:
        await self.ctx.store.forget_note(where.platform, where.chat_id, note_id)


def note_key(edit: EditRecord) -> NoteKey:
    return (edit.platform, edit.chat_id, edit.user_id)
