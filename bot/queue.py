"""A first-come, first-served gate in front of the edit API that tells each waiter its place.

Slots are handed over by whoever frees one, in line order, so a waiter busy reporting its place
(a slow chat API) never holds up the line. In-process for now: several replicas each keep their
own line (a database-backed queue is the planned next step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

OnWait = Callable[[int], Awaitable[None]]


class _Ticket:
    granted = False


class WorkQueue:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._line: list[_Ticket] = []
        self._changed = asyncio.Condition()

    @property
    def waiting(self) -> int:
        return len(self._line)

    @asynccontextmanager
    async def turn(self, on_wait: OnWait | None = None) -> AsyncIterator[None]:
        """Hold one slot for the body; while waiting, call `on_wait(place)` (1 = next) on each
        change of place."""
        ticket = _Ticket()
        async with self._changed:
            self._line.append(ticket)
            self._hand_over()
        try:
            await self._wait_for_slot(ticket, on_wait)
        except BaseException:
            async with self._changed:
                if ticket.granted:  # granted while we were cancelled: pass it on
                    self._free += 1
                else:
                    self._line.remove(ticket)
                self._hand_over()
            raise
        try:
            yield
        finally:
            async with self._changed:
                self._free += 1
                self._hand_over()

    async def _wait_for_slot(self, ticket: _Ticket, on_wait: OnWait | None) -> None:
        reported = 0
        while True:
            async with self._changed:
                wake = partial(self._news_for, ticket, reported if on_wait else None)
                await self._changed.wait_for(wake)
                if ticket.granted:
                    return
                reported = self._place(ticket)
            assert on_wait is not None
            await on_wait(reported)  # outside the lock: slots keep moving meanwhile

    def _news_for(self, ticket: _Ticket, reported: int | None) -> bool:
        """Whether `ticket` got a slot or (when it reports places) moved from `reported`."""
        return ticket.granted or (reported is not None and self._place(ticket) != reported)

    def _place(self, ticket: _Ticket) -> int:
        return self._line.index(ticket) + 1

    def _hand_over(self) -> None:
        """Give free slots to the front of the line. Call with the lock held."""
        while self._free and self._line:
            self._line.pop(0).granted = True
            self._free -= 1
        self._changed.notify_all()
