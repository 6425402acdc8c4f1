"""What tests do to a SqlStore that the bot never does (so the store's port has no method for
it): store an image as it is, take or give back a user's unit, read a counter, ask whether an
event was handled, keep a result without starting its delivery. Each is one transaction of the
store's own, through storage's own statements where the bot has them."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update

from bot.domain import EditTimings, NewImage
from storage import ledger
from storage.images import save_image_in
from storage.models import Counter, Edit
from storage.repo import SqlStore


async def save_image(store: SqlStore, data: bytes, mime: str, width: int, height: int) -> int:
    """Store `data` unless the same bytes are stored already; the id either way (see
    storage.images.save_image_in)."""
    async with store._tx() as session:
        return await save_image_in(session, NewImage(data, mime, width, height))


async def reserve_quota(store: SqlStore, user_id: int, day: date, limit: int) -> bool:
    """One more unit of the user's for `day` unless that would pass `limit` (0 = unlimited);
    False, changing nothing, when the quota is used up (the statement `admit` uses)."""
    async with store._tx() as session:
        return await ledger.reserve(session, user_id, day, limit)


async def release_quota(store: SqlStore, user_id: int, day: date) -> None:
    """Take back one unit of the user's (never below zero)."""
    async with store._tx() as session:
        await ledger.release_user(session, user_id, day)


async def counted(store: SqlStore, scope: str, day: date) -> int:
    """Units a chat ("chat:<platform>:<id>") or the whole bot ("all") used that day."""
    async with store._tx(read_only=True) as session:
        used = await session.scalar(
            select(Counter.used).where(Counter.scope == scope, Counter.day == day)
        )
        return used or 0


async def handled(store: SqlStore, platform: str, event_id: str) -> bool:
    """Whether that platform event was handled already."""
    seen, _ = await store.event_and_user(platform, event_id, None)
    return seen


async def record_result(
    store: SqlStore,
    edit_id: int,
    result_image_id: int,
    seed: int | None,
    notes: tuple[str, ...],
    timings: EditTimings,
    *,
    owner: str | None = None,
) -> bool:
    """Keep an API's result on the edit, as a process that died before delivering it would
    have; False if `owner` (when given) does not hold the edit."""
    which = [Edit.id == edit_id]
    if owner is not None:
        which.append(Edit.lease_owner == owner)
    async with store._tx() as session:
        kept = await session.scalar(
            update(Edit)
            .where(*which)
            .values(
                result_image_id=result_image_id,
                seed=seed,
                notes=",".join(notes),
                queued_ms=timings.queued_ms,
                normalize_ms=timings.normalize_ms,
                api_ms=timings.api_ms,
                total_ms=timings.total_ms,
            )
            .returning(Edit.id)
            .execution_options(synchronize_session=False)
        )
        return kept is not None
