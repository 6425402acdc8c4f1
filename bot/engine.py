"""The job engine: the only owner of this process's runtime job state.

Workers claim queued jobs from the database (fair between users, one job per user at the API,
at most `concurrency` here) under a lease their heartbeat renews, and hand each to the delivery
(bot/delivery.py). If the process dies, the lease runs out and any process runs the job again.
Requests ask the engine what they need of it: whether an admission should claim for an idle
worker, whether a job starts now, that a job was cancelled, that one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import datetime, timedelta

from bot import upkeep
from bot.api_slots import ApiSlots
from bot.context import Context
from bot.domain import Address, Admission, EditRecord, EditStatus, Lease
from bot.notes import QUIET_START, JobNotes
from bot.pictures import Pictures
from bot.ports import Messenger
from bot.progress import NoteKey

log = logging.getLogger("stepedit.service")

LEASE_SECONDS = 30.0  # a dead process's jobs go back to the queue within this (+ a heartbeat)
POLL_SECONDS = 1.0  # how often idle workers look for jobs other processes queued

Deliver = Callable[[EditRecord], Coroutine[object, object, None]]


class JobEngine:
    def __init__(
        self,
        ctx: Context,
        pictures: Pictures,
        *,
        lease: float = LEASE_SECONDS,
        poll: float = POLL_SECONDS,
        note_interval: float = 4.0,
        note_quiet_start: float = QUIET_START,
        global_api_concurrency: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.pictures = pictures
        self.lease = lease
        self._poll = poll
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._deliver: Deliver | None = None  # see deliver_with
        # Twice as many workers as API calls: while some call the API, others fetch photos or
        # deliver results, so the paid slots never wait for the chat platform.
        self._workers = 2 * ctx.concurrency
        self.api_slots = ApiSlots(ctx.store, ctx.clock, owner=self.owner, local=ctx.concurrency,
                                  shared=global_api_concurrency, lease=lease)  # fmt: skip
        self.committed: set[int] = set()  # held edits past their API call's start
        self.notes = JobNotes(ctx, min_interval=note_interval, quiet_start=note_quiet_start)
        self._held: dict[int, asyncio.Task[None]] = {}  # edit id -> the task working on it here
        self._busy_users: Counter[int] = Counter()  # users of the held edits (user id -> count)
        # Edits cancelled here while no task held them (edit id -> when): a worker whose claim
        # of one committed just before the cancel, and had not started it yet, skips it.
        self._cancelled_unheld: dict[int, float] = {}
        self._ended: dict[int, asyncio.Future[EditRecord]] = {}
        # "There may be a job to claim": one idle worker at a time looks (SQLite has one
        # writer; a claim by every idle worker would only queue them up), and on success
        # passes the word on. A word said while no worker waits stays until one does.
        # The word is True when it comes from an admission here: there is a job, claim it
        # without looking first.
        self._nudges: asyncio.Queue[bool] = asyncio.Queue(maxsize=1)
        self._idle_workers = 0  # workers waiting for a word
        self._claiming = 0  # admissions under way that claim for one of them
        # Jobs claimed by an admission here for a waiting worker (one writer's turn fewer than
        # a claim of its own), taken before any claim; leased to us, renewed like held ones.
        self._handed: deque[EditRecord] = deque()
        self._loops: list[asyncio.Task[None]] = []
        self.stopping = False

    @property
    def running(self) -> bool:
        """Whether the workers run (started, not stopping)."""
        return bool(self._loops) and not self.stopping

    def deliver_with(self, deliver: Deliver) -> None:
        """What carries a claimed job to its end (bot/delivery.py), set once before start()."""
        self._deliver = deliver

    # --- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers: jobs left by a crash are taken up again once their lease ends."""
        self.stopping = False
        await self.ctx.store.requeue_expired(self.ctx.clock())
        loops = [self._worker() for _ in range(self._workers)]
        loops += [self._scout(), self._heartbeat(), self.notes.report_places()]
        loops += [upkeep.sweep(self.ctx, self.lease), upkeep.housekeeping(self.ctx)]
        self._loops = [asyncio.create_task(loop) for loop in loops]

    async def stop(
        self, grace: float, also: set[asyncio.Task[None]], settle: Callable[[], Awaitable[None]]
    ) -> None:
        """Take no more jobs, let running ones finish for up to `grace` seconds, and give the
        rest back to the queue for the next start (of this process or another). `also`: other
        background tasks to stop; `settle`: what to write down before the jobs go back."""
        self.stopping = True
        held = dict(self._held)
        for edit_id, task in held.items():
            if edit_id not in self.committed:  # not at the API yet: back to the queue now
                task.cancel()
        if held:
            await asyncio.wait(held.values(), timeout=grace)
        for task in held.values():
            task.cancel()
        for loop in self._loops:
            loop.cancel()
        prefetches = self.pictures.drop_prefetches()
        for task in also:
            task.cancel()
        await asyncio.gather(*held.values(), *self._loops, *prefetches, *also,
                             return_exceptions=True)  # fmt: skip
        await settle()
        self._loops = []
        handed = [edit.id for edit in self._handed]  # claimed for a worker that never took it
        self._handed.clear()
        if held or handed:  # those that ended meanwhile are no longer leased: this leaves them
            with contextlib.suppress(Exception):  # else their leases run out: same end, later
                await self.ctx.store.requeue(self.owner, [*held, *handed])
        await self.notes.drain(timeout=2.0)

    async def wait(self, edit_id: int, timeout: float | None = None) -> EditRecord:
        """The edit once it has ended (for the CLI and tests); it must run in this process."""
        future = self._ended.setdefault(edit_id, asyncio.get_running_loop().create_future())
        record = await self.ctx.store.get_edit(edit_id)
        if record is not None and record.status not in EditStatus.OPEN:
            self._ended.pop(edit_id, None)
            return record
        async with asyncio.timeout(timeout):
            return await future

    async def announce_end(self, edit_id: int) -> None:
        future = self._ended.pop(edit_id, None)
        if future is not None and not future.done():
            with contextlib.suppress(Exception):
                record = await self.ctx.store.get_edit(edit_id)
                if record is not None:
                    future.set_result(record)

    def lease_end(self) -> datetime:
        return self.ctx.clock() + timedelta(seconds=self.lease)

    # --- what admissions and cancels ask ----------------------------------------------------

    @contextlib.contextmanager
    def admitting(self) -> Iterator[Lease | None]:
        """A lease for an admission to claim with, when a worker waits with no job handed or
        promised to it yet and an API slot is free (roughly: held jobs use the API): the job
        then starts at once. None: the admission only queues."""
        with self.notes.board.intake.admission():
            yield from self._lease()

    def _lease(self) -> Iterator[Lease | None]:
        promised = len(self._handed) + self._claiming
        claim = (
            self._idle_workers > promised
            and len(self._held) + promised < self.ctx.concurrency
            and not self.stopping
        )
        if not claim:
            yield None
            return
        self._claiming += 1
        try:
            yield Lease(self.owner, self.lease_end(), tuple(self.ctx.messengers))
        finally:
            self._claiming -= 1

    async def admitted(self, admission: Admission, lease: Lease | None, user_id: int) -> bool:
        """Take up what an admission claimed; whether its own job starts now (a free worker
        takes it at once unless the user has one running here: one at a time each)."""
        claimed = admission.claimed
        if claimed is not None:
            await self._hand(claimed)
        if admission.duplicate or admission.refused is not None:
            return False
        if lease is None:
            starts_now = self._idle() and user_id not in self._busy_users
            self._nudge(admitted=starts_now)
            return starts_now
        if claimed is not None and claimed.id != admission.edit_id:
            self._nudge()  # an earlier job came first; another idle worker may look
            return False
        return claimed is not None  # claimed for the waiting worker, or none could start

    def show_admitted(
        self, admission: Admission, key: NoteKey, to: Address, *, started: bool
    ) -> None:
        """The request's note: its place in line (less the workers idle here, which take the
        ones ahead at once; roughly, held jobs use the API), or that work starts. Jobs claimed
        for a worker here and not taken yet (by an admission of the same batch, just now) are
        as good as held."""
        promised = len(self._handed) + self._claiming
        idle = max(self.ctx.concurrency - len(self._held) - promised, 0)
        self.notes.admitted(admission, key, to, started=started, idle=idle)

    def cancelled(self, edit: EditRecord) -> Messenger | None:
        """`edit` was cancelled: stop its work here, close its note; its messenger, to answer
        through (then announce_end)."""
        task = self._held.get(edit.id)
        if task is not None:
            task.cancel()  # stop waiting for the API: the job has ended
        else:
            self._remember_cancelled(edit.id)
        self.notes.taken(edit.id)
        messenger = self.ctx.messengers.get(edit.platform)
        if messenger is not None:
            self.notes.close(edit, messenger)
        return messenger

    def _remember_cancelled(self, edit_id: int) -> None:
        """For a claim that may be on its way back (one round trip): kept a minute."""
        now = time.monotonic()
        for old in [k for k, at in self._cancelled_unheld.items() if now - at > 60]:
            del self._cancelled_unheld[old]
        self._cancelled_unheld[edit_id] = now

    # --- workers -----------------------------------------------------------------------------

    async def _worker(self) -> None:
        admitted = False  # woken by an admission here: a job is there, no need to look first
        while not self.stopping:
            if self._handed:  # claimed for us by an admission
                edit: EditRecord | None = self._handed.popleft()
            else:
                edit = await self._claim(look=not admitted)
                if edit is not None:
                    self._nudge()  # there may be more: the next idle worker looks
            admitted = False
            if edit is None:
                self._idle_workers += 1
                try:
                    admitted = await self._nudges.get()
                finally:
                    self._idle_workers -= 1
                continue
            if edit.id in self._held:  # our own lease ran out and we took it again: it runs
                continue
            if self._cancelled_unheld.pop(edit.id, None) is not None:
                continue  # cancelled (and answered) while our claim was on its way back
            if self.stopping:  # claimed while stop() began: hand it back untouched
                with contextlib.suppress(Exception):
                    await self.ctx.store.requeue(self.owner, [edit.id])
                return
            await self._hold(edit)
            # and this worker looks for the next job at once (the user's next may be free now)

    async def _hold(self, edit: EditRecord) -> None:
        """Carry `edit` to its end in a task of its own (so a cancel can stop it)."""
        assert self._deliver is not None, "deliver_with() before start()"
        self.notes.taken(edit.id)
        task = asyncio.create_task(self._deliver(edit))
        self._held[edit.id] = task
        self._busy_users[edit.user_id] += 1
        try:
            await asyncio.wait([task])
        finally:
            self._held.pop(edit.id, None)
            self._busy_users -= Counter({edit.user_id: 1})
            self.committed.discard(edit.id)

    async def _hand(self, edit: EditRecord) -> None:
        """A job an admission claimed goes to a waiting worker (back to the queue if this
        process began to stop meanwhile)."""
        if self.stopping:
            with contextlib.suppress(Exception):  # else its lease runs out: same end, later
                await self.ctx.store.requeue(self.owner, [edit.id])
            return
        self._handed.append(edit)
        self._nudge()

    async def _claim(self, *, look: bool) -> EditRecord | None:
        try:
            return await self.ctx.store.claim(
                self.owner, self.lease_end(), list(self.ctx.messengers), look=look
            )
        except Exception:
            log.exception("could not claim a job; trying again")
            return None

    def _nudge(self, *, admitted: bool = False) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a word is out already
            self._nudges.put_nowait(admitted)

    def _idle(self) -> bool:
        """Whether a worker of this process is free to take a job."""
        return bool(self._loops) and not self.stopping and len(self._held) < self._workers

    # --- background rounds -------------------------------------------------------------------

    async def _scout(self) -> None:
        """Wake the idle workers when jobs wait that this process did not admit (queued by
        another process, or given back by one that died): one cheap query per round."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                if len(self._held) < self._workers and await self.ctx.store.has_queued(
                    list(self.ctx.messengers)
                ):
                    self._nudge()
            except Exception:
                log.exception("could not look for queued jobs")

    async def _heartbeat(self) -> None:
        """Renew the leases of the jobs and API slots held here; requeue the jobs of processes
        that died."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                mine = self._leased()
                if mine:
                    await self.ctx.store.renew_leases(self.owner, mine, self.lease_end())
                await self.api_slots.renew()
                if await self.ctx.store.requeue_expired(self.ctx.clock(), keep=mine):
                    self._nudge()
            except Exception:
                log.exception("lease heartbeat failed; trying again")

    def _leased(self) -> list[int]:
        """The edits leased to this process: held by a task, or handed to a worker."""
        return [*self._held, *(edit.id for edit in self._handed)]
