"""`SqlEvents`: platform events handled once (a redelivery is recognised) and events received
but not yet handled (kept, so the platform may forget them); the gate's one read of both an
event and its sender."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import UserRecord, UserRef
from storage import statements as S
from storage.base import SqlBase
from storage.models import HandledEvent, ReceivedEvent, utcnow
from storage.records import user_record


class SqlEvents(SqlBase):
    async def event_and_user(
        self, platform: str, event_id: str, user: UserRef | None
    ) -> tuple[bool, UserRecord | None]:
        async with self._tx(read_only=True, small=True) as session:
            seen = await session.scalar(S.IS_HANDLED, {"platform": platform, "event_id": event_id})
            if seen is not None or user is None:
                return seen is not None, None
            row = (
                await session.execute(S.USER, {"platform": user.platform, "id": user.id})
            ).first()
            return False, None if row is None else user_record(row)

    async def events_and_users(
        self, platform: str, event_ids: list[str], users: list[str]
    ) -> tuple[set[str], dict[str, UserRecord]]:
        async with self._tx(read_only=True, small=True) as session:
            among = {"platform": platform, "event_ids": event_ids}
            seen = set(await session.scalars(S.HANDLED_AMONG, among))
            rows = await session.execute(S.USERS_AMONG, {"platform": platform, "ids": users})
            return seen, {row.external_id: user_record(row) for row in rows}

    async def mark_handled(self, platform: str, event_id: str) -> bool:
        async with self._tx() as session:
            return await mark_handled_in(session, platform, event_id)

    async def mark_all_handled(self, platform: str, event_ids: list[str]) -> None:
        events = [{"platform": platform, "event_id": i, "now": utcnow()} for i in event_ids]
        async with self._tx(small=True) as session:
            await hold_events_in(session, platform, event_ids)
            await session.execute(S.NOT_RECEIVED, events)
            await session.execute(S.MARK_HANDLED_ONLY, events)

    async def receive(self, platform: str, events: list[tuple[str, str]]) -> None:
        """Keep events received and not yet handled. A small write (see group_commit): on
        SQLite a request's admission, which comes right after, waits for it."""
        now = utcnow()
        rows = [{"platform": platform, "event_id": i, "payload": p, "now": now} for i, p in events]

        async def receive_in(session: AsyncSession) -> None:
            await hold_events_in(session, platform, [i for i, _ in events])
            await session.execute(S.RECEIVE, rows)
            # One handled while it was on its way here (its lane is quick) is not kept: its
            # words would otherwise stay until the next start, when it would only be skipped.
            which = {"platform": platform, "event_ids": [i for i, _ in events]}
            await session.execute(S.RECEIVED_HANDLED, which)

        await self._write(receive_in)

    async def received(self, platform: str) -> list[tuple[str, str]]:
        async with self._tx(read_only=True) as session:
            rows = (
                await session.execute(
                    select(ReceivedEvent.event_id, ReceivedEvent.payload).where(
                        ReceivedEvent.platform == platform
                    )
                )
            ).tuples()
            return [(event_id, payload) for event_id, payload in rows]

    async def forget_handled(self, before: datetime) -> None:
        async with self._tx() as session:
            await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < before))


async def mark_handled_in(session: AsyncSession, platform: str, event_id: str) -> bool:
    """Record the event as handled (no longer only received), in the caller's transaction;
    False if it was already."""
    which = {"platform": platform, "event_id": event_id}
    await hold_events_in(session, platform, [event_id])
    await session.execute(S.NOT_RECEIVED, which)
    return await session.scalar(S.MARK_HANDLED, {**which, "now": utcnow()}) is not None


_EVENT_LOCKS = 0x657674  # PostgreSQL advisory locks (two keys: this, the event's hash)


async def hold_events_in(session: AsyncSession, platform: str, event_ids: list[str]) -> None:
    """PostgreSQL: keeping an event as received and marking it handled take turns, each
    holding the event's lock (a transaction's advisory lock) first. Else, at READ COMMITTED,
    an event handled while it was being kept found no row to delete, and the keeping found no
    mark: its words stayed kept, also after /forget, until the next start. SQLite's one writer
    has them already."""
    if session.get_bind().dialect.name == "postgresql":
        keys = [f"{platform}:{event_id}" for event_id in event_ids]
        await session.execute(S.HOLD_EVENTS, {"locks": _EVENT_LOCKS, "keys": keys})
