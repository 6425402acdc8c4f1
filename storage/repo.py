"""`SqlStore`: bot.ports.EditStore on SQLAlchemy (SQLite via aiosqlite, PostgreSQL via asyncpg).

Every method is one transaction and hands back values from bot.domain, never ORM rows. Methods
that may race with other callers (or other processes) use INSERT ... ON CONFLICT and conditional
UPDATEs rather than read-then-write, so they stay correct on PostgreSQL's READ COMMITTED; on
SQLite every writing transaction also holds the write lock from its start (see storage/db.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import String, cast, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.domain import (
    Admission,
    EditOptions,
    EditRecord,
    EditStatus,
    EditTimings,
    FileRef,
    Lease,
    MessageRef,
    NewEdit,
    NewImage,
    ShownImage,
    Spend,
    Stats,
    StoredImage,
    UserRecord,
    UserRef,
    UserSettings,
)
from bot.errors import ImageExpired
from storage import statements as S
from storage.db import AT_ONCE, READ_ONLY
from storage.group_commit import GroupCommit, Work
from storage.models import (
    BotValue,
    ChatHead,
    Counter,
    Edit,
    HandledEvent,
    Image,
    QuotaUsage,
    ReceivedEvent,
    ShownMessage,
    User,
    utcnow,
)

_Insert: TypeAlias = postgresql.Insert | sqlite.Insert


PLACES_ONE_BY_ONE = 4  # queue_places of at most this many edits counts each one's place
FAIR_WINDOW = timedelta(minutes=10)  # how long a user's ended edits still count for their turn
ALL_EDITS = "all"  # the counter of every edit the bot charged (GLOBAL_DAILY_BUDGET)
SPEND = "spend"  # the day's spend on the edit backends, micro-dollars (GLOBAL_DAILY_SPEND)
EXPIRED = "expired"  # Image.mime of an image whose bytes RETENTION_DAYS deleted
CANVAS = "canvas"  # Image.mime of the empty source of a new image from text (size in file_name)
# An image expired by retention or /forget: no bytes, no file, and no hash (a placeholder made
# of its id takes the sha256's place), so the same bytes stored again make a new image.
_EXPIRE: dict[str, Any] = {
    "mime": EXPIRED, "data": b"", "size_bytes": 0, "file_id": None, "file_name": None,
    "sha256": literal("expired-") + cast(Image.id, String(20)),
}  # fmt: skip


class SqlStore:
    """Persistent state in one SQL database. Owns `engine`: `aclose()` disposes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database {self._dialect!r} (use SQLite or PostgreSQL)")
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._sqlite_writer = asyncio.Lock()
        # A burst of new requests (and their notes) goes in batches, one transaction each (see
        # group_commit): at most one of them stands in line for SQLite's writer, so the running
        # jobs' writes are never stuck behind the burst.
        self._batches = GroupCommit(self._small_tx) if self._dialect == "sqlite" else None

    async def aclose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(
        self, *, read_only: bool = False, small: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises. `small`:
        a write of a few short statements, which SQLite runs at once (see sqlite_driver)."""
        if read_only or self._dialect != "sqlite":
            async with self._sessions.begin() as session:
                if read_only:
                    await session.connection(execution_options={READ_ONLY: True})
                yield session
            return
        # SQLite has one writer. Writers of this process take turns here, woken as soon as the
        # one before commits, instead of in SQLite's busy handler, which polls with sleeps of
        # up to 100 ms: under load those sleeps, not the work, set the pace.
        async with self._sqlite_writer, self._sessions.begin() as session:
            if small:
                await session.connection(execution_options={AT_ONCE: True})
            yield session

    @asynccontextmanager
    async def _small_tx(self) -> AsyncIterator[AsyncSession]:
        async with self._tx(small=True) as session:
            yield session

    async def _write(self, work: Work) -> Any:
        """`work(session)` in a write transaction: on SQLite, with the others of this kind that
        arrived meanwhile (group_commit: a savepoint each); on PostgreSQL, in one of its own."""
        if self._batches is not None:
            return await self._batches.run(work)
        async with self._tx() as session:
            return await work(session)

    def _insert(self, entity: Any) -> _Insert:
        """INSERT in this database's dialect, which offers ON CONFLICT."""
        if self._dialect == "postgresql":
            return postgresql.insert(entity)
        return sqlite.insert(entity)

    # users and settings

    async def get_or_create_user(self, ref: UserRef) -> UserRecord:
        key = (User.platform == ref.platform, User.external_id == ref.id)
        # Most calls find the user as they were: a read, not a write (SQLite has one writer).
        async with self._tx(read_only=True) as session:
            known = (
                await session.execute(S.USER, {"platform": ref.platform, "id": ref.id})
            ).first()
            if known is not None and _as_known(known, ref):
                return _user_record(known)
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
                    image_size=settings.image_size,
                )
                .returning(User.id)
                .execution_options(synchronize_session=False)
            )
            if result.scalar_one_or_none() is None:
                raise KeyError(user_id)

    # quota

    async def reserve_quota(self, user_id: int, day: date, limit: int) -> bool:
        async with self._tx() as session:
            return await self._reserve(session, user_id, day, limit)

    async def release_quota(self, user_id: int, day: date) -> None:
        async with self._tx() as session:
            await _release_user(session, user_id, day)

    async def _reserve(self, session: AsyncSession, user_id: int, day: date, limit: int) -> bool:
        if limit < 0:
            raise ValueError(f"quota limit must be >= 0 (0 = unlimited), not {limit}")
        which = {"of_user": user_id, "on_day": day}
        if limit:
            return await session.scalar(S.USE_UNIT_WITHIN, {**which, "limit": limit}) is not None
        return await session.scalar(S.USE_UNIT, which) is not None

    async def _count(self, session: AsyncSession, scope: str, day: date, limit: int) -> bool:
        """One more for `scope` today, unless that would pass `limit` (0: no limit)."""
        which = {"at_scope": scope, "on_day": day}
        if limit:
            return await session.scalar(S.COUNT_ONE_WITHIN, {**which, "limit": limit}) is not None
        return await session.scalar(S.COUNT_ONE, which) is not None

    async def bot_value(self, name: str, make: str) -> str:
        """The bot's value `name`; `make` becomes it if there is none yet (the first process
        to write it wins, and every process reads the same)."""
        async with self._tx() as session:
            await session.execute(
                self._insert(BotValue)
                .values(name=name, value=make)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            return (
                await session.scalar(select(BotValue.value).where(BotValue.name == name))
            ) or make

    async def counted(self, scope: str, day: date) -> int:
        async with self._tx(read_only=True) as session:
            used = await session.scalar(
                select(Counter.used).where(Counter.scope == scope, Counter.day == day)
            )
            return used or 0

    async def add_spend(self, day: date, micros: int) -> None:
        async with self._tx() as session:
            await _add_spend(session, (day, micros), self._insert)

    async def clear_flag(self, flag: str, day: date) -> None:
        """Lower a flag `first_time_today` raised (what it stood for did not happen)."""
        async with self._tx() as session:
            await session.execute(delete(Counter).where(Counter.scope == flag, Counter.day == day))

    async def first_time_today(self, flag: str, day: date) -> bool:
        """True for the first caller of the day (of any process) to raise `flag`."""
        async with self._tx() as session:
            inserted = await session.execute(
                self._insert(Counter)
                .values(scope=flag, day=day, used=1)
                .on_conflict_do_nothing(index_elements=["scope", "day"])
                .returning(Counter.used)
            )
            return inserted.scalar_one_or_none() is not None

    async def handled(self, platform: str, event_id: str) -> bool:
        async with self._tx(read_only=True) as session:
            found = await session.scalar(
                select(HandledEvent.event_id).where(
                    HandledEvent.platform == platform, HandledEvent.event_id == event_id
                )
            )
            return found is not None

    async def event_and_user(
        self, platform: str, event_id: str, user: UserRef | None
    ) -> tuple[bool, UserRecord | None]:
        async with self._tx(read_only=True) as session:
            seen = await session.scalar(S.IS_HANDLED, {"platform": platform, "event_id": event_id})
            if seen is not None or user is None:
                return seen is not None, None
            row = (
                await session.execute(S.USER, {"platform": user.platform, "id": user.id})
            ).first()
            return False, None if row is None else _user_record(row)

    async def events_and_users(
        self, platform: str, event_ids: list[str], users: list[str]
    ) -> tuple[set[str], dict[str, UserRecord]]:
        async with self._tx(read_only=True) as session:
            among = {"platform": platform, "event_ids": event_ids}
            seen = set(await session.scalars(S.HANDLED_AMONG, among))
            rows = await session.execute(S.USERS_AMONG, {"platform": platform, "ids": users})
            return seen, {row.external_id: _user_record(row) for row in rows}

    async def mark_handled(self, platform: str, event_id: str) -> bool:
        async with self._tx() as session:
            return await self._mark_handled(session, platform, event_id)

    async def mark_all_handled(self, platform: str, event_ids: list[str]) -> None:
        events = [{"platform": platform, "event_id": i, "now": utcnow()} for i in event_ids]
        async with self._tx(small=True) as session:
            await session.execute(S.NOT_RECEIVED, events)
            await session.execute(S.MARK_HANDLED_ONLY, events)

    async def receive(self, platform: str, events: list[tuple[str, str]]) -> None:
        async with self._tx() as session:
            await session.execute(
                self._insert(ReceivedEvent)
                .values([{"platform": platform, "event_id": i, "payload": p} for i, p in events])
                .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            )
            # One handled while it was on its way here (its lane is quick) is not kept: its
            # words would otherwise stay until the next start, when it would only be skipped.
            handled = select(HandledEvent.event_id).where(HandledEvent.platform == platform)
            await session.execute(
                delete(ReceivedEvent).where(
                    ReceivedEvent.platform == platform,
                    ReceivedEvent.event_id.in_([i for i, _ in events]),
                    ReceivedEvent.event_id.in_(handled),
                )
            )

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

    async def _mark_handled(self, session: AsyncSession, platform: str, event_id: str) -> bool:
        """Record the event as handled (no longer only received); False if it was already."""
        which = {"platform": platform, "event_id": event_id}
        await session.execute(S.NOT_RECEIVED, which)
        return await session.scalar(S.MARK_HANDLED, {**which, "now": utcnow()}) is not None

    async def forget_handled(self, before: datetime) -> None:
        async with self._tx() as session:
            await session.execute(delete(HandledEvent).where(HandledEvent.handled_at < before))

    async def grant(
        self, user_id: int, day: date, extra: int, *, event: tuple[str, str] | None = None
    ) -> bool:
        """`extra` more edits for the user today (an admin's /grant). `event` (platform, event
        id): the command's, recorded as handled in the same transaction, so a redelivered
        /grant grants nothing (False)."""
        async with self._tx() as session:
            if event is not None and not await self._mark_handled(session, *event):
                return False
            await session.execute(
                self._insert(QuotaUsage)
                .values(user_id=user_id, day=day, used=0, granted=0)
                .on_conflict_do_nothing(index_elements=["user_id", "day"])
            )
            await session.execute(
                update(QuotaUsage)
                .where(QuotaUsage.user_id == user_id, QuotaUsage.day == day)
                .values(granted=QuotaUsage.granted + extra)
                .execution_options(synchronize_session=False)
            )
            return True

    async def granted(self, user_id: int, day: date) -> int:
        async with self._tx(read_only=True) as session:
            value = await session.scalar(
                select(QuotaUsage.granted).where(
                    QuotaUsage.user_id == user_id, QuotaUsage.day == day
                )
            )
            return value or 0

    async def set_banned(self, platform: str, external_id: str, banned: bool) -> bool:
        """Ban or unban a user. A ban of someone the bot has not seen yet is kept for them (it
        holds from their first message); an unban of an unknown id: False."""
        async with self._tx() as session:
            if banned:
                await session.execute(
                    self._insert(User)
                    .values(platform=platform, external_id=external_id)
                    .on_conflict_do_nothing(index_elements=["platform", "external_id"])
                )
            changed = await session.scalar(
                update(User)
                .where(User.platform == platform, User.external_id == external_id)
                .values(banned=banned, ban_told=False)
                .returning(User.id)
                .execution_options(synchronize_session=False)
            )
            return changed is not None

    async def ban_status(self, user_id: int) -> tuple[bool, bool]:
        """(banned, told already), marking a banned user as told: one clear reply, no more."""
        async with self._tx(read_only=True) as session:
            row = (
                await session.execute(select(User.banned, User.ban_told).where(User.id == user_id))
            ).one()
        banned, told = bool(row[0]), bool(row[1])
        if banned and not told:
            async with self._tx() as session:
                await session.execute(
                    update(User)
                    .where(User.id == user_id)
                    .values(ban_told=True)
                    .execution_options(synchronize_session=False)
                )
        return banned, told

    async def stats(self, day: date, top: int = 5) -> Stats:
        today = Edit.quota_day == day
        async with self._tx(read_only=True) as session:
            by_status = dict(
                (await session.execute(
                    select(Edit.status, func.count()).where(today).group_by(Edit.status)
                )).tuples().all()
            )  # fmt: skip
            api_ms = sorted(
                await session.scalars(
                    select(Edit.api_ms).where(today, Edit.status == EditStatus.SUCCEEDED)
                )
            )
            total = await session.scalar(
                select(func.count()).where(Edit.status == EditStatus.SUCCEEDED)
            )
            leaders = (
                (
                    await session.execute(
                        select(User.platform, User.external_id, User.name, QuotaUsage.used)
                        .join(User, User.id == QuotaUsage.user_id)
                        .where(QuotaUsage.day == day, QuotaUsage.used > 0)
                        .order_by(QuotaUsage.used.desc())
                        .limit(top)
                    )
                )
                .tuples()
                .all()
            )
            charged = await session.scalar(
                select(Counter.used).where(Counter.scope == ALL_EDITS, Counter.day == day)
            )
            spent = await session.scalar(
                select(Counter.used).where(Counter.scope == SPEND, Counter.day == day)
            )
        return Stats(
            charged_today=charged or 0,
            succeeded_today=by_status.get(EditStatus.SUCCEEDED, 0),
            failed_today=by_status.get(EditStatus.FAILED, 0) + by_status.get(EditStatus.REFUSED, 0),
            median_api_ms=api_ms[len(api_ms) // 2] if api_ms else 0,
            succeeded_total=total or 0,
            top_users=tuple(
                (f"{name or external_id} ({platform}:{external_id})", used)
                for platform, external_id, name, used in leaders
            ),
            spent_today=(spent or 0) / 1_000_000,
        )

    async def find_user(self, platform: str, external_id: str) -> UserRecord | None:
        async with self._tx(read_only=True) as session:
            user = await session.scalar(
                select(User).where(User.platform == platform, User.external_id == external_id)
            )
            return None if user is None else _user_record(user)

    async def quota_used(self, user_id: int, day: date) -> int:
        async with self._tx(read_only=True) as session:
            used = await session.scalar(
                select(QuotaUsage.used).where(QuotaUsage.user_id == user_id, QuotaUsage.day == day)
            )
            return used or 0

    # images

    async def save_image(self, data: bytes, mime: str, width: int, height: int) -> int:
        """Store `data` unless the same bytes are stored already; the id either way. Kept for
        the full retention from now, whenever the same bytes were stored before."""
        async with self._tx() as session:
            return await self._save_image(session, NewImage(data, mime, width, height))

    async def _save_image(self, session: AsyncSession, image: NewImage) -> int:
        # One statement stores it and returns its id (one trip, not three). An expired image
        # gave its hash up (see _EXPIRE), so this never finds one; the same bytes stored before
        # count as stored now: retention starts again.
        now = utcnow()
        image_id = await session.scalar(
            self._insert(Image)
            .values(
                sha256=hashlib.sha256(image.data).hexdigest(),
                mime=image.mime,
                width=image.width,
                height=image.height,
                size_bytes=len(image.data),
                data=image.data,
                created_at=now,
            )
            .on_conflict_do_update(index_elements=["sha256"], set_={"created_at": now})
            .returning(Image.id)
        )
        assert image_id is not None
        return image_id

    async def keep_upload(
        self,
        user_id: int,
        platform: str,
        chat_id: str,
        upload: FileRef,
        origin: MessageRef | None,
    ) -> int:
        async with self._tx() as session:
            return await self._keep_upload(session, user_id, platform, chat_id, upload, origin)

    async def fill_image(
        self, image_id: int, data: bytes, mime: str, width: int, height: int
    ) -> None:
        """The fetched bytes of a pending image (not deduplicated: rows point at it already)."""
        async with self._tx() as session:
            await session.execute(_fill(image_id, NewImage(data, mime, width, height)))

    async def expire_images(self, before: datetime, limit: int = 500) -> int:
        """Forget the bytes (or the platform file) of images kept since before `before`; their
        rows stay, so edits and counts keep their meaning. How many were expired."""
        async with self._tx() as session:
            old = (
                select(Image.id)
                .where(Image.created_at < before, Image.mime != EXPIRED)
                .limit(limit)
                .scalar_subquery()
            )
            expired = await session.execute(
                update(Image)  # checked again on the row: stored again meanwhile, it stays
                .where(Image.id.in_(old), Image.created_at < before)
                .values(_EXPIRE)
                .returning(Image.id)
                .execution_options(synchronize_session=False)
            )
            return len(expired.all())

    async def forget_user(self, user_id: int) -> int | None:
        """Forget a user, in one transaction: their words (the edits' prompts, drawn words,
        errors and answers, their name and settings) and their pictures (the photos they sent,
        also those no edit used, and their results). A message that showed one of those
        pictures stays known as forgotten, so a reply to it is told the picture has expired
        rather than editing it again. A picture another user sent, or another user's edit or
        current image uses, stays for them: the user's messages lose their link to it, and the
        user's edits point at an expired picture instead. The edits' rows stay as empty
        records (their ids are in buttons, and must not be reused), and so does their quota
        usage (no way around the quota). The number of edits; None, changing nothing, while one
        of theirs is open."""
        mine = Edit.user_id == user_id
        async with self._tx() as session:
            if await session.scalar(
                select(func.count()).where(mine, Edit.status.in_(EditStatus.OPEN))
            ):
                return None
            edit_ids = list(await session.scalars(select(Edit.id).where(mine)))
            images = await self._images_of(session, user_id)
            await session.execute(
                update(Edit)
                .where(mine)
                .values(prompt="", negative_prompt="", error=None, answer=None, layer=None,
                        reply_to=None, message_id=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            await session.execute(delete(ChatHead).where(ChatHead.user_id == user_id))
            await session.execute(
                update(User).where(User.id == user_id)
                .values(name=None, fixed_seed=None, steps=None, cfg_scale=None, text_mode=None,
                        negative_prompt="", image_size=None)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            shared = await _used_by_others(session, user_id, images)
            gone = images - shared
            # A message showing a forgotten picture keeps its link, now to an expired image.
            await session.execute(
                update(ShownMessage)
                .where(ShownMessage.image_id.in_(gone))
                .values(edit_id=None)
                .execution_options(synchronize_session=False)
            )
            # Their messages lose what others keep: their edits' results, the photos they sent.
            sent = select(Image.id).where(Image.id.in_(shared), Image.user_id == user_id)
            await session.execute(
                delete(ShownMessage).where(
                    or_(ShownMessage.edit_id.in_(edit_ids), ShownMessage.image_id.in_(sent))
                )
            )
            await session.execute(
                update(Image)
                .where(Image.id.in_(gone))
                .values(_EXPIRE)
                .execution_options(synchronize_session=False)
            )
            if shared:  # their edits no longer reach what others use
                stand_in = await _forgotten_image(session)
                for column in (Edit.source_image_id, Edit.result_image_id):
                    await session.execute(
                        update(Edit)
                        .where(mine, column.in_(shared))
                        .values({column: stand_in})
                        .execution_options(synchronize_session=False)
                    )
            return len(edit_ids)

    @staticmethod
    async def _images_of(session: AsyncSession, user_id: int) -> set[int]:
        mine = Edit.user_id == user_id
        images = set(await session.scalars(select(Edit.source_image_id).where(mine)))
        results = await session.scalars(select(Edit.result_image_id).where(mine))
        images |= {image for image in results if image is not None}
        heads = await session.scalars(select(ChatHead.image_id).where(ChatHead.user_id == user_id))
        sent = await session.scalars(select(Image.id).where(Image.user_id == user_id))
        return images | set(heads) | set(sent)

    async def expired(self, image_id: int) -> bool:
        async with self._tx(read_only=True) as session:
            return await session.scalar(select(Image.mime).where(Image.id == image_id)) == EXPIRED

    async def load_image(self, image_id: int) -> StoredImage:
        """The stored image (with `file` set and no data while it is pending); KeyError if
        there is none with this id."""
        async with self._tx(read_only=True) as session:
            image = await session.get(Image, image_id)
            if image is None:
                raise KeyError(image_id)
            if image.mime == EXPIRED:
                raise ImageExpired(f"image {image_id} expired")
            if image.mime == CANVAS:
                return StoredImage(image.id, b"", CANVAS, image.width, image.height,
                                   canvas=image.file_name)  # fmt: skip
            file = None
            if image.mime == "":  # pending: known only as a platform file
                assert image.file_platform is not None and image.file_id is not None
                file = FileRef(
                    image.file_platform, image.file_id, image.size_bytes or None, image.file_name
                )
            return StoredImage(
                id=image.id,
                data=image.data,
                mime=image.mime,
                width=image.width,
                height=image.height,
                file=file,
            )

    # edits, which are also jobs

    async def admit(
        self,
        edit: NewEdit,
        *,
        day: date,
        quota: int,
        max_waiting: int,
        upload: FileRef | None = None,
        origin: MessageRef | None = None,
        chat_quota: int = 0,
        budget: int = 0,
        unlimited: bool = False,
        canvas: tuple[str, int, int] | None = None,
        spend: Spend | None = None,
        max_uncharged: int = 0,
        claim: Lease | None = None,
    ) -> Admission:
        limits = _Limits(quota, chat_quota, budget, max_waiting, unlimited, spend, max_uncharged)

        async def admit_in(session: AsyncSession) -> Admission:
            nonlocal edit
            if edit.key is not None:
                found = await session.scalar(S.EDIT_BY_KEY, {"key": edit.key})
                if found is not None:
                    return Admission(found, duplicate=True)
            if upload is not None:
                image_id = await self._keep_upload(
                    session, edit.user_id, edit.platform, edit.chat_id, upload, origin
                )
                edit = replace(edit, source_image_id=image_id)
            elif canvas is not None:
                edit = replace(edit, source_image_id=await _new_canvas(session, *canvas))
            admission = await self._admit(session, edit, day, limits)
            if admission.refused is not None:
                return admission
            if claim is not None:
                admission = replace(admission, claimed=await self._claim_too(session, claim))
            claimed = admission.claimed
            if claimed is None or claimed.id != admission.edit_id:  # a read saved later
                place = await session.scalar(S.PLACE, {"edit_id": admission.edit_id})
                admission = replace(admission, place=place or 0)
            return admission

        try:
            admitted: Admission = await self._write(admit_in)
            return admitted
        except IntegrityError:  # the same key, admitted by another process just now
            if edit.key is None:
                raise
            async with self._tx(read_only=True) as session:
                found = await session.scalar(select(Edit.id).where(Edit.key == edit.key))
            if found is None:
                raise
            return Admission(found, duplicate=True)

    async def _keep_upload(
        self,
        session: AsyncSession,
        user_id: int,
        platform: str,
        chat_id: str,
        upload: FileRef,
        origin: MessageRef | None,
    ) -> int:
        """A new photo (pending) becomes the user's current image here, and `origin` (the
        message holding it) repliable, whether or not an edit of it is then admitted."""
        kept = await session.execute(S.NEW_IMAGE, _pending_image(upload, user_id))
        image_id: int = kept.scalar_one()
        shown = ShownImage(image_id, None)
        await _set_current(session, user_id, platform, chat_id, shown)
        if origin is not None:
            await _link(session, origin, shown)
        return image_id

    async def _admit(
        self, session: AsyncSession, edit: NewEdit, day: date, limits: _Limits
    ) -> Admission:
        # The unit first: its row lock makes one user's admissions take turns, so the count
        # below is exact on PostgreSQL too. The chat's and the bot's counters come next, each
        # checked by its own UPDATE, so a race for the last unit lets exactly one through.
        free = limits.unlimited
        if not free and limits.uncharged:  # paid calls that ended without a picture, today
            which = {"at_scope": _uncharged_scope(edit.user_id), "on_day": day}
            calls = await session.scalar(S.COUNTED, which)
            if (calls or 0) >= limits.uncharged:
                return Admission(0, refused="uncharged")
        if not await self._reserve(session, edit.user_id, day, 0 if free else limits.user):
            return Admission(0, refused="quota")
        chat = _chat_scope(edit.platform, edit.chat_id)
        if not await self._count(session, chat, day, 0 if free else limits.chat):
            await _release_user(session, edit.user_id, day)
            return Admission(0, refused="chat_quota")
        if not await self._count(session, ALL_EDITS, day, 0 if free else limits.budget):
            await _release_user(session, edit.user_id, day)
            await _uncount(session, chat, day)
            return Admission(0, refused="budget")
        if not free and limits.spend and await _spend_reached(session, day, limits.spend):
            await _release(session, edit.user_id, edit.platform, edit.chat_id, day)
            return Admission(0, refused="spend")
        turn = await _turn(session, edit.user_id)
        if limits.waiting and turn.waiting >= limits.waiting:
            await _release(session, edit.user_id, edit.platform, edit.chat_id, day)
            return Admission(0, refused="busy")
        options = edit.options
        edit_id = await session.scalar(S.NEW_EDIT, dict(
            user_id=edit.user_id,
            platform=edit.platform,
            chat_id=edit.chat_id,
            parent_edit_id=edit.parent_edit_id,
            source_image_id=edit.source_image_id,
            prompt=edit.prompt,
            steps=options.steps,
            cfg_scale=options.cfg_scale,
            requested_seed=options.seed,
            text_mode=options.text_mode,
            negative_prompt=options.negative_prompt,
            key=edit.key,
            quota_day=day,
            rank=turn.number,  # the claim's order: a user's n-th edit after others' first
            attempts=0,
            reply_to=edit.reply_to,
            language=edit.language,
            notes="",
            status=EditStatus.QUEUED,
            queued_ms=0,
            normalize_ms=0,
            api_ms=0,
            total_ms=0,
            created_at=utcnow(),
        ))  # fmt: skip
        assert edit_id is not None
        return Admission(edit_id)

    async def claim(
        self, owner: str, lease_until: datetime, platforms: list[str], *, look: bool = True
    ) -> EditRecord | None:
        for attempt in range(3):
            # SQLite has one writer: a look that finds nothing must not take a writer's turn
            # (idle workers look after every finished job), unless a job was just admitted.
            if (
                self._dialect == "sqlite"
                and (look or attempt)
                and not await self.has_queued(platforms)
            ):
                return None
            try:
                async with self._tx(small=True) as session:
                    return await self._claim(session, owner, lease_until, platforms)
            except IntegrityError:
                continue  # another process claimed this user's other job just now
        return None

    async def _claim_too(self, session: AsyncSession, lease: Lease) -> EditRecord | None:
        """The claim an idle worker would make next, in an admitting transaction: one writer's
        turn fewer per edit. On PostgreSQL, a claim that loses a race (another process took
        this user's other job just now) claims nothing, and the admission stands."""
        platforms = list(lease.platforms)
        if self._dialect != "postgresql":  # SQLite: this transaction is the only writer
            return await self._claim(session, lease.owner, lease.until, platforms)
        try:
            async with session.begin_nested():
                return await self._claim(session, lease.owner, lease.until, platforms)
        except IntegrityError:
            return None

    async def _claim(
        self, session: AsyncSession, owner: str, lease_until: datetime, platforms: list[str]
    ) -> EditRecord | None:
        busy_users = select(Edit.user_id).where(Edit.status.in_(EditStatus.WORKING))
        pick = (
            select(Edit.id)
            .where(
                Edit.status == EditStatus.QUEUED,
                Edit.platform.in_(platforms),
                Edit.user_id.not_in(busy_users),
            )
            .order_by(Edit.rank, Edit.id)
            .limit(1)
        )
        if self._dialect == "postgresql":  # other processes skip the row we are taking
            pick = pick.with_for_update(skip_locked=True)
        edit_id = await session.scalar(pick)
        if edit_id is None:
            return None
        row = await session.scalar(
            update(Edit)
            .where(Edit.id == edit_id, Edit.status == EditStatus.QUEUED)
            .values(
                status=EditStatus.RUNNING,
                lease_owner=owner,
                lease_until=lease_until,
                attempts=Edit.attempts + 1,
            )
            .returning(Edit)
            .execution_options(synchronize_session=False)
        )
        return None if row is None else _edit_record(row)

    async def has_queued(self, platforms: list[str]) -> bool:
        """Whether a queued edit could be claimed now (its user has none at the API)."""
        busy_users = select(Edit.user_id).where(Edit.status.in_(EditStatus.WORKING))
        query = select(Edit.id).where(
            Edit.status == EditStatus.QUEUED, Edit.user_id.not_in(busy_users)
        )
        async with self._tx(read_only=True) as session:
            found = await session.scalar(query.where(Edit.platform.in_(platforms)).limit(1))
            return found is not None

    async def renew_leases(self, owner: str, edit_ids: list[int], until: datetime) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.id.in_(edit_ids), Edit.lease_owner == owner)
                .where(Edit.status.in_(EditStatus.WORKING))
                .values(lease_until=until)
                .execution_options(synchronize_session=False)
            )

    async def requeue_expired(self, now: datetime, *, keep: list[int] | None = None) -> int:
        expired = [Edit.status.in_(EditStatus.WORKING), Edit.lease_until < now]
        if keep:
            expired.append(Edit.id.not_in(keep))
        async with self._tx() as session:
            result = await session.execute(
                update(Edit)
                .where(*expired)
                .values(status=EditStatus.QUEUED, lease_owner=None, lease_until=None)
                .returning(Edit.id)
                .execution_options(synchronize_session=False)
            )
            return len(result.all())

    async def requeue(self, owner: str, edit_ids: list[int]) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.id.in_(edit_ids), Edit.lease_owner == owner)
                .where(Edit.status.in_(EditStatus.WORKING))
                .values(  # handed back, not died: no attempt spent
                    status=EditStatus.QUEUED,
                    lease_owner=None,
                    lease_until=None,
                    attempts=Edit.attempts - 1,
                )
                .execution_options(synchronize_session=False)
            )

    async def record_result(
        self,
        edit_id: int,
        result_image_id: int,
        seed: int | None,
        notes: tuple[str, ...],
        timings: EditTimings,
        *,
        owner: str | None = None,
    ) -> bool:
        which = (
            [Edit.id == edit_id]
            if owner is None
            else [Edit.id == edit_id, Edit.lease_owner == owner]
        )
        async with self._tx() as session:
            result = await session.execute(
                update(Edit)
                .where(*which)
                .values(
                    result_image_id=result_image_id,
                    seed=seed,
                    notes=",".join(notes),
                    **_timing_values(timings),
                )
                .returning(Edit.id)
                .execution_options(synchronize_session=False)
            )
            return result.scalar_one_or_none() is not None

    async def keep_result(
        self,
        edit_id: int,
        result: NewImage,
        seed: int | None,
        notes: tuple[str, ...],
        timings: EditTimings,
        *,
        owner: str,
        source: tuple[int, NewImage] | None = None,
        model: str | None = None,
        spent: tuple[date, int] | None = None,
    ) -> int | None:
        try:
            async with self._tx() as session:
                if source is not None:
                    await session.execute(_fill(*source))
                result_id = await self._save_image(session, result)
                kept = await session.scalar(
                    update(Edit)
                    .where(Edit.id == edit_id, Edit.lease_owner == owner)
                    .where(Edit.status == EditStatus.RUNNING)
                    .values(
                        result_image_id=result_id,
                        seed=seed,
                        model=model,
                        notes=",".join(notes),
                        status=EditStatus.DELIVERING,
                        delivery_started=True,
                        **_timing_values(timings),
                    )
                    .returning(Edit.id)
                    .execution_options(synchronize_session=False)
                )
                if kept is None:
                    raise _NotKept  # keep nothing: roll the images back too
                await _add_spend(session, spent, self._insert)
                return result_id
        except _NotKept:
            return None

    async def mark_sent(self, edit_id: int, owner: str) -> bool:
        async with self._tx(small=True) as session:
            sent = await session.scalar(
                update(Edit)
                .where(Edit.id == edit_id, Edit.lease_owner == owner)
                .where(Edit.status == EditStatus.RUNNING)
                .values(api_sent=True)
                .returning(Edit.id)
                .execution_options(synchronize_session=False)
            )
            return sent is not None

    async def start_delivery(self, edit_id: int, owner: str) -> bool:
        async with self._tx(small=True) as session:
            result = await session.execute(
                update(Edit)
                .where(Edit.id == edit_id, Edit.lease_owner == owner)
                .where(Edit.status == EditStatus.RUNNING)
                .values(status=EditStatus.DELIVERING, delivery_started=True)
                .returning(Edit.id)
                .execution_options(synchronize_session=False)
            )
            return result.scalar_one_or_none() is not None

    async def finish_edit(
        self,
        edit_id: int,
        status: str,
        *,
        error: str | None = None,
        timings: EditTimings | None = None,
        message: MessageRef | None = None,
        answer: str | None = None,
        owner: str | None = None,
        spent: tuple[date, int] | None = None,
        uncharged_call: date | None = None,
    ) -> bool:
        """End an open edit (if `owner` is given, only while it holds the lease):
        SUCCEEDED from delivering (making its result current and `message` repliable), FAILED
        or REFUSED from any open state (giving its unit back, keeping `answer` for its user
        until `answered`; `spent`: what a call that may have been billed cost, added to that
        day's spend; `uncharged_call`: the day a paid call of the user's ended without a
        charged picture, counted for MAX_UNCHARGED_CALLS). False, changing nothing, if it had
        ended already or is not `owner`'s."""
        succeeded = status == EditStatus.SUCCEEDED
        since = (EditStatus.DELIVERING,) if succeeded else EditStatus.OPEN
        values: dict[str, Any] = {
            "status": status, "error": error, "finished_at": utcnow(), "lease_owner": None,
            "lease_until": None, "message_id": message.message_id if message else None,
            "answer": answer,
        }  # fmt: skip
        if timings is not None:
            values.update(_timing_values(timings))
        async with self._tx() as session:
            which = [Edit.id == edit_id, Edit.status.in_(since)]
            if owner is not None:
                which.append(Edit.lease_owner == owner)
            row = await session.scalar(
                update(Edit)
                .where(*which)
                .values(**values)
                .returning(Edit)
                .execution_options(synchronize_session=False)
            )
            if row is None:
                return False
            await _add_spend(session, spent, self._insert)
            if uncharged_call is not None and not succeeded:
                scope = _uncharged_scope(row.user_id)
                await self._count(session, scope, uncharged_call, 0)
            if not succeeded:
                if row.quota_day is not None:
                    await _release(session, row.user_id, row.platform, row.chat_id, row.quota_day)
                return True
            assert row.result_image_id is not None
            shown = ShownImage(row.result_image_id, row.id)
            await _set_current(session, row.user_id, row.platform, row.chat_id, shown)
            if message is not None:
                await _link(session, message, shown)
            return True

    async def cancel_edits(
        self, user_id: int, platform: str, chat_id: str, *, edit_id: int | None = None
    ) -> list[EditRecord]:
        which = [Edit.user_id == user_id, Edit.platform == platform, Edit.chat_id == chat_id]
        if edit_id is not None:
            which.append(Edit.id == edit_id)
        async with self._tx() as session:
            rows = (
                await session.scalars(
                    update(Edit)
                    .where(*which, Edit.delivery_started.is_(False), Edit.api_sent.is_(False))
                    .where(Edit.status.in_((EditStatus.QUEUED, EditStatus.RUNNING)))
                    .values(
                        status=EditStatus.CANCELLED,
                        error="cancelled",
                        finished_at=utcnow(),
                        lease_owner=None,
                        lease_until=None,
                    )
                    .returning(Edit)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            for row in rows:
                if row.quota_day is not None:
                    await _release(session, row.user_id, row.platform, row.chat_id, row.quota_day)
            return [_edit_record(row) for row in rows]

    async def answered(self, edit_id: int) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.id == edit_id)
                .values(answer=None)
                .execution_options(synchronize_session=False)
            )

    async def take_leftovers(
        self, platforms: list[str], ended_before: datetime, limit: int = 20
    ) -> list[EditRecord]:
        pick = (
            select(Edit)
            .where(Edit.status.not_in(EditStatus.OPEN), Edit.platform.in_(platforms))
            .where(Edit.finished_at < ended_before)
            .where(or_(Edit.note_id.is_not(None), Edit.answer.is_not(None)))
            .order_by(Edit.id)
            .limit(limit)
        )
        if self._dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self._tx() as session:
            taken = [_edit_record(row) for row in await session.scalars(pick)]
            if not taken:
                return []
            await session.execute(
                update(Edit)
                .where(Edit.id.in_([edit.id for edit in taken]))
                .values(note_id=None, answer=None)
                .execution_options(synchronize_session=False)
            )
            # A note is shared by its user's edits in a chat: one still open keeps it.
            notes = {edit.note_id for edit in taken if edit.note_id is not None}
            in_use = set(
                await session.scalars(
                    select(Edit.note_id).where(
                        Edit.status.in_(EditStatus.OPEN), Edit.note_id.in_(notes)
                    )
                )
            )
            return [replace(e, note_id=None) if e.note_id in in_use else e for e in taken]

    async def record_drawn(self, new: NewEdit, result: NewImage, layer: str) -> tuple[int, int]:
        """A picture the bot drew itself (no API call, no unit): kept as a delivered edit of
        `new.source_image_id` with its text layer. (edit id, result image id)."""
        async with self._tx() as session:
            result_id = await self._save_image(session, result)
            row = Edit(
                user_id=new.user_id, platform=new.platform, chat_id=new.chat_id,
                parent_edit_id=new.parent_edit_id, source_image_id=new.source_image_id,
                prompt=new.prompt, result_image_id=result_id, layer=layer,
                steps=new.options.steps, cfg_scale=new.options.cfg_scale,
                text_mode=new.options.text_mode, negative_prompt="",
                status=EditStatus.SUCCEEDED, reply_to=new.reply_to, language=new.language,
                rank=0, attempts=0, notes="", queued_ms=0, normalize_ms=0, api_ms=0,
                total_ms=0, created_at=utcnow(), finished_at=utcnow(),
            )  # fmt: skip
            session.add(row)
            await session.flush()
            return row.id, result_id

    async def set_note(self, edit_ids: list[int], note_id: str) -> None:
        await self._write(lambda session: session.execute(
            S.SET_NOTE, {"edit_ids": edit_ids, "new_note": note_id}
        ))  # fmt: skip

    async def forget_note(self, platform: str, chat_id: str, note_id: str) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.platform == platform, Edit.chat_id == chat_id)
                .where(Edit.note_id == note_id)
                .values(note_id=None)
                .execution_options(synchronize_session=False)
            )

    async def queue_places(self, edit_ids: list[int]) -> dict[int, int]:
        wanted = set(edit_ids)
        async with self._tx(read_only=True) as session:
            if len(wanted) <= PLACES_ONE_BY_ONE:  # counted in the index, not read out
                places = {i: await session.scalar(S.PLACE, {"edit_id": i}) for i in wanted}
                return {i: place for i, place in places.items() if place}
            line = await session.scalars(
                select(Edit.id).where(Edit.status == EditStatus.QUEUED).order_by(Edit.rank, Edit.id)
            )
            return {edit_id: place for place, edit_id in enumerate(line, 1) if edit_id in wanted}

    async def get_edit(self, edit_id: int) -> EditRecord | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(Edit, edit_id)
            return None if row is None else _edit_record(row)

    # messages and current images

    async def link_message(self, message: MessageRef, shown: ShownImage) -> None:
        """Remember that `message` shows `shown` (replacing what it showed before)."""
        async with self._tx() as session:
            await _link(session, message, shown)

    async def shown_in(self, message: MessageRef) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(
                ShownMessage, (message.platform, message.chat_id, message.message_id)
            )
            return None if row is None else ShownImage(image_id=row.image_id, edit_id=row.edit_id)

    async def shown_in_chat(self, image_id: int, platform: str, chat_id: str) -> bool:
        async with self._tx(read_only=True) as session:
            linked = await session.scalar(
                select(ShownMessage.message_id)
                .where(
                    ShownMessage.platform == platform,
                    ShownMessage.chat_id == chat_id,
                    ShownMessage.image_id == image_id,
                )
                .limit(1)
            )
            return linked is not None

    async def set_current(
        self, user_id: int, platform: str, chat_id: str, shown: ShownImage
    ) -> None:
        async with self._tx() as session:
            await _set_current(session, user_id, platform, chat_id, shown)

    async def current(self, user_id: int, platform: str, chat_id: str) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(ChatHead, (user_id, platform, chat_id))
            return None if row is None else ShownImage(image_id=row.image_id, edit_id=row.edit_id)


