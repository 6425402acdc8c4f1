"""The edit service through its real collaborators: SqlStore on SQLite/PostgreSQL and the httpx
client against the fake StepFun API. What a user would notice: the image that comes back, the
quota left, the seed and settings used, and the edit row in the database."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from bot import imaging
from bot.domain import (
    ChatRef,
    EditRequest,
    EditStatus,
    ImageUpload,
    MessageRef,
    Picture,
    Progress,
    UserRef,
)
from bot.edit_api import EditApiClient
from bot.errors import (
    ApiConfigError,
    ApiUnavailable,
    Busy,
    EditCancelled,
    EditRefused,
    NothingToEdit,
    PromptError,
    PromptTooLong,
    QuotaExceeded,
)
from bot.service import EditService, wants_text_mode
from storage.repo import SqlStore
from tests.fakes.stepfun import FakeStepFun
from tests.images import decode, make_image

ALICE = UserRef("test", "alice", "Alice", "en")
CHAT = ChatRef("test", "chat-1")
PHOTO = make_image(320, 240)


class Outbox:
    """A deliver() that records what the user would have received."""

    def __init__(self) -> None:
        self.pictures: list[Picture] = []
        self.fail = False

    async def __call__(self, picture: Picture) -> MessageRef:
        if self.fail:
            raise ConnectionError("the chat platform is down")
        self.pictures.append(picture)
        return MessageRef("test", CHAT.id, f"m{len(self.pictures)}")


@pytest.fixture
async def client(stepfun: FakeStepFun) -> AsyncIterator[EditApiClient]:
    client = EditApiClient(
        base_url=stepfun.base_url, api_key=stepfun.api_key, retries=1, backoff=0.01,
        max_backoff=0.05, timeout=2.0,
    )  # fmt: skip
    yield client
    await client.aclose()


async def until(condition: Callable[[], object]) -> None:
    """Wait (at most 5 s) until `condition()` holds; the fake API records requests on arrival."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling a recorded list, nothing to await
            await asyncio.sleep(0.005)


def make_service(store: SqlStore, client: EditApiClient, **kw: object) -> EditService:
    kw.setdefault("daily_quota", 3)
    return EditService(store, client, **kw)  # type: ignore[arg-type]


def upload(prompt: str = "make it snow", user: UserRef = ALICE) -> EditRequest:
    return EditRequest(user, CHAT, prompt, upload=ImageUpload(PHOTO, "cat.jpg"))


async def used(service: EditService, user: UserRef = ALICE) -> int:
    return (await service.quota(user)).used


async def test_an_edit_returns_the_apis_image_and_is_recorded(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    outbox = Outbox()
    picture = await service.edit(upload(), outbox)
    assert outbox.pictures == [picture]
    assert decode(picture.data).size == (320, 240)
    assert picture.seed == int(stepfun.requests[0].fields["seed"])
    record = await store.get_edit(picture.edit_id or 0)
    assert record is not None
    assert record.status == EditStatus.SUCCEEDED
    assert record.seed == picture.seed
    assert record.prompt == "make it snow"
    assert record.timings.total_ms >= record.timings.api_ms
    stored = await store.load_image(record.result_image_id or 0)
    assert stored.data == stepfun.results[0]
    assert await used(service) == 1


async def test_quota_is_not_charged_for_failures_and_runs_out(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client, daily_quota=2)
    outbox = Outbox()
    stepfun.fail_next(500, times=2)  # both attempts fail
    with pytest.raises(ApiUnavailable):
        await service.edit(upload(), outbox)
    stepfun.filter_next()
    with pytest.raises(EditRefused):
        await service.edit(upload(), outbox)
    outbox.fail = True
    with pytest.raises(ConnectionError):
        await service.edit(upload(), outbox)
    assert await used(service) == 0
    outbox.fail = False
    await service.edit(upload(), outbox)
    await service.edit(upload(), outbox)
    with pytest.raises(QuotaExceeded) as caught:
        await service.edit(upload(), outbox)
    assert caught.value.params["limit"] == 2
    assert await used(service) == 2
    assert len(outbox.pictures) == 2


async def test_racing_edits_never_overspend(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client, daily_quota=2)
    stepfun.delay = 0.2
    outbox = Outbox()
    results = await asyncio.gather(
        *(service.edit(upload(), outbox) for _ in range(3)), return_exceptions=True
    )
    assert sum(isinstance(r, Picture) for r in results) == 2
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 1
    assert await used(service) == 2
    assert len(stepfun.requests) == 2


async def test_one_user_cannot_fill_the_queue(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client, daily_quota=0)
    stepfun.delay = 0.2
    results = await asyncio.gather(
        *(service.edit(upload(), Outbox()) for _ in range(4)), return_exceptions=True
    )
    assert sum(isinstance(r, Busy) for r in results) == 1


async def test_fixed_seed_settings_and_automatic_text_mode(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    await service.change_setting(ALICE, "seed", "1234")
    await service.change_setting(ALICE, "steps", "12")
    await service.change_setting(ALICE, "cfg", "4.5")
    await service.change_setting(ALICE, "negative", "blurry")
    picture = await service.edit(upload('a sign saying "OPEN"'), Outbox())
    fields = stepfun.requests[-1].fields
    assert picture.seed == 1234
    assert fields["seed"] == "1234"
    assert fields["steps"] == "12"
    assert fields["cfg_scale"] == "4.5"
    assert fields["negative_prompt"] == "blurry"
    assert fields["text_mode"] == "true"
    await service.change_setting(ALICE, "text", "off")
    await service.change_setting(ALICE, "seed", "random")
    await service.edit(upload('a sign saying "OPEN"'), Outbox())
    assert stepfun.requests[-1].fields["text_mode"] == "false"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ('a speech bubble saying "I was wrong"', True),
        ("旁边有个对话气泡框写着“我错了”", True),
        ("招牌写着「沙特阿拉伯」", True),
        ("with a speech bubble saying 'I was wrong'", True),
        ("make the cat's fur blue and the dog's too", False),
        ("make it night time", False),
    ],
)
def test_text_mode_switches_on_for_quoted_text(prompt: str, expected: bool) -> None:
    assert wants_text_mode(prompt) is expected


