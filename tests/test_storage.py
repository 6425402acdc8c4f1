"""storage/: migrations, SqlStore. Each test runs on SQLite and PostgreSQL (see tests/dbs.py)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bot.domain import (
    EditOptions,
    EditStatus,
    FileRef,
    MessageRef,
    ShownImage,
    Upload,
    UserRef,
    UserSettings,
)
from storage.db import alembic_config, create_engine, migrate, normalize_url, safe_url
from storage.models import Base
from storage.repo import SqlStore
from tests.dbs import downgrade
from tests.jobs import deliver, queued
from tests.store_helpers import release_quota, reserve_quota, save_image

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()  # the newest migration

DAY = date(2026, 1, 15)
ALICE = UserRef(platform="telegram", id="1001", name="Alice", language="en")


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            else:
                query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            return {row[0] for row in await conn.execute(text(query))}
    finally:
        await engine.dispose()


async def _alembic_versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in result]
    finally:
        await engine.dispose()


# urls and migrations


def test_normalize_url() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert normalize_url("postgres://u@h:5433/db") == "postgresql+asyncpg://u@h:5433/db"
    assert normalize_url("postgresql+psycopg2://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_url("sqlite:///data/x.db") == "sqlite+aiosqlite:///data/x.db"
    assert normalize_url("sqlite:////abs/x.db") == "sqlite+aiosqlite:////abs/x.db"
    assert normalize_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert "secret" not in safe_url("postgresql://u:secret@h/db")


async def test_migrate_creates_schema_and_twice_is_a_noop(db_url: str) -> None:
    await migrate(db_url)
    tables = await _tables(db_url)
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    versions = await _alembic_versions(db_url)
    assert versions == [HEAD]

    await migrate(db_url)  # again, with a string URL: nothing changes
    engine = create_engine(db_url)
    try:
        await migrate(engine)  # and with an engine we keep
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
    assert await _tables(db_url) == tables
    assert await _alembic_versions(db_url) == versions


async def test_concurrent_migrations(db_url: str) -> None:
    await asyncio.gather(*(migrate(db_url) for _ in range(3)))
    assert await _alembic_versions(db_url) == [HEAD]


async def test_sqlite_file_directory_is_created(sqlite_url: str) -> None:
    store = SqlStore(create_engine(sqlite_url))
    try:
        await migrate(store.engine)
        assert (await store.get_or_create_user(ALICE)).id > 0
    finally:
        await store.aclose()


# users and settings


async def test_user_created_once_and_updated(store: SqlStore) -> None:
    first = await store.get_or_create_user(ALICE)
    assert first.ref == ALICE
    assert first.settings == UserSettings()

    again = await store.get_or_create_user(ALICE)
    assert again == first

    renamed = await store.get_or_create_user(
        UserRef(platform="telegram", id="1001", name="Alice B.", language="zh-hans")
    )
    assert renamed.id == first.id
    assert renamed.ref.name == "Alice B."
    assert renamed.ref.language == "zh-hans"

    # a platform that leaves name and language out does not erase them
    bare = await store.get_or_create_user(UserRef(platform="telegram", id="1001"))
    assert bare.ref == renamed.ref

    # same external id on another platform is another person
    other = await store.get_or_create_user(UserRef(platform="discord", id="1001"))
    assert other.id != first.id
    assert other.ref == UserRef(platform="discord", id="1001")


async def test_concurrent_first_sight_creates_one_user(store: SqlStore) -> None:
    ref = UserRef(platform="discord", id="42", name="Bob")
    users = await asyncio.gather(*(store.get_or_create_user(ref) for _ in range(10)))
    assert len({user.id for user in users}) == 1


async def test_settings_round_trip(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    fixed = UserSettings(
        seed=2_147_483_647,
        steps=30,
        cfg_scale=7.5,
        text_mode=True,
        negative_prompt="blurry, watermark",
    )
    await store.save_settings(user.id, fixed)
    assert (await store.get_or_create_user(ALICE)).settings == fixed

    random_seed = UserSettings(seed=None, steps=1, cfg_scale=1.0, text_mode=False)
    await store.save_settings(user.id, random_seed)
    assert (await store.get_or_create_user(ALICE)).settings == random_seed

    await store.save_settings(user.id, UserSettings())
    assert (await store.get_or_create_user(ALICE)).settings == UserSettings()


async def test_save_settings_unknown_user(store: SqlStore) -> None:
    with pytest.raises(KeyError):
        await store.save_settings(999_999, UserSettings(steps=3))


# quota


async def test_quota_reserve_release(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.quota_used(user.id, DAY) == 0
    for n in range(1, 4):
        assert await reserve_quota(store, user.id, DAY, 3)
        assert await store.quota_used(user.id, DAY) == n
    assert not await reserve_quota(store, user.id, DAY, 3)
    assert await store.quota_used(user.id, DAY) == 3  # a refusal changes nothing

    await release_quota(store, user.id, DAY)
    assert await store.quota_used(user.id, DAY) == 2
    assert await reserve_quota(store, user.id, DAY, 3)
    assert not await reserve_quota(store, user.id, DAY, 3)

    # a lower limit (the operator changed it) refuses too
    assert not await reserve_quota(store, user.id, DAY, 1)
    assert await store.quota_used(user.id, DAY) == 3


async def test_quota_release_never_below_zero(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    await release_quota(store, user.id, DAY)  # no row yet
    assert await store.quota_used(user.id, DAY) == 0
    assert await reserve_quota(store, user.id, DAY, 2)
    for _ in range(3):
        await release_quota(store, user.id, DAY)
    assert await store.quota_used(user.id, DAY) == 0
    assert await reserve_quota(store, user.id, DAY, 1)
    assert await store.quota_used(user.id, DAY) == 1


async def test_quota_zero_is_unlimited(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    for _ in range(25):
        assert await reserve_quota(store, user.id, DAY, 0)
    assert await store.quota_used(user.id, DAY) == 25


async def test_quota_days_and_users_are_separate(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(UserRef(platform="telegram", id="2002"))
    tomorrow = DAY + timedelta(days=1)
    assert await reserve_quota(store, alice.id, DAY, 1)
    assert not await reserve_quota(store, alice.id, DAY, 1)
    assert await reserve_quota(store, alice.id, tomorrow, 1)
    assert await reserve_quota(store, bob.id, DAY, 1)
    assert await store.quota_used(alice.id, DAY) == 1
    assert await store.quota_used(alice.id, tomorrow) == 1
    assert await store.quota_used(bob.id, DAY) == 1
    assert await store.quota_used(bob.id, tomorrow) == 0


async def test_quota_concurrent_reservations(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    results = await asyncio.gather(*(reserve_quota(store, user.id, DAY, 5) for _ in range(20)))
    assert sum(results) == 5
    assert await store.quota_used(user.id, DAY) == 5


async def test_quota_concurrent_across_engines(db_url: str) -> None:
    """Two engines stand in for two processes sharing the database."""
    await migrate(db_url)
    stores = [SqlStore(create_engine(db_url)) for _ in range(2)]
    try:
        user = await stores[0].get_or_create_user(ALICE)
        results = await asyncio.gather(
            *(reserve_quota(stores[i % 2], user.id, DAY, 7) for i in range(20)),
            *(stores[i % 2].quota_used(user.id, DAY) for i in range(4)),
        )
        assert sum(1 for ok in results[:20] if ok) == 7
        assert await stores[1].quota_used(user.id, DAY) == 7
    finally:
        for store in stores:
            await store.aclose()


# images


async def test_image_dedup_and_round_trip(store: SqlStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    first = await save_image(store, data, "image/png", 640, 480)
    assert await save_image(store, data, "image/png", 640, 480) == first
    other = await save_image(store, data + b"\x00", "image/jpeg", 64, 64)
    assert other != first

    image = await store.load_image(first)
    assert image.id == first
    assert image.data == data
    assert (image.mime, image.width, image.height) == ("image/png", 640, 480)
    assert (await store.load_image(other)).mime == "image/jpeg"


async def test_concurrent_image_saves_dedup(store: SqlStore) -> None:
    data = hashlib.sha256(b"seed").digest() * 100
    ids = await asyncio.gather(*(save_image(store, data, "image/png", 64, 64) for _ in range(10)))
    assert len(set(ids)) == 1


async def test_load_missing_image(store: SqlStore) -> None:
    with pytest.raises(KeyError):
        await store.load_image(123_456)


# messages and current images


async def test_link_message_upserts(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    upload = await save_image(store, b"upload", "image/jpeg", 800, 600)
    result = await save_image(store, b"result", "image/png", 800, 600)
    edit_id = await queued(store, user.id, upload)
    message = MessageRef(platform="telegram", chat_id="55", message_id="9001")
    assert await store.shown_in(message) is None

    await store.link_message(message, ShownImage(image_id=upload, edit_id=None))
    assert await store.shown_in(message) == ShownImage(image_id=upload, edit_id=None)

    await store.link_message(message, ShownImage(image_id=result, edit_id=edit_id))
    assert await store.shown_in(message) == ShownImage(image_id=result, edit_id=edit_id)

    # the same message id in another chat or platform is another message
    assert await store.shown_in(MessageRef("telegram", "56", "9001")) is None
    assert await store.shown_in(MessageRef("discord", "55", "9001")) is None


async def test_set_current_upserts(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(UserRef(platform="telegram", id="2002"))
    first = await save_image(store, b"first", "image/png", 64, 64)
    second = await save_image(store, b"second", "image/png", 64, 64)
    edit_id = await queued(store, alice.id, first)
    assert await store.current(alice.id, "telegram", "g1") is None

    await store.set_current(alice.id, "telegram", "g1", ShownImage(first, None))
    assert await store.current(alice.id, "telegram", "g1") == ShownImage(first, None)

    await store.set_current(alice.id, "telegram", "g1", ShownImage(second, edit_id))
    assert await store.current(alice.id, "telegram", "g1") == ShownImage(second, edit_id)

    # per user and per chat
    assert await store.current(bob.id, "telegram", "g1") is None
    assert await store.current(alice.id, "telegram", "g2") is None
    await store.set_current(bob.id, "telegram", "g1", ShownImage(first, None))
    assert await store.current(bob.id, "telegram", "g1") == ShownImage(first, None)
    assert await store.current(alice.id, "telegram", "g1") == ShownImage(second, edit_id)


async def test_an_album_asked_about_is_current_as_a_whole_until_something_else_is(
    store: SqlStore,
) -> None:
    alice = await store.get_or_create_user(ALICE)
    photos = [MessageRef("telegram", "55", str(n)) for n in (7, 8, 9)]
    uploads = [Upload(FileRef("telegram", f"FILE-{n}"), photo) for n, photo in enumerate(photos)]
    kept = await store.keep_album(alice.id, "telegram", "55", uploads)
    assert len(kept.more) == 2 and kept.edit_id is None
    assert await store.current(alice.id, "telegram", "55") == kept
    question = MessageRef("telegram", "55", "10")
    await store.link_message(question, kept)
    assert await store.shown_in(question) == kept
    # each photo's message shows that photo alone, in the order sent
    shown = [await store.shown_in(photo) for photo in photos]
    assert shown == [ShownImage(image, None) for image in (kept.image_id, *kept.more)]

    await store.set_current(alice.id, "telegram", "55", ShownImage(kept.more[0], None))
    assert await store.current(alice.id, "telegram", "55") == ShownImage(kept.more[0], None)
    # A replica of 0011 (a rolling upgrade) changes the image and leaves the album's column:
    await store.link_message(question, kept)
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE shown_messages SET image_id = :image WHERE message_id = '10'"),
            {"image": kept.more[1]},
        )
    assert await store.shown_in(question) == ShownImage(kept.more[1], None)  # not an album


# restart


async def test_data_survives_restart(db_url: str) -> None:
    store = SqlStore(create_engine(db_url))
    await migrate(store.engine)
    user = await store.get_or_create_user(ALICE)
    settings = UserSettings(seed=77, steps=12, cfg_scale=2.5, text_mode=None, negative_prompt="x")
    await store.save_settings(user.id, settings)
    image_id = await save_image(store, b"persist me", "image/png", 100, 200)
    edit_id = await queued(store, user.id, image_id, chat="7", options=EditOptions(seed=5))
    message = MessageRef("telegram", "7", "700")
    await deliver(store, edit_id, image_id, seed=5, message=message)
    assert await reserve_quota(store, user.id, DAY, 10)
    await store.aclose()

    store = SqlStore(create_engine(db_url))
    try:
        await migrate(store.engine)  # as on every start
        again = await store.get_or_create_user(ALICE)
        assert again.id == user.id
        assert again.settings == settings
        assert (await store.load_image(image_id)).data == b"persist me"
        edit = await store.get_edit(edit_id)
        assert edit is not None
        assert (edit.status, edit.seed, edit.options.seed) == (EditStatus.SUCCEEDED, 5, 5)
        assert await store.shown_in(message) == ShownImage(image_id, edit_id)
        assert await store.current(user.id, "telegram", "7") == ShownImage(image_id, edit_id)
        assert await store.quota_used(user.id, DAY) == 2  # the edit's unit and the one above
    finally:
        await store.aclose()


async def test_the_jobs_migration_ends_edits_a_crash_left_running_and_refunds_them(
    db_url: str,
) -> None:
    await migrate(db_url, "0001")
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO users (id, platform, external_id, negative_prompt, created_at) "
                "VALUES (1, 'telegram', '5', '', CURRENT_TIMESTAMP)"
            ))  # fmt: skip
            await conn.execute(text(
                "INSERT INTO images (id, sha256, mime, width, height, size_bytes, data, created_at)"
                " VALUES (1, 'x', 'image/png', 1, 1, 1, :data, CURRENT_TIMESTAMP)"
            ), {"data": b"x"})  # fmt: skip
            await conn.execute(text(
                "INSERT INTO edits (user_id, platform, chat_id, source_image_id, prompt, steps, "
                "cfg_scale, text_mode, negative_prompt, status, created_at) VALUES "
                "(1, 'telegram', '5', 1, 'snow', 8, 1.0, false, '', 'running', :created)"
            ), {"created": datetime.now(UTC)})  # fmt: skip
            await conn.execute(
                text("INSERT INTO quota_usage (user_id, day, used) VALUES (1, :day, 1)"),
                {"day": datetime.now(UTC).date()},
            )
        await migrate(engine)
        store = SqlStore(engine)
        edit = await store.get_edit(1)
        assert edit is not None and (edit.status, edit.error) == ("failed", "interrupted")
        assert await store.quota_used(1, datetime.now(UTC).date()) == 0
    finally:
        await engine.dispose()


async def test_the_jobs_migration_goes_down_and_up_again(db_url: str) -> None:
    store = SqlStore(create_engine(db_url))
    try:
        await migrate(store.engine)
        user = await store.get_or_create_user(ALICE)
        image = await save_image(store, b"kept", "image/png", 8, 8)
        await store.set_current(user.id, "telegram", "1", ShownImage(image, None))
        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade, "0001")
        assert await _alembic_versions(db_url) == ["0001"]
        await migrate(store.engine)
        assert await store.current(user.id, "telegram", "1") == ShownImage(image, None)
        assert await _alembic_versions(db_url) == [HEAD]
    finally:
        await store.aclose()