async def _set_current(
    session: AsyncSession, user_id: int, platform: str, chat_id: str, shown: ShownImage
) -> None:
    await session.execute(S.SET_CURRENT, {
        "user_id": user_id, "platform": platform, "chat_id": chat_id,
        "image_id": shown.image_id, "edit_id": shown.edit_id, "now": utcnow(),
    })  # fmt: skip


async def _link(session: AsyncSession, message: MessageRef, shown: ShownImage) -> None:
    await session.execute(S.LINK_MESSAGE, {
        "platform": message.platform, "chat_id": message.chat_id,
        "message_id": message.message_id, "image_id": shown.image_id,
        "edit_id": shown.edit_id, "now": utcnow(),
    })  # fmt: skip


def _as_known(user: User | Row[Any], ref: UserRef) -> bool:
    """Whether `ref` tells nothing new about `user` (a missing name or language is no news)."""
    return (ref.name is None or ref.name == user.name) and (
        ref.language is None or ref.language == user.language
    )


def _user_record(user: User | Row[Any]) -> UserRecord:
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
            image_size=user.image_size,
        ),
        banned=user.banned,
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
        key=row.key,
        quota_day=row.quota_day,
        attempts=row.attempts,
        reply_to=row.reply_to,
        language=row.language,
        note_id=row.note_id,
        layer=row.layer,
        answer=row.answer,
        finished_at=row.finished_at,
        notes=tuple(note for note in row.notes.split(",") if note),
        message_id=row.message_id,
        delivery_started=row.delivery_started,
        model=row.model,
    )


