"""Edits bought with Telegram Stars, in storage: one ledger row per pack, credited once per
charge id, used after the day's free quota (oldest pack first) in the admitting transaction,
given back to the same pack by an edit that ends without a picture, refunds that take back what
is left. Each test runs on SQLite and PostgreSQL (see tests/dbs.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.domain import EditOptions, EditStatus, EditTimings, NewEdit, NewImage, UserRef
from storage.db import create_engine, migrate
from storage.models import StarPack
from storage.repo import SqlStore
from tests.dbs import downgrade
from tests.jobs import DAY
from tests.store_helpers import save_image

ALICE = UserRef("telegram", "1001", "Alice", "en")
DAY_END = datetime.now(UTC) + timedelta(minutes=5)  # a lease that outlasts the test


async def _edit(store: SqlStore, user_id: int, key: str) -> NewEdit:
    source = await save_image(store, b"original", "image/png", 512, 512)
    return NewEdit(user_id, "telegram", "1001", None, source, "x", EditOptions(), key=key)


async def _used(store: SqlStore) -> dict[str, tuple[int, int]]:
    """Each pack's (used, refunded), by charge id."""
    async with store._tx(read_only=True) as session:
        rows = await session.execute(select(StarPack.charge_id, StarPack.used, StarPack.refunded))
        return {charge: (used, refunded) for charge, used, refunded in rows.tuples()}


async def test_bought_edits_follow_the_free_quota_oldest_pack_first_and_go_back_to_their_pack(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "first", stars=50, edits=2, day=DAY)
    assert await store.credit_pack(user.id, "second", stars=50, edits=2, day=DAY)
    admitted = []
    for n in range(4):  # one free, then the first pack's two, then one of the second's
        new = await _edit(store, user.id, f"k{n}")
        admission = await store.admit(new, day=DAY, quota=1, max_waiting=0)
        assert admission.refused is None
        admitted.append(admission.edit_id)
    assert await store.quota_used(user.id, DAY) == 1
    assert await _used(store) == {"first": (2, 0), "second": (1, 0)}
    assert await store.bought_left(user.id) == 1

    assert await store.finish_edit(admitted[1], EditStatus.FAILED, error="boom")
    cancelled = await store.cancel_edits(user.id, "telegram", "1001", edit_id=admitted[3])
    assert [edit.id for edit in cancelled] == [admitted[3]]
    assert await _used(store) == {"first": (1, 0), "second": (0, 0)}  # each to its own pack
    assert await store.quota_used(user.id, DAY) == 1  # the free quota is not touched
    new = await _edit(store, user.id, "again")
    assert (await store.admit(new, day=DAY, quota=1, max_waiting=0)).refused is None
    assert await _used(store) == {"first": (2, 0), "second": (0, 0)}  # the oldest first

    # Without a daily limit (or for an admin) no pack is touched.
    new = await _edit(store, user.id, "free")
    assert (await store.admit(new, day=DAY, quota=0, max_waiting=0)).refused is None
    new = await _edit(store, user.id, "admin")
    assert (await store.admit(new, day=DAY, quota=1, max_waiting=0, unlimited=True)).refused is None
    assert await _used(store) == {"first": (2, 0), "second": (0, 0)}


async def test_a_payment_is_credited_once_and_kept_by_forget(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "charge", stars=50, edits=3, day=DAY)
    assert not await store.credit_pack(user.id, "charge", stars=50, edits=3, day=DAY)
    assert await store.bought_left(user.id) == 3
    assert await store.stars_earned(DAY) == 50
    assert await store.forget_user(user.id) == 0
    assert await store.payments_of(user.id) == 1
    assert await store.bought_left(user.id) == 3


async def test_the_budget_refusing_a_bought_edit_gives_it_back(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "charge", stars=50, edits=3, day=DAY)
    new = await _edit(store, user.id, "k")
    admission = await store.admit(new, day=DAY, quota=1, max_waiting=0, budget=1)
    assert admission.refused is None  # the free one
    new = await _edit(store, user.id, "k2")
    admission = await store.admit(new, day=DAY, quota=1, max_waiting=0, budget=1)
    assert admission.refused == "budget"
    assert await store.bought_left(user.id) == 3


async def test_refunds_take_back_what_is_left_and_a_late_give_back_stays_refunded(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "charge", stars=50, edits=3, day=DAY)
    new = await _edit(store, user.id, "k")
    admission = await store.admit(new, day=DAY, quota=1, max_waiting=0)
    new = await _edit(store, user.id, "k2")
    bought = await store.admit(new, day=DAY, quota=1, max_waiting=0)
    assert admission.refused is None and bought.refused is None
    pack, taken = await store.take_back_pack("charge", unused_only=True)  # one is reserved
    assert pack is not None and not taken and pack.used == 1
    pack, taken = await store.take_back_pack("charge", unused_only=False)  # Telegram's own
    assert pack is not None and taken and (pack.used, pack.refunded, pack.left) == (1, 2, 0)
    assert pack.buyer == UserRef("telegram", "1001")
    assert await store.finish_edit(bought.edit_id, EditStatus.FAILED, error="boom")
    assert await _used(store) == {"charge": (0, 3)}  # given back to a refunded pack: refunded
    assert await store.bought_left(user.id) == 0
    assert await store.stars_earned(DAY) == 0
    pack, taken = await store.take_back_pack("charge", unused_only=False)
    assert pack is not None and not taken
    assert await store.take_back_pack("unknown", unused_only=False) == (None, False)


async def test_an_unused_refund_the_platform_refused_is_restored(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "charge", stars=50, edits=3, day=DAY)
    pack, taken = await store.take_back_pack("charge", unused_only=True)
    assert pack is not None and taken and pack.left == 0
    await store.restore_pack("charge")
    assert await store.bought_left(user.id) == 3


