"""Edits as durable jobs in storage: admission with its unit in one transaction, idempotency keys,
fair claims under leases, cancel and finish that give units back exactly once. Each test runs
on SQLite and PostgreSQL (see tests/dbs.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.domain import (
    EditOptions,
    EditStatus,
    EditTimings,
    FileRef,
    MessageRef,
    NewEdit,
    NewImage,
    ShownImage,
    Spend,
    UserRef,
)
from storage.db import create_engine
from storage.events import mark_handled_in
from storage.models import Edit
from storage.repo import FAIR_WINDOW, SqlStore
from tests.jobs import DAY, OWNER, deliver, later, queued
from tests.store_helpers import handled, record_result, save_image

ALICE = UserRef("telegram", "1001", "Alice", "en")
BOB = UserRef("telegram", "2002", "Bob", "en")


async def _source(store: SqlStore) -> int:
    return await save_image(store, b"original", "image/png", 512, 512)


async def test_a_refine_chain_is_kept_with_its_results_and_messages(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    before = datetime.now(UTC) - timedelta(seconds=5)
    source = image = await _source(store)
    parent: int | None = None
    ids = []
    for n in range(3):
        options = EditOptions(steps=8 + n, cfg_scale=1.5 + n, seed=1000 + n, text_mode=n == 2)
        edit_id = await queued(store, user.id, image, options=options, parent=parent,
                               prompt=f"step {n}")  # fmt: skip
        waiting = await store.get_edit(edit_id)
        assert waiting is not None
        assert (waiting.status, waiting.result_image_id, waiting.options) == (
            EditStatus.QUEUED, None, options,
        )  # fmt: skip
        result = await save_image(store, f"result {n}".encode(), "image/png", 512, 512)
        timings = EditTimings(queued_ms=n, normalize_ms=10, api_ms=2000, total_ms=2100 + n)
        message = MessageRef("telegram", "55", f"m{n}")
        await deliver(store, edit_id, result, seed=2_000_000_000 + n, message=message,
                      timings=timings)  # fmt: skip
        # the result is the user's current image, and its message shows it
        shown = await store.current(user.id, "telegram", "55")
        assert shown is not None and (shown.image_id, shown.edit_id) == (result, edit_id)
        assert await store.shown_in(message) == shown
        ids.append(edit_id)
        parent, image = edit_id, result
    first, second, third = [await store.get_edit(edit_id) for edit_id in ids]
    assert first is not None and second is not None and third is not None
    assert (first.parent_edit_id, second.parent_edit_id, third.parent_edit_id) == (
        None, first.id, second.id,
    )  # fmt: skip
    assert first.source_image_id == source
    assert third.source_image_id == second.result_image_id
    assert third.status == EditStatus.SUCCEEDED and third.error is None
    assert third.seed == 2_000_000_002 and third.message_id == "m2"
    assert third.timings == EditTimings(queued_ms=2, normalize_ms=10, api_ms=2000, total_ms=2102)
    assert third.attempts == 1 and third.quota_day == DAY
    assert before <= first.created_at <= third.created_at


async def test_admission_reserves_the_unit_and_a_known_key_is_the_same_job(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    new = NewEdit(user.id, "telegram", "55", None, await _source(store), "x", EditOptions(),
                  key="telegram:55:7")  # fmt: skip
    first = await store.admit(new, day=DAY, quota=2, max_waiting=5)
    again = await store.admit(new, day=DAY, quota=2, max_waiting=5)  # the update came twice
    assert not first.duplicate and again.duplicate and again.edit_id == first.edit_id
    assert await store.quota_used(user.id, DAY) == 1
    other = await store.admit(
        NewEdit(**{**new.__dict__, "key": "telegram:55:8"}), day=DAY, quota=2, max_waiting=5
    )
    assert other.refused is None
    last = await store.admit(
        NewEdit(**{**new.__dict__, "key": "telegram:55:9"}), day=DAY, quota=2, max_waiting=5
    )
    assert last.refused == "quota"
    assert await store.quota_used(user.id, DAY) == 2


async def test_the_same_key_from_two_processes_at_once_makes_one_job(db_url: str) -> None:
    stores = [SqlStore(create_engine(db_url)) for _ in range(2)]
    try:
        from storage.db import migrate

        await migrate(stores[0].engine)
        user = await stores[0].get_or_create_user(ALICE)
        source = await _source(stores[0])
        new = NewEdit(user.id, "telegram", "55", None, source, "x", EditOptions(), key="k1")
        results = await asyncio.gather(
            *(s.admit(new, day=DAY, quota=10, max_waiting=5) for s in stores for _ in range(3))
        )
        assert len({r.edit_id for r in results}) == 1
        assert sum(not r.duplicate for r in results) == 1
        assert await stores[0].quota_used(user.id, DAY) == 1
    finally:
        for s in stores:
            await s.aclose()


async def test_too_many_waiting_is_refused_without_a_charge(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await _source(store)
    new = NewEdit(user.id, "telegram", "55", None, source, "x", EditOptions())
    for _ in range(2):
        assert (await store.admit(new, day=DAY, quota=0, max_waiting=2)).refused is None
    assert (await store.admit(new, day=DAY, quota=10, max_waiting=2)).refused == "busy"
    assert await store.quota_used(user.id, DAY) == 2


async def test_claims_are_fair_and_one_per_user_at_a_time(store: SqlStore) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    source = await _source(store)
    a1, a2, a3 = [await queued(store, alice.id, source) for _ in range(3)]
    b1 = await queued(store, bob.id, source)
    first = await store.claim(OWNER, later(), ["telegram"])
    second = await store.claim(OWNER, later(), ["telegram"])
    assert (first and first.id, second and second.id) == (a1, b1)
    assert await store.claim(OWNER, later(), ["telegram"]) is None  # Alice has one at the API
    assert await store.claim(OWNER, later(), ["discord"]) is None
    assert await store.queue_places([a2, a3, a1]) == {a2: 1, a3: 2}
    assert await store.finish_edit(a1, EditStatus.FAILED, error="x")
    nxt = await store.claim(OWNER, later(), ["telegram"])
    assert nxt is not None and nxt.id == a2


async def test_a_late_users_first_edit_starts_before_anyones_second(db_url: str) -> None:
    """A burst, user by user: each user's second edit waits while anyone's first does, also
    once the first has ended, and also when the late user's edit comes through another
    process (the order is the claim's, in the database)."""
    from storage.db import migrate

    one, two = SqlStore(create_engine(db_url)), SqlStore(create_engine(db_url))
    try:
        await migrate(one.engine)
        source = await _source(one)
        users = [await one.get_or_create_user(UserRef("telegram", f"b{n}")) for n in range(3)]
        firsts, seconds = [], []
        for user in users[:2]:  # the early users: two edits each, sent together
            firsts.append(await queued(one, user.id, source))
            seconds.append(await queued(one, user.id, source))
        started = []
        for _ in range(2):  # two slots take both early users' first edits, which end
            edit = await one.claim(OWNER, later(), ["telegram"])
            assert edit is not None
            started.append(edit.id)
            assert await one.finish_edit(edit.id, EditStatus.FAILED, error="x")
        assert started == firsts
        late = await queued(two, users[2].id, source)  # the late user, in another process
        order = []
        while (edit := await two.claim(OWNER, later(), ["telegram"])) is not None:
            order.append(edit.id)
            assert await two.finish_edit(edit.id, EditStatus.FAILED, error="x")
        assert order == [late, *seconds]
        # A user's own edits keep their order whatever ended between them.
        mine = [await queued(one, users[0].id, source) for _ in range(3)]
        claimed = await one.claim(OWNER, later(), ["telegram"])
        assert claimed is not None and claimed.id == mine[0]
        assert await one.finish_edit(claimed.id, EditStatus.FAILED, error="x")
        assert await one.queue_places(mine) == {mine[1]: 1, mine[2]: 2}
    finally:
        await one.aclose()
        await two.aclose()


async def test_claims_from_two_processes_never_share_a_job(db_url: str) -> None:
    from storage.db import migrate

    stores = [SqlStore(create_engine(db_url)) for _ in range(2)]
    try:
        await migrate(stores[0].engine)
        source = await _source(stores[0])
        ids = set()
        for n in range(12):
            user = await stores[0].get_or_create_user(UserRef("telegram", f"u{n}"))
            ids.add(await queued(stores[0], user.id, source))

        async def drain(store: SqlStore, owner: str) -> list[int]:
            taken = []
            while (edit := await store.claim(owner, later(), ["telegram"])) is not None:
                taken.append(edit.id)
            return taken

        one, two = await asyncio.gather(drain(stores[0], "p1"), drain(stores[1], "p2"))
        assert sorted(one + two) == sorted(ids)
        assert not set(one) & set(two)
    finally:
        for s in stores:
            await s.aclose()


async def test_an_expired_lease_goes_back_to_the_queue(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store))
    dead = await store.claim("dead-process", datetime.now(UTC) + timedelta(seconds=1), ["telegram"])
    assert dead is not None
    assert await store.requeue_expired(datetime.now(UTC)) == 0  # still leased
    await store.renew_leases("someone-else", [edit_id], later())  # not theirs to renew
    assert await store.requeue_expired(datetime.now(UTC) + timedelta(seconds=2)) == 1
    again = await store.claim(OWNER, later(), ["telegram"])
    assert again is not None and again.id == edit_id and again.attempts == 2
    assert not await store.start_delivery(edit_id, "dead-process")  # the old owner lost it
    assert await store.start_delivery(edit_id, OWNER)


