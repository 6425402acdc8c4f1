"""storage.db.create_engine on SQLite: connection set-up (pragmas, WAL) under concurrency."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import AT_ONCE, READ_ONLY, SQLITE_BUSY_TIMEOUT_S, create_engine

# Engines (each with its own connection thread) opening one fresh file at once, over fresh files:
# before the fix ~1 round in 20 failed (more engines spread out more and collide less often).
ENGINES = 3
ROUNDS = 60


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


async def _open_and_write(url: str, n: int) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
    finally:
        await engine.dispose()


async def test_engines_opening_a_fresh_file_at_once_all_get_wal(tmp_path: Path) -> None:
    # Switching a file to WAL needs a write lock taken while holding a read lock; SQLite answers a
    # second connection doing the same with an immediate "database is locked" (no busy wait).
    for round_ in range(ROUNDS):
        path = tmp_path / f"round{round_}" / "db.sqlite3"
        await asyncio.gather(*(_open_and_write(_url(path), n) for n in range(ENGINES)))
        check = sqlite3.connect(path)
        try:
            assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert check.execute("SELECT count(*) FROM t").fetchone() == (ENGINES,)
        finally:
            check.close()


async def test_every_connection_gets_the_pragmas(tmp_path: Path) -> None:
    engine = create_engine(_url(tmp_path / "db.sqlite3"), connect_args={"timeout": 7})
    try:
        for _ in range(2):  # a new database, then one already in WAL mode
            async with engine.connect() as conn:
                pragmas = {
                    name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                    for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
                }
            assert pragmas == {
                "journal_mode": "wal",
                "busy_timeout": 7000,
                "synchronous": 1,  # NORMAL
                "foreign_keys": 1,
            }
            await engine.dispose()
    finally:
        await engine.dispose()


async def test_in_memory_database_keeps_its_journal() -> None:
    engine = create_engine("sqlite://")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "memory"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        await engine.dispose()


def _hold_write_lock(path: Path, seconds: float) -> tuple[threading.Thread, threading.Event]:
    """Another connection (rollback journal, as before any WAL switch) holds the write lock for
    `seconds`, which makes `PRAGMA journal_mode = WAL` fail at once whatever the busy timeout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
            locked.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(5)
    return thread, locked


async def test_wal_switch_waits_for_a_writer_holding_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    holder, _ = _hold_write_lock(path, 0.3)
    started = time.monotonic()
    try:
        await _open_and_write(_url(path), 1)
    finally:
        await asyncio.to_thread(holder.join)
    assert time.monotonic() - started >= 0.2  # it did wait for the writer
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        check.close()


async def test_wal_switch_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    holder, _ = _hold_write_lock(path, 0.8)
    engine = create_engine(_url(path), connect_args={"timeout": 0.2})
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            async with engine.connect():
                pass
        assert 0.15 <= time.monotonic() - started < 0.7
    finally:
        await engine.dispose()
        await asyncio.to_thread(holder.join)


async def test_failed_wal_switch_leaves_nothing_to_stall_the_loop(
    tmp_path: Path,
) -> None:
    # A statement failing through SQLAlchemy's aiosqlite adapter leaves its sqlite3 cursor in a
    # reference cycle; the collector resetting it on the event loop thread blocks until that
    # connection's thread is free, e.g. after a BEGIN IMMEDIATE waiting for a writer that needs
    # the (now blocked) loop to commit: a stall of the full busy timeout, then "database is locked".
    path = tmp_path / "db.sqlite3"
    gc.disable()  # collect exactly when the connection is busy waiting, as the collector may
    engine = create_engine(_url(path), connect_args={"timeout": 2})
    writer = create_engine(_url(path), connect_args={"timeout": 2})
    try:
        holder, _ = _hold_write_lock(path, 0.2)
        async with engine.connect() as conn:  # its WAL switch fails at least once, then retries
            await asyncio.to_thread(holder.join)

            async def insert() -> None:
                async with conn.begin():
                    await conn.execute(text("INSERT INTO t VALUES (1)"))

            async with writer.begin() as writer_conn:  # holds the write lock...
                await writer_conn.execute(text("INSERT INTO t VALUES (2)"))
                waiting = asyncio.create_task(insert())
                await asyncio.sleep(0.1)  # ... while conn's BEGIN IMMEDIATE waits for it
                started = time.monotonic()
                gc.collect()
                collect_s = time.monotonic() - started
            await waiting  # stalled: "database is locked" after the 2 s busy timeout
            assert collect_s < 1.0
    finally:
        gc.enable()
        await engine.dispose()
        await writer.dispose()


