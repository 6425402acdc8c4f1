"""`SqlAlbums`: the parts of albums that arrive as separate messages (Telegram's media groups),
kept as they come, whichever process receives them, until one process takes the album: taking
is one conditional UPDATE, so exactly one caller gets the parts, on SQLite and PostgreSQL alike;
taken again (by the same UPDATE) if its taker did not answer it in time, as when it died.
Keeping a part and taking its album take turns: SQLite has one writer at a time; on PostgreSQL
each holds the album's lock (a transaction's advisory lock) first. Else, at READ COMMITTED, a
part kept while its album was being taken saw the album not taken, and the take did not see the
part: it was left behind, to be taken later as an album of its own (a request charged again)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import AlbumPart, ChatRef, EditRequest, FileRef, MessageRef, PartKept, UserRef
from storage.base import SqlBase
from storage.models import AlbumPartRow

ALBUMS_KEPT = timedelta(days=2)  # a taken album's parts, to know a late or redelivered part
_ALBUM_LOCKS = 0x616C62  # PostgreSQL advisory locks (two keys: this, the album's hash)


class SqlAlbums(SqlBase):
    async def keep_album_part(self, part: AlbumPart, now: datetime) -> PartKept:
        """Keep one part if its album was not taken yet (KEPT; once: a redelivered part
        changes nothing); else the part came late (LATE, not kept), or it was kept before its
        album was taken and came again (AGAIN)."""
        platform, chat_id, album, message_id = _key(part)
        async with self._tx() as session:
            await self._hold_album(session, platform, chat_id, album)
            await session.execute(
                delete(AlbumPartRow).where(AlbumPartRow.received_at < now - ALBUMS_KEPT)
            )
            kept = await session.execute(
                select(AlbumPartRow.message_id, AlbumPartRow.taken).where(
                    *_album(platform, chat_id, album)
                )
            )
            parts = dict(kept.tuples().all())
            if any(parts.values()):  # taken
                return PartKept.AGAIN if message_id in parts else PartKept.LATE
            row = dict(platform=platform, chat_id=chat_id, album_id=album, message_id=message_id,
                       part=json.dumps(asdict(part)), taken=False, received_at=now)  # fmt: skip
            await session.execute(self._insert(AlbumPartRow).values(row).on_conflict_do_nothing())
            return PartKept.KEPT

    async def take_album(
        self,
        platform: str,
        chat_id: str,
        album: str,
        quiet_since: datetime,
        now: datetime,
        *,
        left_before: datetime | None = None,
    ) -> list[AlbumPart]:
        """The album's parts, marked taken at `now`, if none came after `quiet_since` and
        nobody took them yet (or, with `left_before`, its taker took them before then and never
        answered them: it died); else nothing (a later part's taker, or another process, has
        them)."""
        which = _album(platform, chat_id, album)
        async with self._tx() as session:
            await self._hold_album(session, platform, chat_id, album)
            last = await session.scalar(select(func.max(AlbumPartRow.received_at)).where(*which))
            if last is None or last > quiet_since:
                return []
            rows = await session.scalars(
                update(AlbumPartRow)
                .where(*which, _takeable(left_before))
                .values(taken=True, taken_at=now)
                .returning(AlbumPartRow.part)
                .execution_options(synchronize_session=False)
            )
            return [_part(json.loads(row)) for row in rows.all()]

    async def album_answered(self, platform: str, chat_id: str, album: str) -> None:
        """The album taken was answered: no sweep takes it again."""
        async with self._tx() as session:
            await session.execute(
                update(AlbumPartRow)
                .where(*_album(platform, chat_id, album), AlbumPartRow.taken.is_(True))
                .values(answered=True)
                .execution_options(synchronize_session=False)
            )

    async def caption_album(self, words: EditRequest, since: datetime) -> bool:
        user, chat, key = words.user, words.chat, words.key
        row = (AlbumPartRow.album_id, AlbumPartRow.message_id, AlbumPartRow.part)
        found = (
            select(*row, AlbumPartRow.taken)
            .where(AlbumPartRow.platform == chat.platform, AlbumPartRow.chat_id == chat.id)
            .where(AlbumPartRow.received_at >= since)
            .order_by(AlbumPartRow.received_at)
        )
        albums: dict[str, list[tuple[str, AlbumPart]]] = {}  # the latest album last
        async with self._tx(read_only=True, small=True) as session:  # no writer's turn
            for album, message_id, data, taken in await session.execute(found):
                part = _part(json.loads(data))
                if key is not None and part.words == key:
                    return True  # these words came again (a redelivery): given already
                if not taken and (part.user.platform, part.user.id) == (user.platform, user.id):
                    albums.setdefault(album, []).append((message_id, part))
        waiting = [a for a, parts in albums.items() if not any(p.prompt for _, p in parts)]
        if not waiting:
            return False
        album = waiting[-1]
        message_id, first = min(albums[album], key=lambda kept: int(kept[0]))
        async with self._tx() as session:
            await self._hold_album(session, chat.platform, chat.id, album)
            captioned = replace(first, prompt=words.prompt, addressed=True,
                                language=words.language, words=key)  # fmt: skip
            given = await session.scalar(
                update(AlbumPartRow)
                .where(*_album(chat.platform, chat.id, album))
                .where(AlbumPartRow.message_id == message_id, AlbumPartRow.taken.is_(False))
                .values(part=json.dumps(asdict(captioned)))
                .returning(AlbumPartRow.message_id)
                .execution_options(synchronize_session=False)
            )
            return given is not None  # else taken meanwhile (and asked about)

    async def quiet_albums(
        self, platforms: list[str], since: datetime, left_before: datetime
    ) -> list[tuple[str, ...]]:
        """Albums not taken whose last part came before `since` (a process died waiting), and
        albums taken before `left_before` and not answered (their taker died)."""
        query = (
            select(AlbumPartRow.platform, AlbumPartRow.chat_id, AlbumPartRow.album_id)
            .where(_takeable(left_before), AlbumPartRow.platform.in_(platforms))
            .group_by(AlbumPartRow.platform, AlbumPartRow.chat_id, AlbumPartRow.album_id)
            .having(func.max(AlbumPartRow.received_at) < since)
        )
        async with self._tx(read_only=True) as session:
            return [tuple(row) for row in (await session.execute(query)).tuples()]

    async def _hold_album(
        self, session: AsyncSession, platform: str, chat_id: str, album: str
    ) -> None:
        """PostgreSQL: the album is this transaction's until it ends (keeping a part of it and
        taking it take turns); SQLite's one writer has it already."""
        if self._dialect == "postgresql":
            key = func.hashtext(f"{platform}:{chat_id}:{album}")
            await session.execute(select(func.pg_advisory_xact_lock(_ALBUM_LOCKS, key)))


def _takeable(left_before: datetime | None) -> Any:
    """A part not taken, or (`left_before` given) taken before then and never answered."""
    if left_before is None:
        return AlbumPartRow.taken.is_(False)
    left = and_(AlbumPartRow.answered.is_(False), AlbumPartRow.taken_at < left_before)
    return or_(AlbumPartRow.taken.is_(False), left)


def _key(part: AlbumPart) -> tuple[str, str, str, str]:
    return part.chat.platform, part.chat.id, part.album, part.origin.message_id


def _album(platform: str, chat_id: str, album: str) -> list[Any]:
    return [
        AlbumPartRow.platform == platform,
        AlbumPartRow.chat_id == chat_id,
        AlbumPartRow.album_id == album,
    ]


def _part(data: dict[str, Any]) -> AlbumPart:
    return AlbumPart(
        album=data["album"],
        user=UserRef(**data["user"]),
        chat=ChatRef(**data["chat"]),
        file=FileRef(**data["file"]),
        origin=MessageRef(**data["origin"]),
        prompt=data["prompt"],
        addressed=data["addressed"],
        language=data["language"],
        refused=data.get("refused"),  # (not in parts kept before it was known)
        words=data.get("words"),
    )
