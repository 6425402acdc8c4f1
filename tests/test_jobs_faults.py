"""The ledger under faults, through the real service, SqlStore (SQLite and PostgreSQL) and edit
client against the fake StepFun API, with a recording Messenger: whatever fails and whenever,
every request ends with a picture or a clear answer, and units used equal pictures delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.backends.stepfun import StepFunBackend
from bot.domain import ChatRef, EditRequest, EditStatus, Upload, UserRef
from bot.service import MAX_ATTEMPTS, EditService
from bot.upkeep import NOTE_GIVEN_UP
from storage.db import create_engine
from storage.repo import SqlStore
from tests.fakes.messenger import FakeMessenger
from tests.fakes.stepfun import FakeStepFun
from tests.images import make_image

CHAT = ChatRef("test", "chat-1")
PHOTO = make_image(160, 120)


def user(n: int = 0) -> UserRef:
    return UserRef("test", f"user-{n}", f"User {n}", "en")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class FlakyStore:
    """The real store, but `finish_edit` fails while `failing_finish` is set (the database
    going away right after a picture was delivered), and `keep_result` once if `failing_keep`
    is set (right after the API answered)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.failing_finish = 0
        self.failing_keep: Callable[[], object] | None = None  # called, then keeping fails

    async def keep_result(self, edit_id: int, *args: Any, **kwargs: Any) -> Any:
        if self.failing_keep is not None:
            self.failing_keep()
            self.failing_keep = None
            raise ConnectionError("the database went away")
        return await self._store.keep_result(edit_id, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def finish_edit(self, edit_id: int, status: str, **kwargs: Any) -> bool:
        if self.failing_finish:
            self.failing_finish -= 1
            raise ConnectionError("the database went away")
        return await self._store.finish_edit(edit_id, status, **kwargs)


@pytest.fixture
async def client(stepfun: FakeStepFun) -> AsyncIterator[StepFunBackend]:
    client = StepFunBackend(
        base_url=stepfun.base_url, api_key=stepfun.api_key, retries=0, timeout=5.0
    )
    yield client
    await client.aclose()


@pytest.fixture
def messenger() -> FakeMessenger:
    return FakeMessenger()


@pytest.fixture
async def running(
    store: SqlStore, client: StepFunBackend, messenger: FakeMessenger
) -> AsyncIterator[Callable[..., Any]]:
    """Start services on the shared store; each is stopped at the end of the test."""
    started: list[EditService] = []

    async def start(store_: Any = store, **options: Any) -> EditService:
        defaults = {
            "daily_quota": 5,
            "lease": 1.0,
            "poll": 0.1,
            "note_interval": 0.05,
            "note_quiet_start": 0.0,
        }
        service = EditService(store_, client, **{**defaults, **options})
        service.attach(messenger)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop(grace=1)


async def submit(service: EditService, messenger: FakeMessenger, n: int = 0, **kw: Any) -> int:
    upload = messenger.upload(PHOTO)
    request = EditRequest(user(n), CHAT, kw.pop("prompt", "make it snow"), upload=upload,
                          answer_to=f"m{len(messenger.files)}", **kw)  # fmt: skip
    return (await service.submit(request)).edit_id


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling recorded state
            await asyncio.sleep(0.01)


async def until_async(condition: Callable[[], Awaitable[object]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - polling the database
            await asyncio.sleep(0.01)


async def used(service: EditService, n: int = 0) -> int:
    return (await service.quota(user(n))).used


async def test_a_failed_bookkeeping_after_delivery_is_never_a_refund(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger
) -> None:
    flaky = FlakyStore(store)
    service = await running(flaky)
    flaky.failing_finish = 1  # the database fails just after the photo went out
    edit_id = await submit(service, messenger)
    edit = await service.wait(edit_id, timeout=15)  # the lease runs out; it is delivered again
    assert edit.status == EditStatus.SUCCEEDED
    assert len(messenger.pictures) == 2  # the user may see it twice, never pays twice
    assert await used(service) == 1
    assert messenger.texts == []


async def test_a_result_that_could_not_be_kept_is_never_shown_nor_charged(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    # Keeping the API's answer fails (as if the process died there); the edit runs again and
    # that call fails: had the first picture gone out, the user would have it for free.
    flaky = FlakyStore(store)
    service = await running(flaky)
    flaky.failing_keep = lambda: stepfun.fail_next(500)
    edit = await service.wait(await submit(service, messenger), timeout=15)
    assert edit.status == EditStatus.FAILED, edit.error
    assert len(stepfun.requests) == 2, (edit.error, messenger.texts)
    assert messenger.pictures == []  # nothing was shown before it was kept
    assert await used(service) == 0
    assert len(messenger.texts) == 1  # the failure's answer


async def test_an_album_kept_but_not_recorded_is_delivered_again_as_made_never_charged_twice(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    flaky = FlakyStore(store)
    service = await running(flaky)
    flaky.failing_finish = 1  # the database fails just after the album went out
    first, *others = (messenger.upload(make_image(160 + 20 * i, 120)) for i in range(3))
    request = EditRequest(user(), CHAT, "make it snow", upload=first,
                          more=tuple(Upload(each) for each in others))  # fmt: skip
    edit = await service.wait((await service.submit(request)).edit_id, timeout=15)
    assert edit.status == EditStatus.SUCCEEDED
    assert len(stepfun.requests) == 3  # the kept results are sent again, not made again
    shown = [sent.picture.data for sent in messenger.pictures]
    assert len(shown) == 6 and shown[:3] == shown[3:] and len(set(shown)) == 3
    assert await used(service) == 3


async def test_cancel_while_the_picture_is_on_its_way_is_too_late(
    running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await running()
    messenger.hold_picture = asyncio.Event()
    edit_id = await submit(service, messenger)
    await asyncio.wait_for(messenger.sending_picture.wait(), 10)
    assert not await service.cancel(user(), CHAT)
    messenger.hold_picture.set()
    edit = await service.wait(edit_id, timeout=10)
    assert edit.status == EditStatus.SUCCEEDED
    assert await used(service) == 1
    assert [text for _, text in messenger.texts] == []  # no "Cancelled" beside the photo
    full = await service.full_quality(CHAT, edit_id)  # and its result is there
    assert full.data.startswith(b"\x89PNG")


async def test_cancel_before_the_photo_is_even_fetched_cancels(
    running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    service = await running()
    messenger.hold_fetch = asyncio.Event()
    edit_id = await submit(service, messenger)
    await until(lambda: messenger.fetched)
    assert await service.cancel(user(), CHAT)
    messenger.hold_fetch.set()
    edit = await service.wait(edit_id, timeout=10)
    assert edit.status == EditStatus.CANCELLED
    assert [text for _, text in messenger.texts] == ["Cancelled. Nothing was charged."]
    assert await used(service) == 0
    await asyncio.sleep(0.2)
    assert messenger.pictures == [] and stepfun.requests == []
    assert await service.cancel(user(), CHAT) is False  # twice: nothing more to give back
    assert await used(service) == 0


async def test_a_refund_goes_back_to_the_day_the_unit_was_taken(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger
) -> None:
    clock = Clock()
    service = await running(clock=clock)
    messenger.hold_fetch = asyncio.Event()
    upload = messenger.upload(b"this is not an image")
    request = EditRequest(user(), CHAT, "make it snow", upload=upload)
    edit_id = (await service.submit(request)).edit_id
    day_one = clock.now.date()
    await until(lambda: messenger.fetched)
    clock.now += timedelta(seconds=20)  # past midnight while it runs
    messenger.hold_fetch.set()
    edit = await service.wait(edit_id, timeout=10)
    assert edit.status == EditStatus.FAILED
    assert "couldn't read that file" in messenger.texts[0][1]
    record = await store.get_or_create_user(user())
    assert await store.quota_used(record.id, day_one) == 0
    assert await store.quota_used(record.id, clock.now.date()) == 0


async def test_stop_lets_running_edits_finish_and_leaves_the_rest_queued(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.5
    service = await running(concurrency=1)
    ids = [await submit(service, messenger, n) for n in range(3)]
    await until(lambda: stepfun.requests)
    await service.stop(grace=5)
    assert len(messenger.pictures) == 1  # the one at the API finished
    states = [(await store.get_edit(edit_id)).status for edit_id in ids]  # type: ignore[union-attr]
    assert sorted(states) == [EditStatus.QUEUED, EditStatus.QUEUED, EditStatus.SUCCEEDED]
    again = await running(concurrency=2)  # the next start takes them up
    for edit_id in ids:
        assert (await again.wait(edit_id, timeout=10)).status == EditStatus.SUCCEEDED
    assert [await used(again, n) for n in range(3)] == [1, 1, 1]
    assert messenger.open_notes() == []


async def test_an_edit_cut_off_by_shutdown_runs_again_and_is_charged_once(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 2
    service = await running()
    edit_id = await submit(service, messenger)
    await until(lambda: stepfun.requests)
    await service.stop(grace=0.1)  # the API call was in flight
    assert (await store.get_edit(edit_id)).status == EditStatus.QUEUED  # type: ignore[union-attr]
    stepfun.delay = 0
    again = await running()
    assert (await again.wait(edit_id, timeout=10)).status == EditStatus.SUCCEEDED
    assert len(stepfun.requests) == 2 and len(messenger.pictures) == 1
    assert await used(again) == 1


async def test_a_stop_while_a_kept_result_is_sent_counts_its_cost_once(
    store: SqlStore, messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    # The result is kept (with its cost) before it is sent; a stop while it is on its way
    # leaves the job to be sent again, never made again: its cost is not counted again.
    priced = StepFunBackend(base_url=stepfun.base_url, api_key=stepfun.api_key, retries=0,
                            timeout=5.0, price=0.05)  # fmt: skip
    service = EditService(store, priced, daily_quota=5, lease=1.0, poll=0.1, note_interval=0.05,
                          note_quiet_start=0.0)  # fmt: skip
    service.attach(messenger)
    await service.start()
    try:
        messenger.hold_picture = asyncio.Event()
        edit_id = await submit(service, messenger)

        async def sending() -> bool:
            edit = await store.get_edit(edit_id)
            return edit is not None and edit.status == EditStatus.DELIVERING

        await until_async(sending)
        await service.stop(grace=0.1)
    finally:
        await priced.aclose()
    assert len(stepfun.requests) == 1
    assert (await store.stats(datetime.now(UTC).date())).spent_today == pytest.approx(0.05)


async def idle_workers_of(service: EditService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until every worker of a just started service has looked for a job and found none."""
    looks = 0
    look = service.store.claim

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal looks
        looks += 1
        return await look(*args, **kwargs)

    monkeypatch.setattr(service.store, "claim", counted)
    await until(lambda: looks >= 2 * service.concurrency)
    await asyncio.sleep(0.05)  # and each is back to waiting for a word


async def test_an_idle_workers_job_is_claimed_by_its_admission_and_runs_once(
    store: SqlStore,
    running: Callable[..., Any],
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = await running()
    await idle_workers_of(service, monkeypatch)
    upload = messenger.upload(PHOTO)
    admission = await service.submit(EditRequest(user(), CHAT, "make it snow", upload=upload))
    claimed = admission.claimed  # in the admitting transaction: no claim of its own
    assert claimed is not None
    assert (claimed.id, claimed.status) == (admission.edit_id, EditStatus.RUNNING)
    edit = await service.wait(admission.edit_id, timeout=10)
    assert edit.status == EditStatus.SUCCEEDED and edit.attempts == 1
    assert len(stepfun.requests) == 1 and len(messenger.pictures) == 1
    assert await used(service) == 1


async def test_a_job_its_admission_claimed_goes_back_to_the_queue_if_the_bot_stops_first(
    store: SqlStore,
    running: Callable[..., Any],
    messenger: FakeMessenger,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = await running()
    await idle_workers_of(service, monkeypatch)
    upload = messenger.upload(PHOTO)
    admission = await service.submit(EditRequest(user(), CHAT, "make it snow", upload=upload))
    assert admission.claimed is not None
    await service.stop(grace=0)  # before its worker took it up
    edit = await store.get_edit(admission.edit_id)
    assert edit is not None and (edit.status, edit.attempts) == (EditStatus.QUEUED, 0)
    assert stepfun.requests == []
    again = await running()
    assert (await again.wait(admission.edit_id, timeout=10)).status == EditStatus.SUCCEEDED
    assert len(stepfun.requests) == 1 and len(messenger.pictures) == 1
    assert await used(again) == 1


async def test_a_job_that_keeps_dying_is_given_up_with_a_clear_answer(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger
) -> None:
    first = await running()
    await first.stop()  # only to admit the job without working on it
    edit_id = await submit(first, messenger)
    for _ in range(MAX_ATTEMPTS):  # each claim dies with its process
        gone = datetime.now(UTC) - timedelta(seconds=1)
        # (PostgreSQL skips the row while the progress note's id is being written to it)
        await until_async(lambda gone=gone: store.claim("dead", gone, ["test"]))
        assert await store.requeue_expired(datetime.now(UTC)) == 1
    service = await running()
    edit = await service.wait(edit_id, timeout=10)
    assert edit.status == EditStatus.FAILED
    assert "interrupted several times" in messenger.texts[0][1]
    assert await used(service) == 0


async def test_progress_notes_stay_cheap_with_many_waiting(
    running: Callable[..., Any], messenger: FakeMessenger, stepfun: FakeStepFun
) -> None:
    stepfun.delay = 0.05
    service = await running(concurrency=1, max_waiting=5)
    ids = [await submit(service, messenger, n) for n in range(40)]
    for edit_id in ids:
        await service.wait(edit_id, timeout=30)
    await until(lambda: not messenger.open_notes())
    edits = sum(note.edits for note in messenger.notes.values())
    assert len(messenger.notes) == 40  # one note per request
    assert edits <= 3 * 40  # "working" once, and only a few place changes each
    assert len({note.to.reply_to for note in messenger.notes.values()}) == 40  # each under its own


async def test_what_a_dead_process_left_of_an_ended_edit_is_finished_by_another(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger
) -> None:
    """It failed the edit (unit given back) and died before telling the user and before
    deleting the progress note: the next process does both, once."""
    first = await running()
    await first.stop()  # admit only
    edit_id = await submit(first, messenger)  # its note goes out, and its id is kept
    await until_async(lambda: _note_of(store, edit_id))
    await until_async(lambda: store.claim("dead", datetime.now(UTC) + timedelta(hours=1), ["test"]))
    assert await store.finish_edit(edit_id, EditStatus.FAILED, error="x", answer="Sorry!")
    messenger.fail_deletions = [ConnectionError("502 Bad Gateway")]  # tried again: it goes
    service = await running(lease=0.3)
    await until(lambda: messenger.texts and not messenger.open_notes())
    assert not messenger.fail_deletions
    await asyncio.sleep(0.5)  # a few more sweeps: nothing twice
    assert [text for _, text in messenger.texts] == ["Sorry!"]
    edit = await store.get_edit(edit_id)
    assert edit is not None and (edit.note_id, edit.answer) == (None, None)
    assert await used(service) == 0


async def test_a_leftover_note_that_cannot_be_deleted_is_given_up_after_a_while(
    store: SqlStore, running: Callable[..., Any], messenger: FakeMessenger
) -> None:
    """Not tried forever (each round would take it again): forgotten once its edit ended
    NOTE_GIVEN_UP ago, while a deletion that still fails leaves the note standing."""
    first = await running()
    await first.stop()  # admit only
    edit_id = await submit(first, messenger)
    await until_async(lambda: _note_of(store, edit_id))
    await until_async(lambda: store.claim("dead", datetime.now(UTC) + timedelta(hours=1), ["test"]))
    assert await store.finish_edit(edit_id, EditStatus.FAILED, error="x", answer="Sorry!")
    messenger.fail_deletions = [ConnectionError("502 Bad Gateway") for _ in range(1000)]
    clock = Clock()
    clock.now = datetime.now(UTC) + NOTE_GIVEN_UP + timedelta(minutes=1)  # it ended so long ago
    await running(lease=0.3, clock=clock)

    async def forgotten() -> bool:
        return await _note_of(store, edit_id) is None

    await until_async(forgotten)
    assert len(messenger.open_notes()) == 1 and len(messenger.fail_deletions) == 999


async def _note_of(store: SqlStore, edit_id: int) -> str | None:
    edit = await store.get_edit(edit_id)
    return None if edit is None else edit.note_id


async def test_two_processes_share_one_queue_and_never_run_the_same_job(
    db_url: str, store: SqlStore, client: StepFunBackend, stepfun: FakeStepFun
) -> None:
    """Two `stepedit run` on one database (PostgreSQL in production; SQLite here too, as one
    file shared by two engines): every job runs once, in one of them. (12 users, so neither
    can hold them all: each has 4 workers.)"""
    stepfun.delay = 0.3
    messengers = [FakeMessenger(), FakeMessenger()]
    stores = [store, SqlStore(create_engine(db_url))]
    services = [
        EditService(s, client, daily_quota=0, lease=2.0, poll=0.05, concurrency=2) for s in stores
    ]
    for service, messenger in zip(services, messengers, strict=True):
        service.attach(messenger)
    files = [messengers[0].upload(PHOTO) for _ in range(12)]
    for messenger in messengers[1:]:
        messenger.files = messengers[0].files  # the platform's files, fetched by either
    ids = []
    for n, upload in enumerate(files):
        request = EditRequest(user(n), CHAT, f"edit {n}", upload=upload, key=f"k{n}")
        ids.append((await services[0].submit(request)).edit_id)
    try:
        for service in services:
            await service.start()
        for edit_id in ids:
            await until_async(lambda edit_id=edit_id: _ended(store, edit_id), timeout=30)
    finally:
        for service in services:
            await service.stop(grace=1)
        await stores[1].aclose()
    delivered = [sent.picture.edit_id for m in messengers for sent in m.pictures]
    assert sorted(delivered) == sorted(ids)  # each once, in one process or the other
    assert len(stepfun.requests) == 12
    assert all(m.pictures for m in messengers)  # both took part


async def _ended(store: SqlStore, edit_id: int) -> bool:
    edit = await store.get_edit(edit_id)
    return edit is not None and edit.status not in EditStatus.OPEN