async def test_plain_text_refines_the_latest_result(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    first = await service.edit(upload(), Outbox())
    second = await service.edit(EditRequest(ALICE, CHAT, "now add a hat"), Outbox())
    assert stepfun.requests[1].image == stepfun.results[0]
    record = await store.get_edit(second.edit_id or 0)
    assert record is not None and record.parent_edit_id == first.edit_id


async def test_nothing_to_edit_and_bad_prompts_cost_nothing(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    with pytest.raises(NothingToEdit):
        await service.edit(EditRequest(ALICE, CHAT, "add a hat"), Outbox())
    with pytest.raises(PromptError):
        await service.edit(upload("   "), Outbox())
    with pytest.raises(PromptTooLong) as caught:
        await service.edit(upload("x" * 513), Outbox())
    assert caught.value.params == {"length": 513, "limit": 512}
    assert stepfun.requests == []
    assert await used(service) == 0


async def test_cancel_stops_a_running_edit_without_charge(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    stepfun.delay = 1.5
    edit = asyncio.create_task(service.edit(upload(), Outbox()))
    await until(lambda: stepfun.requests)  # the edit is waiting for the API
    assert await service.cancel(ALICE, CHAT)
    with pytest.raises(EditCancelled):
        await edit
    assert await used(service) == 0
    assert not await service.cancel(ALICE, CHAT)


async def test_waiting_edits_are_told_their_place(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client, concurrency=1, daily_quota=0)
    stepfun.delay = 0.3
    bob = UserRef("test", "bob")
    seen: list[int] = []

    async def on_progress(progress: Progress) -> None:
        seen.append(progress.queue_position)

    first = asyncio.create_task(service.edit(upload(), Outbox()))
    await until(lambda: stepfun.requests)  # the first edit holds the only slot
    await service.edit(upload(user=bob), Outbox(), on_progress)
    await first
    assert seen == [1, 0]


async def test_operator_hears_about_a_rejected_key(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(store, client)
    stepfun.api_key = "another-key"
    with caplog.at_level(logging.ERROR, logger="stepedit.service"), pytest.raises(ApiConfigError):
        await service.edit(upload(), Outbox())
    assert stepfun.base_url in caplog.text
    assert "step-image-edit-2" in caplog.text
    assert "test-key" not in caplog.text
    assert await used(service) == 0


async def test_reroll_undo_and_full_quality(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client, daily_quota=0)
    first = await service.edit(upload(), Outbox())
    second = await service.edit(EditRequest(ALICE, CHAT, "add a hat"), Outbox())
    reroll = await service.edit(EditRequest(ALICE, CHAT, reroll_of=second.edit_id), Outbox())
    assert stepfun.requests[2].image == stepfun.requests[1].image  # same source
    assert stepfun.requests[2].fields["prompt"] == "add a hat"
    assert reroll.seed != second.seed or reroll.data != second.data
    back = await service.undo(ALICE, CHAT, second.edit_id or 0, Outbox())
    assert back.edit_id == first.edit_id
    await service.edit(EditRequest(ALICE, CHAT, "make it red"), Outbox())
    assert stepfun.requests[-1].image == stepfun.results[0]  # refines the undone-to image
    full = await service.full_quality(first.edit_id or 0)
    assert full.mime == "image/png"
    assert decode(full.data).tobytes() == decode(stepfun.results[0]).tobytes()


async def test_a_result_over_the_apis_safe_size_is_re_encoded_before_refining(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imaging, "MAX_OUTPUT_BYTES", 1_000)  # every PNG result is "too big"
    service = make_service(store, client)
    await service.edit(upload(), Outbox())
    assert stepfun.results[0].startswith(b"\x89PNG") and len(stepfun.results[0]) > 1_000
    await service.edit(EditRequest(ALICE, CHAT, "add a hat"), Outbox())
    refine = stepfun.requests[1]
    assert refine.image_content_type == "image/jpeg"
    assert refine.image_filename == "image.jpg"
    assert decode(refine.image).size == decode(stepfun.results[0]).size


async def test_a_cancel_after_delivery_changes_nothing(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    service = make_service(store, client)
    cancels: list[asyncio.Task[bool]] = []

    async def deliver_then_cancel(picture: Picture) -> MessageRef:
        # /cancel is handled right after Telegram accepted the photo
        asyncio.get_running_loop().call_soon(
            lambda: cancels.append(asyncio.ensure_future(service.cancel(ALICE, CHAT)))
        )
        return MessageRef("test", CHAT.id, "photo-1")

    picture = await service.edit(upload(), deliver_then_cancel)
    assert await asyncio.gather(*cancels) == [False]
    assert await used(service) == 1
    record = await store.get_edit(picture.edit_id or 0)
    assert record is not None and record.status == EditStatus.SUCCEEDED
    assert await service.knows(MessageRef("test", CHAT.id, "photo-1"))


async def test_a_delivered_picture_counts_even_if_recording_it_fails(
    store: SqlStore,
    client: EditApiClient,
    stepfun: FakeStepFun,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = make_service(store, client)

    async def broken_link(*args: object) -> None:
        raise ConnectionError("database went away")

    monkeypatch.setattr(store, "link_message", broken_link)
    with caplog.at_level(logging.ERROR, logger="stepedit.service"):
        picture = await service.edit(upload(), Outbox())
    assert picture.data
    assert await used(service) == 1
    assert "was delivered, but recording it failed" in caplog.text


async def test_image_work_runs_a_few_at_a_time(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(store, client, daily_quota=0)
    lock, running, peak = threading.Lock(), [0], [0]
    real_normalize = imaging.normalize

    def counting_normalize(*args: object, **kwargs: object) -> imaging.NormalizedImage:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)  # long enough for the others to pile up
        try:
            return real_normalize(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(imaging, "normalize", counting_normalize)
    users = [UserRef("test", f"user-{n}") for n in range(6)]
    await asyncio.gather(*(service.edit(upload(user=u), Outbox()) for u in users))
    assert peak[0] == 2


async def test_an_edit_interrupted_by_a_crash_gives_its_unit_back_on_start(
    store: SqlStore, client: EditApiClient, stepfun: FakeStepFun
) -> None:
    crashed = make_service(store, client)
    stepfun.delay = 5
    edit = asyncio.create_task(crashed.edit(upload(), Outbox()))
    await until(lambda: stepfun.requests)
    assert await used(crashed) == 1
    # The process dies mid-edit: nothing it would still write reaches the database, so the
    # unit stays reserved and the row stays "running".
    crashed.store = _Frozen(store)  # type: ignore[assignment]
    edit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await edit
    restarted = make_service(store, client)
    assert await restarted.recover_interrupted(older_than=timedelta(0)) == 1
    assert await used(restarted) == 0
    assert await restarted.recover_interrupted(older_than=timedelta(0)) == 0


class _Frozen:
    """A store whose writes never happen, like a process that died mid-edit."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        async def nothing(*args: object, **kwargs: object) -> None:
            return None

        return nothing