def _pending_image(file: FileRef, user_id: int) -> dict[str, Any]:
    return dict(  # mime "" marks it pending; the sha256 is a placeholder until it is fetched
        sha256=f"pending-{secrets.token_hex(16)}", mime="", width=0, height=0,
        size_bytes=file.size or 0, data=b"",
        file_platform=file.platform, file_id=file.file_id, file_name=file.filename,
        user_id=user_id, created_at=utcnow(),
    )  # fmt: skip


def _timing_values(timings: EditTimings) -> dict[str, int]:
    return {
        "queued_ms": timings.queued_ms,
        "normalize_ms": timings.normalize_ms,
        "api_ms": timings.api_ms,
        "total_ms": timings.total_ms,
    }


@dataclass(frozen=True)
class _Turn:
    waiting: int  # the user's queued edits
    number: int  # the new edit's number in the claim's order (Edit.rank)


async def _turn(session: AsyncSession, user_id: int) -> _Turn:
    """A new edit's number counts the user's edits open now or ended in the last FAIR_WINDOW
    (drawings and cancelled requests aside): claims take lower numbers first, so a user who
    just arrived goes ahead of one whose earlier edits are still fresh, and a burst serves
    everyone's first edit before anyone's second. The number only ever grows along a user's
    waiting edits, so their own order holds. Fixed once admitted: an edit may keep a number a
    little too high after FAIR_WINDOW, never one too low."""
    open_edits = (await session.execute(S.OPEN_BY_STATUS, {"user_id": user_id})).tuples().all()
    since = utcnow() - FAIR_WINDOW
    ended = await session.scalar(S.ENDED_SINCE, {"user_id": user_id, "since": since})
    waiting = next((n for n, _, status in open_edits if status == EditStatus.QUEUED), 0)
    last = max((rank for _, rank, status in open_edits if status == EditStatus.QUEUED), default=-1)
    number = sum(n for n, _, _ in open_edits) + (ended or 0)
    return _Turn(waiting, max(number, last + 1))


