"""`SqlStore`: bot.ports.EditStore on SQLAlchemy (SQLite via aiosqlite, PostgreSQL via asyncpg).

Every method is one transaction and hands back values from bot.domain, never ORM rows. Methods
that may race with other callers (or other processes) use INSERT ... ON CONFLICT and conditional
UPDATEs rather than read-then-write, so they stay correct on PostgreSQL's READ COMMITTED; on
SQLite every writing transaction also holds the write lock from its start (see storage/db.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any, TypeAlias

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.domain import (
    EditOptions,
    EditRecord,
    EditStatus,
    EditTimings,
    MessageRef,
    NewEdit,
    ShownImage,
    StoredImage,
    UserRecord,
    UserRef,
    UserSettings,
)
from storage.db import READ_ONLY
from storage.models import ChatHead, Edit, Image, QuotaUsage, ShownMessage, User, utcnow

_Insert: TypeAlias = postgresql.Insert | sqlite.Insert


class SqlStore:
    """Persistent state in one SQL database. Owns `engine`: `aclose()` disposes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {self._dialect!r} (use SQLite or PostgreSQL)")
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def aclose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._sessions.begin() as session:
            if read_only:
                await session.connection(execution_options={READ_ONLY: True})
            yield session

    def _insert(self, entity: Any) -> _Insert:
        """INSERT in this database's dialect, which offers ON CONFLICT."""
        if self._dialect == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    # users and settings

    async def get_or_create_user(self, ref: UserRef) -> UserRecord:
        key = (User.platform == ref.platform, User.external_id == ref.id)
        async with self._tx() as session:
            user = (await session.execute(select(User).where(*key))).scalar_one_or_none()
            if user is None:
                await session.execute(
                    self._insert(User)
                    .values(
                        platform=ref.platform,
                        external_id=ref.id,
                        name=ref.name,
                        language=ref.language,
                        negative_prompt="",
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["platform", "external_id"])
                )
                user = (await session.execute(select(User).where(*key))).scalar_one()
            # A platform may leave name or language out of some updates: keep what we knew.
            if ref.name is not None and user.name != ref.name:
                user.name = ref.name
            if ref.language is not None and user.language != ref.language:
                user.language = ref.language
            return _user_record(user)

    async def save_settings(self, user_id: int, settings: UserSettings) -> None:
        """Store every field of `settings` (None = "not chosen"). KeyError for an unknown user."""
        async with self._tx() as session:
            result = await session.execute(
                update(User)
                .where(User.id == user_id)
                .values(
                    fixed_seed=settings.seed,
                    steps=settings.steps,
                    cfg_scale=settings.cfg_scale,
                    text_mode=settings.text_mode,
                    negative_prompt=settings.negative_prompt,
                )
                .returning(User.id)
                .execution_options(synchronize_session=False)
            )
            if result.scalar_one_or_none() is None:
                raise KeyError(user_id)

    # quota

    async def reserve_quota(self, user_id: int, day: date, limit: int) -> bool:
        if limit < 0:
            raise ValueError(f"quota limit must be >= 0 (0 = unlimited), not {limit}")
        async with self._tx() as session:
            await session.execute(
                self._insert(QuotaUsage)
                .values(user_id=user_id, day=day, used=0)
                .on_conflict_do_nothing(index_elements=["user_id", "day"])
            )
            conditions = [QuotaUsage.user_id == user_id, QuotaUsage.day == day]
            if limit:
                # Checked by the UPDATE itself: concurrent callers queue on the row lock and
                # each sees the count the one before it left.
                conditions.append(QuotaUsage.used < limit)
            result = await session.execute(
                update(QuotaUsage)
                .where(*conditions)
                .values(used=QuotaUsage.used + 1)
                .returning(QuotaUsage.used)
                .execution_options(synchronize_session=False)
            )
            return result.scalar_one_or_none() is not None

    async def release_quota(self, user_id: int, day: date) -> None:
        async with self._tx() as session:
            await session.execute(
                update(QuotaUsage)
                .where(QuotaUsage.user_id == user_id, QuotaUsage.day == day, QuotaUsage.used > 0)
                .values(used=QuotaUsage.used - 1)
                .execution_options(synchronize_session=False)
            )

    async def quota_used(self, user_id: int, day: date) -> int:
        async with self._tx(read_only=True) as session:
            used = await session.scalar(
                select(QuotaUsage.used).where(QuotaUsage.user_id == user_id, QuotaUsage.day == day)
            )
            return used or 0

    # images

    async def save_image(self, data: bytes, mime: str, width: int, height: int) -> int:
        """Store `data` unless the same bytes are stored already; the id either way."""
        digest = hashlib.sha256(data).hexdigest()
        query = select(Image.id).where(Image.sha256 == digest)
        async with self._tx() as session:
            image_id = await session.scalar(query)
            if image_id is None:
                await session.execute(
                    self._insert(Image)
                    .values(
                        sha256=digest,
                        mime=mime,
                        width=width,
                        height=height,
                        size_bytes=len(data),
                        data=data,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["sha256"])
                )
                image_id = (await session.execute(query)).scalar_one()
            return image_id

    async def load_image(self, image_id: int) -> StoredImage:
        """The stored image; KeyError if there is none with this id."""
        async with self._tx(read_only=True) as session:
            image = await session.get(Image, image_id)
            if image is None:
                raise KeyError(image_id)
            return StoredImage(
                id=image.id,
                data=image.data,
                mime=image.mime,
                width=image.width,
                height=image.height,
            )

    # edits

    async def create_edit(self, edit: NewEdit) -> int:
        """Record an edit as running; its id."""
        options = edit.options
        row = Edit(
            user_id=edit.user_id,
            platform=edit.platform,
            chat_id=edit.chat_id,
            parent_edit_id=edit.parent_edit_id,
            source_image_id=edit.source_image_id,
            result_image_id=None,
            prompt=edit.prompt,
            steps=options.steps,
            cfg_scale=options.cfg_scale,
            requested_seed=options.seed,
            text_mode=options.text_mode,
            negative_prompt=options.negative_prompt,
            seed=None,
            status=EditStatus.RUNNING,
            error=None,
            queued_ms=0,
            normalize_ms=0,
            api_ms=0,
            total_ms=0,
            created_at=utcnow(),
        )
        async with self._tx() as session:
            session.add(row)
            await session.flush()
            return row.id

    async def finish_edit(
        self,
        edit_id: int,
        status: str,
        *,
        result_image_id: int | None = None,
        seed: int | None = None,
        error: str | None = None,
        timings: EditTimings | None = None,
    ) -> None:
        """Record how an edit ended (timings are kept as they were when None). KeyError for an
        unknown edit."""
        values: dict[str, Any] = {
            "status": status,
            "result_image_id": result_image_id,
            "seed": seed,
            "error": error,
            "finished_at": utcnow(),
        }
        if timings is not None:
            values.update(
                queued_ms=timings.queued_ms,
                normalize_ms=timings.normalize_ms,
                api_ms=timings.api_ms,
                total_ms=timings.total_ms,
            )
        async with self._tx() as session:
            result = await session.execute(
                update(Edit)
                .where(Edit.id == edit_id)
                .values(**values)
                .returning(Edit.id)
                .execution_options(synchronize_session=False)
            )
            if result.scalar_one_or_none() is None:
                raise KeyError(edit_id)

    async def fail_stale_edits(self, started_before: datetime) -> list[tuple[int, date]]:
        """Mark edits still `running` that began before `started_before` as failed
        ("interrupted"); returns each one's user and the day its quota unit was taken."""
        async with self._tx() as session:
            result = await session.execute(
                update(Edit)
                .where(Edit.status == EditStatus.RUNNING, Edit.created_at < started_before)
                .values(status=EditStatus.FAILED, error="interrupted", finished_at=utcnow())
                .returning(Edit.user_id, Edit.created_at)
                .execution_options(synchronize_session=False)
            )
            return [(user_id, created_at.date()) for user_id, created_at in result.all()]

    async def get_edit(self, edit_id: int) -> EditRecord | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(Edit, edit_id)
            return None if row is None else _edit_record(row)

    # messages and current images

    async def link_message(self, message: MessageRef, shown: ShownImage) -> None:
        """Remember that `message` shows `shown` (replacing what it showed before)."""
        stmt = self._insert(ShownMessage).values(
            platform=message.platform,
            chat_id=message.chat_id,
            message_id=message.message_id,
            image_id=shown.image_id,
            edit_id=shown.edit_id,
            created_at=utcnow(),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["platform", "chat_id", "message_id"],
            set_={"image_id": shown.image_id, "edit_id": shown.edit_id},
        )
        async with self._tx() as session:
            await session.execute(stmt)

    async def shown_in(self, message: MessageRef) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(
                ShownMessage, (message.platform, message.chat_id, message.message_id)
            )
            return None if row is None else ShownImage(image_id=row.image_id, edit_id=row.edit_id)

    async def set_current(
        self, user_id: int, platform: str, chat_id: str, shown: ShownImage
    ) -> None:
        now = utcnow()
        stmt = self._insert(ChatHead).values(
            user_id=user_id,
            platform=platform,
            chat_id=chat_id,
            image_id=shown.image_id,
            edit_id=shown.edit_id,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "platform", "chat_id"],
            set_={"image_id": shown.image_id, "edit_id": shown.edit_id, "updated_at": now},
        )
        async with self._tx() as session:
            await session.execute(stmt)

    async def current(self, user_id: int, platform: str, chat_id: str) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(ChatHead, (user_id, platform, chat_id))
            return None if row is None else ShownImage(image_id=row.image_id, edit_id=row.edit_id)


