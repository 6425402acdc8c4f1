"""GLOBAL_API_CONCURRENCY: the edit API's calls in flight across every process on one database
never pass it. The slots in storage (SQLite and PostgreSQL), a slot a dead process held, and two
services on one PostgreSQL (two engines, as two processes) against one fake API that records how
many requests it answered at once."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.backends.stepfun import StepFunBackend
from bot.config import OperatorRules
from bot.domain import ChatRef, EditRequest, EditStatus, Picture, UserRef
from bot.errors import BudgetSpent, QuotaExceeded
from bot.service import EditService
from storage.db import create_engine, migrate
from storage.repo import SqlStore
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun
from tests.images import make_image

PHOTO = make_image(96, 72)
USERS = 8
EDITS_EACH = 5  # one more than the quota: each user's last one is refused


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# --- the slots in storage ------------------------------------------------------------------------


async def test_slots_are_taken_up_to_the_size_and_freed(store: SqlStore) -> None:
    now = datetime.now(UTC)
    assert await store.take_api_slot("a:1", 2, now, later(30))
    assert await store.take_api_slot("b:1", 2, now, later(30))  # another process
    assert not await store.take_api_slot("a:2", 2, now, later(30))  # both held
    assert not await store.take_api_slot("a:2", 1, now, later(30))  # told fewer: the first only
    await store.release_api_slot("a:1")
    assert await store.take_api_slot("a:2", 2, now, later(30))
    await store.release_api_slot("nobody")  # holds none: nothing changes
    assert not await store.take_api_slot("a:3", 2, now, later(30))


async def test_a_slot_whose_holder_died_is_taken_again_once_its_lease_ran_out(
    store: SqlStore,
) -> None:
    """The dead process took its slot and never let it go; its lease ends in 10 s."""
    assert await store.take_api_slot("dead:1", 1, datetime.now(UTC), later(10))
    assert not await store.take_api_slot("alive:1", 1, datetime.now(UTC), later(30))
    assert await store.take_api_slot("alive:1", 1, later(11), later(41))  # 11 s on
    assert not await store.take_api_slot("alive:2", 1, later(11), later(41))  # the new holder's


async def test_a_renewed_slot_stays_held_past_its_first_lease(store: SqlStore) -> None:
    assert await store.take_api_slot("a:1", 1, datetime.now(UTC), later(10))
    await store.renew_api_slots(["a:1"], later(60))
    assert not await store.take_api_slot("b:1", 1, later(11), later(41))


async def test_an_edit_waits_for_a_slot_a_dead_process_held_then_runs(
    store: SqlStore, client: StepFunBackend, stepfun: FakeStepFun
) -> None:
    """The only slot is held by a process that died: the edit starts once the lease ran out."""
    assert await store.take_api_slot("dead:1", 1, datetime.now(UTC), later(1.5))
    messenger = FakeMessenger()
    service = EditService(store, client, daily_quota=0, lease=2.0, poll=0.05,
                          global_api_concurrency=1)  # fmt: skip
    service.attach(messenger)
    await service.start()
    try:
        request = EditRequest(UserRef("test", "u1"), ChatRef("test", "c1"), "make it snow",
                              upload=messenger.upload(PHOTO))  # fmt: skip
        edit = await service.wait((await service.submit(request)).edit_id, timeout=30)
    finally:
        await service.stop(grace=1)
    assert edit.status == EditStatus.SUCCEEDED
    assert len(stepfun.requests) == 1
    assert await store.take_api_slot("next:1", 1, datetime.now(UTC), later(30))  # let go after


# --- two processes on one PostgreSQL ----------------------------------------------------------


@pytest.fixture
async def two_stores(postgres_url: str) -> AsyncIterator[list[SqlStore]]:
    """Two SqlStores on one PostgreSQL database, each with its own engine (its own pool)."""
    stores = [SqlStore(create_engine(postgres_url)) for _ in range(2)]
    await migrate(stores[0].engine)
    yield stores
    for store in stores:
        await store.aclose()


def _user(n: int) -> UserRef:
    return UserRef("test", f"user-{n}", f"User {n}", "en")


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_two_processes_keep_the_global_cap_and_every_rule_across_them(
    two_stores: list[SqlStore], client: StepFunBackend, stepfun: FakeStepFun
) -> None:
    """8 users, 5 edits each (quota 4, budget 30), sent to both processes in turn; 3 API
    slots each, 3 in all; a few answers fail (503, retried within the slot)."""
    cap = 3
    stepfun.delay = 0.15
    stepfun.fail_next(503, times=4)
    shown: list[int] = []  # edit ids, in the order their pictures went out (either process)

    async def record(picture: Picture) -> None:
        shown.append(picture.edit_id)

    messengers = [FakeMessenger(on_picture=record), FakeMessenger(on_picture=record)]
    messengers[1].files = messengers[0].files  # the platform's files, fetched by either
    services = [
        EditService(store, client, daily_quota=4, lease=2.0, poll=0.05, concurrency=3,
                    global_api_concurrency=cap, rules=OperatorRules(budget=30))
        for store in two_stores
    ]  # fmt: skip
    asked: dict[str, list[int]] = defaultdict(list)  # chat -> its edits, in the order sent
    refused = 0
    try:
        for service, messenger in zip(services, messengers, strict=True):
            service.attach(messenger)
        for k in range(EDITS_EACH):
            for n in range(USERS):
                chat = ChatRef("test", f"chat-{n}")
                request = EditRequest(_user(n), chat, f"user-{n} edit-{k}",
                                      upload=messengers[0].upload(PHOTO))  # fmt: skip
                try:
                    admission = await services[(n + k) % 2].submit(request)
                except (QuotaExceeded, BudgetSpent):
                    refused += 1
                else:
                    asked[chat.id].append(admission.edit_id)
        for service in services:
            await service.start()
        ids = [edit_id for chat in asked.values() for edit_id in chat]
        await _until(lambda: _all_ended(two_stores[0], ids), timeout=60)
        used = [(await services[0].quota(_user(n))).used for n in range(USERS)]
        units = await two_stores[0].units_used_today(services[0].ctx.today())
    finally:
        for service in services:
            await service.stop(grace=1)
    assert refused == USERS + 2  # each user's fifth (quota), and two past the budget of 30
    assert 1 < stepfun.peak_in_flight <= cap  # calls overlapped, never more than the cap
    for request in stepfun.requests:  # one edit per user at the API at a time
        who = _who(request.fields["prompt"])
        assert who not in {_who(other.fields["prompt"]) for other in request.alongside}
    assert all(m.pictures for m in messengers)  # both processes worked the queue
    assert len(shown) == len(set(shown))  # each picture once
    failed = [text for m in messengers for _, text in m.texts]
    assert len(shown) + len(failed) == len(ids) == 30  # every edit ended, with an answer
    assert sum(used) == units == len(shown)  # charged = delivered, per user and in all
    for edit_ids in asked.values():  # each chat's pictures in the order asked
        assert [e for e in shown if e in edit_ids] == [e for e in edit_ids if e in shown]
    for n in range(cap):  # and every slot was let go
        assert await two_stores[0].take_api_slot(f"after:{n}", cap, datetime.now(UTC), later(9))


def _who(prompt: str) -> str:
    found = re.match(r"user-\d+", prompt)
    assert found is not None
    return found[0]


async def _all_ended(store: SqlStore, ids: list[int]) -> bool:
    for edit_id in ids:
        edit = await store.get_edit(edit_id)
        if edit is None or edit.status in EditStatus.OPEN:
            return False
    return True


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.05)