async def _release(
    session: AsyncSession, user_id: int, platform: str, chat_id: str, day: date
) -> None:
    """Take back one admitted edit's units: the user's, the chat's and the bot's."""
    await _release_user(session, user_id, day)
    await _uncount(session, _chat_scope(platform, chat_id), day)
    await _uncount(session, ALL_EDITS, day)


async def _spend_reached(session: AsyncSession, day: date, spend: Spend) -> bool:
    """Whether one more edit could take the day's spend past its cap, counting every edit not
    paid for yet (queued or at the API) at the dearest price. Runs after the bot's counter was
    updated: that row's lock makes admissions take turns, so the count is exact on PostgreSQL
    too."""
    # Unpaid first: an edit kept between the two reads is then counted twice, never missed.
    unpaid = (EditStatus.QUEUED, EditStatus.RUNNING)  # a kept result's cost is in `spent`
    open_edits = await session.scalar(select(func.count()).where(Edit.status.in_(unpaid)))
    spent = await session.scalar(
        select(Counter.used).where(Counter.scope == SPEND, Counter.day == day)
    )
    return (spent or 0) + ((open_edits or 0) + 1) * spend.per_edit > spend.cap


async def _add_spend(session: AsyncSession, spent: tuple[date, int] | None, insert: Any) -> None:
    """Add (day, micro-dollars) to the day's spend, in the caller's transaction."""
    if spent is None or spent[1] <= 0:
        return
    day, micros = spent
    await session.execute(
        insert(Counter)
        .values(scope=SPEND, day=day, used=micros)
        .on_conflict_do_update(
            index_elements=["scope", "day"], set_={"used": Counter.used + micros}
        )
    )