async def test_a_kept_result_survives_a_requeue(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store))
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    result = await save_image(store, b"result", "image/png", 512, 512)
    await record_result(store, edit_id, result, 42, ("note_first_frame",), EditTimings(api_ms=9))
    await store.requeue(OWNER, [edit_id])  # a graceful shutdown mid-delivery
    again = await store.claim(OWNER, later(), ["telegram"])
    assert again is not None
    assert (again.result_image_id, again.seed, again.notes) == (result, 42, ("note_first_frame",))


async def test_an_edit_ends_once_and_gives_its_unit_back_once(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store), quota=5)
    assert await store.quota_used(user.id, DAY) == 1
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    assert await store.finish_edit(edit_id, EditStatus.FAILED, error="ApiTimeout")
    assert not await store.finish_edit(edit_id, EditStatus.FAILED, error="again")
    assert not await store.finish_edit(edit_id, EditStatus.SUCCEEDED)
    assert await store.quota_used(user.id, DAY) == 0
    record = await store.get_edit(edit_id)
    assert record is not None and (record.status, record.error) == ("failed", "ApiTimeout")


async def test_cancel_takes_waiting_and_running_edits_but_not_one_on_its_way(
    store: SqlStore,
) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    source = await _source(store)
    running = await queued(store, alice.id, source, quota=9)
    waiting = await queued(store, alice.id, source, quota=9)
    other_chat = await queued(store, alice.id, source, chat="66", quota=9)
    bobs = await queued(store, bob.id, source, quota=9)
    assert (await store.claim(OWNER, later(), ["telegram"])).id == running  # type: ignore[union-attr]
    cancelled = await store.cancel_edits(alice.id, "telegram", "55")
    assert sorted(edit.id for edit in cancelled) == [running, waiting]
    assert await store.quota_used(alice.id, DAY) == 1  # only the other chat's
    assert not await store.start_delivery(running, OWNER)  # its worker finds it cancelled
    assert await store.cancel_edits(alice.id, "telegram", "55") == []  # twice: nothing more
    assert await store.quota_used(alice.id, DAY) == 1
    # once delivery started, /cancel no longer applies
    bob_claim = await store.claim(OWNER, later(), ["telegram"])
    assert bob_claim is not None and bob_claim.id in (other_chat, bobs)
    result = await save_image(store, b"r", "image/png", 8, 8)
    await record_result(store, bob_claim.id, result, None, (), EditTimings())
    assert await store.start_delivery(bob_claim.id, OWNER)
    owner = alice.id if bob_claim.id == other_chat else bob.id
    chat = "66" if bob_claim.id == other_chat else "55"
    assert await store.cancel_edits(owner, "telegram", chat) == []


