"""What retention and /forget leave in storage: a result stored again is a new, available picture
for the full retention period (also when the same bytes were expired or forgotten before), and
after /forget no table holds the user's words, files or pictures, while a message that showed
one of their pictures leads only to an expired image. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bot.domain import (
    EditOptions,
    NewEdit,
    NewImage,
    UserRef,
)
from bot.memes import TextLayer
from storage.db import alembic_config, create_engine, migrate
from storage.repo import SqlStore
from tests.jobs import later

ALICE = UserRef("telegram", "1001", "Zorblatt Quimby", "en")
BOB = UserRef("telegram", "2002", "Bob", "en")
CHAT = "1001"
RESULT = b"\x89PNG result bytes " * 50


def _drawn(user_id: int, source: int, words: str) -> NewEdit:
    return NewEdit(user_id, "telegram", CHAT, None, source, words, EditOptions())


# --- a result stored again is there for the full retention period ---------------------------


async def test_bytes_stored_again_after_retention_deleted_them_are_there(store: SqlStore) -> None:
    await store.save_image(RESULT, "image/png", 64, 64)  # e.g. a result with seed 7
    assert await store.expire_images(later(1)) == 1  # the retention deletes it
    again = await store.save_image(RESULT, "image/png", 64, 64)  # the same seed, a month later
    assert not await store.expired(again)
    assert (await store.load_image(again)).data == RESULT


async def test_the_retention_of_bytes_stored_again_starts_again(store: SqlStore) -> None:
    await store.save_image(RESULT, "image/png", 64, 64)
    await asyncio.sleep(0.01)
    cutoff = datetime.now(UTC)  # "30 days ago" by the time the same result comes again
    await asyncio.sleep(0.01)
    again = await store.save_image(RESULT, "image/png", 64, 64)
    assert await store.expire_images(cutoff) == 0
    assert (await store.load_image(again)).data == RESULT


async def test_images_expired_before_the_upgrade_give_their_hash_up(db_url: str) -> None:
    store = SqlStore(create_engine(db_url))
    try:
        await migrate(store.engine)
        await store.save_image(RESULT, "image/png", 64, 64)
        async with store.engine.begin() as conn:
            await conn.run_sync(_downgrade, "0004")
            await conn.execute(  # expired as the retention did before 0005
                text("UPDATE images SET mime = 'expired', data = :empty, size_bytes = 0"),
                {"empty": b""},
            )
        await migrate(store.engine)
        again = await store.save_image(RESULT, "image/png", 64, 64)
        assert (await store.load_image(again)).data == RESULT
    finally:
        await store.aclose()


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_the_same_drawing_after_forget_is_a_new_picture(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    photo = await store.save_image(b"photo", "image/jpeg", 64, 64)
    layer = TextLayer.captioned("top", "bottom").to_json()
    drawn = NewImage(RESULT, "image/jpeg", 64, 64)
    await store.record_drawn(_drawn(alice.id, photo, "top | bottom"), drawn, layer)
    assert await store.forget_user(alice.id) == 1
    photo = await store.save_image(b"photo again", "image/jpeg", 64, 64)
    _, result = await store.record_drawn(_drawn(alice.id, photo, "top | bottom"), drawn, layer)
    assert (await store.load_image(result)).data == RESULT


# --- /forget leaves nothing of the user's words or pictures ---------------------------------
