"""What the gate learns of an update, kept for the rest of its handling: the event handled
(written down in batches), and the user it read.

Events handled, written down in batches.

Every update the bot handles is recorded, so a redelivery is recognised. Under a burst that was
a write transaction per update, in line for SQLite's one writer with the admissions themselves.
Here the marks wait while one batch is being written and go together in the next, so a burst
of hundreds costs a few transactions. Until written, a mark is known here (`in`), so this
process recognises a redelivery at once; after a crash in between, the update is handled again
from the updates kept as received, where an edit's own key keeps it from being admitted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.domain import Incoming, UserRecord, UserRef

log = logging.getLogger("stepedit.handled")

Write = Callable[[str, list[str]], Awaitable[None]]  # (platform, event ids)
RETRY_SECONDS = 1.0  # after a failed write (the database away): the marks wait, then go


class HandledMarks:
    def __init__(self, write: Write) -> None:
        self._write = write
        self._waiting: dict[tuple[str, str], None] = {}  # in the order handled
        self._writer: asyncio.Task[None] | None = None

    def add(self, platform: str, event_id: str) -> None:
        self._waiting[(platform, event_id)] = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())

    def __contains__(self, event: tuple[str, str]) -> bool:
        return event in self._waiting

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until every mark is written, e.g. before shutting down."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=timeout)

    async def _write_all(self) -> None:
        while self._waiting:
            batch = list(self._waiting)
            by_platform: dict[str, list[str]] = {}
            for platform, event_id in batch:
                by_platform.setdefault(platform, []).append(event_id)
            try:
                for platform, event_ids in by_platform.items():
                    await self._write(platform, event_ids)
            except Exception:
                log.exception("could not record %d handled events; trying again", len(batch))
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for event in batch:
                self._waiting.pop(event, None)


class JustRead:
    """The user record the gate has just read, taken (once) by the request that follows it in
    the same update: a read transaction fewer per request. A record older than `fresh`
    seconds, or one that no longer matches the platform's name or language, is not used."""

    def __init__(self, fresh: float = 1.0, most: int = 1000) -> None:
        self._records: dict[tuple[str, str], tuple[float, UserRecord]] = {}
        self._fresh, self._most = fresh, most

    def put(self, record: UserRecord) -> None:
        now = time.monotonic()
        if len(self._records) >= self._most:  # updates that made no request: drop the stale
            self._records = {k: v for k, v in self._records.items() if now - v[0] < self._fresh}
        self._records[(record.ref.platform, record.ref.id)] = (now, record)

    def clear(self) -> None:
        self._records.clear()

    def take(self, ref: UserRef) -> UserRecord | None:
        read = self._records.pop((ref.platform, ref.id), None)
        if read is None or time.monotonic() - read[0] >= self._fresh:
            return None
        record = read[1]
        known = record.ref
        same = ref.name in (None, known.name) and ref.language in (None, known.language)
        return record if same else None


class ReadAhead:
    """What the gate needs of events received together (handled already? their user), read for
    the whole batch at once and taken (once) by each event at the gate, while `fresh`."""

    def __init__(self, fresh: float = 5.0, most: int = 1000) -> None:
        self._events: dict[tuple[str, str], tuple[float, bool, UserRecord | None]] = {}
        self._fresh, self._most = fresh, most

    def put(self, event: Incoming, seen: bool, record: UserRecord | None) -> None:
        now = time.monotonic()
        if len(self._events) >= self._most:  # events that never reached the gate
            self._events = {k: v for k, v in self._events.items() if now - v[0] < self._fresh}
        self._events[(event.platform, event.event_id)] = (now, seen, record)

    def clear(self) -> None:
        self._events.clear()

    def take(self, event: Incoming) -> tuple[bool, UserRecord | None] | None:
        read = self._events.pop((event.platform, event.event_id), None)
        if read is None or time.monotonic() - read[0] >= self._fresh:
            return None
        return read[1], read[2]