async def test_nul_characters_are_dropped_not_fatal(store: SqlStore) -> None:
    """PostgreSQL refuses NUL in text; a prompt or an API's error body may carry one."""
    user = await store.get_or_create_user(UserRef("telegram", "3", "Eve\x00"))
    edit_id = await queued(store, user.id, await _source(store), prompt="make\x00 it snow")
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    assert await store.finish_edit(edit_id, EditStatus.FAILED, error="HTTP 500: bad\x00body")
    record = await store.get_edit(edit_id)
    assert record is not None
    assert (record.prompt, record.error) == ("make it snow", "HTTP 500: badbody")


async def test_a_pending_image_is_a_file_until_filled(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    file = FileRef("telegram", "AgAC-1", 1234, "cat.png")
    origin = MessageRef("telegram", "55", "7")
    image_id = await store.keep_upload(user.id, "telegram", "55", file, origin)
    assert await store.current(user.id, "telegram", "55") == ShownImage(image_id, None)
    assert await store.shown_in(origin) == ShownImage(image_id, None)
    pending = await store.load_image(image_id)
    assert pending.data == b"" and pending.file == FileRef("telegram", "AgAC-1", 1234, "cat.png")
    await store.fill_image(image_id, b"jpeg bytes", "image/jpeg", 640, 480)
    filled = await store.load_image(image_id)
    assert (filled.data, filled.mime, filled.width, filled.file) == (
        b"jpeg bytes", "image/jpeg", 640, None,
    )  # fmt: skip
    # the same bytes as a stored image still dedup elsewhere; a fill never collides with them
    same = await save_image(store, b"jpeg bytes", "image/jpeg", 640, 480)
    assert same != image_id


async def test_a_process_that_lost_its_lease_can_neither_keep_nor_end_the_edit(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store), quota=5)
    assert await store.claim("slow", datetime.now(UTC) + timedelta(seconds=1), ["telegram"])
    assert await store.requeue_expired(datetime.now(UTC) + timedelta(seconds=2)) == 1
    assert await store.claim(OWNER, later(), ["telegram"])  # another process has it now
    result = await save_image(store, b"late", "image/png", 8, 8)
    assert not await record_result(store, edit_id, result, 1, (), EditTimings(), owner="slow")
    assert not await store.finish_edit(edit_id, EditStatus.FAILED, error="late", owner="slow")
    assert await store.quota_used(user.id, DAY) == 1  # its unit is still held for the new owner
    assert await record_result(store, edit_id, result, 1, (), EditTimings(), owner=OWNER)


