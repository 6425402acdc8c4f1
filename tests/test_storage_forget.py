"""What retention and /forget leave in storage: a result stored again is a new, available picture
for the full retention period (also when the same bytes were expired or forgotten before), and
after /forget no table holds the user's words, files or pictures, while a message that showed
one of their pictures leads only to an expired image. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select, text

from bot.domain import (
    EditOptions,
    FileRef,
    MessageRef,
    NewEdit,
    NewImage,
    ShownImage,
    UserRef,
    UserSettings,
)
from bot.memes import TextLayer
from storage.db import create_engine, migrate
from storage.models import Base
from storage.repo import SqlStore
from tests.dbs import downgrade
from tests.jobs import DAY, OWNER, deliver, later, queued
from tests.store_helpers import save_image

ALICE = UserRef("telegram", "1001", "Zorblatt Quimby", "en")
BOB = UserRef("telegram", "2002", "Bob", "en")
CHAT = "1001"
RESULT = b"\x89PNG result bytes " * 50


def _drawn(user_id: int, source: int, words: str) -> NewEdit:
    return NewEdit(user_id, "telegram", CHAT, None, source, words, EditOptions())


async def _photo(store: SqlStore, user_id: int, file_id: str, message: str) -> int:
    """A photo the user sent without words: kept (not fetched), current, its message linked."""
    upload = FileRef("telegram", file_id, 1234, f"{file_id}.jpg")
    origin = MessageRef("telegram", CHAT, message)
    return await store.keep_upload(user_id, "telegram", CHAT, upload, origin)


async def _everything(store: SqlStore) -> list[tuple[str, str, str | bytes]]:
    """(table, column, value) of every text and binary value in every table."""
    found: list[tuple[str, str, str | bytes]] = []
    async with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if isinstance(value, str | bytes):
                        found.append((table.name, column.name, value))
    return found


def _holding(values: list[tuple[str, str, str | bytes]], needle: str | bytes) -> list[str]:
    """Where `needle` is (a text also in binary columns, as UTF-8)."""
    places = []
    for table, column, value in values:
        if isinstance(value, str) and isinstance(needle, str):
            hit = needle in value
        elif isinstance(value, bytes):
            hit = (needle.encode() if isinstance(needle, str) else needle) in value
        else:
            hit = False
        if hit:
            places.append(f"{table}.{column}")
    return places


# --- a result stored again is there for the full retention period ---------------------------


async def test_bytes_stored_again_after_retention_deleted_them_are_there(store: SqlStore) -> None:
    await save_image(store, RESULT, "image/png", 64, 64)  # e.g. a result with seed 7
    assert await store.expire_images(later(1)) == 1  # the retention deletes it
    again = await save_image(store, RESULT, "image/png", 64, 64)  # the same seed, a month later
    assert not await store.expired(again)
    assert (await store.load_image(again)).data == RESULT


async def test_the_retention_of_bytes_stored_again_starts_again(store: SqlStore) -> None:
    await save_image(store, RESULT, "image/png", 64, 64)
    await asyncio.sleep(0.01)
    cutoff = datetime.now(UTC)  # "30 days ago" by the time the same result comes again
    await asyncio.sleep(0.01)
    again = await save_image(store, RESULT, "image/png", 64, 64)
    assert await store.expire_images(cutoff) == 0
    assert (await store.load_image(again)).data == RESULT


async def test_images_expired_before_the_upgrade_give_their_hash_up(db_url: str) -> None:
    store = SqlStore(create_engine(db_url))
    try:
        await migrate(store.engine)
        await save_image(store, RESULT, "image/png", 64, 64)
        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade, "0004")
            await conn.execute(  # expired as the retention did before 0005
                text("UPDATE images SET mime = 'expired', data = :empty, size_bytes = 0"),
                {"empty": b""},
            )
        await migrate(store.engine)
        again = await save_image(store, RESULT, "image/png", 64, 64)
        assert (await store.load_image(again)).data == RESULT
    finally:
        await store.aclose()


async def test_the_same_drawing_after_forget_is_a_new_picture(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    photo = await save_image(store, b"photo", "image/jpeg", 64, 64)
    layer = TextLayer.captioned("top", "bottom").to_json()
    drawn = NewImage(RESULT, "image/jpeg", 64, 64)
    await store.record_drawn(_drawn(alice.id, photo, "top | bottom"), drawn, layer)
    assert await store.forget_user(alice.id) == 1
    photo = await save_image(store, b"photo again", "image/jpeg", 64, 64)
    _, result = await store.record_drawn(_drawn(alice.id, photo, "top | bottom"), drawn, layer)
    assert (await store.load_image(result)).data == RESULT


# --- /forget leaves nothing of the user's words or pictures ---------------------------------


async def test_forget_leaves_none_of_the_users_words_files_or_pictures_in_any_table(
    store: SqlStore,
) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    await store.save_settings(alice.id, UserSettings(seed=7, negative_prompt="NEGSETTING"))
    # a photo sent without words, then replaced by another, which is edited and captioned
    first = await _photo(store, alice.id, "FILE-ALICE-ONE", "m1")
    question = MessageRef("telegram", CHAT, "m2")  # the bot's "what should I change?"
    await store.link_message(question, ShownImage(first, None))
    photo = await _photo(store, alice.id, "FILE-ALICE-TWO", "m3")
    options = EditOptions(seed=5, negative_prompt="NEGEDIT")
    edit_id = await queued(store, alice.id, photo, chat=CHAT, prompt="PROMPTWORD snow",
                           options=options)  # fmt: skip
    result = await save_image(store, RESULT, "image/png", 64, 64)
    await store.fill_image(photo, b"PHOTO-TWO-BYTES", "image/jpeg", 64, 64)
    await deliver(store, edit_id, result, message=MessageRef("telegram", CHAT, "m4"))
    layer = TextLayer.captioned("TOPWORD", "BOTTOMWORD").to_json()
    drawn_edit, drawn = await store.record_drawn(
        NewEdit(alice.id, "telegram", CHAT, edit_id, result, "TOPWORD | BOTTOMWORD",
                EditOptions()),
        NewImage(b"DRAWN-BYTES", "image/jpeg", 64, 64), layer,
    )  # fmt: skip
    await store.link_message(MessageRef("telegram", CHAT, "m5"), ShownImage(drawn, drawn_edit))
    failed = await queued(store, alice.id, drawn, chat=CHAT, prompt="PROMPTWORD again")
    assert await store.claim(OWNER, later(), ["telegram"])
    assert await store.finish_edit(failed, "failed", error="vendor: PROMPTWORD refused",
                                   answer="PROMPTWORD could not be done")  # fmt: skip
    # Bob's own photo and edit, which stay
    bobs = await store.keep_upload(bob.id, "telegram", "2002", FileRef("telegram", "FILE-BOB"),
                                   MessageRef("telegram", "2002", "b1"))  # fmt: skip
    await queued(store, bob.id, bobs, chat="2002", prompt="bob's words")

    needles: list[str | bytes] = [
        "Zorblatt", "NEGSETTING", "NEGEDIT", "PROMPTWORD", "TOPWORD", "BOTTOMWORD",
        "FILE-ALICE-ONE", "FILE-ALICE-TWO", RESULT, b"PHOTO-TWO-BYTES", b"DRAWN-BYTES",
    ]  # fmt: skip
    before = await _everything(store)
    assert all(_holding(before, needle) for needle in needles)  # the search finds them
    assert await store.forget_user(alice.id) == 3

    after = await _everything(store)
    assert {str(needle): _holding(after, needle) for needle in needles} == {
        str(needle): [] for needle in needles
    }
    # what stays: the empty records and the quota, and Bob's things
    assert await store.quota_used(alice.id, DAY) == 1  # the failed edit gave its unit back
    for kept in (edit_id, drawn_edit, failed):
        record = await store.get_edit(kept)
        assert record is not None and record.prompt == "" and record.layer is None
    assert _holding(after, "FILE-BOB") and _holding(after, "bob's words")
    assert (await store.load_image(bobs)).file == FileRef("telegram", "FILE-BOB")
    # a reply to any message that showed one of her pictures finds only an expired one
    for message in ("m1", "m2", "m3", "m4", "m5"):
        shown = await store.shown_in(MessageRef("telegram", CHAT, message))
        assert shown is not None and await store.expired(shown.image_id), message
    assert await store.current(alice.id, "telegram", CHAT) is None


async def test_forgotten_edits_reach_no_picture_another_user_still_uses(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    photo = await save_image(store, b"alice's photo", "image/jpeg", 64, 64)
    mine = await queued(store, alice.id, photo, chat="g", prompt="snow")
    result = await save_image(store, RESULT, "image/png", 64, 64)
    shown = MessageRef("telegram", "g", "r1")
    await deliver(store, mine, result, message=shown)
    theirs = await queued(store, bob.id, result, chat="g", prompt="a hat", parent=mine)
    assert await store.forget_user(alice.id) == 1
    record = await store.get_edit(mine)
    assert record is not None and record.result_image_id is not None
    # Alice's Reroll, Undo and Full quality reach no picture...
    assert await store.expired(record.source_image_id)
    assert await store.expired(record.result_image_id)
    # ...while Bob's edit keeps its source
    bobs = await store.get_edit(theirs)
    assert bobs is not None and (await store.load_image(bobs.source_image_id)).data == RESULT
    assert await store.shown_in(shown) is None  # the message no longer stands for it


async def test_forget_keeps_a_photo_another_user_sent(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    bobs = await store.keep_upload(bob.id, "telegram", "g", FileRef("telegram", "FILE-BOB"),
                                   MessageRef("telegram", "g", "b1"))  # fmt: skip
    await store.keep_upload(bob.id, "telegram", "g", FileRef("telegram", "FILE-BOB-2"), None)
    mine = await queued(store, alice.id, bobs, chat="g", prompt="a hat")  # a reply to Bob's
    await deliver(store, mine, await save_image(store, RESULT, "image/png", 64, 64))
    assert await store.forget_user(alice.id) == 1
    assert (await store.load_image(bobs)).file == FileRef("telegram", "FILE-BOB")
    assert await store.shown_in(MessageRef("telegram", "g", "b1")) == ShownImage(bobs, None)
