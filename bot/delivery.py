"""Delivery of one claimed edit, from its API call to its end: the source's bytes, the call
(within the API slots, marked sent first so a cancel never races a paid call), the result kept
with the photo it was made from, the chat's copy sent, and the transaction that ends the job
and keeps or gives back its unit. A kept result is delivered again, never edited again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import date, datetime
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter

from bot import imaging, logs
from bot.calling import EndUsers, billed_all, billed_one, call, checked_result, showing_action
from bot.context import Context
from bot.domain import (
    Address,
    ChatRef,
    EditedImage,
    EditRecord,
    EditStatus,
    EditTimings,
    MessageRef,
    NewImage,
    Picture,
    ShownImage,
    Spend,
    StoredImage,
)
from bot.engine import JobEngine
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    ApiTimeout,
    ApiUnavailable,
    EditApiError,
    EditRefused,
    InvalidImage,
    NoImageReturned,
    StepEditError,
)
from bot.pictures import Pictures, SourceBytes
from bot.ports import Messenger
from bot.sources import sources_of
from bot.texts import error_text, t

log = logging.getLogger("stepedit.service")

MAX_ATTEMPTS = 3  # a job that kills its process every time is given up on, not run forever
ACTIONS_PER_SECOND = 2.0  # chat actions' share of the send budget (all chats together)
_T = TypeVar("_T")


class _LeaseLost(Exception):
    """This process no longer holds the edit (its lease ran out and another took it)."""


class _NotKept(Exception):
    """Keeping the API's result failed (the database?): nothing was sent; the job is left to
    its lease and runs again."""


class _EveryCallFailed(Exception):
    """Every call of an edit made one picture at a time failed (all of them, in order)."""

    def __init__(self, failed: list[StepEditError]) -> None:
        super().__init__(str(failed[0]))
        self.failed = failed


class Delivery:
    def __init__(self, ctx: Context, engine: JobEngine, pictures: Pictures) -> None:
        self.ctx = ctx
        self.engine = engine
        self.pictures = pictures
        self._actions = AsyncLimiter(ACTIONS_PER_SECOND, 1.0)  # "sending photo…"
        self._end_users = EndUsers(ctx.store)
        self._kept: set[int] = set()  # edits running here whose result (and cost) is kept

    async def run(self, edit: EditRecord) -> None:
        """Carry one claimed job to its end: a delivered picture or a clear answer."""
        logs.about(edit_id=edit.id, platform=edit.platform, chat=edit.chat_id)  # (this task's)
        messenger = self.ctx.messengers[edit.platform]
        engine = self.engine
        try:
            await self._carry_out(edit, messenger)
        except asyncio.CancelledError:
            if engine.stopping:
                # Its call was made and its cost not kept: billed, and made again.
                if edit.id in engine.committed and edit.id not in self._kept:
                    with contextlib.suppress(Exception):
                        await self.ctx.store.add_spend(
                            self.ctx.today(), Spend.micros(self.ctx.editor.price)
                        )
                raise  # shutdown: the job goes back to the queue, its note stays
            # else the user cancelled it: cancel() ended it, answered and closed its note
        except _LeaseLost:
            log.warning("edit %s: its lease ran out while it ran; another process has it", edit.id)
            return
        except _NotKept as exc:
            log.warning("edit %s: could not keep its result (%s); it will run again",
                        edit.id, exc.__cause__)  # fmt: skip
            return
        except Exception:
            # Recording its end failed (the database?): the job is left to its lease, which
            # runs out, so it is tried again; a delivered one is delivered again, never refunded.
            log.exception("edit %s: could not record how it ended; it will run again", edit.id)
            return
        else:
            engine.notes.close(edit, messenger)
        finally:
            self._kept.discard(edit.id)
        await engine.announce_end(edit.id)

    async def _carry_out(self, edit: EditRecord, messenger: Messenger) -> None:
        to, store, owner = edit.address, self.ctx.store, self.engine.owner
        if edit.attempts > MAX_ATTEMPTS:  # also with a kept result: showing it may be what kills
            made = int(edit.result_image_id is not None)  # a paid call, undelivered
            await self._end(edit, EditStatus.FAILED, "interrupted too often",
                            answer=t("error_interrupted", to.language),
                            uncharged=made)  # fmt: skip
            return
        try:
            ready = await self._result(edit, messenger)
            if ready is None:
                return  # cancelled meanwhile (that answered the user), or no longer ours
            pictures, timings = ready
            messages = await _send(messenger, to, pictures)
        except (_LeaseLost, _NotKept):
            raise  # another process has it now, or will: leave it (and its note) to that one
        except StepEditError as exc:
            await self._failed(edit, [exc])
            return
        except _EveryCallFailed as every:
            await self._failed(edit, every.failed)
            return
        except Exception as exc:  # e.g. the platform refused the picture (the user blocked us)
            log.exception("edit %s failed", edit.id)
            paid = int(edit.id in self.engine.committed)
            await self._end(edit, EditStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500],
                            answer=t("error_generic", to.language), uncharged=paid)  # fmt: skip
            return
        # The user has the picture: from here on it is a delivered edit, whatever fails.
        timings = replace(timings, total_ms=_ms_between(edit.created_at, self.ctx.clock()))
        # An album's others, each repliable where the platform sent it as a message of its own
        others = zip(messages[1:], pictures[1:], strict=False)
        if not await store.finish_edit(
            edit.id, EditStatus.SUCCEEDED, timings=timings, message=messages[0], owner=owner,
            delivered=len(pictures),
            more_messages=[(sent, ShownImage(each.image_id, edit.id)) for sent, each in others],
        ):  # fmt: skip
            log.warning("edit %s was delivered after its lease ran out", edit.id)
            return
        self.ctx.metrics.edit_ended(EditStatus.SUCCEEDED, edit.platform)
        called = edit.result_image_id is None  # else an earlier attempt made the picture
        self.ctx.metrics.delivered(
            timings.api_ms if called else None,
            timings.total_ms - timings.queued_ms - timings.api_ms,
        )
        log.info("edit %s delivered: api %d ms, total %d ms",
                 edit.id, timings.api_ms, timings.total_ms)  # fmt: skip

    async def _failed(self, edit: EditRecord, failed: list[StepEditError]) -> None:
        """End an edit whose call failed (or every call, one per picture), with the first
        failure's answer. Each call that may have been billed counts for the day's spend and
        as one of the user's paid calls without a picture (at least one, if a call was sent)."""
        exc = failed[0]
        if isinstance(exc, ApiConfigError):  # users hear "unavailable": tell the operator
            log.error("the edit API needs the operator: %s", exc.operator_message)
        if isinstance(exc, _BACKENDS_FAULT):
            self.ctx.metrics.backend_failed()
        status = EditStatus.REFUSED if isinstance(exc, EditRefused) else EditStatus.FAILED
        paid = sum(map(_paid_call, failed)) or int(edit.id in self.engine.committed)
        await self._end(edit, status, f"{type(exc).__name__}: {exc}"[:500],
                        answer=error_text(exc, edit.address.language),
                        spent=billed_all(self.ctx, failed), uncharged=paid)  # fmt: skip

    async def _end(
        self, edit: EditRecord, status: str, error: str, *, answer: str,
        spent: tuple[date, int] | None = None, uncharged: int = 0,
    ) -> None:  # fmt: skip
        """End the job without a result (its unit goes back) and tell the user why
        (`uncharged`: the paid calls it made, to count). If the database is down, the lease
        runs out and the job is tried again later."""
        timings = EditTimings(total_ms=_ms_between(edit.created_at, self.ctx.clock()))
        if await self.ctx.store.finish_edit(
            edit.id, status, error=error, timings=timings, answer=answer,
            owner=self.engine.owner, spent=spent,
            uncharged_call=self.ctx.today() if uncharged else None, uncharged_calls=uncharged,
        ):  # fmt: skip
            self.ctx.metrics.edit_ended(status, edit.platform)
            await self._answer(edit.id, edit.address, answer)

    async def _answer(self, edit_id: int, to: Address, text: str) -> None:
        """Tell a failed edit's user why; if that fails, the answer stays stored and the sweep
        tries once more."""
        try:
            await self.ctx.messengers[to.platform].send_text(to, text)
        except Exception as exc:
            log.warning("could not answer edit %s (%s); the sweep tries again", edit_id, exc)
            return
        await self.ctx.store.answered(edit_id)

    async def _result(
        self, edit: EditRecord, messenger: Messenger
    ) -> tuple[list[Picture], EditTimings] | None:
        """The pictures to deliver (one, or an album's made one by one), kept, their delivery
        started: the API's results, or those kept by an earlier attempt. None if the edit was
        cancelled meanwhile or is no longer ours. A result is kept before any of it is sent:
        a crash after the send is then one while delivering (the kept result is sent again,
        never made again), so whatever a second call would do, the charge is the picture's."""
        ctx, engine, store = self.ctx, self.engine, self.ctx.store
        timings = EditTimings(queued_ms=_ms_between(edit.created_at, ctx.clock()))
        if edit.result_image_id is not None:
            engine.committed.add(edit.id)
            self._kept.add(edit.id)
            engine.notes.working(edit, messenger, sent=True)
            stand_in = edit.model if edit.model not in (None, ctx.editor.model) else None
            comparable = await self.pictures.comparable(edit, ChatRef(edit.platform, edit.chat_id))
            pictures = [
                await self._picture(edit, result.data, result.id, edit.seed, edit.notes,
                                    messenger, stand_in=stand_in, comparable=comparable)
                for result in await _kept_results(ctx, edit)
            ]  # fmt: skip
            if not await store.start_delivery(edit.id, engine.owner):
                await self._not_ours(edit.id)
                return None
            return pictures, timings
        started = time.perf_counter()
        sources = await sources_of(ctx, self.pictures, edit, messenger)
        timings = replace(timings, normalize_ms=_ms_since(started))
        options = replace(edit.options, end_user=await self._end_users.of(edit.user_id))
        async with engine.api_slots.hold():
            called = time.perf_counter()  # the call's own time, not the wait for a slot
            if engine.stopping:
                raise asyncio.CancelledError  # shutting down: no new paid call
            if not await store.mark_sent(edit.id, engine.owner):
                await self._not_ours(edit.id)  # cancelled just now: nothing is sent
                return None
            engine.committed.add(edit.id)
            engine.notes.working(edit, messenger, sent=True)
            # What the delivery needs of the database besides the result is done while the
            # API works, not after it: the user waits for what comes after the answer.
            meanwhile = asyncio.create_task(self._meanwhile(edit, sources.ready))
            try:
                async with showing_action(self._actions, edit.address, messenger):
                    made, failed = await call(ctx, edit, sources, options)
            finally:
                comparable, unfilled = await _ended(meanwhile)
        if not made:  # every picture's call failed
            raise _EveryCallFailed(failed)
        timings = replace(timings, api_ms=_ms_since(called))
        ctx.metrics.backend_answered()
        # Every call counts at its price, a failed one too if it may have been billed.
        billed = [billed_one(self.ctx, exc) for exc in failed]
        cost = sum(Spend.micros(each.cost) for _, each in made)
        spent = (ctx.today(), cost + sum(bill[1] for bill in billed if bill is not None))
        checked = [await checked_result(self.pictures, each) for _, each in made]
        edited = made[0][1]  # the first picture made stands for the edit (seed, model)
        notes = sources.notes
        if failed:  # an album made one by one, some of its pictures left out
            notes += ("note_left_out",)
        uncharged = sum(map(_paid_call, failed))  # (each counts, as the user's paid calls)
        # One transaction keeps the result (and the fetched photo, if that failed earlier) and
        # starts the delivery, while the chat's copy is made. If the copy fails, the kept
        # result's edit ends as failed all the same (its unit goes back).
        album = [(position, kept) for (position, _), kept in zip(made, checked, strict=True)]
        keeping = asyncio.ensure_future(self._keep(
            edit, checked[0], edited, notes, timings, [*unfilled, *sources.unfilled], spent,
            album if len(album) > 1 else [], uncharged,
        ))  # fmt: skip
        try:
            pictures = await asyncio.gather(*(
                self._picture(edit, each.data, 0, each.seed, notes, messenger,
                              stand_in=each.model if each.stood_in else None,
                              comparable=comparable)
                for _, each in made
            ))  # fmt: skip
        finally:
            await _settled(keeping)
        if keeping.exception() is not None:
            raise _NotKept from keeping.exception()
        kept = keeping.result()
        if kept is None:  # no longer ours: another process has it and delivers it
            await self._not_ours(edit.id)
            return None
        self._kept.add(edit.id)
        shown = zip(pictures, kept, strict=True)
        return [replace(each, image_id=image_id) for each, image_id in shown], timings

    async def _keep(
        self, edit: EditRecord, result: NewImage, edited: EditedImage, notes: tuple[str, ...],
        timings: EditTimings, unfilled: list[tuple[int, NewImage]], spent: tuple[date, int],
        album: list[tuple[int, NewImage]], uncharged: int,
    ) -> tuple[int, ...] | None:  # fmt: skip
        """keep_result; None if the edit is no longer ours (its call counted all the same).
        `uncharged`: the request's calls that failed and may have been billed."""
        store = self.ctx.store
        try:
            kept = await store.keep_result(
                edit.id, result, edited.seed, notes, timings, owner=self.engine.owner,
                sources=unfilled, model=edited.model, spent=spent, album=album,
                uncharged_call=self.ctx.today() if uncharged else None,
                uncharged_calls=uncharged,
            )  # fmt: skip
        except Exception:  # the calls were made all the same: their cost counts once
            with contextlib.suppress(Exception):
                await store.add_spend(*spent)
            raise
        if kept is None:
            with contextlib.suppress(Exception):
                await store.add_spend(*spent)
        return kept

    async def _meanwhile(
        self, edit: EditRecord, sources: list[SourceBytes]
    ) -> tuple[bool, list[tuple[int, NewImage]]]:
        """While the API works: whether Compare may be offered, and the photos fetched for
        this edit kept (the ones that could not be: for keep_result, with the result)."""
        comparable = await self.pictures.comparable(edit, ChatRef(edit.platform, edit.chat_id))
        fetched = [(each.fetched.image_id, each.fetched.image) for each in sources if each.fetched]
        if not fetched:
            return comparable, []
        try:
            await self.ctx.store.fill_images(fetched)
        except Exception as exc:
            log.warning("edit %s: could not keep its photo yet (%s); kept with the result",
                        edit.id, exc)  # fmt: skip
            return comparable, fetched
        return comparable, []

    async def _not_ours(self, edit_id: int) -> None:
        """An edit this worker held cannot go on: fine if its user cancelled it (they have been
        answered); if its lease ran out and another process has it, _LeaseLost."""
        edit = await self.ctx.store.get_edit(edit_id)
        if edit is None or edit.status != EditStatus.CANCELLED:
            raise _LeaseLost(edit_id)

    async def _picture(
        self, edit: EditRecord, data: bytes, image_id: int, seed: int | None,
        notes: tuple[str, ...], messenger: Messenger, *, stand_in: str | None = None,
        comparable: bool,
    ) -> Picture:  # fmt: skip
        """The chat's copy of an API result (`stand_in`: the fallback's model, when it made
        the picture because the usual one was down). A result whose pixels do not decode is
        the API's fault (the user's photo was fine): temporarily unavailable, nothing charged."""
        try:
            chat_bytes, chat_mime = await self.pictures.for_chat(data, messenger, edit.address)
        except InvalidImage as exc:
            raise ApiProtocolError(f"the API's image does not decode: {exc}") from exc
        return Picture(
            data=chat_bytes,
            mime=chat_mime,
            filename=f"stepedit-{edit.id}.jpg",
            image_id=image_id,
            edit_id=edit.id,
            prompt=edit.prompt,
            seed=seed,
            notes=notes,
            stand_in=stand_in,
            full_mime=imaging.full_quality_mime(data),
            comparable=comparable,
        )


