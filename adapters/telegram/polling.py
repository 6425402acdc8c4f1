"""Updates by long polling (getUpdates), when no webhook is set: each batch kept in the database
as received before the next poll tells Telegram to forget it, and handed to the lanes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from telegram import Bot
from telegram.error import TelegramError

from adapters.telegram.lanes import Lanes
from adapters.telegram.translate import PLATFORM, incoming
from bot.service import EditService

log = logging.getLogger("stepedit.telegram")

POLL_RETRY_SECONDS = 2.0  # after a failed getUpdates


class Polling:
    def __init__(self, bot: Bot, service: EditService, lanes: Lanes) -> None:
        self.bot = bot
        self.service = service
        self.lanes = lanes
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last getUpdates failed
        self._confirmed = 0  # the last offset Telegram was told: all before are kept
        self._next = 0  # the update id after the newest one received

    def start(self, timeout: int, interval: float, types: list[str]) -> None:
        self._task = asyncio.create_task(self._poll(timeout, interval, types))

    @property
    def connected(self) -> bool:
        """Whether the bot polls and the Bot API answers."""
        polling = self._task is not None and not self._task.done()
        return polling and not self._failing

    async def stop(self) -> bool:
        """Poll no more; whether the bot was polling."""
        task, self._task = self._task, None
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def _poll(self, timeout: int, interval: float, types: list[str]) -> None:
        """Long-poll getUpdates; keep each batch in the database (received, not yet handled)
        before the next poll tells Telegram to forget it, and hand each update to its lane.
        So Telegram's window of 100 updates never fills with ones still being worked on, and
        after a crash the bot handles what was left (`Lanes.resume`); the gate recognises what
        was handled already."""
        self._next = max(self._next, await self.lanes.resume())
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=self._next, timeout=timeout, allowed_updates=types
                )
            except TelegramError as exc:
                self._failing = True
                log.warning("getUpdates failed (%s); trying again", exc)
                await asyncio.sleep(POLL_RETRY_SECONDS)
                continue
            self._failing = False
            self._confirmed = self._next
            fresh = [update for update in updates if update.update_id >= self._next]
            if fresh:
                # Handled at once; kept (before the next poll confirms them) meanwhile. After a
                # failed keep the same come again: those still in flight are not taken twice.
                # Chatter not meant for the bot is neither kept nor marked: no write for it.
                meant = {u.update_id: e for u in fresh if (e := incoming(u, self.bot))
                         and e.addressed}  # fmt: skip
                news = [e for u, e in meant.items() if not self.lanes.holds(u)]
                if len(news) > 1:  # a burst: the gate's reads in one
                    await self.service.expect(news)
                for update in fresh:
                    if not self.lanes.holds(update.update_id):
                        if update.update_id in meant:
                            self.lanes.kept[update.update_id] = meant[update.update_id]
                        self.lanes.dispatch(update)
                try:
                    if meant:
                        await self.service.receive(PLATFORM, [
                            (str(u.update_id), json.dumps(u.to_dict()))
                            for u in fresh if u.update_id in meant
                        ])  # fmt: skip
                except Exception:  # the database: poll again with the same offset
                    log.exception("could not keep the updates received; trying again")
                    await asyncio.sleep(POLL_RETRY_SECONDS)
                    continue
                self._next = fresh[-1].update_id + 1
            elif not updates and interval:
                await asyncio.sleep(interval)

    async def confirm(self) -> None:
        """Tell Telegram the updates received are kept (as the next getUpdates would)."""
        offset = self._next
        if offset > self._confirmed:
            with contextlib.suppress(TelegramError):
                await self.bot.get_updates(offset=offset, timeout=0)
            self._confirmed = offset
