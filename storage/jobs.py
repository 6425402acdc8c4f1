"""`SqlJobs`: edits are also the jobs that carry them out (see EditStatus). Their way into the
line and to a worker: admission (with its units, in the same transaction), the fair order of
claims, leases and hand-backs, cancels, places in line. (Their way out: storage/delivery.py.)"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import (
    Admission,
    EditPicture,
    EditRecord,
    EditStatus,
    FileRef,
    Lease,
    MessageRef,
    NewEdit,
    Refusal,
    Spend,
    Upload,
)
from storage import ledger
from storage import statements as S
from storage.base import SqlBase
from storage.images import keep_more_uploads_in, keep_upload_in, new_canvas
from storage.ledger import ALL_EDITS
from storage.models import Edit, EditSource, utcnow
from storage.records import edit_record

PLACES_ONE_BY_ONE = 4  # queue_places of at most this many edits counts each one's place
FAIR_WINDOW = timedelta(minutes=10)  # how long a user's ended edits still count for their turn


class SqlJobs(SqlBase):
    # admission

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
        more: tuple[Upload, ...] = (),
    ) -> Admission:
        limits = _Limits(quota, chat_quota, budget, max_waiting, unlimited, spend, max_uncharged)

        async def admit_in(session: AsyncSession) -> Admission:
            nonlocal edit
            if edit.key is not None:
                found = await session.scalar(S.EDIT_BY_KEY, {"key": edit.key})
                if found is not None:
                    return Admission(found, duplicate=True)
            if upload is not None:
                image_id = await keep_upload_in(
                    session, edit.user_id, edit.platform, edit.chat_id, upload, origin
                )
                edit = replace(edit, source_image_id=image_id)
                if more:
                    more_ids = await keep_more_uploads_in(session, edit.user_id, more)
                    edit = replace(edit, more_sources=more_ids)
            elif canvas is not None:
                edit = replace(edit, source_image_id=await new_canvas(session, *canvas))
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

    async def _admit(
        self, session: AsyncSession, edit: NewEdit, day: date, limits: _Limits
    ) -> Admission:
        # The unit first: its row lock makes one user's admissions take turns, so the count
        # below is exact on PostgreSQL too. The chat's and the bot's counters come next, each
        # checked by its own UPDATE, so a race for the last unit lets exactly one through.
        free, units = limits.unlimited, edit.pictures
        if not free and limits.uncharged:  # paid calls that ended without a picture, today
            which = {"at_scope": ledger.uncharged_scope(edit.user_id), "on_day": day}
            calls = await session.scalar(S.COUNTED, which)
            if (calls or 0) >= limits.uncharged:
                return Admission(0, refused=Refusal.UNCHARGED)
        # A request of several pictures holds one unit per picture until it ends: the day's
        # free ones left first, then bought ones, oldest pack first.
        taken = await ledger.take(session, edit.user_id, day, 0 if free else limits.user, units)
        if taken is None:
            return Admission(0, refused=Refusal.QUOTA)
        chat = ledger.chat_scope(edit.platform, edit.chat_id)
        if not await ledger.count(session, chat, day, 0 if free else limits.chat, units):
            await ledger.give_back(session, edit.user_id, day, taken, units)
            return Admission(0, refused=Refusal.CHAT_QUOTA)
        if not await ledger.count(session, ALL_EDITS, day, 0 if free else limits.budget, units):
            await ledger.give_back(session, edit.user_id, day, taken, units)
            await ledger.uncount(session, chat, day, units)
            return Admission(0, refused=Refusal.BUDGET)
        held = (session, edit.user_id, edit.platform, edit.chat_id, day, units, taken)
        spend = limits.spend
        if not free and spend and await ledger.spend_reached(session, day, spend, units):
            await ledger.release(*held)
            return Admission(0, refused=Refusal.SPEND)
        turn = await _turn(session, edit.user_id)
        if limits.waiting and turn.waiting >= limits.waiting:
            await ledger.release(*held)
            return Admission(0, refused=Refusal.BUSY)
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
            pictures=units,
        ))  # fmt: skip
        assert edit_id is not None
        await ledger.keep_held(session, edit_id, taken)
        if units > 1:
            images = (edit.source_image_id, *edit.more_sources)
            session.add_all(
                EditSource(edit_id=edit_id, position=i, image_id=image)
                for i, image in enumerate(images)
            )
            await session.flush()
        return Admission(edit_id)

    # claims and leases

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
        # PostgreSQL: other processes skip the row we are taking.
        pick = S.NEXT_JOB_SKIP_LOCKED if self._dialect == "postgresql" else S.NEXT_JOB
        edit_id = await session.scalar(pick, {"platforms": platforms})
        if edit_id is None:
            return None
        which = {"edit_id": edit_id, "owner": owner, "until": lease_until}
        row = (await session.execute(S.TAKE_JOB, which)).first()
        return None if row is None else edit_record(row)

    async def has_queued(self, platforms: list[str]) -> bool:
        """Whether a queued edit could be claimed now (its user has none at the API)."""
        async with self._tx(read_only=True) as session:
            found = await session.scalar(S.ANY_CLAIMABLE, {"platforms": platforms})
            return found is not None

    async def queue_depth(self) -> dict[str, int]:
        """Open edits by status, of every process (for the metrics)."""
        query = (
            select(Edit.status, func.count())
            .where(Edit.status.in_(EditStatus.OPEN))
            .group_by(Edit.status)
        )
        async with self._tx(read_only=True) as session:
            return {status: count for status, count in (await session.execute(query)).tuples()}

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

    # cancels, the line

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
                    held = await ledger.held_by(session, row.id, row.pictures)
                    await ledger.release(
                        session, row.user_id, row.platform, row.chat_id, row.quota_day,
                        row.pictures, held,
                    )  # fmt: skip
            return [edit_record(row) for row in rows]

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

    async def still_open(self, edit_ids: list[int]) -> set[int]:
        query = select(Edit.id).where(Edit.id.in_(edit_ids), Edit.status.in_(EditStatus.OPEN))
        async with self._tx(read_only=True) as session:
            return set(await session.scalars(query))

    async def get_edit(self, edit_id: int) -> EditRecord | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(Edit, edit_id)
            return None if row is None else edit_record(row)

    async def edit_pictures(self, edit_id: int) -> list[EditPicture]:
        async with self._tx(read_only=True) as session:
            rows = await session.scalars(
                select(EditSource)
                .where(EditSource.edit_id == edit_id)
                .order_by(EditSource.position)
            )
            return [EditPicture(row.position, row.image_id, row.result_image_id) for row in rows]


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
    since = utcnow() - FAIR_WINDOW
    which = {"user_id": user_id, "since": since}
    waiting, last, open_now, ended = (await session.execute(S.TURN, which)).one()
    last = -1 if last is None else last  # (no edit of theirs waits)
    return _Turn(waiting, max(open_now + ended, last + 1))


@dataclass(frozen=True)
class _Limits:
    user: int  # units per user per day (0: no limit)
    chat: int  # per chat per day, for group chats (0: no limit)
    budget: int  # for the whole bot per day (0: no limit)
    waiting: int  # queued edits per user (0: no limit)
    unlimited: bool  # an admin: counted, never refused
    spend: Spend | None  # the day's cap on the backends' bill (None: no cap)
    uncharged: int  # a user's paid calls per day that may end without a picture (0: no limit)
