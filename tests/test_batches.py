"""Writes taken together under a burst: admissions in one transaction each batch (every one in
its own savepoint), handled events written down in batches, and the gate's read of a user
serving the request that follows it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import EditOptions, FileRef, MessageRef, NewEdit, UserRef
from bot.handled import HandledMarks, ReadOnce
from storage.group_commit import GroupCommit
from storage.models import Counter
from storage.repo import SqlStore
from tests.jobs import DAY


async def test_a_burst_of_admissions_lands_whole_and_charged_once(store: SqlStore) -> None:
    users = [await store.get_or_create_user(UserRef("telegram", f"burst{n}")) for n in range(40)]

    async def admit(n: int) -> int:
        user = users[n % 40]
        new = NewEdit(user.id, "telegram", user.ref.id, None, 0, "snow", EditOptions(),
                      key=f"telegram:burst:{n}", reply_to=str(n))  # fmt: skip
        upload = FileRef("telegram", f"photo-{n}", 1000)
        origin = MessageRef("telegram", user.ref.id, str(n))
        admission = await store.admit(new, day=DAY, quota=2, max_waiting=0, upload=upload,
                                      origin=origin)  # fmt: skip
        return 0 if admission.refused else admission.edit_id

    # 120 at once (3 per user): each user's third is over the quota of 2, the rest all land.
    ids = await asyncio.gather(*(admit(n) for n in range(120)))
    assert sum(1 for i in ids if i) == 80 and len(set(ids) - {0}) == 80
    assert [await store.quota_used(user.id, DAY) for user in users] == [2] * 40
    again = await asyncio.gather(*(admit(n) for n in range(80)))  # redelivered: the same jobs
    assert again == ids[:80]


def _count(scope: str, fail: bool = False) -> Any:
    async def work(session: AsyncSession) -> str:
        session.add(Counter(scope=scope, day=DAY, used=1))
        await session.flush()
        if fail:
            raise RuntimeError(scope)
        return scope

    return work


async def _scopes(store: SqlStore) -> set[str]:
    async with store._tx(read_only=True) as session:
        return set(await session.scalars(select(Counter.scope)))


async def test_a_unit_that_breaks_a_constraint_is_undone_alone(store: SqlStore) -> None:
    batches = GroupCommit(store._tx)
    scopes = ["s0", "s1", "s2", "s1", "s4"]  # the second s1 is the same row again
    results = await asyncio.gather(
        *(batches.run(_count(scope)) for scope in scopes), return_exceptions=True
    )
    assert isinstance(results[3], IntegrityError)
    assert [r for n, r in enumerate(results) if n != 3] == ["s0", "s1", "s2", "s4"]
    assert await _scopes(store) == {"s0", "s1", "s2", "s4"}


async def test_any_other_failure_fails_the_whole_batch(store: SqlStore) -> None:
    batches = GroupCommit(store._tx)
    results = await asyncio.gather(
        *(batches.run(_count(f"t{n}", fail=n == 2)) for n in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await _scopes(store) == set()
    assert await batches.run(_count("t9")) == "t9"  # the next batch goes on as usual


async def test_handled_marks_are_known_at_once_and_written_even_after_a_failure() -> None:
    written: list[tuple[str, list[str]]] = []
    failures = 1

    async def write(platform: str, event_ids: list[str]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("database away")
        written.append((platform, event_ids))

    marks = HandledMarks(write)
    for n in range(5):
        marks.add("telegram", str(n))
    assert ("telegram", "3") in marks and ("telegram", "9") not in marks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bot.handled.RETRY_SECONDS", 0.01)
        await marks.drain(timeout=5)
    assert written == [("telegram", ["0", "1", "2", "3", "4"])]
    assert ("telegram", "3") not in marks  # in the database now


async def test_what_the_gate_read_serves_once_while_fresh() -> None:
    read: ReadOnce[str, int] = ReadOnce(fresh=0.2)
    read.put("alice", 1)
    assert read.take("alice") == 1
    assert read.take("alice") is None  # once
    read.put("alice", 2)
    read.clear()  # a user changed: nothing read before is used
    assert read.take("alice") is None
    read.put("alice", 3)
    await asyncio.sleep(0.25)
    assert read.take("alice") is None  # stale


async def test_a_record_read_at_the_gate_is_read_anew_when_the_platform_says_news(
    store: SqlStore,
) -> None:
    from bot.access import _as_known

    alice = UserRef("telegram", "1", "Alice", "en")
    record = await store.get_or_create_user(alice)
    assert _as_known(record, alice) == record
    assert _as_known(record, replace(alice, name=None, language=None)) == record  # no news
    assert _as_known(record, replace(alice, name="Alice B.")) is None  # read (and kept) anew
    assert _as_known(record, replace(alice, language="zh")) is None
    renamed = await store.get_or_create_user(replace(alice, name="Alice B."))
    assert renamed.ref.name == "Alice B."


async def test_closing_the_store_waits_for_the_batch_on_its_way() -> None:
    """A batch still being written when the store closes is written first: left behind, it
    would finish after the event loop was closed (the driver's thread then fails)."""
    written = asyncio.Event()

    async def slow(session: Any) -> None:
        await asyncio.sleep(0.05)
        written.set()

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        yield None

    batches = GroupCommit(transaction)
    writing = asyncio.create_task(batches.run(slow))
    await asyncio.sleep(0)  # its writer has started
    await batches.drain()
    assert written.is_set()
    await writing