def _user_record(user: User) -> UserRecord:
    return UserRecord(
        id=user.id,
        ref=UserRef(
            platform=user.platform, id=user.external_id, name=user.name, language=user.language
        ),
        settings=UserSettings(
            seed=user.fixed_seed,
            steps=user.steps,
            cfg_scale=user.cfg_scale,
            text_mode=user.text_mode,
            negative_prompt=user.negative_prompt,
        ),
    )


def _edit_record(row: Edit) -> EditRecord:
    return EditRecord(
        id=row.id,
        user_id=row.user_id,
        platform=row.platform,
        chat_id=row.chat_id,
        parent_edit_id=row.parent_edit_id,
        source_image_id=row.source_image_id,
        result_image_id=row.result_image_id,
        prompt=row.prompt,
        options=EditOptions(
            steps=row.steps,
            cfg_scale=row.cfg_scale,
            seed=row.requested_seed,
            text_mode=row.text_mode,
            negative_prompt=row.negative_prompt,
        ),
        seed=row.seed,
        status=row.status,
        error=row.error,
        timings=EditTimings(
            queued_ms=row.queued_ms,
            normalize_ms=row.normalize_ms,
            api_ms=row.api_ms,
            total_ms=row.total_ms,
        ),
        created_at=row.created_at,
    )