async def test_two_edits_racing_for_the_last_bought_edit_let_exactly_one_through(
    db_url: str,
) -> None:
    stores = [SqlStore(create_engine(db_url)) for _ in range(2)]
    try:
        await migrate(stores[0].engine)
        user = await stores[0].get_or_create_user(ALICE)
        for round_ in range(3):
            await stores[0].credit_pack(user.id, f"c{round_}", stars=5, edits=1, day=DAY)
            news = [await _edit(stores[0], user.id, f"r{round_}-{n}") for n in range(2)]
            results = await asyncio.gather(*(
                store.admit(new, day=DAY, quota=1, max_waiting=0)
                for store, new in zip(stores, news, strict=True)
            ))  # fmt: skip
            if round_ == 0:  # the free edit of the day took one of the first two
                assert sorted(str(r.refused) for r in results) == ["None", "None"]
                continue
            assert sorted(str(r.refused) for r in results) == ["None", "quota"]
            assert await stores[0].bought_left(user.id) == 0
        assert await _used(stores[0]) == {"c0": (1, 0), "c1": (1, 0), "c2": (1, 0)}
    finally:
        for store in stores:
            await store.aclose()


async def test_a_request_of_several_pictures_uses_the_free_units_left_then_packs_oldest_first(
    store: SqlStore,
) -> None:
    """An album's units: the day's free ones left first, then bought ones from as many packs
    as it needs, oldest first. The pictures not delivered go back to the packs first (the
    newest first), then to the free quota: what is kept is what the delivered pictures alone
    would have taken."""
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "older", stars=50, edits=2, day=DAY)
    assert await store.credit_pack(user.id, "newer", stars=50, edits=2, day=DAY)
    first = await _edit(store, user.id, "album")
    more = tuple([await save_image(store, bytes([n]) * 8, "image/png", 512, 512) for n in (1, 2)])
    album = replace(first, more_sources=more)
    admission = await store.admit(album, day=DAY, quota=1, max_waiting=0)
    assert admission.refused is None
    assert await store.quota_used(user.id, DAY) == 1  # the one free unit left, then 2 bought
    assert await _used(store) == {"older": (2, 0), "newer": (0, 0)}
    # Two of the three pictures delivered: the third unit goes back to the pack.
    claimed = await store.claim("me", DAY_END, ["telegram"])
    assert claimed is not None and claimed.id == admission.edit_id
    result = NewImage(b"result", "image/png", 512, 512)
    assert await store.keep_result(claimed.id, result, None, (), EditTimings(), owner="me")
    assert await store.finish_edit(claimed.id, EditStatus.SUCCEEDED, delivered=2, owner="me")
    assert await _used(store) == {"older": (1, 0), "newer": (0, 0)}
    assert await store.quota_used(user.id, DAY) == 1
    # Three more, none free: the older pack's last and two of the newer's; failed, all back.
    second = await store.admit(replace(album, key="second"), day=DAY, quota=1, max_waiting=0)
    assert second.refused is None
    assert await _used(store) == {"older": (2, 0), "newer": (2, 0)}
    assert await store.finish_edit(second.edit_id, EditStatus.FAILED, error="boom")
    assert await _used(store) == {"older": (1, 0), "newer": (0, 0)}
    # Four: more than the packs hold together (1 and 2 left) and no free one: refused.
    four = replace(album, key="four", more_sources=(*more, more[0]))
    assert (await store.admit(four, day=DAY, quota=1, max_waiting=0)).refused == "quota"
    assert await _used(store) == {"older": (1, 0), "newer": (0, 0)}
    assert await store.quota_used(user.id, DAY) == 1


async def test_a_partly_delivered_album_keeps_its_free_units_and_gives_bought_ones_back(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    assert await store.credit_pack(user.id, "pack", stars=50, edits=5, day=DAY)
    first = await _edit(store, user.id, "album")
    more = tuple([await save_image(store, bytes([n]) * 8, "image/png", 512, 512) for n in (1, 2)])
    admission = await store.admit(
        replace(first, more_sources=more), day=DAY, quota=2, max_waiting=0
    )
    assert admission.refused is None  # two free, one bought
    assert await store.quota_used(user.id, DAY) == 2 and await store.bought_left(user.id) == 4
    claimed = await store.claim("me", DAY_END, ["telegram"])
    assert claimed is not None
    result = NewImage(b"result", "image/png", 512, 512)
    assert await store.keep_result(claimed.id, result, None, (), EditTimings(), owner="me")
    assert await store.finish_edit(claimed.id, EditStatus.SUCCEEDED, delivered=1, owner="me")
    assert await store.bought_left(user.id) == 5  # the bought one back first, then a free one
    assert await store.quota_used(user.id, DAY) == 1


async def test_the_packs_an_open_edit_took_from_survive_the_migration_down_and_up(
    db_url: str,
) -> None:
    """0011 moved edits.pack_id (one pack per edit) into edit_packs: an edit admitted before
    either step still gives its units back to its pack."""
    store = SqlStore(create_engine(db_url))
    try:
        await migrate(store.engine)
        user = await store.get_or_create_user(ALICE)
        assert await store.credit_pack(user.id, "pack", stars=50, edits=2, day=DAY)
        admitted = [
            await store.admit(await _edit(store, user.id, key), day=DAY, quota=1, max_waiting=0)
            for key in ("free", "bought")
        ]
        assert await store.bought_left(user.id) == 1
        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade, "0010")
        await migrate(store.engine)
        assert await store.finish_edit(admitted[1].edit_id, EditStatus.FAILED, error="boom")
        assert await store.bought_left(user.id) == 2
        assert await store.quota_used(user.id, DAY) == 1
    finally:
        await store.aclose()
