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

import contextlib
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
                outcome = None
                if adapted.reading:
                    outcome = self.await_(_read_at_once(adapted, operation, parameters))
                if outcome is None:
                    # aiosqlite's own queue, as SQLAlchemy's driver uses it for isolation_level.
                    outcome = self.await_(
                        driver._execute(_run, driver._conn, operation, parameters)
                    )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self.description, rows, self.lastrowid, self.rowcount = outcome
        self._rows = deque(rows)


async def _at_once(connection: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    return _run(connection, operation, parameters)


async def _read_at_once(
    connection: OneTripConnection, operation: str, parameters: Any
) -> _Outcome | None:
    return connection.read_at_once(operation, parameters)


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

    __slots__ = ("_busy_ms", "reading", "writing")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.writing = False
        self.reading = False
        self._busy_ms = 0

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        return super().cursor(server_side) if server_side else OneTripCursor(self)

    def begin_at_once(self, busy_ms: int) -> bool:
        """BEGIN IMMEDIATE on the calling thread if SQLite's write lock is free now (this
        process's writers take turns before they begin, so it usually is): then `writing`.
        False, having done nothing, if another process holds it (or anything else failed):
        BEGIN then waits for it on the driver's thread, as every other transaction's does."""
        connection: sqlite3.Connection = self._connection._conn
        try:
            connection.execute("PRAGMA busy_timeout = 0")
            try:
                connection.execute("BEGIN IMMEDIATE")
            finally:
                connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
        except sqlite3.Error:  # (a broken connection: the driver's BEGIN says so, as usual)
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.rollback()
            return False
        self.writing = True
        return True

    def begin_read_at_once(self, busy_ms: int) -> bool:
        """A small read (point lookups, storage.db.AT_ONCE with READ_ONLY): BEGIN and its
        statements on the calling thread, without waiting for anyone: a reader in WAL mode
        waits for nothing but a rare recovery, and if one comes, the statement is run on the
        driver's thread instead, waiting as every other does (see read_at_once). False,
        having done nothing, if that failed (a broken connection: the driver's BEGIN says so)."""
        connection: sqlite3.Connection = self._connection._conn
        try:
            connection.execute("PRAGMA busy_timeout = 0")
            connection.execute("BEGIN")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute(f"PRAGMA busy_timeout = {busy_ms}")
            return False
        self.reading, self._busy_ms = True, busy_ms
        return True

    def read_at_once(self, operation: str, parameters: Any) -> _Outcome | None:
        """The statement run at once; None if SQLite said to wait (it is not reading then)."""
        try:
            return _run(self._connection._conn, operation, parameters)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            self._stop_reading()
            return None

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self._connection._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def commit(self) -> None:
        self.writing = False
        if self.reading:  # ending a read takes no time: at once
            self._stop_reading()
            self._connection._conn.commit()
            return
        super().commit()

    def rollback(self) -> None:
        self.writing = False
        self._stop_reading()
        if not self._connection._conn.in_transaction:
            return  # nothing to roll back (the pool's reset after a commit): no trip for it
        super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*args, **kwargs)
        return OneTripConnection(self, stock._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
