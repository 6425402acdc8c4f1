"""Helpers that walk an edit through its job life in storage (storage/jobs.py, delivery.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from bot.domain import EditOptions, EditTimings, MessageRef, NewEdit
from storage.repo import SqlStore
from tests.store_helpers import record_result

DAY = date(2026, 1, 15)
OWNER = "test-process"


def later(seconds: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def queued(
    store: SqlStore,
    user_id: int,
    source: int,
    *,
    chat: str = "55",
    prompt: str = "sunset",
    options: EditOptions | None = None,
    parent: int | None = None,
    key: str | None = None,
    day: date = DAY,
    quota: int = 0,
) -> int:
    """Admit one edit (the test fails if it is refused); its id."""
    new = NewEdit(user_id, "telegram", chat, parent, source, prompt, options or EditOptions(),
                  key=key)  # fmt: skip
    admission = await store.admit(new, day=day, quota=quota, max_waiting=0)
    assert admission.refused is None and not admission.duplicate
    return admission.edit_id


async def deliver(
    store: SqlStore,
    edit_id: int,
    result: int,
    *,
    seed: int | None = None,
    message: MessageRef | None = None,
    timings: EditTimings | None = None,
) -> None:
    """Claim `edit_id` (it must be next in line), keep `result` and deliver it."""
    claimed = await store.claim(OWNER, later(), ["telegram"])
    assert claimed is not None and claimed.id == edit_id
    await record_result(store, edit_id, result, seed, (), timings or EditTimings())
    assert await store.start_delivery(edit_id, OWNER)
    assert await store.finish_edit(edit_id, "succeeded", timings=timings, message=message)
