"""A first-come, first-served gate in front of the edit API that tells each waiter its place.

In-process for now: several replicas each keep their own line (a database-backed queue is the
planned next step, see the README).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

OnWait = Callable[[int], Awaitable[None]]


class WorkQueue:
    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._active = 0
        self._line: list[object] = []
        self._changed = asyncio.Condition()

    @property
    def waiting(self) -> int:
        return len(self._line)

    @asynccontextmanager
    async def turn(self, on_wait: OnWait | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body; while waiting, call `on_wait(place)` (1 = next) on each
        change of place. The callback runs outside the lock, so a slow chat API stalls no one."""
        ticket = object()
        reported = 0
        async with self._changed:
            self._line.append(ticket)
        try:
            while True:
                async with self._changed:
                    if self._line[0] is ticket and self._active < self._slots:
                        self._line.pop(0)
                        self._active += 1
                        self._changed.notify_all()  # everyone behind moved up one place
                        break
                    place = self._line.index(ticket) + 1
                    if place == reported or on_wait is None:
                        await self._changed.wait()
                        continue
                reported = place
                await on_wait(place)
        except BaseException:
            async with self._changed:
                if ticket in self._line:
                    self._line.remove(ticket)
                self._changed.notify_all()
            raise
        try:
            yield
        finally:
            async with self._changed:
                self._active -= 1
                self._changed.notify_all()
