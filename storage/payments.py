"""`SqlPayments`: edits bought with Telegram Stars, one ledger row per pack (StarPack), which is
also the payment's record: credited once per charge id, in the transaction that records it;
refunds take back what is left. (Edits are taken from packs at admission: storage/ledger.py.)"""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select, update

from bot.domain import Pack, UserRef
from storage.base import SqlBase
from storage.ledger import LEFT
from storage.models import StarPack, User, utcnow


class SqlPayments(SqlBase):
    async def credit_pack(
        self, user_id: int, charge_id: str, *, stars: int, edits: int, day: date
    ) -> bool:
        """Record a payment and credit its pack, in one transaction; False, changing nothing,
        when that charge was recorded already (the same payment delivered again)."""
        async with self._tx() as session:
            inserted = await session.scalar(
                self._insert(StarPack)
                .values(user_id=user_id, charge_id=charge_id, stars=stars, bought=edits,
                        used=0, refunded=0, day=day, paid_at=utcnow())
                .on_conflict_do_nothing(index_elements=["charge_id"])
                .returning(StarPack.id)
            )  # fmt: skip
            return inserted is not None

    async def bought_left(self, user_id: int) -> int:
        edits, _ = await self.packs_left(user_id)
        return edits

    async def packs_left(self, user_id: int) -> tuple[int, int]:
        query = select(
            func.sum(StarPack.bought - StarPack.used - StarPack.refunded), func.count()
        ).where(StarPack.user_id == user_id, *LEFT)
        async with self._tx(read_only=True) as session:
            edits, packs = (await session.execute(query)).one()
            return int(edits or 0), int(packs or 0)

    async def payments_of(self, user_id: int) -> int:
        async with self._tx(read_only=True) as session:
            found = await session.scalar(select(func.count()).where(StarPack.user_id == user_id))
            return int(found or 0)

    async def take_back_pack(
        self, charge_id: str, *, unused_only: bool
    ) -> tuple[Pack | None, bool]:
        """Mark the pack of `charge_id` refunded, taking back the edits it has left (with
        `unused_only`: only if none of them was used or is reserved by an open edit). The pack
        as it is now (None: no such payment), and whether this call refunded it."""
        which = [StarPack.charge_id == charge_id, StarPack.refunded_at.is_(None)]
        if unused_only:
            which.append(StarPack.used == 0)
        async with self._tx() as session:
            changed = await session.scalar(
                update(StarPack)
                .where(*which)
                .values(refunded=StarPack.bought - StarPack.used, refunded_at=utcnow())
                .returning(StarPack.id)
                .execution_options(synchronize_session=False)
            )
            found = (
                await session.execute(
                    select(StarPack, User.platform, User.external_id)
                    .join(User, User.id == StarPack.user_id)
                    .where(StarPack.charge_id == charge_id)
                )
            ).first()
            if found is None:
                return None, False
            row, platform, external_id = found
            pack = Pack(
                id=row.id, buyer=UserRef(platform, external_id), charge_id=row.charge_id,
                stars=row.stars, bought=row.bought, used=row.used, refunded=row.refunded,
                refunded_at=row.refunded_at,
            )  # fmt: skip
            return pack, changed is not None

    async def restore_pack(self, charge_id: str) -> None:
        """Undo `take_back_pack` of an unused pack whose refund the platform refused."""
        async with self._tx() as session:
            await session.execute(
                update(StarPack)
                .where(StarPack.charge_id == charge_id, StarPack.refunded_at.is_not(None))
                .where(StarPack.used == 0)
                .values(refunded=0, refunded_at=None)
                .execution_options(synchronize_session=False)
            )

    async def stars_earned(self, day: date) -> int:
        """Stars paid on `day` (the quota day) for packs not refunded."""
        query = select(func.sum(StarPack.stars)).where(
            StarPack.day == day, StarPack.refunded_at.is_(None)
        )
        async with self._tx(read_only=True) as session:
            return int(await session.scalar(query) or 0)
