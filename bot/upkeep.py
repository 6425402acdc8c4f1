"""Rounds any process may run, for what no job holds any more: answers and notes that a dead
process (or a failed send) left of ended edits, handled events old enough to forget, and images
past RETENTION_DAYS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from bot.context import Context

log = logging.getLogger("stepedit.service")

EXPIRE_EVERY = 600.0  # seconds between looks for images past RETENTION_DAYS
# How long a handled event is remembered: Telegram keeps an undelivered update 24 hours.
HANDLED_KEPT = timedelta(hours=48)


async def sweep(ctx: Context, lease: float) -> None:
    """Finish, once, what a dead process (or a failed send) left of ended edits: notes
    standing, answers unsent. Each is taken off the list before it is tried, so a user who
    blocked the bot holds up no one, and no answer goes out twice."""
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
            with contextlib.suppress(Exception):  # the last try: gone, blocked, too old
                if edit.answer is not None:
                    await messenger.send_text(edit.address, edit.answer)
                if edit.note_id is not None:
                    await messenger.delete_note(edit.address, edit.note_id)


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