async def _release_user(session: AsyncSession, user_id: int, day: date) -> None:
    """Take back one reserved unit of the user (never below zero)."""
    await session.execute(
        update(QuotaUsage)
        .where(QuotaUsage.user_id == user_id, QuotaUsage.day == day, QuotaUsage.used > 0)
        .values(used=QuotaUsage.used - 1)
        .execution_options(synchronize_session=False)
    )


async def _uncount(session: AsyncSession, scope: str, day: date) -> None:
    await session.execute(
        update(Counter)
        .where(Counter.scope == scope, Counter.day == day, Counter.used > 0)
        .values(used=Counter.used - 1)
        .execution_options(synchronize_session=False)
    )


def _uncharged_scope(user_id: int) -> str:
    """The counter of a user's paid calls that ended without a charged picture."""
    return f"uncharged:{user_id}"


def _chat_scope(platform: str, chat_id: str) -> str:
    return f"chat:{platform}:{chat_id}"


@dataclass(frozen=True)
class _Limits:
    user: int  # units per user per day (0: no limit)
    chat: int  # per chat per day, for group chats (0: no limit)
    budget: int  # for the whole bot per day (0: no limit)
    waiting: int  # queued edits per user (0: no limit)
    unlimited: bool  # an admin: counted, never refused
    spend: Spend | None  # the day's cap on the backends' bill (None: no cap)
    uncharged: int  # a user's paid calls per day that may end without a picture (0: no limit)


