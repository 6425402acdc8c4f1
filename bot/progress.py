"""Progress notes ("⏳ Queued, place 7", "🎨 Editing…") that never hold up the work they describe.

One note per user and chat stands for all of that user's open requests there: four photos sent
at once get one note ("🎨 Editing… (3 more queued)"), not four, and it is deleted when the last
of them has ended. The work only says where each request is (`show`, `done`) and goes on at
once; one pump task per note brings the chat up to date with the latest wanted text.

A new note is sent and an emptied one deleted at once, except a note that would say work has
started: that one waits `quiet_start` seconds (the chat action shows the work meanwhile), so it
never holds up the work's first steps, and a request done by then needs no note at all. Work
started on a note that said "queued" is shown next, within a budget of its own
(`starts_per_second` for all notes, ahead of the changes of place). Changes of place are
cosmetic: each note changes at most every `min_interval` seconds, all notes together at most
`edits_per_second` times a second, and texts in between are skipped. So under a burst, when work
starts on ten requests a second, notes cost a small, fixed share of a platform's send budget and
leave the rest to the results (on Telegram, about 30 messages a second in all). A failed send or
change is dropped (the next change tries again); a failed deletion is tried again until the note
is gone, for up to `give_up_after` seconds: a note left standing would say "queued" forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, stop_before_delay

from bot.domain import Address
from bot.logs import untagged
from bot.ports import Messenger, NoteGone, RetryLater
from bot.texts import t

log = logging.getLogger("stepedit.progress")

WORKING = 0  # the place of a request at work (waiting ones have places 1, 2, ...)
SENT = -1  # at work, and sent to the image model: past cancelling
NoteKey = tuple[str, str, int]  # (platform, chat id, user id): whose note, where
OnNoteSent = Callable[[list[int], str], Awaitable[str | None]]  # (edit ids, note id) -> instead
OnNoteGone = Callable[[Address, str], Awaitable[None]]  # (where, note id)
_GONE = ""  # the wanted text of a note to delete
MAX_BACKOFF = 30.0  # seconds between tries of a deletion, at most (unless the platform asks)
ENDED_KEPT = 10_000  # ended edits remembered, so that late news of one brings no note back
BURST = 8  # requests being admitted at once: a burst is being taken in
NEW_NOTE_WAITS = 5.0  # seconds a new note waits, at most, while a burst is taken in


class Intake:
    """How many requests are being admitted now. While a burst is taken in, a new note waits
    (up to NEW_NOTE_WAITS): the requests go into the line first, so the fair order sees them
    all sooner, and a note's send costs the one event loop as much as a request's admission;
    a request that ends meanwhile needs no note at all."""

    def __init__(self) -> None:
        self.admitting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        self.admitting += 1
        if self.admitting >= BURST:
            self._quiet.clear()
        try:
            yield
        finally:
            self.admitting -= 1
            if self.admitting < BURST:
                self._quiet.set()

    @property
    def busy(self) -> bool:
        return self.admitting >= BURST

    async def quiet(self, at_most: float) -> None:
        """Until no burst is being taken in, or `at_most` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._quiet.wait()


@dataclass
class _Note:
    to: Address  # replies to the first request it stood for; its language is the note's
    messenger: Messenger
    note_id: str | None
    places: dict[int, int] = field(default_factory=dict)  # open edit id -> place (WORKING)
    covered: set[int] = field(default_factory=set)  # every edit id that has had this note
    unsaved: set[int] = field(default_factory=set)  # edit ids whose stored note id is stale
    button_edit: int = 0  # the edit its cancel button names (any of the user's here would do)
    shown: str | None = None
    shown_working: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # wakes a waiting pump
    last_change: float = -1e9
    pump: asyncio.Task[None] | None = None
    wanted_since: float = field(default_factory=time.monotonic)

    def working(self) -> bool:
        return any(place <= WORKING for place in self.places.values())

    def work_started(self) -> bool:
        """News worth telling without delay: one of the requests is at work now."""
        return self.working() and not self.shown_working

    def urgent(self) -> bool:
        """Whether the next change must not wait for any budget: the note is to go (it would
        stand for requests that ended)."""
        return not self.places

    def wanted(self) -> str:
        if not self.places:
            return _GONE
        lang = self.to.language
        waiting = sorted(place for place in self.places.values() if place > WORKING)
        if len(waiting) < len(self.places):
            if waiting:
                return t("working_more", lang, count=len(waiting))
            if SENT in self.places.values():
                return t("working_sent", lang)
            return t("working", lang)
        if len(waiting) == 1:
            return t("queued", lang, position=waiting[0])
        return t("queued_many", lang, count=len(waiting), position=waiting[0])