async def test_an_edit_whose_picture_went_out_cannot_be_cancelled_even_when_requeued(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store), quota=5)
    assert await store.claim(OWNER, datetime.now(UTC) + timedelta(seconds=1), ["telegram"])
    result = await save_image(store, b"r", "image/png", 8, 8)
    await record_result(store, edit_id, result, None, (), EditTimings())
    assert await store.start_delivery(edit_id, OWNER)  # ...and the process dies while sending
    assert await store.requeue_expired(datetime.now(UTC) + timedelta(seconds=2)) == 1
    assert await store.cancel_edits(user.id, "telegram", "55") == []
    assert await store.quota_used(user.id, DAY) == 1


async def test_an_ended_edit_counts_for_its_users_turn_for_the_fair_window(
    store: SqlStore,
) -> None:
    alice = await store.get_or_create_user(ALICE)
    bob = await store.get_or_create_user(BOB)
    source = await _source(store)
    a1 = await queued(store, alice.id, source)
    first = await store.claim(OWNER, later(), ["telegram"])
    assert first is not None and first.id == a1
    assert await store.finish_edit(a1, EditStatus.FAILED, error="x")
    a2 = await queued(store, alice.id, source)  # Alice's second within the window
    b1 = await queued(store, bob.id, source)  # goes after Bob's first, sent later
    assert await store.queue_places([a2, b1]) == {b1: 1, a2: 2}
    for expected in (b1, a2):
        edit = await store.claim(OWNER, later(), ["telegram"])
        assert edit is not None and edit.id == expected
        assert await store.finish_edit(edit.id, EditStatus.FAILED, error="x")
    async with store.engine.begin() as conn:  # Alice's edits ended before the window
        await conn.execute(
            update(Edit)
            .where(Edit.user_id == alice.id)
            .values(finished_at=datetime.now(UTC) - FAIR_WINDOW - timedelta(seconds=1))
        )
    b2 = await queued(store, bob.id, source)  # Bob's second within the window
    a3 = await queued(store, alice.id, source)  # Alice's first, counting none before it
    assert await store.queue_places([b2, a3]) == {a3: 1, b2: 2}


