"""`SqlAccounts`: users (settings, bans, /forget), their units per day and the grants that add
to them, the bot's counters, spend, flags and values, and the operator's stats."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import EditStatus, Stats, UserRecord, UserRef, UserSettings
from storage import ledger
from storage import statements as S
from storage.base import SqlBase
from storage.events import mark_handled_in
from storage.images import EXPIRE, forgotten_image
from storage.ledger import ALL_EDITS, SPEND
from storage.models import (
    BotValue,
    ChatHead,
    Counter,
    Edit,
    EditSource,
    Image,
    QuotaUsage,
    ShownMessage,
    User,
    utcnow,
)
from storage.records import as_known, user_record


class SqlAccounts(SqlBase):
    # users and settings

    async def get_or_create_user(self, ref: UserRef, *, new: bool = False) -> UserRecord:
        # Most calls find the user as they were: a read, not a write (SQLite has one writer).
        if not new:
            async with self._tx(read_only=True) as session:
                known = (
                    await session.execute(S.USER, {"platform": ref.platform, "id": ref.id})
                ).first()
                if known is not None and as_known(known, ref):
                    return user_record(known)

        async def make_in(session: AsyncSession) -> UserRecord:
            made = {"platform": ref.platform, "id": ref.id, "name": ref.name,
                    "language": ref.language, "now": utcnow()}  # fmt: skip
            return user_record((await session.execute(S.MAKE_USER, made)).one())

        # With the other small writes of the moment (a burst brings many new users at once).
        record: UserRecord = await self._write(make_in)
        return record

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

    # the bot's counters, values and flags

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

    async def add_spend(self, day: date, micros: int) -> None:
        async with self._tx() as session:
            await ledger.add_spend(session, (day, micros))

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

    # units, grants and bans

    async def quota_used(self, user_id: int, day: date) -> int:
        async with self._tx(read_only=True) as session:
            used = await session.scalar(
                select(QuotaUsage.used).where(QuotaUsage.user_id == user_id, QuotaUsage.day == day)
            )
            return used or 0

    async def grant(
        self, user_id: int, day: date, extra: int, *, event: tuple[str, str] | None = None
    ) -> bool:
        """`extra` more edits for the user today (an admin's /grant). `event` (platform, event
        id): the command's, recorded as handled in the same transaction, so a redelivered
        /grant grants nothing (False)."""
        async with self._tx() as session:
            if event is not None and not await mark_handled_in(session, *event):
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

    async def find_user(self, platform: str, external_id: str) -> UserRecord | None:
        async with self._tx(read_only=True) as session:
            user = await session.scalar(
                select(User).where(User.platform == platform, User.external_id == external_id)
            )
            return None if user is None else user_record(user)

    async def units_used_today(self, day: date) -> int:
        """The units the whole bot used on `day` (GLOBAL_DAILY_BUDGET's counter)."""
        query = select(Counter.used).where(Counter.scope == ALL_EDITS, Counter.day == day)
        async with self._tx(read_only=True) as session:
            return await session.scalar(query) or 0

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
            images = await _images_of(session, user_id)
            # the pictures of their edits of several: gone with the rest
            await session.execute(delete(EditSource).where(EditSource.edit_id.in_(edit_ids)))
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
                .values(EXPIRE)
                .execution_options(synchronize_session=False)
            )
            if shared:  # their edits no longer reach what others use
                stand_in = await forgotten_image(session)
                for column in (Edit.source_image_id, Edit.result_image_id):
                    await session.execute(
                        update(Edit)
                        .where(mine, column.in_(shared))
                        .values({column: stand_in})
                        .execution_options(synchronize_session=False)
                    )
            return len(edit_ids)


async def _images_of(session: AsyncSession, user_id: int) -> set[int]:
    """The images the user sent, their edits use, or are current for them."""
    mine = Edit.user_id == user_id
    images = set(await session.scalars(select(Edit.source_image_id).where(mine)))
    results = await session.scalars(select(Edit.result_image_id).where(mine))
    images |= {image for image in results if image is not None}
    heads = await session.scalars(select(ChatHead.image_id).where(ChatHead.user_id == user_id))
    sent = await session.scalars(select(Image.id).where(Image.user_id == user_id))
    return images | set(heads) | set(sent) | await _pictures_of(session, mine)


async def _pictures_of(session: AsyncSession, edits: Any) -> set[int]:
    """The pictures (and one-at-a-time results) of the edits of several that match `edits`."""
    which = EditSource.edit_id.in_(select(Edit.id).where(edits))
    rows = await session.execute(
        select(EditSource.image_id, EditSource.result_image_id).where(which)
    )
    return {image for row in rows.tuples() for image in row if image is not None}


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
    shared |= images & await _pictures_of(session, others)
    heads = ChatHead.user_id != user_id
    shared |= set(
        await session.scalars(select(ChatHead.image_id).where(heads, ChatHead.image_id.in_(images)))
    )
    return shared
