"""What the gate learns of an update, kept for the rest of its handling: the event handled
(written down in batches), and what it read (taken once, while fresh).

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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bot.logs import untagged

K = TypeVar("K")
V = TypeVar("V")

log = logging.getLogger("stepedit.handled")

Write = Callable[[str, list[str]], Awaitable[None]]  # (platform, event ids)
RETRY_SECONDS = 1.0  # after a failed write (the database away): the marks wait, then go


class HandledMarks:
    def __init__(self, write: Write) -> None:
        self._write = write
        self._waiting: dict[tuple[str, str], None] = {}  # in the order handled
        self._writer: asyncio.Task[None] | None = None
        self._wrote = asyncio.Event()  # set (and replaced) as each batch is written

    def add(self, platform: str, event_id: str) -> None:
        self._waiting[(platform, event_id)] = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), context=untagged())

    def __contains__(self, event: tuple[str, str]) -> bool:
        return event in self._waiting

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until every mark is written, e.g. before shutting down."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=timeout)

    async def written(self, platform: str, event_id: str, timeout: float) -> bool:
        """Wait (bounded) until this event's mark is written; False if it is not by then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (platform, event_id) in self._waiting:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wrote.wait(), remaining)
        return True

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
            wrote, self._wrote = self._wrote, asyncio.Event()
            wrote.set()


class ReadOnce(Generic[K, V]):
    """Values the gate has just read, each taken once by what follows it while `fresh`
    seconds: the user record for the request after the gate (a read fewer per request), or
    what the gate needs of an event read with its whole batch (one read for the batch); or
    read by any number of events while fresh (`get`). Emptied when any user changes
    (EditService._users_changed)."""

    def __init__(self, fresh: float, most: int = 1000) -> None:
        self._values: dict[K, tuple[float, V]] = {}
        self._fresh, self._most = fresh, most

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        if len(self._values) >= self._most:  # ones never taken (no request followed): drop
            self._values = {k: v for k, v in self._values.items() if now - v[0] < self._fresh}
        self._values[key] = (now, value)

    def take(self, key: K) -> V | None:
        read = self._values.pop(key, None)
        if read is None or time.monotonic() - read[0] >= self._fresh:
            return None
        return read[1]

    def get(self, key: K) -> V | None:
        read = self._values.get(key)
        if read is None or time.monotonic() - read[0] >= self._fresh:
            return None
        return read[1]

    def clear(self) -> None:
        self._values.clear()
