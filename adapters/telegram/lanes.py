"""Updates received (polled, posted to the webhook, or left by an earlier process), each handled
in its lane: one per user in a chat, one update after another in the order sent (a text right
after a photo edits that photo); lanes side by side, so nobody waits behind someone else's flood.
Also what is known of each update until it is handled: the gate's event for it as kept, and
whether it must be left for Telegram (or the next start) to send again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from telegram import Update
from telegram.ext import Application

from adapters.telegram.translate import PLATFORM, incoming
from bot import logs
from bot.domain import Incoming
from bot.service import EditService

log = logging.getLogger("stepedit.telegram")

# Updates from private chats handled at once, across lanes: a flood waits its turn here rather
# than crowding the event loop, so the edits at work keep their share of it (and the API its
# pace) meanwhile.
HANDLED_AT_ONCE = 32
LANES_GRACE_SECONDS = 10.0  # on stop, how long updates received may take to finish


class Lanes:
    def __init__(
        self, app: Application[Any, Any, Any, Any, Any, Any], service: EditService
    ) -> None:
        self.app = app
        self.service = service
        # Updates meant for the bot (kept as received), until handled: then marked so.
        self.kept: dict[int, Incoming] = {}
        self.unhandled: set[int] = set()  # the gate could not tell: Telegram sends them again
        self._delivered: dict[int, asyncio.Future[bool]] = {}  # update id -> handled?
        self._in_flight: set[int] = set()  # update ids received, not yet handled
        self._handling = asyncio.Semaphore(HANDLED_AT_ONCE)
        self._lanes: dict[tuple[int, int], deque[Update]] = {}  # (chat, user) -> its updates
        self._tasks: set[asyncio.Task[None]] = set()
        self._progress = asyncio.Event()  # an update was handled (for handle)

    @property
    def handling(self) -> int:
        """Updates received and not yet handled."""
        return len(self._in_flight)

    def holds(self, update_id: int) -> bool:
        """Whether the update is received and not yet handled."""
        return update_id in self._in_flight

    def dispatch(self, update: Update) -> None:
        """Queue `update` in its lane."""
        self._in_flight.add(update.update_id)
        chat, user = update.effective_chat, update.effective_user
        key = (chat.id if chat else 0, user.id if user else -update.update_id)
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(update)
            return
        self._lanes[key] = deque([update])
        task = asyncio.create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: tuple[int, int]) -> None:
        lane = self._lanes[key]
        logs.about(platform=PLATFORM, chat=str(key[0]))  # what this lane's log lines are about
        try:
            # A group's sends have their own small budget (20 a minute), which a flood there
            # waits for: its updates take no slot, so they never hold up everyone else's.
            slot = self._handling if key[0] > 0 else contextlib.nullcontext()
            while lane:
                async with slot:
                    await self._process(lane[0])
                self._in_flight.discard(lane.popleft().update_id)
                self._progress.set()
        finally:
            del self._lanes[key]
            for update in lane:  # cancelled (stopping): not handled here
                self._settle(update.update_id, False)

    async def _process(self, update: Update) -> None:
        handled = False
        try:
            await self.app.process_update(update)  # handler errors go to on_error
            kept = self.kept.pop(update.update_id, None)
            handled = update.update_id not in self.unhandled
            self.unhandled.discard(update.update_id)
            if kept is not None and handled:  # (or refused): a redelivery of it is ignored
                await self.service.handled(kept)
        except Exception:  # on_error itself failed: never let it stop the lane
            log.exception("update %s could not be handled", update.update_id)
        finally:
            self._settle(update.update_id, handled)

    async def deliver(self, update: Update, event: Incoming | None) -> bool:
        """Handle `update` in its lane (its event kept, if meant for the bot), and wait: whether
        it was handled. Sent again while handled here, it waits for that."""
        uid = update.update_id
        waiter = self._delivered.get(uid)
        if waiter is None:
            waiter = self._delivered[uid] = asyncio.get_running_loop().create_future()
            if event is not None and event.addressed:
                self.kept[uid] = event
            self.dispatch(update)
        try:
            return await asyncio.shield(waiter)
        finally:
            if waiter.done() and self._delivered.get(uid) is waiter:
                del self._delivered[uid]

    def _settle(self, update_id: int, handled: bool) -> None:
        waiter = self._delivered.get(update_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(handled)

    async def handle(self, updates: tuple[Update, ...]) -> None:
        """Handle `updates` as if polled, and wait until they are."""
        for update in updates:
            self.dispatch(update)
        while any(update.update_id in self._in_flight for update in updates):
            self._progress.clear()
            await self._progress.wait()

    async def resume(self) -> int:
        """Updates a process before this one received and did not handle: first, in order.
        The update id after the newest of them (0: none)."""
        after = 0
        try:
            kept = await self.service.received(PLATFORM)
        except Exception:
            log.exception("could not read the updates left unhandled")
            return after
        for update_id, payload in sorted(kept, key=lambda kept: int(kept[0])):
            update = Update.de_json(json.loads(payload), self.app.bot)
            event = incoming(update, self.app.bot)
            if event is not None:
                self.kept[update.update_id] = event
            self.dispatch(update)
            after = max(after, int(update_id) + 1)
        return after

    async def drain(self) -> None:
        """On stop: let the updates received finish (a while); the rest are cancelled, kept
        as received (polling) or unanswered (webhook): handled after a restart, or by another
        replica."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LANES_GRACE_SECONDS)
        for task in list(self._tasks):
            task.cancel()
