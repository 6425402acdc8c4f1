"""Database fixtures, shared by every test module through tests/conftest.py.

    sqlite_url    a SQLite file under tmp_path (its directory does not exist yet)
    postgres_url  the `test` database on 127.0.0.1:5432, emptied first; skipped when unreachable
    db_url        parametrized: each test using it runs once on SQLite, once on PostgreSQL
    store         a migrated SqlStore on db_url, closed afterwards

and `downgrade`, to take a schema down to an older migration (`conn.run_sync(downgrade, "0010")`).

PostgreSQL tests in different processes (parallel runs by several people) take turns: the
fixture holds an advisory lock from the reset until the test ends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic import command
from sqlalchemy.engine import Connection

from storage.db import alembic_config, create_engine, migrate
from storage.models import Base
from storage.repo import SqlStore

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_DATABASE = "test"
POSTGRES_URL = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"
CONNECT_TIMEOUT_S = 2.0
_TEST_LOCK = 0x5E9ED1E  # advisory lock: one test at a time on the shared database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'stepedit.sqlite3'}"


async def _reset_postgres(conn: asyncpg.Connection) -> None:
    tables = [*Base.metadata.tables, "alembic_version"]
    await conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    try:
        conn = await asyncpg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=PG_USER,
            database=PG_DATABASE,
            timeout=CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        message = f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: {reason}"
        if os.environ.get("STEPEDIT_REQUIRE_POSTGRES"):  # CI: a missing server is a failure
            pytest.fail(message)
        pytest.skip(message)
    try:
        await conn.execute("SET lock_timeout = '60s'")
        await conn.execute(f"SELECT pg_advisory_lock({_TEST_LOCK})")
        await _reset_postgres(conn)
        yield POSTGRES_URL
    finally:
        await conn.close()  # also releases the advisory lock


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    engine = create_engine(db_url)
    await migrate(engine)
    sql_store = SqlStore(engine)
    try:
        yield sql_store
    finally:
        await sql_store.aclose()


def downgrade(connection: Connection, revision: str) -> None:
    """Take the schema down to `revision`, on the caller's connection (run it with run_sync)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)
