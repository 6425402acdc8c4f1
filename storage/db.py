"""Engines and schema migrations.

    engine = create_engine("sqlite:///data/stepedit.sqlite3")   # or "postgresql://user@host/db"
    await migrate(engine)                                        # upgrade to head; safe every start
    store = SqlStore(engine)

Migrations live in storage/migrations and run through Alembic's programmatic API on a
connection we hand it (`Config.attributes["connection"]`), so `migrate` works from inside a running
event loop without a nested loop and without an alembic.ini.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from storage import sqlite_driver

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# How long a SQLite writer waits for another writer (other sessions or processes) before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0
# Pauses between attempts to switch a SQLite file to WAL while another connection holds its lock.
_WAL_RETRY_FIRST_S = 0.002
_WAL_RETRY_MAX_S = 0.05
# Execution option: this transaction only reads, so on SQLite it may start with a plain (deferred)
# BEGIN and run alongside writers (WAL) instead of queueing for the write lock.
READ_ONLY = "stepedit_read_only"
# A write transaction of a few short statements (no images, no scans): SQLite runs them at
# once on the event loop's thread (see sqlite_driver); any other transaction makes its trips.
AT_ONCE = "stepedit_at_once"
SQLITE_CONNECTIONS = 8  # per process (readers side by side in WAL mode; one writer at a time)
# Any constant works: all processes migrating one PostgreSQL database take this lock in turn.
_PG_MIGRATE_LOCK = 0x5E9ED17


def normalize_url(url: str) -> str:
    """Make a database URL name an async driver.

    `postgres://` and `postgresql://` (or `postgresql+psycopg2://` etc.) become
    `postgresql+asyncpg://`; `sqlite://` becomes `sqlite+aiosqlite://`. URLs that already name an
    async driver are returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL (expected e.g. sqlite:///path or postgresql://...)")
    backend, _, driver = scheme.partition("+")
    backend = backend.lower()
    if backend in ("postgres", "postgresql"):
        if driver == "asyncpg":
            return url
        return f"postgresql+asyncpg://{rest}"
    if backend == "sqlite":
        if driver == "aiosqlite":
            return url
        return f"sqlite+aiosqlite://{rest}"
    return url


def is_sqlite(url: str) -> bool:
    """Whether `url` names a SQLite database (which serves one process)."""
    return url.partition("://")[0].partition("+")[0].strip().lower() == "sqlite"


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # uri=true form
        if url.query.get("uri") not in ("true", "1"):
            return Path(database)
        path = database.removeprefix("file:").split("?", 1)[0]
        if not path or path == ":memory:" or "mode=memory" in database:
            return None
        return Path(path)
    return Path(database)


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether `exc` is SQLITE_BUSY ("database is locked"), any extended variant."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(exc)


async def _enable_wal(driver_connection: aiosqlite.Connection, timeout_s: float) -> None:
    """Put the database file in WAL mode (a lasting property of the file).

    On a file already in WAL mode this is a no-op that needs only a shared lock, which the busy
    timeout covers. The switch itself reads the file under a shared lock, then takes the write
    lock to rewrite the header; if another connection (any process) holds or wants the write lock
    meanwhile, typically one switching the same new file at the same moment, SQLite fails it with
    "database is locked" at once instead of calling the busy handler, since waiting while holding
    the shared lock could deadlock (https://www.sqlite.org/c3ref/busy_handler.html). So we retry,
    with short randomized pauses, for up to the busy timeout ourselves.

    This goes through aiosqlite's `execute_fetchall` rather than a DB-API cursor: there a failed
    statement's sqlite3 cursor is freed at once, on the connection's own thread. Through the
    SQLAlchemy adapter it would outlive the error in a reference cycle, and the garbage collector
    resetting it later on the event loop thread blocks the whole loop for as long as the connection
    is busy waiting in another statement (e.g. its next BEGIN IMMEDIATE, queued behind a writer
    that then cannot finish: a stall of the full busy timeout).
    """
    deadline = time.monotonic() + timeout_s
    pause = _WAL_RETRY_FIRST_S
    while True:
        try:
            rows = list(await driver_connection.execute_fetchall("PRAGMA journal_mode = WAL"))
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        else:
            mode = str(rows[0][0]).lower() if rows else "unknown"
            if mode != "wal":  # e.g. a file system without shared memory: works, just slower
                log.warning("SQLite kept journal_mode=%s instead of WAL", mode)
            return
        await asyncio.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, _WAL_RETRY_MAX_S)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (any form `normalize_url` accepts).

    SQLite: the database file's directory is created if missing; every connection runs in WAL mode
    with foreign keys on and a busy timeout, and every transaction starts with BEGIN IMMEDIATE so
    concurrent writers (other sessions or processes) queue up instead of failing.
    Extra keyword arguments go to `sqlalchemy.ext.asyncio.create_async_engine`.
    """
    sa_url = make_url(normalize_url(url))
    if sa_url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(sa_url, **kwargs)

    path = _sqlite_file(sa_url)
    if path is not None:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    # No statement cache: a cached statement keeps its last bound values, so every pooled
    # connection would hold a copy of the last image it stored (18 MB for a 12 MP result) for
    # good. Preparing each statement again costs microseconds.
    connect_args.setdefault("cached_statements", 0)
    # A write transaction's statements run on the event loop's thread (see sqlite_driver),
    # the rest on the driver's: one at a time, never at once.
    connect_args.setdefault("check_same_thread", False)
    kwargs.setdefault("module", sqlite_driver.dbapi())  # one trip per statement
    # A fixed set of connections: under a burst, hundreds of reads at once wait a moment for
    # one rather than opening (and closing again) connections of their own, each a new thread
    # set up with the PRAGMAs below.
    if path is not None:  # (an in-memory database has one connection, kept)
        kwargs.setdefault("pool_size", SQLITE_CONNECTIONS)
        kwargs.setdefault("max_overflow", 0)
    engine = create_async_engine(sa_url, connect_args=connect_args, **kwargs)
    busy_s = float(connect_args["timeout"])
    busy_ms = int(busy_s * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the sqlite3 module (it skips it for SELECT and DDL) ...
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if path is not None:
                dbapi_connection.run_async(lambda conn: _enable_wal(conn, busy_s))
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # ... and emit it ourselves: IMMEDIATE takes the write lock up front (waiting up to the
        # busy timeout), so a read-then-write transaction never fails halfway with SQLITE_BUSY.
        # Straight to the driver: one trip to its thread, not three (cursor, execute, close).
        # Writers take turns, so every trip saved in a write transaction shortens the line.
        options = conn.get_execution_options()
        begin = "BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE"
        driver = conn.connection.dbapi_connection
        assert isinstance(driver, AdaptedConnection)
        at_once = options.get(AT_ONCE) and isinstance(driver, sqlite_driver.OneTripConnection)
        if at_once and options.get(READ_ONLY) and driver.begin_read_at_once(busy_ms):
            return  # (no trip: see sqlite_driver)
        if at_once and not options.get(READ_ONLY) and driver.begin_at_once(busy_ms):
            return  # (no trip: the write lock was free)
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            driver.run_async(lambda aio: aio.execute_fetchall(begin))
        except dbapi_error as error:  # raised as SQLAlchemy raises the driver's errors
            raise DBAPIError.instance(begin, None, error, dbapi_error) from error
        if at_once and not options.get(READ_ONLY):
            driver.writing = True  # its statements run at once (see sqlite_driver)

    return engine


def alembic_config() -> Config:
    """An Alembic config for our migrations, built in code (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


class DatabaseInUse(Exception):
    """Another process runs on this SQLite file (SQLite serves one process)."""


def hold_sqlite(url: str) -> IO[str] | None:
    """For a SQLite file: an exclusive lock on `<file>.lock`, held until the returned file is
    closed (or the process ends, however it ends); DatabaseInUse if another process holds it.
    None for any other database (several processes on PostgreSQL are the way to scale)."""
    sa_url = make_url(normalize_url(url))
    path = _sqlite_file(sa_url) if sa_url.get_backend_name() == "sqlite" else None
    if path is None or not path.name or path.expanduser().is_dir():
        return None  # not a file: opening it fails, and says so
    import fcntl  # (POSIX; imported here so that PostgreSQL needs nothing of it)

    path = path.expanduser().resolve()  # one lock for every way of naming the file
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DatabaseInUse(
            f"another stepedit process uses the SQLite database {path}: SQLite serves one "
            "process; for several, use PostgreSQL (DATABASE_URL=postgresql://…)"
        ) from None
    except OSError as exc:  # a file system without locks (some network shares): go on
        lock.close()
        log.warning("could not lock %s (%s): nothing stops a second process on it", path, exc)
        return None
    return lock


class SchemaTooNew(Exception):
    """The database was migrated by a newer stepedit than this one: its schema is not one this
    code knows, so running would risk the data."""


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    _refuse_newer(connection, ScriptDirectory.from_config(config))
    command.upgrade(config, revision)


def _refuse_newer(connection: Connection, scripts: ScriptDirectory) -> None:
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return
    try:
        scripts.get_revision(current)
    except AlembicError:
        raise SchemaTooNew(
            f"the database was upgraded by a newer stepedit (its schema is {current}; this "
            f"one knows up to {scripts.get_current_head()}): run that version or a newer one"
        ) from None


async def migrate(engine_or_url: AsyncEngine | str, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default: the newest). Idempotent: safe on every start,
    and from several processes at once (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE)."""
    if isinstance(engine_or_url, str):
        engine = create_engine(engine_or_url)
        owned = True
    else:
        engine = engine_or_url
        owned = False
    try:
        log.info("migrating %s to %s", safe_url(engine.url), revision)
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATE_LOCK})")
            await conn.run_sync(_upgrade, revision)
    finally:
        if owned:
            await engine.dispose()
