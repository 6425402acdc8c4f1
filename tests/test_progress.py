"""The progress notes' own rules: one note per user and chat, a note from before a restart does
not stay behind when that user already has another one here, and every note goes when its last
request ends, also while the edits budget is spent or the platform refuses deletions for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from bot.domain import Address
from bot.ports import RetryLater
from bot.progress import BURST, WORKING, NoteBoard, NoteKey
from bot.texts import t
from tests.fakes.messenger import FakeMessenger

TO = Address("test", "chat-1", "5")
KEY = ("test", "chat-1", 1)


class Recorded:
    """NoteBoard's callbacks, storing what a restart would find: note ids by edit, and those
    forgotten once deleted."""

    def __init__(self) -> None:
        self.saved: dict[int, str] = {}
        self.forgotten: list[str] = []

    async def on_sent(self, edit_ids: list[int], note_id: str) -> str | None:
        free = [e for e in edit_ids if self.saved.get(e) in (None, note_id, *self.forgotten)]
        others = [self.saved[e] for e in edit_ids if e not in free]
        self.saved.update(dict.fromkeys(free, note_id))
        if note_id in self.saved.values() or not others:
            return None
        return others[0]  # stored with none: another process's note stands for them

    async def on_gone(self, to: Address, note_id: str) -> None:
        self.forgotten.append(note_id)  # (a forgotten note id counts as none stored)


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the board offers no event to wait on
            await asyncio.sleep(0.005)


async def test_a_note_from_before_a_restart_goes_when_the_user_has_another_one() -> None:
    messenger = FakeMessenger()
    stale = await messenger.send_note(TO, "⏳ Queued", 1)  # sent by the process that died
    stored = Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    board.show(2, KEY, TO, messenger, WORKING)  # this process's note for the user
    board.show(1, KEY, TO, messenger, 3, note_id=stale)  # resumed with the old one stored
    await board.drain(timeout=5)
    await asyncio.sleep(0)
    (current,) = messenger.open_notes()
    saved = stored.saved
    assert messenger.notes[stale].deleted and stored.forgotten == [stale]
    assert saved == {1: saved[2], 2: saved[2]} and messenger.notes[saved[2]] is current
    board.done(1, KEY)
    board.done(2, KEY)
    await board.drain(timeout=5)
    assert messenger.all_notes_gone()


def _users(board: NoteBoard, messenger: FakeMessenger, count: int) -> list[NoteKey]:
    """`count` users in one chat with a request each (edit n for user n), waiting in line."""
    keys = [("test", "chat-1", n) for n in range(1, count + 1)]
    for n, key in enumerate(keys, 1):
        board.show(n, key, Address("test", "chat-1", str(n)), messenger, 100 + n)
    return keys


async def test_a_process_that_finds_another_ones_note_stored_shows_that_one() -> None:
    """One request shown by two processes: the one that admitted it stores its note with it;
    the one that claimed it had read it before that, and sent a note of its own, which is
    stored with nothing then. It goes, and that process shows its news on the stored note,
    which it deletes when the request ends: were the process that admitted it killed, no note
    would stay behind saying "queued" forever."""
    messenger = FakeMessenger()
    stored = Recorded()
    admitted = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    claimed = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    admitted.show(1, KEY, TO, messenger, 3)
    await admitted.drain(timeout=5)
    (first,) = messenger.open_notes()
    claimed.show(1, KEY, TO, messenger, WORKING)  # its read of the request had no note yet
    await claimed.drain(timeout=5)
    assert messenger.open_notes() == [first] and len(messenger.notes) == 2
    assert first.texts[-1] == t("working") and stored.saved == {1: stored.saved[1]}
    claimed.done(1, KEY)  # and the process that admitted it was killed: it hears nothing
    await claimed.drain(timeout=5)
    assert messenger.all_notes_gone()


async def test_a_note_another_process_deleted_is_sent_again_at_the_next_news() -> None:
    messenger = FakeMessenger()
    stored = Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    board.show(1, KEY, TO, messenger, 3)
    await board.drain(timeout=5)
    gone = stored.saved[1]
    await messenger.delete_note(TO, gone)  # by another process, which ended its own work
    board.show(1, KEY, TO, messenger, WORKING)
    await board.drain(timeout=5)
    (again,) = messenger.open_notes()
    assert again.texts == [t("working")] and stored.saved[1] != gone
    board.done(1, KEY)
    await board.drain(timeout=5)
    assert messenger.all_notes_gone()


async def test_a_note_whose_id_could_not_be_stored_is_stored_when_it_can_be() -> None:
    """Stored nowhere, a note would stay forever if its process were killed."""
    messenger, stored = FakeMessenger(), Recorded()
    failures = [ConnectionError("the database is restarting")]

    async def on_sent(edit_ids: list[int], note_id: str) -> str | None:
        if failures:
            raise failures.pop()
        return await stored.on_sent(edit_ids, note_id)

    board = NoteBoard(on_sent, stored.on_gone, min_interval=0.01, backoff=0.01)
    board.show(1, KEY, TO, messenger, 3)
    await board.drain(timeout=5)
    (note,) = messenger.open_notes()
    assert not failures and messenger.notes[stored.saved[1]] is note


async def test_new_notes_give_way_to_a_burst_being_admitted() -> None:
    """While a burst is being taken in, new notes wait until it is in: a request that ended
    meanwhile never had one, and the others get theirs once the burst is in."""
    messenger = FakeMessenger()
    stored = Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    with contextlib.ExitStack() as burst:
        for _ in range(BURST):
            burst.enter_context(board.intake.admission())
        keys = _users(board, messenger, 3)
        for _ in range(20):  # the notes' pumps run meanwhile
            await asyncio.sleep(0)
        board.done(1, keys[0])
        assert not messenger.notes
    await until(lambda: len(messenger.notes) == 2)
    await board.drain(timeout=5)
    assert sorted(stored.saved) == [2, 3] and len(messenger.open_notes()) == 2


async def _all_waiting_for_the_budget(
    board: NoteBoard, messenger: FakeMessenger, keys: list[NoteKey]
) -> None:
    """Every note sent, then each of them with a new place to show: all but the first wait
    for their share of the edits budget."""
    await until(lambda: len(messenger.notes) == len(keys))
    for n, key in enumerate(keys, 1):
        board.show_place(n, key, n)

    def edits() -> int:
        return sum(note.edits for note in messenger.notes.values())

    await until(lambda: edits() >= 1)  # (a fixed pause flaked on a busy machine)
    await asyncio.sleep(0.05)
    assert edits() == 1  # the others wait: the budget gives one a second


async def test_a_deletion_does_not_wait_behind_other_notes_edits() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0, edits_per_second=1)
    keys = _users(board, messenger, 20)
    await _all_waiting_for_the_budget(board, messenger, keys)
    board.done(20, keys[-1])  # the last in line for the budget: 19 s away
    note = messenger.notes[stored.saved[20]]
    await until(lambda: note.deleted, timeout=1)
    assert stored.forgotten == [stored.saved[20]]
    for n, key in enumerate(keys[:-1], 1):
        board.done(n, key)
    await until(messenger.all_notes_gone, timeout=1)


async def test_work_started_shows_without_waiting_behind_other_notes_edits() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0, edits_per_second=1)
    keys = _users(board, messenger, 20)
    await _all_waiting_for_the_budget(board, messenger, keys)
    board.show(20, keys[-1], Address("test", "chat-1", "20"), messenger, WORKING)
    note = messenger.notes[stored.saved[20]]
    await until(lambda: note.texts[-1] == t("working"), timeout=1)
    for n, key in enumerate(keys, 1):
        board.done(n, key)
    await until(messenger.all_notes_gone, timeout=1)


async def test_a_failed_deletion_is_tried_again_until_the_note_is_gone() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01, backoff=0.01)
    board.show(1, KEY, TO, messenger, 3)
    await board.drain(timeout=5)
    (note,) = messenger.open_notes()
    # flood control past the platform library's own retries, a timeout, a server error
    messenger.fail_deletions = [RetryLater(0.3), TimeoutError(), ConnectionError("502")]
    started = time.monotonic()
    board.done(1, KEY)
    await board.drain(timeout=5)
    assert note.deleted and stored.forgotten == [stored.saved[1]]
    assert time.monotonic() - started >= 0.3  # as long as the platform asked, at least


async def test_a_note_on_its_way_when_its_request_ends_goes_once_it_is_sent() -> None:
    messenger, stored = FakeMessenger(hold_note=asyncio.Event()), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    board.show(1, KEY, TO, messenger, 3)
    await asyncio.sleep(0.01)  # the note is being sent
    board.done(1, KEY)
    assert messenger.hold_note is not None
    messenger.hold_note.set()
    await board.drain(timeout=5)
    assert len(messenger.notes) == 1 and messenger.all_notes_gone()


async def test_news_of_a_request_that_ended_brings_no_note_back() -> None:
    # e.g. its place in line, read from the database while a worker ran it to its end
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, min_interval=0.01)
    board.show(1, KEY, TO, messenger, WORKING)
    board.done(1, KEY)
    board.show(1, KEY, TO, messenger, 4)
    await board.drain(timeout=5)
    assert messenger.all_notes_gone()


async def test_work_that_ends_within_the_quiet_start_gets_no_note() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, quiet_start=0.3)
    board.show(1, KEY, TO, messenger, WORKING)  # work starts at once
    await asyncio.sleep(0.05)
    board.done(1, KEY)  # and ends before the note was due
    await board.drain(timeout=5)
    assert messenger.notes == {} and stored.saved == {}


async def test_work_that_takes_longer_than_the_quiet_start_gets_its_note_then() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, quiet_start=0.2)
    board.show(1, KEY, TO, messenger, WORKING)
    await asyncio.sleep(0.05)
    assert messenger.notes == {}  # not yet: the chat action shows the work meanwhile
    await until(lambda: len(messenger.notes) == 1)
    ((note_id, note),) = messenger.notes.items()
    assert note.texts == [t("working", TO.language)] and stored.saved == {1: note_id}
    board.done(1, KEY)
    await until(messenger.all_notes_gone)


async def test_a_queued_request_is_told_its_place_at_once_despite_the_quiet_start() -> None:
    messenger, stored = FakeMessenger(), Recorded()
    board = NoteBoard(stored.on_sent, stored.on_gone, quiet_start=60)
    board.show(1, KEY, TO, messenger, 3)
    await until(lambda: len(messenger.notes) == 1)
    (note,) = messenger.open_notes()
    assert note.texts == [t("queued", TO.language, position=3)]
    board.done(1, KEY)
    await until(messenger.all_notes_gone)
