"""`SqlAlbums`: the parts of albums that arrive as separate messages (Telegram's media groups),
kept as they come, whichever process receives them, until one process takes the album: taking
is one conditional UPDATE, so exactly one caller gets the parts, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from bot.domain import AlbumPart, ChatRef, FileRef, MessageRef, UserRef
from storage.base import SqlBase
from storage.models import AlbumPartRow

ALBUMS_KEPT = timedelta(days=2)  # a taken album's parts, to know a late or redelivered part


class SqlAlbums(SqlBase):
    async def keep_album_part(self, part: AlbumPart, now: datetime) -> bool:
        """Keep one part (once: a redelivered part changes nothing); False if its album was
        taken already (the part came late, or again)."""
        key = _key(part)
        async with self._tx() as session:
            await session.execute(
                delete(AlbumPartRow).where(AlbumPartRow.received_at < now - ALBUMS_KEPT)
            )
            taken = await session.scalar(
                select(func.count()).where(*_album(*key[:3]), AlbumPartRow.taken.is_(True))
            )
            if taken:
                return False
            row = dict(platform=key[0], chat_id=key[1], album_id=key[2], message_id=key[3],
                       part=json.dumps(asdict(part)), taken=False, received_at=now)  # fmt: skip
            await session.execute(self._insert(AlbumPartRow).values(row).on_conflict_do_nothing())
            return True

    async def take_album(
        self, platform: str, chat_id: str, album: str, quiet_since: datetime
    ) -> list[AlbumPart]:
        """The album's parts, marked taken, if none came after `quiet_since` and nobody took
        them yet; else nothing (a later part's taker, or another process, has them)."""
        which = _album(platform, chat_id, album)
        async with self._tx() as session:
            last = await session.scalar(select(func.max(AlbumPartRow.received_at)).where(*which))
            if last is None or last > quiet_since:
                return []
            rows = await session.scalars(
                update(AlbumPartRow)
                .where(*which, AlbumPartRow.taken.is_(False))
                .values(taken=True)
                .returning(AlbumPartRow.part)
                .execution_options(synchronize_session=False)
            )
            return [_part(json.loads(row)) for row in rows.all()]

    async def quiet_albums(self, platforms: list[str], since: datetime) -> list[tuple[str, ...]]:
        """Albums not taken whose last part came before `since` (a process died waiting)."""
        query = (
            select(AlbumPartRow.platform, AlbumPartRow.chat_id, AlbumPartRow.album_id)
            .where(AlbumPartRow.taken.is_(False), AlbumPartRow.platform.in_(platforms))
            .group_by(AlbumPartRow.platform, AlbumPartRow.chat_id, AlbumPartRow.album_id)
            .having(func.max(AlbumPartRow.received_at) < since)
        )
        async with self._tx(read_only=True) as session:
            return [tuple(row) for row in (await session.execute(query)).tuples()]


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
    )