async def test_a_graceful_hand_back_costs_no_attempt(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store))
    for _ in range(5):
        assert await store.claim(OWNER, later(), ["telegram"]) is not None
        await store.requeue(OWNER, [edit_id])
    edit = await store.get_edit(edit_id)
    assert edit is not None and edit.attempts == 0


async def test_leftovers_are_taken_once(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    edit_id = await queued(store, user.id, await _source(store))
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    await store.set_note([edit_id], "n1")
    assert await store.finish_edit(edit_id, EditStatus.FAILED, error="x", answer="Sorry")
    taken = await store.take_leftovers(["telegram"], later())
    assert [(e.id, e.note_id, e.answer) for e in taken] == [(edit_id, "n1", "Sorry")]
    again = await store.take_leftovers(["telegram"], later())  # the answer went once
    assert [(e.id, e.note_id, e.answer) for e in again] == [(edit_id, "n1", None)]
    await store.forget_note("telegram", "55", "n1")  # the note, once it is deleted
    assert await store.take_leftovers(["telegram"], later()) == []


async def test_a_note_shared_with_an_open_edit_is_no_leftover_until_forgotten(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await _source(store)
    ended, waiting = await queued(store, user.id, source), await queued(store, user.id, source)
    await store.set_note([ended, waiting], "n1")
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    assert await store.finish_edit(ended, EditStatus.FAILED, error="x", answer="Sorry")
    taken = await store.take_leftovers(["telegram"], later())
    assert [(e.id, e.note_id, e.answer) for e in taken] == [(ended, None, "Sorry")]
    await store.forget_note("telegram", "55", "n1")
    still = await store.get_edit(waiting)
    assert still is not None and still.note_id is None


async def test_a_leftover_note_is_kept_only_for_an_open_edit_of_its_own_chat(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await _source(store)
    ended = await queued(store, user.id, source)
    elsewhere = await queued(store, user.id, source, chat="66")  # open, in another chat
    await store.set_note([ended], "5")
    await store.set_note([elsewhere], "5")  # the same message id means another message there
    assert await store.claim(OWNER, later(), ["telegram"]) is not None
    assert await store.finish_edit(ended, EditStatus.FAILED, error="x", answer="Sorry")
    taken = await store.take_leftovers(["telegram"], later())
    assert [(e.id, e.note_id) for e in taken] == [(ended, "5")]  # deleted by the sweep


async def test_a_note_is_stored_only_where_no_other_one_is(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await _source(store)
    first, second = await queued(store, user.id, source), await queued(store, user.id, source)

    async def note_of(edit_id: int) -> str | None:
        edit = await store.get_edit(edit_id)
        assert edit is not None
        return edit.note_id

    assert await store.set_note([first], "n1") is None
    assert await store.set_note([first, second], "n2") is None  # stored with the second
    assert (await note_of(first), await note_of(second)) == ("n1", "n2")
    assert await store.set_note([first], "n3") == "n1"  # stored with none: show n1 instead
    assert await store.set_note([first], "n2") is None  # the second edit has it
    assert await store.set_note([first, second], "n1") is None
    assert (await note_of(first), await note_of(second)) == ("n1", "n2")


async def test_the_waiting_limit_holds_for_requests_at_the_same_moment(db_url: str) -> None:
    from storage.db import migrate

    stores = [SqlStore(create_engine(db_url)) for _ in range(3)]
    try:
        await migrate(stores[0].engine)
        user = await stores[0].get_or_create_user(ALICE)
        source = await _source(stores[0])
        new = NewEdit(user.id, "telegram", "55", None, source, "x", EditOptions())
        results = await asyncio.gather(
            *(s.admit(new, day=DAY, quota=10, max_waiting=1) for s in stores for _ in range(2))
        )
        assert sum(r.refused is None for r in results) == 1
        assert await stores[0].quota_used(user.id, DAY) == 1
    finally:
        for s in stores:
            await s.aclose()


async def test_the_spend_cap_counts_kept_results_billed_failures_and_unpaid_edits(
    store: SqlStore,
) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await save_image(store, b"original", "image/png", 512, 512)
    cap = Spend(cap=10_000_000_000, per_edit=3_000_000_000)  # past 32 bits: BIGINT counters

    async def admit() -> str | None:
        new = NewEdit(user.id, "telegram", "55", None, source, "x", EditOptions())
        return (await store.admit(new, day=DAY, quota=0, max_waiting=0, spend=cap)).refused

    first = await queued(store, user.id, source)
    assert await admit() is None  # two unpaid at most 3000 each, one more: 9000 <= 10000
    assert await admit() is None
    assert await admit() == "spend"
    assert await store.quota_used(user.id, DAY) == 3  # the refused one took back its unit
    # The first is made and kept: its real cost (less than the most) replaces its share.
    claimed = await store.claim(OWNER, later(), ["telegram"])
    assert claimed is not None and claimed.id == first
    result = NewImage(b"result", "image/png", 512, 512)
    kept = await store.keep_result(first, result, None, (), EditTimings(), owner=OWNER,
                                   model="gpt-image-1.5", spent=(DAY, 2_500_000_000))  # fmt: skip
    assert kept is not None
    assert (await store.get_edit(first)).model == "gpt-image-1.5"  # type: ignore[union-attr]
    assert (await store.stats(DAY)).spent_today == 2500.0
    assert await admit() == "spend"  # 2500 + 3 x 3000 > 10000
    assert await store.finish_edit(first, EditStatus.SUCCEEDED, owner=OWNER)
    # A call that may have been billed adds its price when its edit ends; a refusal nothing.
    second = await store.claim(OWNER, later(), ["telegram"])
    assert second is not None
    assert await store.finish_edit(second.id, EditStatus.FAILED, owner=OWNER,
                                   spent=(DAY, 3_000_000_000))  # fmt: skip
    assert not await store.finish_edit(second.id, EditStatus.FAILED, spent=(DAY, 5))  # ended
    assert (await store.stats(DAY)).spent_today == 5500.0
    assert await admit() == "spend"  # 5500 + (1 unpaid + 1) x 3000 > 10000
    third = await store.claim(OWNER, later(), ["telegram"])
    assert third is not None
    assert await store.finish_edit(third.id, EditStatus.REFUSED, owner=OWNER)  # costs nothing
    assert await admit() is None  # 5500 + 3000 <= 10000
    assert (await store.stats(DAY)).spent_today == 5500.0


async def test_the_spend_cap_counts_each_picture_of_an_album_as_a_call(store: SqlStore) -> None:
    user = await store.get_or_create_user(ALICE)
    source = await save_image(store, b"original", "image/png", 512, 512)
    cap = Spend(cap=10_000, per_edit=3_000)

    async def admit(pictures: int) -> str | None:
        new = NewEdit(user.id, "telegram", "55", None, source, "x", EditOptions(),
                      more_sources=(source,) * (pictures - 1))  # fmt: skip
        return (await store.admit(new, day=DAY, quota=0, max_waiting=0, spend=cap)).refused

    assert await admit(4) == "spend"  # four calls at most 3000 each: past 10000
    assert await admit(3) is None  # 9000
    assert await admit(1) == "spend"  # 9000 unpaid + 3000
    assert await store.quota_used(user.id, DAY) == 3


async def test_a_bot_value_is_made_once_and_read_alike(store: SqlStore) -> None:
    made = await store.bot_value("end_user_salt", "first")
    assert made == "first"
    assert await store.bot_value("end_user_salt", "second") == "first"


async def test_a_handled_event_is_recognised_and_a_redelivered_grant_grants_nothing(
    store: SqlStore,
) -> None:
    assert not await handled(store, "telegram", "1001")
    assert await store.mark_handled("telegram", "1001")
    assert not await store.mark_handled("telegram", "1001")  # the second delivery
    assert await handled(store, "telegram", "1001") and not await handled(store, "discord", "1001")
    user = await store.get_or_create_user(ALICE)
    assert await store.grant(user.id, DAY, 5, event=("telegram", "2002"))
    assert not await store.grant(user.id, DAY, 5, event=("telegram", "2002"))
    assert await store.granted(user.id, DAY) == 5
    await store.forget_handled(datetime.now(UTC) + timedelta(seconds=1))  # two days on
    assert not await handled(store, "telegram", "1001")


async def test_a_ban_ahead_holds_from_the_first_message(store: SqlStore) -> None:
    assert await store.set_banned("telegram", "3003", banned=True)  # never seen
    stranger = await store.get_or_create_user(UserRef("telegram", "3003", "Spam", "en"))
    assert stranger.banned
    assert not await store.set_banned("telegram", "4004", banned=False)  # unknown: no row
    assert await store.find_user("telegram", "4004") is None


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_an_event_handled_while_it_is_being_kept_is_not_kept(
    store: SqlStore, db_url: str
) -> None:
    """Another process marks the event handled in a transaction not committed yet while this
    one keeps it as received: the keeping waits for it, so neither misses the other (at READ
    COMMITTED each saw nothing of the other, and the event's words stayed kept)."""
    other = SqlStore(create_engine(db_url))
    try:
        async with other._tx() as session:
            await mark_handled_in(session, "telegram", "7101")
            keeping = asyncio.create_task(store.receive("telegram", [("7101", "{}")]))
            await asyncio.sleep(0.3)  # long enough to commit, were it not to wait
        await keeping
        assert await store.received("telegram") == []
    finally:
        await other.aclose()


async def test_an_event_handled_before_it_was_kept_is_not_kept(store: SqlStore) -> None:
    await store.receive("telegram", [("7001", '{"update_id": 7001}')])
    assert await store.mark_handled("telegram", "7002")  # its lane was quicker than the keep
    await store.receive("telegram", [("7002", '{"update_id": 7002}'), ("7003", "{}")])
    assert sorted(i for i, _ in await store.received("telegram")) == ["7001", "7003"]
    assert await store.mark_handled("telegram", "7001")
    assert [i for i, _ in await store.received("telegram")] == ["7003"]
