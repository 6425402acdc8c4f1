"""The edit API's slots: at most EDIT_CONCURRENCY calls at once in this process and, with
GLOBAL_API_CONCURRENCY, at most that many across every process on the database, so a vendor's
rate limit holds however many replicas run. A global slot is a row in the database, held under a
lease the engine's heartbeat renews: a process that dies frees its slots when their leases run
out. A call waits for a slot by looking again every moment, and at once when a call of this
process ends. Everything of one edit (backend retries, the fallback) happens in one hold."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from bot.ports import ApiSlotsStore

log = logging.getLogger("stepedit.service")

SLOT_POLL_SECONDS = 0.2  # how often a call waiting for a global slot looks again


class ApiSlots:
    def __init__(
        self,
        store: ApiSlotsStore,
        clock: Callable[[], datetime],
        *,
        owner: str,
        local: int,
        shared: int | None,
        lease: float,
        poll: float = SLOT_POLL_SECONDS,
    ) -> None:
        self._store, self._clock, self._owner = store, clock, owner
        self._local = asyncio.Semaphore(local)
        self.shared = shared  # GLOBAL_API_CONCURRENCY; None: no global cap
        self._lease = timedelta(seconds=lease)
        self._poll = poll
        self._numbers = itertools.count(1)
        self._held: set[str] = set()  # holders of global slots in this process
        self._freed = asyncio.Event()  # set (and replaced) when a call here lets a slot go

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """A slot for one call while the body runs."""
        async with self._local:
            if self.shared is None:
                yield
                return
            holder = f"{self._owner}:{next(self._numbers)}"
            try:
                await self._take(holder)
                self._held.add(holder)
                yield
            finally:  # also when cancelled while taking: the take may have gone through
                self._held.discard(holder)
                await self._release(holder)

    async def renew(self) -> None:
        """Extend the leases of the slots held here (the engine's heartbeat)."""
        if self._held:
            await self._store.renew_api_slots(list(self._held), self._clock() + self._lease)

    async def _take(self, holder: str) -> None:
        while True:
            freed, now, size = self._freed, self._clock(), self.shared or 1
            try:
                if await self._store.take_api_slot(holder, size, now, now + self._lease):
                    return
            except Exception:
                log.exception("could not take an API slot; trying again")
            with contextlib.suppress(TimeoutError):  # jittered: waiters do not look in step
                await asyncio.wait_for(freed.wait(), self._poll * random.uniform(0.5, 1.5))

    async def _release(self, holder: str) -> None:
        try:  # shielded: a second cancel must not leave the slot held until its lease ends
            await asyncio.shield(self._store.release_api_slot(holder))
        except Exception:
            log.warning("could not free API slot %s; its lease frees it", holder, exc_info=True)
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()
