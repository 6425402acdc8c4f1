"""SQLAlchemy's aiosqlite driver, with at most one trip to the driver's thread per statement,
and none for the small statements of a write transaction.

The stock cursor makes three or four trips for every statement (open a cursor, execute, fetch
the rows, close it), and each trip is a wait for the event loop to come round (and, on a busy
machine, for the OS to run the thread and for the GIL). SQLite has one writer at a time, so
under load those waits, not the work, set the pace of every transaction (measured with 200
edits at once: the writer's turn was held 93% of the time, 9-29 ms per transaction). Here a
statement runs and returns its rows in a single trip, which is what aiosqlite's own
`execute_fetchall` does; and in a small write transaction (storage.db.AT_ONCE: a few short
statements, which hold the write lock and cannot wait for anyone) each statement runs at once
on the calling thread (see OneTripConnection). Everything else is SQLAlchemy's driver
unchanged. Passed to the engine as its DBAPI `module` (a documented `create_engine` parameter).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

_Outcome = tuple[Any, list[Any], int | None, int]  # description, rows, lastrowid, rowcount


def _run(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    """On the driver's thread: the statement, its rows, and what the cursor says about it."""
    cursor = connection.cursor()
    try:
        cursor.execute(operation, () if parameters is None else parameters)
        if cursor.description:
            return cursor.description, cursor.fetchall(), -1, -1
        return None, [], cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


BIG_PARAMETER = 256 * 1024  # bytes: a statement carrying more (an image) goes to the thread


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        driver: Any = self._connection  # an aiosqlite.Connection
        adapted: Any = self._adapt_connection  # a OneTripConnection
        outcome: Any
        try:
            if adapted.writing and not _big(parameters):
                # Awaited without ever suspending: no turn of the loop; awaited all the same,
                # as SQLAlchemy's async layer expects of every statement.
                outcome = self.await_(_at_once(driver._conn, operation, parameters))
            else:
                # aiosqlite's own queue, as SQLAlchemy's driver uses it for isolation_level.
                outcome = self.await_(driver._execute(_run, driver._conn, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self.description, rows, self.lastrowid, self.rowcount = outcome
        self._rows = deque(rows)


async def _at_once(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    return _run(connection, operation, parameters)


def _big(parameters: Any) -> bool:
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    return any(isinstance(v, bytes | bytearray | memoryview) and len(v) > BIG_PARAMETER
               for v in values)  # fmt: skip


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """`writing`: in a small write transaction (set by storage.db for AT_ONCE), this connection
    holds SQLite's write lock, so its short statements cannot wait for anyone: they run at once
    on the calling thread (microseconds), instead of a trip to the driver's thread and back
    that costs a turn of the event loop (and, on a busy machine, of the OS scheduler) while
    every other writer waits. BEGIN (which may wait for another process), COMMIT (which may
    checkpoint and sync the file), a statement carrying an image and every other transaction
    (which may scan or free many pages) still make the trip."""

    __slots__ = ("writing",)

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.writing = False

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        return super().cursor(server_side) if server_side else OneTripCursor(self)

    def begin_at_once(self, busy_ms: int) -> bool:
        """BEGIN IMMEDIATE on the calling thread if SQLite's write lock is free now (this
        process's writers take turns before they begin, so it usually is): then `writing`.
        False, having done nothing, if another process holds it (or anything else failed):
        BEGIN then waits for it on the driver's thread, as every other transaction's does."""
        connection: sqlite3.Connection = self._connection._conn
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        finally:
            connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
        self.writing = True
        return True

    def commit(self) -> None:
        self.writing = False
        super().commit()

    def rollback(self) -> None:
        self.writing = False
        super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*args, **kwargs)
        return OneTripConnection(self, stock._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
