"""The ledger: units and counters, always in the caller's transaction (a money move is one
transaction with the state change it belongs to). A user's units per day (QuotaUsage); the
edits they bought, per pack (StarPack), used after the day's free ones; a chat's and the whole
bot's edits per day, the day's spend and other per-day flags (Counter, by scope).
Each change is one conditional statement, so a race for the last unit lets exactly one through,
on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import EditStatus, Spend
from storage import statements as S
from storage.models import Counter, Edit, QuotaUsage, StarPack

ALL_EDITS = "all"  # the counter of every edit the bot charged (GLOBAL_DAILY_BUDGET)
SPEND = "spend"  # the day's spend on the edit backends, micro-dollars (GLOBAL_DAILY_SPEND)


def chat_scope(platform: str, chat_id: str) -> str:
    return f"chat:{platform}:{chat_id}"


def uncharged_scope(user_id: int) -> str:
    """The counter of a user's paid calls that ended without a charged picture."""
    return f"uncharged:{user_id}"


async def reserve(
    session: AsyncSession, user_id: int, day: date, limit: int, units: int = 1
) -> bool:
    """`units` more of the user's for `day` (one per picture of a request), unless that would
    pass `limit` (0: no limit); False, changing nothing, when the quota cannot hold them."""
    if limit < 0:
        raise ValueError(f"quota limit must be >= 0 (0 = unlimited), not {limit}")
    which = {"of_user": user_id, "on_day": day}
    for taken in range(units):  # one conditional statement each: a race still lets one through
        if limit:
            done = await session.scalar(S.USE_UNIT_WITHIN, {**which, "limit": limit})
        else:
            done = await session.scalar(S.USE_UNIT, which)
        if done is None:
            await release_user(session, user_id, day, taken)
            return False
    return True


def _less(column: Any, units: int) -> Any:
    """`column` less `units`, never below zero (the same SQL on SQLite and PostgreSQL)."""
    return case((column > units, column - units), else_=0)


async def release_user(session: AsyncSession, user_id: int, day: date, units: int = 1) -> None:
    """Take back `units` reserved units of the user (never below zero)."""
    if units <= 0:
        return
    await session.execute(
        update(QuotaUsage)
        .where(QuotaUsage.user_id == user_id, QuotaUsage.day == day, QuotaUsage.used > 0)
        .values(used=_less(QuotaUsage.used, units))
        .execution_options(synchronize_session=False)
    )


# A pack with edits left (a pack not refunded has refunded = 0).
LEFT = (StarPack.refunded_at.is_(None), StarPack.used < StarPack.bought)


def _holds(units: int) -> tuple[Any, ...]:
    """A pack with `units` edits left."""
    return (StarPack.refunded_at.is_(None), StarPack.used + units <= StarPack.bought)


async def use_bought(session: AsyncSession, user_id: int, units: int = 1) -> int | None:
    """`units` edits (one per picture of a request) from the user's oldest pack that has that
    many left: that pack's id; None, changing nothing, when none has. The UPDATE checks again
    what the SELECT found, so a race for the last bought edit lets exactly one through (the
    loser tries the next pack)."""
    for _ in range(3):
        oldest = select(StarPack.id).where(StarPack.user_id == user_id, *_holds(units))
        pack_id = await session.scalar(oldest.order_by(StarPack.id).limit(1))
        if pack_id is None:
            return None
        taken = await session.scalar(
            update(StarPack)
            .where(StarPack.id == pack_id, *_holds(units))
            .values(used=StarPack.used + units)
            .returning(StarPack.id)
            .execution_options(synchronize_session=False)
        )
        if taken is not None:
            return int(taken)
    return None


async def give_back(
    session: AsyncSession, user_id: int, day: date, pack_id: int | None, units: int = 1
) -> None:
    """Take back reserved units: to the pack they came from, else to the day's quota. A pack
    refunded meanwhile counts them as refunded (taken back), not as left."""
    if pack_id is None:
        await release_user(session, user_id, day, units)
        return
    if units <= 0:
        return
    refunded = case((StarPack.refunded_at.is_(None), 0), else_=units)
    await session.execute(
        update(StarPack)
        .where(StarPack.id == pack_id, StarPack.used >= units)
        .values(used=StarPack.used - units, refunded=StarPack.refunded + refunded)
        .execution_options(synchronize_session=False)
    )


async def count(session: AsyncSession, scope: str, day: date, limit: int, units: int = 1) -> bool:
    """`units` more for `scope` today, unless that would pass `limit` (0: no limit)."""
    which = {"at_scope": scope, "on_day": day}
    for taken in range(units):
        if limit:
            done = await session.scalar(S.COUNT_ONE_WITHIN, {**which, "limit": limit})
        else:
            done = await session.scalar(S.COUNT_ONE, which)
        if done is None:
            await uncount(session, scope, day, taken)
            return False
    return True


async def uncount(session: AsyncSession, scope: str, day: date, units: int = 1) -> None:
    if units <= 0:
        return
    await session.execute(
        update(Counter)
        .where(Counter.scope == scope, Counter.day == day, Counter.used > 0)
        .values(used=_less(Counter.used, units))
        .execution_options(synchronize_session=False)
    )


async def release(
    session: AsyncSession,
    user_id: int,
    platform: str,
    chat_id: str,
    day: date,
    units: int = 1,
    pack_id: int | None = None,
) -> None:
    """Take back an admitted edit's `units` (one per picture not delivered): the user's (or
    its pack's), the chat's and the bot's."""
    await give_back(session, user_id, day, pack_id, units)
    await uncount(session, chat_scope(platform, chat_id), day, units)
    await uncount(session, ALL_EDITS, day, units)


async def add_spend(session: AsyncSession, spent: tuple[date, int] | None, insert: Any) -> None:
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


async def spend_reached(session: AsyncSession, day: date, spend: Spend, calls: int = 1) -> bool:
    """Whether an edit of `calls` more calls (one per picture, at most) could take the day's
    spend past its cap, counting every edit not paid for yet (queued or at the API) the same
    way, each call at the dearest price. Runs after the bot's counter was updated: that row's
    lock makes admissions take turns, so the count is exact on PostgreSQL too."""
    # Unpaid first: an edit kept between the two reads is then counted twice, never missed.
    unpaid = (EditStatus.QUEUED, EditStatus.RUNNING)  # a kept result's cost is in `spent`
    open_calls = await session.scalar(
        select(func.sum(Edit.pictures)).where(Edit.status.in_(unpaid))
    )
    spent = await session.scalar(
        select(Counter.used).where(Counter.scope == SPEND, Counter.day == day)
    )
    return (spent or 0) + ((open_calls or 0) + calls) * spend.per_edit > spend.cap
