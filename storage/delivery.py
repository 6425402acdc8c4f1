"""`SqlDelivery`: an edit's way out, once a worker holds it: its result kept (with what it cost),
delivery started and the edit ended (a success made current and repliable, any other end giving
its units back), a picture the bot drew itself, the progress notes standing for open edits, and
what a process that died left behind (notes to delete, answers to send)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import (
    EditRecord,
    EditStatus,
    EditTimings,
    MessageRef,
    NewEdit,
    NewImage,
    ShownImage,
)
from storage import ledger
from storage import statements as S
from storage.base import SqlBase
from storage.images import fill, save_image_in
from storage.messages import link_in, set_current_in
from storage.models import Edit, EditSource, utcnow
from storage.records import edit_record


class SqlDelivery(SqlBase):
    # results, delivery, the end

    async def keep_result(
        self,
        edit_id: int,
        result: NewImage,
        seed: int | None,
        notes: tuple[str, ...],
        timings: EditTimings,
        *,
        owner: str,
        sources: Sequence[tuple[int, NewImage]] = (),
        model: str | None = None,
        spent: tuple[date, int] | None = None,
        album: Sequence[tuple[int, NewImage]] = (),
        uncharged_call: date | None = None,
        uncharged_calls: int = 1,
    ) -> tuple[int, ...] | None:
        try:
            # A few short statements (and the images, on the driver's thread): see _tx.
            async with self._tx(small=True) as session:
                for source in sources:
                    await session.execute(fill(*source))
                # An album's results are each kept once; the first stands for the edit.
                album_ids = [await save_image_in(session, made) for _, made in album]
                result_id = album_ids[0] if album else await save_image_in(session, result)
                for (position, _), made_id in zip(album, album_ids, strict=True):
                    await session.execute(
                        update(EditSource)
                        .where(EditSource.edit_id == edit_id, EditSource.position == position)
                        .values(result_image_id=made_id)
                        .execution_options(synchronize_session=False)
                    )
                kept = await session.scalar(S.KEEP_RESULT, {
                    "edit_id": edit_id, "owner": owner, "to_image": result_id, "to_seed": seed,
                    "to_model": model, "to_notes": ",".join(notes),
                    **{f"to_{name}": ms for name, ms in _timing_values(timings).items()},
                })  # fmt: skip
                if kept is None:
                    raise _NotKept  # keep nothing: roll the images back too
                await ledger.add_spend(session, spent)
                if uncharged_call is not None:  # an album's pictures whose calls failed
                    await _count_uncharged(session, kept, uncharged_call, uncharged_calls)
                return (result_id, *album_ids[1:])
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
        uncharged_calls: int = 1,
        delivered: int = 1,
        more_messages: Sequence[tuple[MessageRef, ShownImage]] = (),
    ) -> bool:
        """End an open edit (if `owner` is given, only while it holds the lease):
        SUCCEEDED from delivering (making its result current and `message` repliable), FAILED
        or REFUSED from any open state (giving its unit back, keeping `answer` for its user
        until `answered`; `spent`: what a call that may have been billed cost, added to that
        day's spend; `uncharged_call`: the day `uncharged_calls` paid calls of the user's ended
        without a charged picture, counted for MAX_UNCHARGED_CALLS). False, changing nothing,
        if it had ended already or is not `owner`'s."""
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
            await ledger.add_spend(session, spent)
            if uncharged_call is not None and not succeeded:
                scope = ledger.uncharged_scope(row.user_id)
                await ledger.count(session, scope, uncharged_call, 0, uncharged_calls)
            # Units of pictures not delivered go back (all of them, without a result).
            undelivered = row.pictures - delivered if succeeded else row.pictures
            if undelivered > 0 and row.quota_day is not None:
                held = await ledger.held_by(session, row.id, row.pictures)
                await ledger.release(
                    session, row.user_id, row.platform, row.chat_id, row.quota_day,
                    undelivered, held,
                )  # fmt: skip
            if not succeeded:
                return True
            assert row.result_image_id is not None
            shown = ShownImage(row.result_image_id, row.id)
            await set_current_in(session, row.user_id, row.platform, row.chat_id, shown)
            if message is not None:
                await link_in(session, message, shown)
            for more, more_shown in more_messages:
                await link_in(session, more, more_shown)
            return True

    async def answered(self, edit_id: int) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.id == edit_id)
                .values(answer=None)
                .execution_options(synchronize_session=False)
            )

    async def record_drawn(self, new: NewEdit, result: NewImage, layer: str) -> tuple[int, int]:
        """A picture the bot drew itself (no API call, no unit): kept as a delivered edit of
        `new.source_image_id` with its text layer. (edit id, result image id)."""
        async with self._tx() as session:
            result_id = await save_image_in(session, result)
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

    # notes and leftovers

    async def set_note(self, edit_ids: list[int], note_id: str) -> str | None:
        async def set_in(session: AsyncSession) -> str | None:
            ids = {"edit_ids": edit_ids, "new_note": note_id}
            for _ in range(3):
                if (await session.scalars(S.SET_NOTE, ids)).all():
                    return None
                other = (await session.execute(S.OTHER_NOTE, ids)).first()
                if other is not None:
                    where = {"platform": other.platform, "chat_id": other.chat_id,
                             "new_note": note_id}  # fmt: skip
                    held = await session.scalar(S.NOTE_HELD, where)
                    return None if held is not None else str(other.note_id)
                # PostgreSQL: the other note was forgotten since the UPDATE: try it again
            return None

        instead: str | None = await self._write(set_in)
        return instead

    async def forget_note(self, platform: str, chat_id: str, note_id: str) -> None:
        async with self._tx() as session:
            await session.execute(
                update(Edit)
                .where(Edit.platform == platform, Edit.chat_id == chat_id)
                .where(Edit.note_id == note_id)
                .values(note_id=None)
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
            taken = [edit_record(row) for row in await session.scalars(pick)]
            if not taken:
                return []
            # A note is shared by its user's edits in a chat: one still open keeps it. (Its
            # id is a message id, which says nothing outside its chat.)
            notes = {(e.platform, e.chat_id, e.note_id) for e in taken if e.note_id is not None}
            open_notes = select(Edit.platform, Edit.chat_id, Edit.note_id).where(
                Edit.status.in_(EditStatus.OPEN),
                Edit.note_id.in_({note_id for _, _, note_id in notes}),
            )
            in_use = set((await session.execute(open_notes)).tuples()) & notes
            taken = [
                replace(e, note_id=None) if (e.platform, e.chat_id, e.note_id) in in_use else e
                for e in taken
            ]
            # Answers go once; a note keeps its id until it is deleted (forget_note).
            done = update(Edit).execution_options(synchronize_session=False)
            await session.execute(
                done.where(Edit.id.in_([e.id for e in taken])).values(answer=None)
            )
            await session.execute(
                done.where(Edit.id.in_([e.id for e in taken if e.note_id is None]))
                .values(note_id=None)
            )  # fmt: skip
            return taken


async def _count_uncharged(session: AsyncSession, edit_id: int, day: date, calls: int) -> None:
    user_id = await session.scalar(select(Edit.user_id).where(Edit.id == edit_id))
    assert user_id is not None
    await ledger.count(session, ledger.uncharged_scope(user_id), day, 0, calls)


def _timing_values(timings: EditTimings) -> dict[str, int]:
    return {
        "queued_ms": timings.queued_ms,
        "normalize_ms": timings.normalize_ms,
        "api_ms": timings.api_ms,
        "total_ms": timings.total_ms,
    }


class _NotKept(Exception):
    """Rolls back a transaction whose edit is no longer the caller's to change."""