@contextmanager
def counting_trips() -> Iterator[list[str]]:
    """The trips to the driver's thread made meanwhile (what each ran there), in order."""
    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object) -> object:
        trips.append(getattr(fn, "__name__", "?"))
        return await real(self, fn, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield trips


async def test_statements_answer_as_the_stock_driver_in_one_trip_each(tmp_path: Path) -> None:
    """storage/sqlite_driver.py: rows, row counts, new row ids and constraint errors come back as
    SQLAlchemy's own aiosqlite driver gives them, each statement in one trip to its thread, or
    none in a small write transaction."""
    engine = create_engine(_url(tmp_path / "db.sqlite3"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
        with counting_trips() as trips:
            async with engine.begin() as conn:
                inserted = await conn.execute(text("INSERT INTO t (v) VALUES ('a'), ('b')"))
                updated = await conn.execute(text("UPDATE t SET v = v || '!' WHERE n > 0"))
                rows = (await conn.execute(text("SELECT n, v FROM t ORDER BY n"))).all()
        assert (inserted.rowcount, inserted.lastrowid, updated.rowcount) == (2, 2, 2)
        assert [tuple(row) for row in rows] == [(1, "a!"), (2, "b!")]
        # BEGIN, three statements, COMMIT: five trips (stock: about twelve); the pool's
        # rollback after a commit has nothing to do: none for it
        assert len(trips) == 5, trips
        with counting_trips() as trips:
            async with engine.connect() as conn:  # a small write: its statements run at once
                await conn.execution_options(**{AT_ONCE: True})
                async with conn.begin():
                    added = await conn.execute(text("INSERT INTO t (v) VALUES ('c')"))
                    last = (await conn.execute(text("SELECT max(n) FROM t"))).scalar()
        assert (added.rowcount, added.lastrowid, last) == (1, 3, 3)
        assert trips == ["commit"], trips  # the write lock was free: BEGIN at once
        # Another process holds the write lock: BEGIN waits for it on the driver's thread.
        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with counting_trips() as trips:
            async with engine.connect() as conn:
                await conn.execution_options(**{AT_ONCE: True})
                waiting = asyncio.create_task(_small_insert(conn, "d"))
                await asyncio.sleep(0.2)
                assert not waiting.done()  # (and the event loop was free meanwhile)
                other.execute("COMMIT")
                assert await waiting == 1
        other.close()
        assert trips == ["_execute_fetchall", "commit"], trips
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (v) VALUES ('a!')"))
    finally:
        await engine.dispose()


async def test_a_small_read_runs_at_once_and_waits_for_no_writer(tmp_path: Path) -> None:
    """A small read (READ_ONLY with AT_ONCE: the gate's point lookups) makes no trip to the
    driver's thread, and sees what was committed while another process writes."""
    engine = create_engine(_url(tmp_path / "db.sqlite3"))
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t (v) VALUES ('b')")  # (not committed)
        with counting_trips() as trips:
            async with engine.connect() as conn:
                await conn.execution_options(**{READ_ONLY: True, AT_ONCE: True})
                async with conn.begin():
                    rows = (await conn.execute(text("SELECT v FROM t ORDER BY n"))).all()
                assert [row.v for row in rows] == ["a"] and trips == []
                other.execute("COMMIT")
                await conn.execution_options(**{READ_ONLY: False, AT_ONCE: False})
                async with conn.begin():  # its busy timeout is back: a writer can wait
                    busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert busy == SQLITE_BUSY_TIMEOUT_S * 1000
    finally:
        other.close()
        await engine.dispose()


async def _small_insert(conn: AsyncConnection, value: str) -> int:
    async with conn.begin():
        return (await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})).rowcount


async def test_a_writer_kept_waiting_past_the_busy_timeout_gets_sqlalchemys_error(
    tmp_path: Path,
) -> None:
    """BEGIN IMMEDIATE goes straight to the driver (storage/db.py); its failure still arrives
    as SQLAlchemy's OperationalError, like any other statement's."""
    path = tmp_path / "db.sqlite3"
    await _open_and_write(_url(path), 1)  # the file is in WAL mode already
    engine = create_engine(_url(path), connect_args={"timeout": 0.2})
    try:
        async with engine.connect():
            pass  # connected (and switched to WAL) before the lock is taken
        holder, _ = _hold_write_lock(path, 0.8)
        try:
            with pytest.raises(OperationalError, match="database is locked"):
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO t VALUES (2)"))
        finally:
            await asyncio.to_thread(holder.join)
    finally:
        await engine.dispose()