# What says the backend itself is unwell (not the user's input, not refused content).
_BACKENDS_FAULT = (ApiUnavailable, ApiTimeout, ApiConfigError, ApiProtocolError)


def _paid_call(exc: StepEditError) -> bool:
    """Whether an edit ended by `exc` made a call the vendor may bill, with no picture: refused
    content, words without a picture, or a failure after the request was sent."""
    if isinstance(exc, EditRefused | NoImageReturned):
        return True
    return isinstance(exc, EditApiError) and bool(exc.params.get("maybe_done"))


async def _kept_results(ctx: Context, edit: EditRecord) -> list[StoredImage]:
    """What an earlier attempt kept: its result, or an album's results made one by one."""
    assert edit.result_image_id is not None
    ids = [edit.result_image_id]
    if edit.pictures > 1:  # (only then a look at its pictures)
        made = [each.result_image_id for each in await ctx.store.edit_pictures(edit.id)]
        ids = [image_id for image_id in made if image_id is not None] or ids
    return [await ctx.store.load_image(image_id) for image_id in ids]


async def _send(messenger: Messenger, to: Address, pictures: list[Picture]) -> list[MessageRef]:
    """The messages showing the pictures: one picture, or an album."""
    if len(pictures) == 1:
        return [await messenger.send_picture(to, pictures[0])]
    return await messenger.send_album(to, pictures)


async def _settled(task: asyncio.Future[Any]) -> None:
    """Wait for `task` to end, whatever its outcome (an error is the caller's to ignore). If
    the caller is cancelled meanwhile, so is `task`, and the caller waits for it to end first:
    a database call nobody waits for would outlive its job (and, at shutdown, the loop)."""
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait([task])
        raise
    if not task.cancelled():
        task.exception()  # (retrieved: not logged as never retrieved)


async def _ended(task: asyncio.Future[_T]) -> _T:
    """`task`'s outcome, as `await task` gives it, but waited for to its end (see _settled)."""
    await _settled(task)
    return task.result()


def _ms_since(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _ms_between(start: datetime, end: datetime) -> int:
    """Milliseconds, kept within the INTEGER columns they are stored in (hosts' clocks may
    disagree, and a job may wait across a long outage)."""
    return min(max(int((end - start).total_seconds() * 1000), 0), _MAX_MS)


_MAX_MS = 2**31 - 1