async def _used_by_others(session: AsyncSession, user_id: int, images: set[int]) -> set[int]:
    """Those of `images` another user sent, or another user's edit or current image uses."""
    others = Edit.user_id != user_id
    shared = set(
        await session.scalars(
            select(Image.id).where(Image.id.in_(images), Image.user_id != user_id)
        )
    )
    shared |= set(
        await session.scalars(
            select(Edit.source_image_id).where(others, Edit.source_image_id.in_(images))
        )
    )
    shared |= set(
        await session.scalars(
            select(Edit.result_image_id).where(others, Edit.result_image_id.in_(images))
        )
    )
    heads = ChatHead.user_id != user_id
    shared |= set(
        await session.scalars(select(ChatHead.image_id).where(heads, ChatHead.image_id.in_(images)))
    )
    return shared


async def _forgotten_image(session: AsyncSession) -> int:
    """A new expired image: what a forgotten edit shows instead of a picture others use."""
    row = Image(
        sha256=f"forgotten-{secrets.token_hex(16)}", mime=EXPIRED, width=0, height=0,
        size_bytes=0, data=b"", created_at=utcnow(),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row.id


async def _new_canvas(session: AsyncSession, size: str, width: int, height: int) -> int:
    """The source of a new image from text: no picture, only the size to make."""
    row = Image(
        sha256=f"canvas-{secrets.token_hex(16)}", mime=CANVAS, width=width, height=height,
        size_bytes=0, data=b"", file_name=size, created_at=utcnow(),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row.id


class _NotKept(Exception):
    """Rolls back a transaction whose edit is no longer the caller's to change."""


def _fill(image_id: int, image: NewImage) -> Any:
    """UPDATE giving a pending image its fetched bytes (only while it is pending)."""
    return (
        update(Image)
        .where(Image.id == image_id, Image.mime == "")
        .values(
            data=image.data,
            mime=image.mime,
            width=image.width,
            height=image.height,
            size_bytes=len(image.data),
        )
        .execution_options(synchronize_session=False)
    )
