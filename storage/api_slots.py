"""`SqlApiSlots`: GLOBAL_API_CONCURRENCY's slots, one row each (storage/models.py ApiSlot). A
call takes a free row (or one whose lease ran out: its process died) and frees it when it ends,
so however many processes share the database, at most that many calls are in flight."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update

from storage.base import SqlBase
from storage.models import ApiSlot


class SqlApiSlots(SqlBase):
    _slots_made: int = 0  # this process made sure rows 0 .. _slots_made - 1 exist

    async def take_api_slot(self, holder: str, size: int, now: datetime, until: datetime) -> bool:
        async with self._tx(small=True) as session:
            if size > self._slots_made:  # once per process (another may have made them)
                rows = [{"slot": slot} for slot in range(size)]
                await session.execute(self._insert(ApiSlot).values(rows).on_conflict_do_nothing())
            free = (
                select(ApiSlot.slot)
                .where(
                    ApiSlot.slot < size,  # a process told fewer slots uses only its first ones
                    or_(ApiSlot.holder.is_(None), ApiSlot.held_until < now),
                )
                .order_by(ApiSlot.slot)
                .limit(1)
            )
            if self._dialect == "postgresql":  # others skip the row we are taking
                free = free.with_for_update(skip_locked=True)
            slot = await session.scalar(free)
            if slot is not None:
                await session.execute(
                    update(ApiSlot)
                    .where(ApiSlot.slot == slot)
                    .values(holder=holder, held_until=until)
                    .execution_options(synchronize_session=False)
                )
        self._slots_made = max(self._slots_made, size)
        return slot is not None

    async def renew_api_slots(self, holders: list[str], until: datetime) -> None:
        async with self._tx(small=True) as session:
            await session.execute(
                update(ApiSlot)
                .where(ApiSlot.holder.in_(holders))
                .values(held_until=until)
                .execution_options(synchronize_session=False)
            )

    async def release_api_slot(self, holder: str) -> None:
        async with self._tx(small=True) as session:
            await session.execute(
                update(ApiSlot)
                .where(ApiSlot.holder == holder)
                .values(holder=None, held_until=None)
                .execution_options(synchronize_session=False)
            )
