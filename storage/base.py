"""`SqlBase`: the plumbing every part of SqlStore shares: the engine, one transaction
(`_tx`), SQLite's one writer, batched small writes (`_write`) and the dialect's INSERT.

Each method of a store built on it is one transaction and hands back values from bot.domain,
never ORM rows. Methods that may race with other callers (or other processes) use INSERT ... ON
CONFLICT and conditional UPDATEs rather than read-then-write, so they stay correct on
PostgreSQL's READ COMMITTED; on SQLite every writing transaction also holds the write lock from
its start (see storage/db.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.db import AT_ONCE, READ_ONLY
from storage.group_commit import GroupCommit, Work

Insert: TypeAlias = postgresql.Insert | sqlite.Insert


class SqlBase:
    """Persistent state in one SQL database. Owns `engine`: `aclose()` disposes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {self._dialect!r} (use SQLite or PostgreSQL)")
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._sqlite_writer = asyncio.Lock()
        # A burst of new requests (and their notes) goes in batches, one transaction each (see
        # group_commit): at most one of them stands in line for SQLite's writer, so the running
        # jobs' writes are never stuck behind the burst.
        self._batches = GroupCommit(self._small_tx) if self._dialect == "sqlite" else None

    async def aclose(self) -> None:
        if self._batches is not None:
            await self._batches.drain()
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(
        self, *, read_only: bool = False, small: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises. `small`:
        a few short statements (point lookups, small writes), which SQLite runs at once (see
        sqlite_driver)."""
        if read_only or self._dialect != "sqlite":
            async with self._sessions.begin() as session:
                if read_only:
                    options = {READ_ONLY: True, AT_ONCE: small}
                    await session.connection(execution_options=options)
                yield session
            return
        # SQLite has one writer. Writers of this process take turns here, woken as soon as the
        # one before commits, instead of in SQLite's busy handler, which polls with sleeps of
        # up to 100 ms: under load those sleeps, not the work, set the pace.
        async with self._sqlite_writer, self._sessions.begin() as session:
            if small:
                await session.connection(execution_options={AT_ONCE: True})
            yield session

    @asynccontextmanager
    async def _small_tx(self) -> AsyncIterator[AsyncSession]:
        async with self._tx(small=True) as session:
            yield session

    async def _write(self, work: Work) -> Any:
        """`work(session)` in a write transaction: on SQLite, with the others of this kind that
        arrived meanwhile (group_commit: a savepoint each); on PostgreSQL, in one of its own."""
        if self._batches is not None:
            return await self._batches.run(work)
        async with self._tx() as session:
            return await work(session)

    def _insert(self, entity: Any) -> Insert:
        """INSERT in this database's dialect, which offers ON CONFLICT."""
        if self._dialect == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)