class NoteBoard:
    def __init__(
        self,
        on_sent: OnNoteSent,
        on_gone: OnNoteGone,
        *,
        min_interval: float = 4.0,
        edits_per_second: float = 3.0,
        starts_per_second: float = 5.0,
        backoff: float = 1.0,
        give_up_after: float = 120.0,
        quiet_start: float = 0.0,
    ) -> None:
        """`on_sent` stores a note's id with the edits it stands for (where no other process
        stored one meanwhile: if none took it, it tells that process's note, which this one
        shows instead), and `on_gone` forgets it once deleted, so another process can take a
        note over, or delete one this one could not (after a restart, a note may stand for
        edits this process never saw). A failed
        deletion is tried again after `backoff` seconds, then twice as long each time (or as
        long as the platform asks), until `give_up_after` seconds have passed."""
        self._notes: dict[NoteKey, _Note] = {}
        self._on_sent, self._on_gone = on_sent, on_gone
        self.min_interval = min_interval
        self._edits = AsyncLimiter(edits_per_second, 1.0)
        self._starts = AsyncLimiter(starts_per_second, 1.0)
        self._backoff, self._give_up_after = backoff, give_up_after
        self.quiet_start = quiet_start
        self._pumps: set[asyncio.Task[None]] = set()
        self._ended: dict[int, None] = {}  # the last ENDED_KEPT edits that ended, oldest first
        self.intake = Intake()

    def show(
        self,
        edit_id: int,
        key: NoteKey,
        to: Address,
        messenger: Messenger,
        place: int,
        *,
        note_id: str | None = None,
    ) -> None:
        """Request `edit_id` (of the user and chat `key`) is at `place` (WORKING: at work).
        `note_id` is the note stored with the edit, if a process sent one before."""
        if edit_id in self._ended:  # late news (a place read while it ran to its end)
            return
        note = self._notes.get(key)
        if note is None:
            note = self._notes[key] = _Note(to, messenger, note_id)
        if edit_id not in note.covered:
            note.covered.add(edit_id)
            if note_id is None or note_id != note.note_id:  # else it is stored already
                note.unsaved.add(edit_id)
            if note_id is not None and note_id != note.note_id:
                # A note from before a restart, while this user has another here now: one
                # note per user and chat, so that one goes.
                self._delete_stray(to, messenger, note_id)
        note.places[edit_id] = place
        self._pump(key, note)

    def _delete_stray(self, to: Address, messenger: Messenger, note_id: str) -> None:
        task = asyncio.create_task(self._delete(to, messenger, note_id), context=untagged())
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    def show_place(self, edit_id: int, key: NoteKey, place: int) -> None:
        """A new place in line for a request this note stands for already."""
        note = self._notes.get(key)
        if note is not None and edit_id in note.places:
            note.places[edit_id] = place
            self._pump(key, note)

    def done(
        self,
        edit_id: int,
        key: NoteKey,
        *,
        note_id: str | None = None,
        to: Address | None = None,
        messenger: Messenger | None = None,
    ) -> None:
        """Request `edit_id` has ended: the note goes once no other request needs it. A note
        this process never showed (sent before a restart) is deleted by its stored id."""
        self._ended[edit_id] = None
        if len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]
        note = self._notes.get(key)
        if note is None:
            if note_id is None or to is None or messenger is None:
                return
            note = self._notes[key] = _Note(to, messenger, note_id, covered={edit_id})
        elif note_id is not None and note_id != note.note_id and to and messenger:
            self._delete_stray(to, messenger, note_id)  # from before a restart, never shown here
        note.places.pop(edit_id, None)
        if not note.places:
            # The next request of this user here gets a new note, while this one goes.
            del self._notes[key]
        self._pump(key, note)

    def open_edits(self) -> dict[int, NoteKey]:
        """The requests the notes stand for now, each with its note's key."""
        return {edit_id: key for key, note in self._notes.items() for edit_id in note.places}

    def place_of(self, key: NoteKey, edit_id: int) -> int | None:
        note = self._notes.get(key)
        return None if note is None else note.places.get(edit_id)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for every pending note change, e.g. before shutting down; then stop
        the rest. (A note not deleted by then keeps its stored id: a sweep deletes it.)"""
        pumps = [pump for pump in self._pumps if not pump.done()]
        if not pumps:
            return
        _, pending = await asyncio.wait(pumps, timeout=timeout)
        if pending:
            log.info("%d progress notes not brought up to date in time; leaving them", len(pending))
            for pump in pending:
                pump.cancel()
            await asyncio.wait(pending)

    def _pump(self, key: NoteKey, note: _Note) -> None:
        note.changed.set()
        if note.pump is None or note.pump.done():
            note.pump = asyncio.create_task(self._bring_up_to_date(note), context=untagged())
            self._pumps.add(note.pump)
            note.pump.add_done_callback(self._pumps.discard)

    async def _bring_up_to_date(self, note: _Note) -> None:
        if note.note_id is None and note.shown is None and note.working() and self.quiet_start:
            await self._quiet_start(note)
        while True:
            note.changed.clear()
            if note.unsaved and note.note_id is not None:  # new requests it stands for
                await self._save(note)
                continue
            wanted = note.wanted()
            if wanted == note.shown:
                return
            if note.note_id is None and wanted != _GONE and self.intake.busy:
                wait = note.wanted_since + NEW_NOTE_WAITS - time.monotonic()
                if wait > 0:  # a new note gives way to a burst's admissions
                    await self.intake.quiet(wait)
                    continue
            if note.note_id is not None and not note.urgent():  # a change: within the budgets
                starts = note.work_started()
                wait = note.last_change + self.min_interval - time.monotonic()
                if wait > 0 and not starts:  # until then, or until the next news
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await note.changed.wait()
                    continue
                if not await self._edit_budget(note, self._starts if starts else self._edits):
                    continue  # news that must not wait came meanwhile
                wanted = note.wanted()  # the latest, after waiting for the budget
            await self._apply(note, wanted)
            note.shown, note.shown_working = wanted, note.working()
            note.last_change = time.monotonic()
            if wanted == _GONE:
                return

    async def _quiet_start(self, note: _Note) -> None:
        """Wait `quiet_start` seconds before a new note that says work started, or until
        every request it would stand for has ended (then it is never sent)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.quiet_start):
                while note.places:
                    note.changed.clear()
                    await note.changed.wait()

    async def _edit_budget(self, note: _Note, budget: AsyncLimiter) -> bool:
        """Wait for a share of `budget`: True once there is one, False as soon as news comes
        that must not wait, or that goes by another budget (work started). (A wait given up
        takes no share: aiolimiter only counts an acquire once it returns, and skips a
        cancelled waiter.)"""
        share = asyncio.ensure_future(budget.acquire())
        try:
            while not share.done():
                news = asyncio.ensure_future(note.changed.wait())
                try:
                    await asyncio.wait((share, news), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    news.cancel()
                note.changed.clear()  # the caller reads the note again from here on
                other = note.work_started() != (budget is self._starts)
                if not share.done() and (note.urgent() or other):
                    return False
            return True
        finally:
            share.cancel()

    async def _apply(self, note: _Note, text: str) -> None:
        messenger, to = note.messenger, note.to
        if text == _GONE:
            if note.note_id is not None:
                gone, note.note_id = note.note_id, None
                note.unsaved.clear()
                await self._delete(to, messenger, gone)
            return
        try:
            if note.note_id is not None:
                try:
                    await messenger.edit_note(
                        to, note.note_id, text, note.button_edit or min(note.covered)
                    )
                    return
                except NoteGone:  # another process deleted it: this one sends a new one
                    gone, note.note_id = note.note_id, None
                    await self._on_gone(to, gone)
            note.button_edit = min(note.covered)
            note.note_id = await messenger.send_note(to, text, note.button_edit)
            note.unsaved |= note.covered
            if await self._save(note):  # another process's note stands for them: it says so
                await messenger.edit_note(to, note.note_id, text, note.button_edit)
        except Exception as exc:  # cosmetic: a failed note never fails work
            log.debug("progress note of edits %s: %s", sorted(note.covered), exc)

    async def _delete(self, to: Address, messenger: Messenger, note_id: str) -> None:
        """Delete a note, trying again while it fails (flood control, a timeout, a server
        error): a note that stays says "queued" forever. Its stored id is forgotten once it is
        gone, so the sweep of ended edits' leftovers may try one given up on once more."""
        retrying = AsyncRetrying(
            stop=stop_before_delay(self._give_up_after), wait=self._retry_wait, reraise=True
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await messenger.delete_note(to, note_id)
        except Exception as exc:
            log.warning("giving up deleting progress note %s in %s: %r", note_id, to, exc)
            return
        try:
            await self._on_gone(to, note_id)
        except Exception as exc:  # deleted all the same; a sweep finds it gone
            log.warning("could not forget deleted note %s: %s", note_id, exc)

    def _retry_wait(self, state: RetryCallState) -> float:
        """As long as the platform asks, else twice as long each time; with a little jitter,
        so that the notes of a burst do not all come back at the same moment."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RetryLater):
            delay = exc.retry_after
        else:
            delay = min(MAX_BACKOFF, self._backoff * 2.0 ** (state.attempt_number - 1))
        return delay + random.uniform(0, delay / 4)

    async def _save(self, note: _Note) -> bool:
        """Store the note's id with the edits it stands for, so a restart finds it. True if
        it was stored with none (another process stored its note with them first): that
        note is this one's now, and this one goes (one note per user and chat)."""
        edits, note.unsaved = sorted(note.unsaved), set()
        if note.note_id is None:
            return False
        try:
            instead = await self._on_sent(edits, note.note_id)
        except Exception as exc:  # tried again (a note stored nowhere could stay forever)
            log.warning("could not store note %s of edits %s: %s", note.note_id, edits, exc)
            note.unsaved.update(edits)
            await asyncio.sleep(self._backoff)
            return False
        if instead is None:
            return False
        self._delete_stray(note.to, note.messenger, note.note_id)
        note.note_id, note.shown = instead, None  # what it says is brought up to date
        return True
