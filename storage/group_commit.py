"""Group commit: many small units of work in one write transaction, each in its own savepoint.

SQLite has one writer, and every transaction pays for BEGIN and COMMIT, each a trip to the
driver's thread that waits its turn on a busy machine. Under a burst of new requests, taking
them one transaction at a time made those trips, not the work, the pace of the intake. Here a
request waits while the batch before it is written, then goes with every other request that
arrived meanwhile: a burst of hundreds costs a few dozen transactions, and a single request
costs what it did. A unit that breaks a constraint (IntegrityError) is undone alone, by its
savepoint, and raises to its own caller; the others stand. (Savepoints cost two statements and
SQLAlchemy's nested transaction per unit, so a batch goes without them first; only one where
a constraint broke goes again, a savepoint each.) Any other failure may have ended the
transaction itself (a full disk, an I/O error), so it fails the whole batch: nothing of it is
kept, and every caller hears the error. A unit whose caller gave up before it started is
skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

Work = Callable[[AsyncSession], Awaitable[Any]]
Transaction = Callable[[], AbstractAsyncContextManager[AsyncSession]]

MOST_PER_TRANSACTION = 16  # so that no single transaction holds the writer for long


class GroupCommit:
    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction
        self._waiting: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, work: Work) -> Any:
        """`work(session)` in the next batch; its result once that batch is committed."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        return await done

    async def drain(self) -> None:
        """Until the batches on their way are written (before the engine is closed: a batch
        left behind would finish on a closed event loop)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait([writer])

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MOST_PER_TRANSACTION]
                del self._waiting[:MOST_PER_TRANSACTION]
                await self._write(batch)
        except BaseException as error:  # cancelled (shutdown): nobody is left waiting
            for _, done in self._waiting:
                _settle(done, error=error)
            self._waiting.clear()
            raise

    async def _write(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        if not await self._attempt(batch, alone=False):
            await self._attempt(batch, alone=True)

    async def _attempt(self, batch: list[tuple[Work, asyncio.Future[Any]]], *, alone: bool) -> bool:
        """The batch in one transaction, each unit in a savepoint of its own if `alone`. False
        if a unit broke a constraint without one: nothing of the batch was kept, and it goes
        again (units are retried, so each must be one that can run again)."""
        results: list[tuple[asyncio.Future[Any], Any]] = []
        try:
            async with self._transaction() as session:
                for work, done in batch:
                    if done.done():  # its caller gave up (cancelled) before it started
                        continue
                    if not alone:
                        results.append((done, await work(session)))
                        continue
                    try:
                        async with session.begin_nested():
                            results.append((done, await work(session)))
                    except IntegrityError as error:  # undone alone; the others stand
                        _settle(done, error=error)
        except BaseException as error:  # nothing of the batch was committed
            if not alone and isinstance(error, IntegrityError) and _live(batch) > 1:
                return False
            for _, done in batch:
                _settle(done, error=error)
            if not isinstance(error, Exception):
                raise
            return True
        for done, result in results:
            _settle(done, result=result)
        return True


def _live(batch: list[tuple[Work, asyncio.Future[Any]]]) -> int:
    """Units whose callers still wait."""
    return sum(not done.done() for _, done in batch)


def _settle(
    done: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(result)
    elif isinstance(error, Exception):
        done.set_exception(error)
    else:  # cancelled (shutdown): the caller hears it as a cancellation
        done.cancel()
