"""Rounds any process may run, for what no job holds any more: answers and notes that a dead
process (or a failed send) left of ended edits, handled events old enough to forget, and images
past RETENTION_DAYS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from bot.context import Context
from bot.domain import EditRecord

log = logging.getLogger("stepedit.service")

EXPIRE_EVERY = 600.0  # seconds between looks for images past RETENTION_DAYS
# How long a handled event is remembered: Telegram keeps an undelivered update 24 hours.
HANDLED_KEPT = timedelta(hours=48)
NOTE_GIVEN_UP = timedelta(minutes=10)  # a leftover note not deleted by then stays


async def sweep(ctx: Context, lease: float) -> None:
    """Finish what a dead process (or a failed send) left of ended edits: notes standing,
    answers unsent. An answer is taken off the list before it is tried, so a user who blocked
    the bot holds up no one, and none goes out twice; a note, once it is deleted."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            ended_before = ctx.clock() - timedelta(seconds=lease)
            leftovers = await ctx.store.take_leftovers(list(ctx.messengers), ended_before)
        except Exception:
            log.exception("could not look for leftovers of ended edits")
            continue
        for edit in leftovers:
            messenger = ctx.messengers[edit.platform]
            if edit.answer is not None:
                with contextlib.suppress(Exception):  # the last try: gone, blocked, too old
                    await messenger.send_text(edit.address, edit.answer)
            if edit.note_id is not None:
                with contextlib.suppress(Exception):  # else tried again in the next round
                    await _delete_note(ctx, edit)


async def _delete_note(ctx: Context, edit: EditRecord) -> None:
    """Delete a leftover note, then forget it; one that could not be deleted for
    NOTE_GIVEN_UP is forgotten all the same (the sweep would try it forever)."""
    assert edit.note_id is not None
    try:
        await ctx.messengers[edit.platform].delete_note(edit.address, edit.note_id)
    except Exception as exc:
        ended = edit.finished_at or ctx.clock()
        if ctx.clock() - ended < NOTE_GIVEN_UP:
            raise
        log.warning("giving up deleting progress note %s of edit %s: %r",
                    edit.note_id, edit.id, exc)  # fmt: skip
    await ctx.store.forget_note(edit.platform, edit.chat_id, edit.note_id)


async def housekeeping(ctx: Context) -> None:
    """Every few minutes (any process may; each batch is one transaction): forget handled
    events older than HANDLED_KEPT, and with RETENTION_DAYS delete images older than that."""
    while True:
        try:
            await ctx.store.forget_handled(ctx.clock() - HANDLED_KEPT)
            if ctx.rules.retention_days:
                cutoff = ctx.clock() - timedelta(days=ctx.rules.retention_days)
                expired = await ctx.store.expire_images(cutoff)
                while expired:  # batches of one short transaction each
                    expired = await ctx.store.expire_images(cutoff)
        except Exception:
            log.exception("could not delete expired images or old handled events")
        await asyncio.sleep(EXPIRE_EVERY)
