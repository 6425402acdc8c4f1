"""The ledger: units and counters, always in the caller's transaction (a money move is one
transaction with the state change it belongs to). A user's units per day (QuotaUsage); the
edits they bought, per pack (StarPack), used after the day's free ones (which packs an edit's
units came from: EditPack); a chat's and the whole
bot's edits per day, the day's spend and other per-day flags (Counter, by scope).
Each change is one conditional statement, so a race for the last unit lets exactly one through,
on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import EditStatus, Spend
from storage import statements as S
from storage.models import Counter, Edit, EditPack, QuotaUsage, StarPack

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
    taken = await reserve_up_to(session, user_id, day, limit, units)
    if taken < units:
        await release_user(session, user_id, day, taken)
        return False
    return True


async def reserve_up_to(
    session: AsyncSession, user_id: int, day: date, limit: int, units: int
) -> int:
    """As many as the user's quota for `day` still holds of `units` (0: no limit); how many."""
    if limit < 0:
        raise ValueError(f"quota limit must be >= 0 (0 = unlimited), not {limit}")
    which = {"of_user": user_id, "on_day": day}
    for taken in range(units):  # one conditional statement each: a race still lets one through
        if limit:
            done = await session.scalar(S.USE_UNIT_WITHIN, {**which, "limit": limit})
        else:
            done = await session.scalar(S.USE_UNIT, which)
        if done is None:
            return taken
    return units


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


@dataclass(frozen=True)
class Held:
    """Where an edit's units came from: `free` of the day's quota, the others bought, per pack
    (pack id, units), oldest pack first (as EditPack keeps them)."""

    free: int
    packs: tuple[tuple[int, int], ...] = ()


async def take(
    session: AsyncSession, user_id: int, day: date, limit: int, units: int
) -> Held | None:
    """`units` of the user's (one per picture of a request): the day's free ones left first
    (`limit`; 0: no limit), then bought ones, oldest pack first; None, changing nothing, when
    both together cannot hold them."""
    free = await reserve_up_to(session, user_id, day, limit, units)
    if free == units:
        return Held(free)
    packs = await use_bought(session, user_id, units - free)
    if packs is None:
        await release_user(session, user_id, day, free)
        return None
    return Held(free, packs)


def _holds(units: int) -> tuple[Any, ...]:
    """A pack with `units` edits left."""
    return (StarPack.refunded_at.is_(None), StarPack.used + units <= StarPack.bought)


async def use_bought(
    session: AsyncSession, user_id: int, units: int = 1
) -> tuple[tuple[int, int], ...] | None:
    """`units` bought edits of the user's, oldest pack first, as many from each as it has
    left: (pack id, units) of each pack used; None, changing nothing, when all the packs
    together have fewer. Each UPDATE checks again what its SELECT found, so a race for the
    last bought edit lets exactly one through (the loser looks again)."""
    packs = select(StarPack.id, StarPack.bought - StarPack.used).where(
        StarPack.user_id == user_id, *LEFT
    )
    taken: list[tuple[int, int]] = []
    need, misses = units, 0
    while need and misses < 3:
        found = (await session.execute(packs.order_by(StarPack.id).limit(1))).first()
        if found is None:
            break  # no pack left
        pack_id, left = found
        some = min(int(left), need)
        done = await session.scalar(
            update(StarPack)
            .where(StarPack.id == pack_id, *_holds(some))
            .values(used=StarPack.used + some)
            .returning(StarPack.id)
            .execution_options(synchronize_session=False)
        )
        if done is None:
            misses += 1  # another admission (or a refund) took it just now
            continue
        taken.append((int(pack_id), some))
        need -= some
    if need:
        for pack_id, some in taken:
            await _to_pack(session, pack_id, some)
        return None
    return tuple(taken)


async def give_back(session: AsyncSession, user_id: int, day: date, held: Held, units: int) -> None:
    """Take back `units` of those `held`: to the packs first, the newest first, then to the
    day's quota. So an edit keeps what admitting only the pictures it delivered would have
    taken (free ones first, then the oldest pack's), and bought edits, which never expire, are
    the ones given back."""
    for pack_id, some in reversed(held.packs):
        back = min(some, units)
        if back <= 0:
            break
        await _to_pack(session, pack_id, back)
        units -= back
    await release_user(session, user_id, day, units)


async def _to_pack(session: AsyncSession, pack_id: int, units: int) -> None:
    """Give `units` back to a pack; a pack refunded meanwhile counts them as refunded (taken
    back), not as left."""
    refunded = case((StarPack.refunded_at.is_(None), 0), else_=units)
    await session.execute(
        update(StarPack)
        .where(StarPack.id == pack_id, StarPack.used >= units)
        .values(used=StarPack.used - units, refunded=StarPack.refunded + refunded)
        .execution_options(synchronize_session=False)
    )


async def keep_held(session: AsyncSession, edit_id: int, held: Held) -> None:
    """Record which packs an admitted edit's units came from (EditPack)."""
    if held.packs:
        session.add_all(
            EditPack(edit_id=edit_id, pack_id=pack_id, units=some) for pack_id, some in held.packs
        )
        await session.flush()


async def held_by(session: AsyncSession, edit_id: int, pictures: int) -> Held:
    """Where an edit's `pictures` units came from, as `keep_held` recorded it."""
    rows = await session.execute(
        select(EditPack.pack_id, EditPack.units)
        .where(EditPack.edit_id == edit_id)
        .order_by(EditPack.pack_id)
    )
    packs = tuple((int(pack_id), int(units)) for pack_id, units in rows.tuples())
    return Held(pictures - sum(units for _, units in packs), packs)


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
    units: int,
    held: Held,
) -> None:
    """Take back an admitted edit's `units` (one per picture not delivered) of those `held`:
    the user's (see give_back), the chat's and the bot's."""
    await give_back(session, user_id, day, held, units)
    await uncount(session, chat_scope(platform, chat_id), day, units)
    await uncount(session, ALL_EDITS, day, units)


async def add_spend(session: AsyncSession, spent: tuple[date, int] | None) -> None:
    """Add (day, micro-dollars) to the day's spend, in the caller's transaction."""
    if spent is None or spent[1] <= 0:
        return
    day, micros = spent
    await session.execute(S.ADD_UP, {"at_scope": SPEND, "on_day": day, "amount": micros})


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
