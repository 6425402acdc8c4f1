"""The one place that orchestrates an edit, for every platform.

A request becomes a job in one step (`submit`): its source image is found (a photo not fetched
yet, the image a replied-to message shows, the user's current image, or a rerolled edit's
source), the prompt checked, and then one transaction either refuses it (quota, too many
waiting) or reserves a unit and queues it. Nothing is downloaded or decoded before that.

Workers in every process claim queued jobs from the database (fair between users, one job per
user at the API, at most `concurrency` here) under a lease their heartbeat renews. A job fetches
its photo, calls the API, keeps the result, and delivers it through the platform's Messenger,
using only the address stored with it; the transaction that ends it also keeps or gives back
its unit, so units used always equal results delivered. If the process dies, the lease runs out
and any process runs the job again (a kept result is delivered, not edited again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter

from bot import imaging, memes
from bot.backends.base import Capabilities, InputImage
from bot.config import IdSet, OperatorRules
from bot.domain import (
    CFG_RANGE,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    STEPS_RANGE,
    Address,
    Admission,
    ChatRef,
    EditedImage,
    EditOptions,
    EditRecord,
    EditRequest,
    EditStatus,
    EditTimings,
    FileRef,
    Incoming,
    Lease,
    MessageRef,
    NewEdit,
    NewImage,
    Picture,
    QuotaStatus,
    ShownImage,
    Spend,
    UserRecord,
    UserRef,
    UserSettings,
)
from bot.errors import (
    AdminsOnly,
    ApiConfigError,
    ApiProtocolError,
    Banned,
    BudgetSpent,
    Busy,
    ChatQuotaExceeded,
    EditApiError,
    EditRefused,
    FileTooLarge,
    GenerationUnsupported,
    Ignored,
    ImageExpired,
    InvalidImage,
    InvalidSetting,
    NoImageReturned,
    NotAllowed,
    NothingToEdit,
    NothingToUndo,
    PromptError,
    PromptTooLong,
    QuotaExceeded,
    SentAsChat,
    StepEditError,
    TooFast,
    UnchargedCallsCapped,
    UnknownEdit,
)
from bot.handled import HandledMarks, ReadOnce
from bot.ports import EditStore, ImageEditor, Messenger
from bot.presenter import Action, Press
from bot.progress import SENT, WORKING, NoteBoard, NoteKey
from bot.texts import error_text, language_for, t

log = logging.getLogger("stepedit.service")

# Written text in quotes, as in the vendor's speech-bubble and sign examples. A straight single
# quote counts only when it does not touch a letter on its outer side (so "cat's" is no quote).
CANVAS = "canvas"  # the "mime" of a new image's source: no picture, only its size
_QUOTED_TEXT = re.compile(r"\"[^\"]+\"|“[^”]+”|「[^」]+」|『[^』]+』|‘[^’]+’|(?<!\w)'[^']+'(?!\w)")
MAX_WAITING_PER_USER = 5
PILLOW_WORKERS = 2
MAX_ATTEMPTS = 3  # a job that kills its process every time is given up on, not run forever
LEASE_SECONDS = 30.0  # a dead process's jobs go back to the queue within this (+ a heartbeat)
POLL_SECONDS = 1.0  # how often idle workers look for jobs other processes queued
EXPIRE_EVERY = 600.0  # seconds between looks for images past RETENTION_DAYS
FREE_USERS_KEPT = 10_000  # users whose recent free actions are remembered
ACTION_EVERY = 4.5  # Telegram shows a chat action for about 5 s
ACTIONS_PER_SECOND = 2.0  # chat actions' share of the send budget (all chats together)
# How long a handled event is remembered: Telegram keeps an undelivered update 24 hours.
HANDLED_KEPT = timedelta(hours=48)
PLACE_EVERY = 2.0  # seconds between place updates of waiting jobs' notes
PREFETCH_KEEP = 15.0  # seconds a fetched upload waits for a worker of this process to take it
_T = TypeVar("_T")
_U = TypeVar("_U")


def wants_text_mode(prompt: str) -> bool:
    return bool(_QUOTED_TEXT.search(prompt))


def utcnow() -> datetime:
    return datetime.now(UTC)


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


class _LeaseLost(Exception):
    """This process no longer holds the edit (its lease ran out and another took it)."""


@dataclass(frozen=True)
class _Source:
    image_id: int
    parent_edit_id: int | None
    canvas: str | None = None  # a new image of this size, from the prompt alone


@dataclass(frozen=True)
class _Prefetch:
    fetch: asyncio.Task[bytes]
    expiry: asyncio.TimerHandle

    def drop(self) -> None:
        self.expiry.cancel()
        self.fetch.cancel()


class EditService:
    def __init__(
        self,
        store: EditStore,
        editor: ImageEditor,
        *,
        daily_quota: int = 20,
        default_steps: int = 8,
        default_cfg_scale: float = 1.0,
        max_side: int = MAX_SIDE,
        concurrency: int = 4,
        max_waiting: int = MAX_WAITING_PER_USER,
        lease: float = LEASE_SECONDS,
        poll: float = POLL_SECONDS,
        note_interval: float = 4.0,
        clock: Callable[[], datetime] = utcnow,
        seeds: Callable[[], int] = random_seed,
        rules: OperatorRules | None = None,
        meme_font: Path | None = None,
    ) -> None:
        self.store = store
        self.meme_font = meme_font  # None: the bundled CJK font
        self.rules = rules or OperatorRules()
        self.editor = editor
        self.daily_quota = daily_quota
        self.defaults = EditOptions(steps=default_steps, cfg_scale=default_cfg_scale)
        self.max_side = max_side
        self.concurrency = concurrency
        # Twice as many workers as API calls: while some call the API, others fetch photos or
        # deliver results, so the paid slots never wait for the chat platform.
        self._workers = 2 * concurrency
        self._api_slots = asyncio.Semaphore(concurrency)
        self._committed: set[int] = set()  # held edits past their API call's start
        self.max_waiting = max_waiting
        self._lease = lease
        self._poll = poll
        self._clock = clock
        self._seeds = seeds
        self._owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._salt: str | None = None  # of the end-user hash (the database keeps it)
        self._background: set[asyncio.Task[None]] = set()  # messages to admins on their way
        self._handled = HandledMarks(self.store.mark_all_handled)
        # Users the gate read, for the request that follows; what the gate needs of events
        # received in a batch, read for all of them at once.
        self._passed: ReadOnce[tuple[str, str], UserRecord] = ReadOnce(fresh=1.0)
        self._expected: ReadOnce[tuple[str, str], _Gated] = ReadOnce(fresh=5.0)
        self._user_changes = 0  # settings, bans and forgets so far (records read before: stale)
        self._actions = AsyncLimiter(ACTIONS_PER_SECOND, 1.0)  # "sending photo…"
        self._free = _PerMinute(self.rules.free_actions_per_minute)
        self._messengers: dict[str, Messenger] = {}
        self._notes = NoteBoard(self.store.set_note, self._forget_note, min_interval=note_interval)
        self._held: dict[int, asyncio.Task[None]] = {}  # edit id -> the task working on it here
        self._busy_users: Counter[int] = Counter()  # users of the held edits (user id -> count)
        # Edits cancelled here while no task held them (edit id -> when): a worker whose claim
        # of one committed just before the cancel, and had not started it yet, skips it.
        self._cancelled_unheld: dict[int, float] = {}
        self._waiting_here: dict[int, NoteKey] = {}  # queued jobs admitted here, for their notes
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
        # Uploads admitted while a worker was idle, fetched while that worker claims the job
        # (platform, file id -> the download).
        self._prefetched: dict[tuple[str, str], _Prefetch] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        # Decoding a big image takes hundreds of MB for a moment: a few at a time, whatever comes.
        self._pillow_slots = asyncio.Semaphore(PILLOW_WORKERS)

    # --- running ---------------------------------------------------------------------------

    def attach(self, messenger: Messenger) -> None:
        """Answer and fetch through `messenger` for its platform; start() after attaching."""
        self._messengers[messenger.platform] = messenger

    async def start(self) -> None:
        """Start the workers: jobs left by a crash are taken up again once their lease ends."""
        self._stopping = False
        await self.store.requeue_expired(self._clock())
        loops = [self._worker() for _ in range(self._workers)]
        loops += [self._scout(), self._heartbeat(), self._sweep(), self._report_places()]
        loops.append(self._housekeeping())
        self._loops = [asyncio.create_task(loop) for loop in loops]

    async def stop(self, grace: float = 20.0) -> None:
        """Take no more jobs, let running ones finish for up to `grace` seconds, and give the
        rest back to the queue for the next start (of this process or another)."""
        self._stopping = True
        held = dict(self._held)
        for edit_id, task in held.items():
            if edit_id not in self._committed:  # not at the API yet: back to the queue now
                task.cancel()
        if held:
            await asyncio.wait(held.values(), timeout=grace)
        for task in held.values():
            task.cancel()
        for loop in self._loops:
            loop.cancel()
        prefetches = [prefetch.fetch for prefetch in self._prefetched.values()]
        for prefetch in self._prefetched.values():
            prefetch.drop()
        self._prefetched.clear()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*held.values(), *self._loops, *prefetches, *self._background,
                             return_exceptions=True)  # fmt: skip
        await self.settled()
        self._loops = []
        handed = [edit.id for edit in self._handed]  # claimed for a worker that never took it
        self._handed.clear()
        if held or handed:  # those that ended meanwhile are no longer leased: this leaves them
            with contextlib.suppress(Exception):  # else their leases run out: same end, later
                await self.store.requeue(self._owner, [*held, *handed])
        await self._notes.drain(timeout=2.0)

    async def wait(self, edit_id: int, timeout: float | None = None) -> EditRecord:
        """The edit once it has ended (for the CLI and tests); it must run in this process."""
        future = self._ended.setdefault(edit_id, asyncio.get_running_loop().create_future())
        record = await self.store.get_edit(edit_id)
        if record is not None and record.status not in EditStatus.OPEN:
            self._ended.pop(edit_id, None)
            return record
        async with asyncio.timeout(timeout):
            return await future

    # --- admitting requests ----------------------------------------------------------------

    async def submit(self, request: EditRequest) -> Admission:
        """Turn a request into a queued job, or raise the StepEditError that refuses it. A
        request whose `key` was seen before is the same job again (`Admission.duplicate`)."""
        user = _as_known(self._passed.take(_key(request.user)), request.user)
        if user is None:
            user = await self.store.get_or_create_user(request.user)
        chat = request.chat
        await self._gate(user, request.user, chat)
        if request.upload is not None:
            self.check_claims(request.upload)
        rerolled = None
        if request.reroll_of is not None:
            rerolled = await self._edit_in(request.reroll_of, chat)
        try:
            prompt = rerolled.prompt if rerolled else _checked_prompt(request.prompt)
        except PromptError:
            if request.upload:  # kept anyway: a shortened prompt sent next edits it
                await self._keep_upload(user, chat, request.upload, request.origin)
            raise
        source = await self._source(user, request, rerolled)
        settings = user.settings
        ignored: list[str] = []
        for name, value in request.overrides:  # this edit only; refused like /settings
            if _lacks(self.capabilities, name):
                ignored.append(name)  # not sent, not pretended: the user gets a note
                continue
            settings = parse_setting(settings, name, value, self.capabilities)
        options = self._options(settings, prompt, rerolled)
        new = NewEdit(
            user.id, chat.platform, chat.id, source.parent_edit_id, source.image_id, prompt,
            options, key=request.key, reply_to=request.answer_to,
            language=request.language,
        )  # fmt: skip
        day = self._today()
        # A worker waits with no job handed or promised to it yet, and an API slot is free
        # (roughly: held jobs use the API): the admission claims for it; the job starts at once.
        promised = len(self._handed) + self._claiming
        claim = (
            self._idle_workers > promised
            and len(self._held) + promised < self.concurrency
            and not self._stopping
        )
        lease = Lease(self._owner, self._lease_end(), tuple(self._messengers)) if claim else None
        self._claiming += 1 if claim else 0
        try:
            admission = await self.store.admit(
                new,
                day=day,
                quota=self.daily_quota,
                max_waiting=self.max_waiting,
                upload=None if rerolled else request.upload,
                canvas=self._canvas(source.canvas),
                origin=request.origin,
                chat_quota=0 if chat.is_private else self.rules.chat_quota,
                budget=self.rules.budget,
                unlimited=self.is_admin(request.user),
                spend=self._spend(),
                max_uncharged=self.rules.max_uncharged,
                claim=lease,
            )
        finally:
            self._claiming -= 1 if claim else 0
        if admission.claimed is not None:
            await self._hand(admission.claimed)
        if admission.refused == "quota":
            raise QuotaExceeded(limit=self.daily_quota, resets=self._reset_time())
        if admission.refused == "chat_quota":
            raise ChatQuotaExceeded(limit=self.rules.chat_quota, resets=self._reset_time())
        if admission.refused in ("budget", "spend"):
            self._tell_admins_paused(admission.refused, day)
            raise BudgetSpent(resets=self._reset_time())
        if admission.refused == "uncharged":
            raise UnchargedCallsCapped(limit=self.rules.max_uncharged, resets=self._reset_time())
        if admission.refused == "busy":
            raise Busy(limit=self.max_waiting)
        if not admission.duplicate:
            claimed = admission.claimed
            started = claimed is not None and claimed.id == admission.edit_id
            if lease is None:
                # A free worker (not waiting yet) takes this job at once unless the user has
                # one running here (one at a time each): then it claims without looking.
                starts_now = self._idle() and user.id not in self._busy_users
                self._nudge(admitted=starts_now)
            elif claimed is not None and not started:
                starts_now = False  # an earlier job came first; another idle worker may look
                self._nudge()
            else:  # claimed for the waiting worker, or none could start (nothing to wake)
                starts_now = started
            if starts_now and request.upload and not rerolled:
                self._prefetch(request.upload)  # fetched while its worker starts
            to = Address(chat.platform, chat.id, request.answer_to, request.language)
            key = (chat.platform, chat.id, user.id)
            await self._first_note(admission, key, to, started=started)
        return replace(admission, ignored=tuple(ignored)) if ignored else admission

    def check_claims(self, upload: FileRef) -> None:
        """Refuse a file by what its platform says of it (type, pixels), before it is kept or
        fetched; an adapter may ask before it answers in public (see imaging.check_claims)."""
        imaging.check_claims(upload.mime, upload.width, upload.height, max_side=self.max_side)

    async def _first_note(
        self, admission: Admission, key: NoteKey, to: Address, *, started: bool = False
    ) -> None:
        """The request's place in line, or that work starts (`started`: claimed, with an API
        slot free), on its user's note in this chat."""
        messenger = self._messengers.get(to.platform)
        if messenger is None:
            return
        edit_id = admission.edit_id
        if started:
            self._notes.show(edit_id, key, to, messenger, WORKING)
            return
        idle = max(self.concurrency - len(self._held), 0)  # roughly: held jobs use the API
        place = admission.place - idle  # idle workers take the ones ahead at once
        if place > 0:
            self._waiting_here[edit_id] = key
        self._notes.show(edit_id, key, to, messenger, max(place, WORKING))

    async def _source(
        self, user: UserRecord, request: EditRequest, rerolled: EditRecord | None
    ) -> _Source:
        source = await self._found_source(user, request, rerolled)
        if source.image_id and await self.store.expired(source.image_id):
            raise ImageExpired(f"image {source.image_id}")
        return source

    async def _found_source(
        self, user: UserRecord, request: EditRequest, rerolled: EditRecord | None
    ) -> _Source:
        if rerolled:
            return _Source(rerolled.source_image_id, rerolled.parent_edit_id)
        size = self._generation_size(user.settings)
        if request.imagine:
            return _Source(0, None, canvas=self._needs(size))  # made by the admission itself
        if request.upload:
            return _Source(0, None)  # kept (and this id set) by the admission itself
        if request.source_message:
            shown = await self.store.shown_in(request.source_message)
            if shown is None:
                raise UnknownEdit("the replied-to message shows no known image")
            return _Source(shown.image_id, shown.edit_id)
        current = await self.store.current(user.id, request.chat.platform, request.chat.id)
        if current is None and request.chat.is_private and request.prompt:
            # nothing to edit: make it from the words
            return _Source(0, None, canvas=self._needs(size))
        if current is None:
            raise NothingToEdit()
        return _Source(current.image_id, current.edit_id)

    async def _keep_upload(
        self, user: UserRecord, chat: ChatRef, upload: FileRef, origin: MessageRef | None
    ) -> int:
        """Remember a user's photo (not fetched yet) as their current image in this chat, so
        "try again" needs no new upload; fetched when an edit of it runs."""
        return await self.store.keep_upload(user.id, chat.platform, chat.id, upload, origin)

    def _options(
        self, settings: UserSettings, prompt: str, rerolled: EditRecord | None
    ) -> EditOptions:
        if rerolled:  # same everything, new seed
            return replace(rerolled.options, seed=self._seeds())
        chosen = self._with_defaults(settings)
        assert chosen.steps is not None and chosen.cfg_scale is not None  # filled in just now
        return EditOptions(
            steps=chosen.steps,
            cfg_scale=chosen.cfg_scale,
            seed=chosen.seed if chosen.seed is not None else self._seeds(),
            text_mode=wants_text_mode(prompt) if chosen.text_mode is None else chosen.text_mode,
            negative_prompt=chosen.negative_prompt,
        )

    def _with_defaults(self, settings: UserSettings) -> UserSettings:
        """Steps and cfg the user did not choose are the operator's defaults; the size of new
        images the backend's default (also for a size another backend had)."""
        return replace(
            settings,
            steps=settings.steps or self.defaults.steps,
            cfg_scale=settings.cfg_scale or self.defaults.cfg_scale,
            image_size=self._generation_size(settings),
        )

    @property
    def offers(self) -> tuple[Capabilities, tuple[str, ...]]:
        """What /settings shows: the backend's capabilities, its model and its fallback's."""
        fallback = getattr(self.editor, "fallback_model", None)
        return self.capabilities, (self.editor.model, *([fallback] if fallback else []))

    @property
    def capabilities(self) -> Capabilities:
        """What the edit backend offers: the settings and options users may choose."""
        return self.editor.capabilities

    def _needs(self, size: str | None) -> str:
        """A size for a new image; GenerationUnsupported (nothing queued, nothing charged)
        when the backend makes none."""
        if size is None:
            raise GenerationUnsupported("the edit backend makes no new images", maybe_done=False)
        return size

    def _canvas(self, size: str | None) -> tuple[str, int, int] | None:
        if size is None:
            return None
        width, height = self.capabilities.generation_sizes[size]
        return size, width, height

    def _generation_size(self, settings: UserSettings) -> str | None:
        """The size of the user's new images: theirs if this backend makes it, else its default;
        None when the backend makes no new images. GenerationUnsupported then says so."""
        sizes = self.capabilities.generation_sizes
        if settings.image_size in sizes:
            return settings.image_size
        return self.capabilities.default_size

    # --- workers ----------------------------------------------------------------------------

    async def _worker(self) -> None:
        admitted = False  # woken by an admission here: a job is there, no need to look first
        while not self._stopping:
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
            if self._stopping:  # claimed while stop() began: hand it back untouched
                with contextlib.suppress(Exception):
                    await self.store.requeue(self._owner, [edit.id])
                return
            self._waiting_here.pop(edit.id, None)
            task = asyncio.create_task(self._run(edit))
            self._held[edit.id] = task
            self._busy_users[edit.user_id] += 1
            try:
                await asyncio.wait([task])
            finally:
                self._held.pop(edit.id, None)
                self._busy_users -= Counter({edit.user_id: 1})
                self._committed.discard(edit.id)
            # and this worker looks for the next job at once (the user's next may be free now)

    async def _hand(self, edit: EditRecord) -> None:
        """A job an admission claimed goes to a waiting worker (back to the queue if this
        process began to stop meanwhile)."""
        if self._stopping:
            with contextlib.suppress(Exception):  # else its lease runs out: same end, later
                await self.store.requeue(self._owner, [edit.id])
            return
        self._handed.append(edit)
        self._nudge()

    async def _claim(self, *, look: bool) -> EditRecord | None:
        try:
            return await self.store.claim(
                self._owner, self._lease_end(), list(self._messengers), look=look
            )
        except Exception:
            log.exception("could not claim a job; trying again")
            return None

    def _nudge(self, *, admitted: bool = False) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a word is out already
            self._nudges.put_nowait(admitted)

    def _idle(self) -> bool:
        """Whether a worker of this process is free to take a job."""
        return bool(self._loops) and not self._stopping and len(self._held) < self._workers

    def _prefetch(self, upload: FileRef) -> None:
        """Start downloading an admitted upload whose job an idle worker is about to claim, so
        the download overlaps the claim (a photo's takes ~6 ms, a 14 MB file's ~50 ms). Not for
        a job that will wait: it would only hold memory; one another process takes is dropped
        after PREFETCH_KEEP."""
        messenger = self._messengers.get(upload.platform)
        key = (upload.platform, upload.file_id)
        if messenger is None or key in self._prefetched:
            return
        if len(self._prefetched) >= self.concurrency:
            return
        fetch = asyncio.create_task(messenger.fetch(upload))
        fetch.add_done_callback(_quietly)  # its worker looks at the outcome (see _fetch)
        # Not taken here meanwhile (claimed by another process, cancelled): dropped.
        expiry = asyncio.get_running_loop().call_later(PREFETCH_KEEP, self._drop_prefetch, key)
        self._prefetched[key] = _Prefetch(fetch, expiry)

    def _drop_prefetch(self, key: tuple[str, str]) -> None:
        prefetch = self._prefetched.pop(key, None)
        if prefetch is not None:
            prefetch.drop()

    async def _fetch(self, file: FileRef, messenger: Messenger) -> bytes:
        """The file's bytes: from its prefetch if one ran and worked, else fetched now. A
        prefetch the platform refused (too large, gone) is the answer: asking again would only
        be refused again; one that failed otherwise (the network) is fetched once more."""
        prefetch = self._prefetched.pop((file.platform, file.file_id), None)
        if prefetch is not None:
            prefetch.expiry.cancel()
            fetch = prefetch.fetch
            try:
                await asyncio.wait([fetch])  # (not `await fetch`: a cancelled one must not end us)
            except asyncio.CancelledError:
                fetch.cancel()
                raise
            if not fetch.cancelled():
                error = fetch.exception()
                if error is None or isinstance(error, StepEditError):
                    return fetch.result()  # the bytes, or the platform's refusal raised
        return await messenger.fetch(file)

    async def _scout(self) -> None:
        """Wake the idle workers when jobs wait that this process did not admit (queued by
        another process, or given back by one that died): one cheap query per round."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                if len(self._held) < self._workers and await self.store.has_queued(
                    list(self._messengers)
                ):
                    self._nudge()
            except Exception:
                log.exception("could not look for queued jobs")

    async def _heartbeat(self) -> None:
        """Renew the leases of the jobs held here; requeue those of processes that died."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                mine = self._leased()
                if mine:
                    await self.store.renew_leases(self._owner, mine, self._lease_end())
                if await self.store.requeue_expired(self._clock(), keep=mine):
                    self._nudge()
            except Exception:
                log.exception("lease heartbeat failed; trying again")

    def _leased(self) -> list[int]:
        """The edits leased to this process: held by a task, or handed to a worker."""
        return [*self._held, *(edit.id for edit in self._handed)]

    async def _report_places(self) -> None:
        """Tell waiting users their place when it changed enough to matter (the notes' own
        budget decides how often that reaches the chat)."""
        while True:
            await asyncio.sleep(PLACE_EVERY)
            if not self._waiting_here:
                continue
            try:
                places = await self.store.queue_places(list(self._waiting_here))
            except Exception:
                log.exception("could not read queue places")
                continue
            for edit_id, key in list(self._waiting_here.items()):
                place, shown = places.get(edit_id), self._notes.place_of(key, edit_id)
                if place is None or shown is None:  # claimed or ended meanwhile
                    self._waiting_here.pop(edit_id, None)
                elif place < shown and (place <= 3 or place <= shown * 3 // 4):
                    self._notes.show_place(edit_id, key, place)

    def _lease_end(self) -> datetime:
        return self._clock() + timedelta(seconds=self._lease)

    async def _run(self, edit: EditRecord) -> None:
        """Carry one claimed job to its end: a delivered picture or a clear answer."""
        messenger = self._messengers[edit.platform]
        try:
            await self._carry_out(edit, messenger)
        except asyncio.CancelledError:
            if self._stopping:
                if edit.id in self._committed:  # its call was made: billed, and made again
                    with contextlib.suppress(Exception):
                        await self.store.add_spend(self._today(), Spend.micros(self.editor.price))
                raise  # shutdown: the job goes back to the queue, its note stays
            # else the user cancelled it: cancel() ended it, answered and closed its note
        except _LeaseLost:
            log.warning("edit %s: its lease ran out while it ran; another process has it", edit.id)
            return
        except Exception:
            # Recording its end failed (the database?): the job is left to its lease, which
            # runs out, so it is tried again; a delivered one is delivered again, never refunded.
            log.exception("edit %s: could not record how it ended; it will run again", edit.id)
            return
        else:
            self._close_note(edit, messenger)
        await self._announce_end(edit.id)

    async def _forget_note(self, where: Address, note_id: str) -> None:
        await self.store.forget_note(where.platform, where.chat_id, note_id)

    def _close_note(self, edit: EditRecord, messenger: Messenger) -> None:
        self._notes.done(edit.id, _note_key(edit), note_id=edit.note_id, to=edit.address,
                         messenger=messenger)  # fmt: skip

    async def _carry_out(self, edit: EditRecord, messenger: Messenger) -> None:
        to = edit.address
        if edit.attempts > MAX_ATTEMPTS:  # also with a kept result: showing it may be what kills
            made = self._today() if edit.result_image_id else None  # a paid call, undelivered
            await self._end(edit, EditStatus.FAILED, "interrupted too often",
                            answer=t("error_interrupted", to.language),
                            uncharged_call=made)  # fmt: skip
            return
        try:
            ready = await self._result(edit, messenger)
            if ready is None:
                return  # cancelled meanwhile (that answered the user), or no longer ours
            picture, timings = ready
            message = await messenger.send_picture(to, picture)
        except _LeaseLost:
            raise  # another process has it now: leave it (and its note) to that one
        except StepEditError as exc:
            if isinstance(exc, ApiConfigError):  # users hear "unavailable": tell the operator
                log.error("the edit API needs the operator: %s", exc.operator_message)
            status = EditStatus.REFUSED if isinstance(exc, EditRefused) else EditStatus.FAILED
            paid = _paid_call(exc) or edit.id in self._committed  # made, then not delivered
            await self._end(edit, status, f"{type(exc).__name__}: {exc}"[:500],
                            answer=error_text(exc, to.language), spent=self._billed(exc),
                            uncharged_call=self._today() if paid else None)  # fmt: skip
            return
        except Exception as exc:  # e.g. the platform refused the picture (the user blocked us)
            log.exception("edit %s failed", edit.id)
            paid = edit.id in self._committed
            await self._end(edit, EditStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500],
                            answer=t("error_generic", to.language),
                            uncharged_call=self._today() if paid else None)  # fmt: skip
            return
        # The user has the picture: from here on it is a delivered edit, whatever fails.
        timings = replace(timings, total_ms=_ms_between(edit.created_at, self._clock()))
        if not await self.store.finish_edit(
            edit.id, EditStatus.SUCCEEDED, timings=timings, message=message, owner=self._owner
        ):
            log.warning("edit %s was delivered after its lease ran out", edit.id)
            return
        log.info("edit %s delivered: api %d ms, total %d ms",
                 edit.id, timings.api_ms, timings.total_ms)  # fmt: skip

    async def _end(
        self, edit: EditRecord, status: str, error: str, *, answer: str,
        spent: tuple[date, int] | None = None, uncharged_call: date | None = None,
    ) -> None:  # fmt: skip
        """End the job without a result (its unit goes back) and tell the user why. If the
        database is down, the lease runs out and the job is tried again later."""
        timings = EditTimings(total_ms=_ms_between(edit.created_at, self._clock()))
        if await self.store.finish_edit(
            edit.id, status, error=error, timings=timings, answer=answer, owner=self._owner,
            spent=spent, uncharged_call=uncharged_call,
        ):  # fmt: skip
            await self._answer(edit.id, edit.address, answer)

    def _billed(self, exc: StepEditError) -> tuple[date, int] | None:
        """What a failed call may have cost the operator: a call that may have been done (and
        billed) counts at its backend's price; one surely not done, or refused, costs nothing."""
        if not isinstance(exc, EditApiError) or not exc.params.get("maybe_done"):
            return None
        price = exc.params.get("price", self.editor.price)
        return self._today(), Spend.micros(price if isinstance(price, int | float) else None)

    async def _end_user(self, user_id: int) -> str:
        """Who asked, as vendors' end-user fields see them: a hash of our own user number with
        a salt kept in the database (a bare hash of a platform id could be reversed by trying
        every id), the same for a user across processes and restarts."""
        if self._salt is None:
            self._salt = await self.store.bot_value("end_user_salt", secrets.token_hex(16))
        digest = hmac.new(self._salt.encode(), str(user_id).encode(), hashlib.sha256)
        return "u-" + digest.hexdigest()[:32]

    async def _answer(self, edit_id: int, to: Address, text: str) -> None:
        """Tell a failed edit's user why; if that fails, the answer stays stored and the sweep
        tries once more."""
        try:
            await self._messengers[to.platform].send_text(to, text)
        except Exception as exc:
            log.warning("could not answer edit %s (%s); the sweep tries again", edit_id, exc)
            return
        await self.store.answered(edit_id)

    async def _sweep(self) -> None:
        """Finish, once, what a dead process (or a failed send) left of ended edits: notes
        standing, answers unsent. Each is taken off the list before it is tried, so a user
        who blocked the bot holds up no one, and no answer goes out twice."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                ended_before = self._clock() - timedelta(seconds=self._lease)
                leftovers = await self.store.take_leftovers(list(self._messengers), ended_before)
            except Exception:
                log.exception("could not look for leftovers of ended edits")
                continue
            for edit in leftovers:
                messenger = self._messengers[edit.platform]
                with contextlib.suppress(Exception):  # the last try: gone, blocked, too old
                    if edit.answer is not None:
                        await messenger.send_text(edit.address, edit.answer)
                    if edit.note_id is not None:
                        await messenger.delete_note(edit.address, edit.note_id)

    async def _housekeeping(self) -> None:
        """Every few minutes (any process may; each batch is one transaction): forget handled
        events older than HANDLED_KEPT, and with RETENTION_DAYS delete images older than that."""
        while True:
            try:
                await self.store.forget_handled(self._clock() - HANDLED_KEPT)
                if self.rules.retention_days:
                    cutoff = self._clock() - timedelta(days=self.rules.retention_days)
                    expired = await self.store.expire_images(cutoff)
                    while expired:  # batches of one short transaction each
                        expired = await self.store.expire_images(cutoff)
            except Exception:
                log.exception("could not delete expired images or old handled events")
            await asyncio.sleep(EXPIRE_EVERY)

    async def _announce_end(self, edit_id: int) -> None:
        future = self._ended.pop(edit_id, None)
        if future is not None and not future.done():
            with contextlib.suppress(Exception):
                record = await self.store.get_edit(edit_id)
                if record is not None:
                    future.set_result(record)

    async def _result(
        self, edit: EditRecord, messenger: Messenger
    ) -> tuple[Picture, EditTimings] | None:
        """The picture to deliver, its delivery started: the API's result, or the one kept by
        an earlier attempt. None if the edit was cancelled meanwhile or is no longer ours."""
        timings = EditTimings(queued_ms=_ms_between(edit.created_at, self._clock()))
        if edit.result_image_id is not None:
            self._committed.add(edit.id)
            self._show_working(edit, messenger, sent=True)
            result = await self.store.load_image(edit.result_image_id)
            stand_in = edit.model if edit.model not in (None, self.editor.model) else None
            picture = await self._picture(edit, result.data, result.id, edit.seed, edit.notes,
                                          messenger, stand_in=stand_in)  # fmt: skip
            if not await self.store.start_delivery(edit.id, self._owner):
                await self._not_ours(edit.id)
                return None
            return picture, timings
        started = time.perf_counter()
        data, mime, notes, fetched = await self._api_input(edit.source_image_id, messenger)
        timings = replace(timings, normalize_ms=_ms_since(started))
        called = time.perf_counter()
        filename = "image." + mime.removeprefix("image/").replace("jpeg", "jpg")
        options = replace(edit.options, end_user=await self._end_user(edit.user_id))
        async with self._api_slots:
            if self._stopping:
                raise asyncio.CancelledError  # shutting down: no new paid call
            if not await self.store.mark_sent(edit.id, self._owner):
                await self._not_ours(edit.id)  # cancelled just now: nothing is sent
                return None
            self._committed.add(edit.id)
            self._show_working(edit, messenger, sent=True)
            async with self._showing_action(edit.address, messenger):
                if mime == CANVAS:  # nothing to edit: a new image from the words
                    # (a reroll of one made by another backend takes this one's nearest)
                    size = self._generation_size(UserSettings(image_size=data.decode())) or ""
                    edited = await self.editor.generate(edit.prompt, options, size)
                else:
                    image = InputImage(data, mime, filename)
                    edited = await self.editor.edit([image], edit.prompt, options)
        timings = replace(timings, api_ms=_ms_since(called))
        spent = (self._today(), Spend.micros(edited.cost))
        checked = await self._checked_result(edited)
        # The chat's copy is made while one transaction keeps the result (and the fetched photo)
        # and starts the delivery: both wait on other threads. If the copy fails, the kept
        # result's edit ends as failed all the same (its unit goes back).
        picture, result_id = await _both(
            self._picture(edit, edited.data, 0, edited.seed, notes, messenger,
                          stand_in=edited.model if edited.stood_in else None),
            self.store.keep_result(
                edit.id, checked, edited.seed, notes, timings, owner=self._owner, source=fetched,
                model=edited.model, spent=spent,
            ),
        )  # fmt: skip
        if result_id is None:  # cancelled, or no longer ours: the call was made all the same
            with contextlib.suppress(Exception):
                await self.store.add_spend(*spent)
            await self._not_ours(edit.id)
            return None
        return replace(picture, image_id=result_id), timings

    async def _not_ours(self, edit_id: int) -> None:
        """An edit this worker held cannot go on: fine if its user cancelled it (they have been
        answered); if its lease ran out and another process has it, _LeaseLost."""
        edit = await self.store.get_edit(edit_id)
        if edit is None or edit.status != EditStatus.CANCELLED:
            raise _LeaseLost(edit_id)

    async def _picture(
        self, edit: EditRecord, data: bytes, image_id: int, seed: int | None,
        notes: tuple[str, ...], messenger: Messenger, *, stand_in: str | None = None,
    ) -> Picture:  # fmt: skip
        """The chat's copy of an API result (`stand_in`: the fallback's model, when it made
        the picture because the usual one was down). A result whose pixels do not decode is
        the API's fault (the user's photo was fine): temporarily unavailable, nothing charged."""
        try:
            chat_bytes, chat_mime = await self._for_chat(data, messenger, edit.address)
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
        )

    @contextlib.asynccontextmanager
    async def _showing_action(self, to: Address, messenger: Messenger) -> AsyncIterator[None]:
        """While the body runs, the platform's "sending photo…", renewed as it fades, within
        a small budget of its own (past it a renewal is skipped, never waited for)."""

        async def keep_showing() -> None:
            while True:
                if self._actions.has_capacity():
                    await self._actions.acquire()
                    with contextlib.suppress(Exception):  # cosmetic
                        await messenger.show_working(to)
                await asyncio.sleep(ACTION_EVERY)

        task = asyncio.create_task(keep_showing())
        try:
            yield
        finally:
            task.cancel()

    def _show_working(self, edit: EditRecord, messenger: Messenger, *, sent: bool = False) -> None:
        """Its note says it is at work (`sent`: the image model has it, past cancelling)."""
        self._notes.show(edit.id, _note_key(edit), edit.address, messenger,
                         SENT if sent else WORKING, note_id=edit.note_id)  # fmt: skip

    async def _api_input(
        self, image_id: int, messenger: Messenger
    ) -> tuple[bytes, str, tuple[str, ...], tuple[int, NewImage] | None]:
        """What to upload for a stored image: (bytes, mime, notes, fetched). A photo not
        fetched yet is fetched and normalized now, and `fetched` is what to keep of it (with
        the result, in one transaction). Results have their source's size, but one can be a
        PNG over the API's safe byte size: that one is re-encoded first."""
        image = await self.store.load_image(image_id)
        if image.canvas is not None:  # the size of a new image, for generate()
            return image.canvas.encode(), CANVAS, (), None
        if image.file is not None:
            data = await self._fetch(image.file, messenger)
            normal = await self._pillow(imaging.normalize, data, max_side=self.max_side)
            kept = NewImage(normal.data, normal.mime, normal.width, normal.height)
            return normal.data, normal.mime, normal.notes, (image.id, kept)
        if len(image.data) <= imaging.MAX_OUTPUT_BYTES:
            return image.data, image.mime, (), None
        normal = await self._pillow(imaging.normalize, image.data, max_side=self.max_side)
        return normal.data, normal.mime, (), None

    async def _checked_result(self, edited: EditedImage) -> NewImage:
        data = edited.data
        try:
            width, height = await self._pillow(imaging.image_size, data)
        except InvalidImage as exc:  # made and billed all the same
            raise ApiProtocolError(
                "the API returned bytes that are not an image", maybe_done=True, price=edited.cost
            ) from exc
        return NewImage(data, _mime_of(data), width, height)

    async def _for_chat(self, data: bytes, messenger: Messenger, to: Address) -> tuple[bytes, str]:
        """The picture as the platform shows it (its adapter states its limits)."""
        return await self._pillow(imaging.for_chat, data, limits=messenger.picture_limits(to))

    async def _pillow(self, work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run image work in a worker thread, at most PILLOW_WORKERS at once."""
        async with self._pillow_slots:
            return await asyncio.to_thread(work, *args, **kwargs)

    async def _make_current(
        self, user_id: int, chat: ChatRef, shown: ShownImage, message: MessageRef | None
    ) -> None:
        """`shown` becomes what the user's next message in `chat` edits, and `message` (the one
        showing it) repliable. Current first: once a message is linked, its state is complete."""
        await self.store.set_current(user_id, chat.platform, chat.id, shown)
        if message is not None:
            await self.store.link_message(message, shown)

    # --- other actions ------------------------------------------------------------------------

    async def cancel(self, user: UserRef, chat: ChatRef, *, note_of: int | None = None) -> bool:
        """Cancel this user's edits in this chat that are not on their way yet; their units go
        back in the same transaction. True if there was one. `note_of`: pressed on the note of
        that edit, which stands for all of its user's edits here, and only its user may."""
        record = await self.store.get_or_create_user(user)
        if note_of is not None:
            noted = await self.store.get_edit(note_of)
            if noted is None or (noted.user_id, noted.platform, noted.chat_id) != (
                record.id,
                chat.platform,
                chat.id,
            ):
                return False
        cancelled = await self.store.cancel_edits(record.id, chat.platform, chat.id)
        for edit in cancelled:
            task = self._held.get(edit.id)
            if task is not None:
                task.cancel()  # stop waiting for the API: the job has ended
            else:
                self._remember_cancelled(edit.id)
            self._waiting_here.pop(edit.id, None)
            messenger = self._messengers.get(edit.platform)
            if messenger is None:
                continue
            self._close_note(edit, messenger)
            with contextlib.suppress(Exception):  # each cancelled request answers for itself
                await messenger.send_text(edit.address, t("cancelled", edit.language))
            await self._announce_end(edit.id)
        return bool(cancelled)

    def _remember_cancelled(self, edit_id: int) -> None:
        """For a claim that may be on its way back (one round trip): kept a minute."""
        now = time.monotonic()
        for old in [k for k, at in self._cancelled_unheld.items() if now - at > 60]:
            del self._cancelled_unheld[old]
        self._cancelled_unheld[edit_id] = now

    async def press(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, *, key: str
    ) -> str | None:
        """A button under one of the bot's messages, pressed by `user` in `chat`; `to` is the
        message it sits under, and `key` names the press (a redelivered press is one press).
        Returns a short text for the presser, if any (the adapter shows it to the presser
        only). Settings presses are the adapter's to apply with `change_setting`: they change
        the message they sit under."""
        record = await self.store.get_or_create_user(user)
        await self._gate(record, user, chat)
        refusal = await self._not_theirs(record, chat, press, to.language)
        if refusal is not None:
            return refusal  # nothing done, nothing posted, nothing charged
        if press.action == Action.CANCEL:
            cancelled = await self.cancel(user, chat, note_of=press.edit_id)
            return None if cancelled else t("nothing_to_cancel", to.language)
        if press.action == Action.REROLL:
            rerolled = await self._edit_in(press.edit_id, chat)
            if rerolled.layer:  # words the bot drew: the next best place, no API call
                self._free_action(user)
                record = await self.store.get_or_create_user(user)
                layer = memes.TextLayer.from_json(rerolled.layer).rerolled()
                source = _Source(rerolled.source_image_id, rerolled.parent_edit_id)
                await self._draw(record, chat, source, layer, to)
                return None
            request = EditRequest(user, chat, reroll_of=press.edit_id, key=key,
                                  answer_to=to.reply_to, language=to.language)  # fmt: skip
            await self.submit(request)
        elif press.action == Action.UNDO:
            self._free_action(user)
            if await self.undo(user, chat, press.edit_id, to) is None:
                return t("undo_not_shown", to.language)
        elif press.action == Action.FULL:
            self._free_action(user)
            await self.send_full_quality(chat, press.edit_id, to)
        return None

    def _free_action(self, user: UserRef) -> None:
        """FREE_ACTIONS_PER_MINUTE: drawings, Undo and Full quality cost the user nothing but
        the bot's CPU and upload link, so one user gets only so many a minute (admins any).
        Past it: TooFast, said once a minute, then silence."""
        if self.is_admin(user):
            return
        verdict = self._free.take((user.platform, user.id))
        if verdict == "told":
            raise Ignored("too fast, told already")
        if verdict == "tell":
            raise TooFast(limit=self.rules.free_actions_per_minute)

    async def _not_theirs(
        self, presser: UserRecord, chat: ChatRef, press: Press, lang: str
    ) -> str | None:
        """Who may press: a button that names an edit (Reroll, Undo, Full quality under a
        result, Cancel on a note) acts for whoever asked for that edit, and for nobody else:
        they get this short private answer. An edit of another chat (or none) is left to the
        action, which refuses it as unknown."""
        if press.action not in (Action.REROLL, Action.UNDO, Action.FULL, Action.CANCEL):
            return None
        edit = await self.store.get_edit(press.edit_id)
        if edit is None or (edit.platform, edit.chat_id) != (chat.platform, chat.id):
            return None
        return None if edit.user_id == presser.id else t("not_your_button", lang)

    async def _shown_here(self, image_id: int, chat: ChatRef, made_by: EditRecord | None) -> bool:
        """What may be shown: a stored picture goes to `chat` again only if it was seen there
        already: a message there shows it (a photo sent there, a picture posted there), or it
        is the result of `made_by` delivered there. An input only its user saw (a Discord slash
        command's attachment) never was, so no action posts it, whoever asks. Every button
        that posts a stored picture asks this (Full quality posts the delivered result it sits
        under: seen by construction)."""
        if made_by is not None and made_by.result_image_id == image_id:
            delivered = made_by.status == EditStatus.SUCCEEDED
            if delivered and (made_by.platform, made_by.chat_id) == (chat.platform, chat.id):
                return True
        return await self.store.shown_in_chat(image_id, chat.platform, chat.id)

    # --- words the bot draws itself (memes): no API call, no unit ----------------------------

    async def draw(
        self, user: UserRef, chat: ChatRef, kind: str, words: str, to: Address,
        *, source_message: MessageRef | None = None, upload: FileRef | None = None,
    ) -> None:  # fmt: skip
        """`/caption top | bottom` or `/bubble [left|right] text` on `upload` (a picture given
        with the command, which no message shows: kept as the current image), the image
        `source_message` shows, or the user's current one; the picture answers `to`. Drawn on a
        picture the bot drew before, the words replace its words (the layer is redrawn on the
        plain picture)."""
        record = await self.store.get_or_create_user(user)
        await self._gate(record, user, chat)
        self._free_action(user)
        if upload is not None:
            self.check_claims(upload)
            source = _Source(await self._keep_upload(record, chat, upload, None), None)
        else:
            request = EditRequest(user, chat, source_message=source_message)
            source = await self._source(record, request, None)
        drawn = await self.store.get_edit(source.parent_edit_id) if source.parent_edit_id else None
        if drawn is not None and drawn.layer and drawn.user_id != record.id:
            below = drawn.parent_edit_id  # the edit that made the plain picture, if any
            under = await self.store.get_edit(below) if below else None
            if not await self._shown_here(drawn.source_image_id, chat, under):
                drawn = None  # someone else's plain picture this chat never saw: words on words
        layer = _new_layer(drawn.layer if drawn and drawn.layer else None, kind, words)
        if drawn is not None and drawn.layer:  # redraw on the picture under the old words
            source = _Source(drawn.source_image_id, drawn.parent_edit_id)
        await self._draw(record, chat, source, layer, to)

    async def _draw(
        self, user: UserRecord, chat: ChatRef, source: _Source, layer: memes.TextLayer,
        to: Address,
    ) -> None:  # fmt: skip
        messenger = self._messengers[chat.platform]
        base, _, _, fetched = await self._api_input(source.image_id, messenger)
        if fetched is not None:
            kept = fetched[1]
            await self.store.fill_image(fetched[0], kept.data, kept.mime, kept.width, kept.height)
        drawn = await self._pillow(memes.render, base, layer, font=self.meme_font)
        words = " | ".join(w for w in (layer.top, layer.bottom, layer.bubble) if w)
        new = NewEdit(
            user.id, chat.platform, chat.id, source.parent_edit_id, source.image_id, words,
            self.defaults, reply_to=to.reply_to, language=to.language,
        )  # fmt: skip
        result = NewImage(drawn.data, drawn.mime, drawn.width, drawn.height)
        edit_id, result_id = await self.store.record_drawn(new, result, layer.to_json())
        chat_bytes, mime = await self._for_chat(drawn.data, messenger, to)
        picture = Picture(chat_bytes, mime, f"stepedit-{edit_id}.jpg", result_id, edit_id,
                          prompt=words,
                          full_mime=imaging.full_quality_mime(drawn.data))  # fmt: skip
        message = await messenger.send_picture(to, picture)
        await self._make_current(user.id, chat, ShownImage(result_id, edit_id), message)

    async def ask_for_prompt(
        self, user: UserRef, chat: ChatRef, upload: FileRef, origin: MessageRef, to: Address,
        *, ask: bool = True,
    ) -> None:  # fmt: skip
        """A photo without a prompt: keep it (unfetched) and ask what to change; a reply to
        the photo or to the question edits it. `ask=False` keeps it without asking (e.g. the
        other photos of an album asked about once). The same photo again is asked about once."""
        if await self.knows(origin):
            return  # redelivered after a crash: kept and asked already
        await self._gate(await self.store.get_or_create_user(user), user, chat)
        await self.register_photo(user, chat, upload, origin)
        if ask:
            question = await self._messengers[chat.platform].send_text(
                to, t("ask_prompt", to.language)
            )
            await self.link_same_image(question, origin)

    async def register_photo(
        self, user: UserRef, chat: ChatRef, upload: FileRef, message: MessageRef
    ) -> None:
        """A photo without a prompt: keep it (unfetched) as the current image; the next text
        edits it. Costs nothing and downloads nothing until then."""
        record = await self.store.get_or_create_user(user)
        await self._keep_upload(record, chat, upload, message)

    async def knows(self, message: MessageRef) -> bool:
        return await self.store.shown_in(message) is not None

    async def link_same_image(self, message: MessageRef, same_as: MessageRef) -> None:
        """Let `message` (e.g. the bot's "what should I change?") stand for the image that
        `same_as` shows, so a reply to either edits it."""
        shown = await self.store.shown_in(same_as)
        if shown is not None:
            await self.store.link_message(message, shown)

    async def undo(self, user: UserRef, chat: ChatRef, edit_id: int, to: Address) -> Picture | None:
        """Show the image before `edit_id` again and make it the current one. Costs nothing.
        An image never shown in this chat (see `_shown_here`) becomes the current one without
        being posted: None."""
        record = await self._edit_in(edit_id, chat)
        owner = await self.store.get_or_create_user(user)
        before = await self.store.load_image(record.source_image_id)
        if before.canvas is not None:
            raise NothingToUndo()  # made from words: there is no picture before it
        parent = await self.store.get_edit(record.parent_edit_id) if record.parent_edit_id else None
        if not await self._shown_here(record.source_image_id, chat, parent):
            shown = ShownImage(record.source_image_id, parent.id if parent else None)
            await self._make_current(owner.id, chat, shown, None)
            return None
        messenger = self._messengers[chat.platform]
        data, _, _, fetched = await self._api_input(record.source_image_id, messenger)
        if fetched is not None:  # an edit of it failed before it was kept: keep it now
            kept = fetched[1]
            await self.store.fill_image(fetched[0], kept.data, kept.mime, kept.width, kept.height)
        chat_bytes, mime = await self._for_chat(data, messenger, to)
        picture = Picture(
            data=chat_bytes,
            mime=mime,
            filename=f"stepedit-undo-{edit_id}.jpg",
            image_id=record.source_image_id,
            edit_id=parent.id if parent else None,
            prompt=parent.prompt if parent else None,
            seed=parent.seed if parent else None,
            full_mime=imaging.full_quality_mime(before.data),  # the parent's result
        )
        message = await messenger.send_picture(to, picture)
        shown = ShownImage(record.source_image_id, picture.edit_id)
        await self._make_current(owner.id, chat, shown, message)
        return picture

    async def send_full_quality(self, chat: ChatRef, edit_id: int, to: Address) -> None:
        """The full-quality file of a delivered result (posted in this chat, so seen there), if
        the platform takes a file that big."""
        picture = await self.full_quality(chat, edit_id)
        messenger = self._messengers[chat.platform]
        limit = messenger.file_limit(to)
        if len(picture.data) > limit:
            raise FileTooLarge(
                f"{len(picture.data)} bytes > {limit}",
                size_mb=f"{len(picture.data) / 1e6:.1f}",
                limit_mb=f"{limit / 1e6:.0f}",
            )
        await messenger.send_file(to, picture)

    async def full_quality(self, chat: ChatRef, edit_id: int) -> Picture:
        """A delivered result as its own file: the API's PNG, or its JPEG as it came (never
        decoded and encoded again); any other format as a lossless PNG."""
        record = await self._edit_in(edit_id, chat)
        if record.result_image_id is None or record.status != EditStatus.SUCCEEDED:
            raise UnknownEdit(f"edit {edit_id} has no delivered result")
        image = await self.store.load_image(record.result_image_id)
        data, mime = await self._pillow(imaging.full_quality, image.data)
        return Picture(
            data=data,
            mime=mime,
            filename=f"stepedit-{edit_id}.{'jpg' if mime == imaging.JPEG_MIME else 'png'}",
            image_id=image.id,
            edit_id=edit_id,
            prompt=record.prompt,
            seed=record.seed,
        )

    async def _edit_in(self, edit_id: int, chat: ChatRef) -> EditRecord:
        """The edit, if it was made in `chat`: a button's data is the user's to forge, and must
        not reach another chat's private pictures."""
        record = await self.store.get_edit(edit_id)
        if record is None or (record.platform, record.chat_id) != (chat.platform, chat.id):
            raise UnknownEdit(f"no edit {edit_id} in this chat")
        return record

    # --- quota and settings ---------------------------------------------------------------------

    async def quota(self, user: UserRef) -> QuotaStatus:
        record = await self.store.get_or_create_user(user)
        day = self._today()
        used = await self.store.quota_used(record.id, day)
        if self.is_admin(user) or not self.daily_quota:
            limit = 0
        else:
            limit = self.daily_quota + await self.store.granted(record.id, day)
        return QuotaStatus(used=used, limit=limit, resets_at=self._next_reset())

    def _today(self) -> date:
        """The quota day: days begin at midnight in the operator's QUOTA_TIMEZONE."""
        return self._clock().astimezone(self.rules.timezone).date()

    def _next_reset(self) -> datetime:
        tomorrow = self._today() + timedelta(days=1)
        return datetime.combine(tomorrow, dtime(0, 0), tzinfo=self.rules.timezone)

    def _reset_time(self) -> str:
        return f"{self._next_reset():%H:%M} ({self.rules.timezone.key})"

    # --- the operator's controls ----------------------------------------------------------------

    def is_admin(self, user: UserRef) -> bool:
        return (user.platform, user.id) in self.rules.admins

    # --- the one gate ---------------------------------------------------------------------------

    async def enter(self, event: Incoming, *, claim: bool = False) -> None:
        """The gate every incoming event passes before anything of it is stored or answered.
        Raises Ignored for a redelivered event, for chatter not meant for the bot and for
        whoever was told already; NotAllowed (in private), Banned (once) or SentAsChat (once a
        day per chat) for what its sender should hear. `claim`: record the event as handled
        now (for platforms that never deliver twice what was received); else `handled` does,
        once the event has been handled."""
        if claim:
            seen = not await self.store.mark_handled(event.platform, event.event_id)
            who = event.user
            record = await self.store.find_user(who.platform, who.id) if who and not seen else None
        elif (event.platform, event.event_id) in self._handled:  # not written down yet
            seen, record = True, None
        elif (expected := self._expected.take((event.platform, event.event_id))) is not None:
            seen, record = expected
        else:  # one read for both
            seen, record = await self.store.event_and_user(event.platform, event.event_id,
                                                           event.user)  # fmt: skip
        if seen:
            raise Ignored("redelivered")
        if event.user is None:  # a channel or an anonymous admin: no person to serve
            first = event.addressed and await self.store.first_time_today(
                f"told:as-chat:{event.platform}:{event.chat.id}", self._today()
            )
            raise SentAsChat() if first else Ignored("sent as a chat")
        await self._gate(record, event.user, event.chat, addressed=event.addressed)
        if record is not None:
            self._passed.put(_key(record.ref), record)

    async def expect(self, events: list[Incoming]) -> None:
        """Events about to pass the gate (a batch just received): what the gate needs of them
        is read now, in one read for all, instead of one for each. Cosmetic: on failure, each
        reads its own."""
        by_platform: dict[str, list[Incoming]] = {}
        for event in events:
            by_platform.setdefault(event.platform, []).append(event)
        for platform, these in by_platform.items():
            users = sorted({e.user.id for e in these if e.user is not None})
            changes = self._user_changes
            try:
                seen, records = await self.store.events_and_users(
                    platform, [e.event_id for e in these], users
                )
            except Exception:
                log.exception("could not read %d events ahead; each reads its own", len(these))
                continue
            if changes != self._user_changes:  # a user changed meanwhile: maybe one of these
                continue
            for event in these:
                record = records.get(event.user.id) if event.user is not None else None
                gated = (event.event_id in seen, record)
                self._expected.put((event.platform, event.event_id), gated)

    async def settled(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until every event handled so far is written down as handled."""
        await self._handled.drain(timeout=timeout)

    def _users_changed(self) -> None:
        """A user's settings, ban or data changed: records read earlier are not used."""
        self._user_changes += 1
        self._passed.clear()
        self._expected.clear()

    async def handled(self, event: Incoming) -> None:
        """`event` has been handled: a redelivery of it is ignored from now on (written down
        with others handled meanwhile; see bot/handled.py)."""
        self._handled.add(event.platform, event.event_id)

    async def receive(self, platform: str, events: list[tuple[str, str]]) -> None:
        """Platform updates (id, JSON) received: kept until handled, so the platform can be
        told at once that the bot has them (see `received`)."""
        await self.store.receive(platform, events)

    async def received(self, platform: str) -> list[tuple[str, str]]:
        """Updates received and not handled before this process started: handle them first."""
        return await self.store.received(platform)

    async def _gate(
        self, record: UserRecord | None, user: UserRef, chat: ChatRef, *, addressed: bool = True
    ) -> None:
        """The rule: refuse, before any download or charge, whoever the operator keeps out:
        off the allowlists (told in private, ignored in groups) or banned (told once, then
        ignored; a ban set before their first message holds too). Admins always pass."""
        if self.is_admin(user):
            return
        rules = self.rules
        listed = (not rules.allowed_users or (user.platform, user.id) in rules.allowed_users) and (
            not rules.allowed_chats or (chat.platform, chat.id) in rules.allowed_chats
        )
        if not listed:
            raise NotAllowed() if chat.is_private and addressed else Ignored("not listed")
        if record is None or not record.banned:  # read with the record: a transaction fewer
            return  # (not seen yet: not banned)
        banned, told = await self.store.ban_status(record.id)
        if banned:
            raise Ignored("banned, told already") if told or not addressed else Banned()

    def _spend(self) -> Spend | None:
        """GLOBAL_DAILY_SPEND for admissions, with the most one edit may cost."""
        if not self.rules.spend_cap:
            return None
        return Spend(Spend.micros(self.rules.spend_cap), Spend.micros(self.editor.price))

    def _tell_admins_paused(self, why: str, day: date) -> None:
        """Tell the admins, once a day for each `why` ("budget", "spend"), in private where
        they can be told; in the background, so a slow platform never delays the refusal."""
        task = asyncio.create_task(self._tell_admins(why, day))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tell_admins(self, why: str, day: date) -> None:
        try:
            if not await self.store.first_time_today(f"told:{why}", day):
                return  # another request (of any process) tells them
            text = t(
                f"admin_{why}_spent", budget=self.rules.budget,
                spend=_dollars(self.rules.spend_cap), resets=self._reset_time(),
            )  # fmt: skip
            told = 0
            for platform, user_id in self.rules.admins.items:
                for messenger in self._messengers.values():
                    if platform in (None, messenger.platform):
                        try:
                            await messenger.tell(user_id, text)
                            told += 1
                        except Exception:  # never started a chat with the bot, blocked it
                            log.warning("could not tell admin %s that edits pause", user_id)
            if not told:  # nobody heard it: the next refusal tries again
                await self.store.clear_flag(f"told:{why}", day)
        except Exception:
            log.exception("could not tell the admins that edits pause")

    async def admin(
        self, user: UserRef, chat: ChatRef, command: str, args: list[str],
        event: Incoming | None = None,
    ) -> str:  # fmt: skip
        """An admin command (/stats, /grant, /ban, /unban, /quota <id>); its answer. Anyone
        else hears "admins only" in private and nothing in groups."""
        if not self.is_admin(user):
            raise AdminsOnly() if chat.is_private else Ignored("not an admin")
        lang = language_for(user.language)
        if command == "stats":
            return await self._stats(lang)
        if not args:
            return t("admin_usage", lang)
        platform, _, external_id = args[0].rpartition(":")
        who = (platform or user.platform, external_id)
        label = f"{who[0]}:{who[1]}"
        if not _ID.fullmatch(who[1]) or (platform and platform not in IdSet.PLATFORMS):
            return t("admin_usage", lang)
        if command in ("ban", "unban"):
            if command == "ban" and self.is_admin(UserRef(*who)):
                return t("admin_cannot_ban_admin", lang, who=label)
            changed = await self.store.set_banned(*who, banned=command == "ban")
            self._users_changed()
            if not changed:
                return t("admin_unknown_user", lang, who=label)
            return t(f"admin_{command}ned", lang, who=label)
        record = await self.store.find_user(*who)
        if record is None:
            return t("admin_unknown_user", lang, who=label)
        day = self._today()
        if command == "grant":
            extra = _grant_count(args[1]) if len(args) == 2 else None
            if extra is None:
                return t("admin_grant_range", lang, most=MAX_GRANT)
            handled = (event.platform, event.event_id) if event else None
            if await self.store.grant(record.id, day, extra, event=handled):
                return t("admin_granted", lang, who=label, extra=extra)
            raise Ignored("a redelivered /grant")
        if command == "quota":
            used = await self.store.quota_used(record.id, day)
            granted = await self.store.granted(record.id, day)
            return t("admin_quota", lang, who=label, used=used, limit=self.daily_quota,
                     granted=granted)  # fmt: skip
        return t("admin_usage", lang)

    async def forget(self, user: UserRef, *, confirmed: bool) -> str:
        """/forget, once confirmed: delete what the bot keeps of the user (their images,
        history and settings); their quota usage stays, so it is no way around the quota."""
        lang = language_for(user.language)
        if not confirmed:
            return t("forget_kept", lang)
        record = await self.store.get_or_create_user(user)
        deleted = await self.store.forget_user(record.id)
        self._users_changed()
        if deleted is None:
            return t("forget_busy", lang)
        return t("forget_done", lang, edits=deleted)

    async def _stats(self, lang: str) -> str:
        day = self._today()
        stats = await self.store.stats(day)
        ended = stats.succeeded_today + stats.failed_today
        budget = f" / {self.rules.budget}" if self.rules.budget else ""
        cap = f" / {_dollars(self.rules.spend_cap)}" if self.rules.spend_cap else ""
        top = ", ".join(f"{name} {n}" for name, n in stats.top_users) or "-"
        return t(
            "admin_stats", lang, day=day.isoformat(), today=stats.charged_today, budget=budget,
            succeeded=stats.succeeded_today, failed=stats.failed_today,
            rate=round(100 * stats.succeeded_today / ended) if ended else 100,
            api_ms=stats.median_api_ms, total=stats.succeeded_total, top=top,
            spent=_dollars(stats.spent_today), cap=cap,
        )  # fmt: skip

    async def settings(self, user: UserRef) -> UserSettings:
        """The user's settings with the operator's defaults filled in where they chose none."""
        record = await self.store.get_or_create_user(user)
        return self._with_defaults(record.settings)

    async def change_setting(self, user: UserRef, name: str, value: str) -> UserSettings:
        """Apply `/settings <name> <value>` or `/seed <value>`; raises InvalidSetting."""
        record = await self.store.get_or_create_user(user)
        updated = parse_setting(
            record.settings, name.strip().lower(), value.strip(), self.capabilities
        )
        await self.store.save_settings(record.id, updated)
        self._users_changed()
        return self._with_defaults(updated)

    async def reset_settings(self, user: UserRef) -> UserSettings:
        record = await self.store.get_or_create_user(user)
        await self.store.save_settings(record.id, UserSettings())
        self._users_changed()
        return self._with_defaults(UserSettings())


# Which capability each /settings name needs ("size": new images at all).
_SETTING_KINDS = {
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "cfg_scale": "cfg",
    "text": "text",
    "text_mode": "text",
    "negative": "negative",
    "negative_prompt": "negative",
    "size": "size",
    "image_size": "size",
}


def _lacks(offered: Capabilities, setting: str) -> bool:
    kind = _SETTING_KINDS.get(setting)
    return kind is not None and offered.lacks(kind)


_SWITCH = {
    "on": True,
    "off": False,
    "auto": None,
    "true": True,
    "false": False,
    "开": True,
    "关": False,
    "自动": None,
}


def parse_setting(
    current: UserSettings, name: str, value: str, offered: Capabilities
) -> UserSettings:
    """Turn one user-typed setting into new settings, or raise InvalidSetting saying what fits
    (or that the edit backend has no such setting)."""
    if _lacks(offered, name):
        raise InvalidSetting(code="error_setting_unsupported", field=name)
    if name == "seed":
        if value.lower() in ("random", "随机", ""):
            return replace(current, seed=None)
        return replace(current, seed=_int_in(value, "seed", 0, MAX_SEED))
    if name == "steps":
        return replace(current, steps=_int_in(value, "steps", *STEPS_RANGE))
    if name in ("cfg", "cfg_scale"):
        return replace(current, cfg_scale=_float_in(value, "cfg", *CFG_RANGE))
    if name in ("text", "text_mode"):
        if value.lower() not in _SWITCH:
            raise InvalidSetting(code="error_setting_switch")
        return replace(current, text_mode=_SWITCH[value.lower()])
    if name in ("negative", "negative_prompt"):
        text = "" if value.lower() in ("none", "off", "无", "") else value
        if len(text) > MAX_NEGATIVE_PROMPT_CHARS:
            raise InvalidSetting(code="error_setting_length", limit=MAX_NEGATIVE_PROMPT_CHARS)
        return replace(current, negative_prompt=text)
    if name in ("size", "image_size"):
        sizes = offered.generation_sizes
        if value.lower() not in sizes:
            raise InvalidSetting(field="size", allowed=", ".join(sizes),
                                 code="error_setting_size")  # fmt: skip
        return replace(current, image_size=value.lower())
    raise InvalidSetting(code="error_setting_unknown", field=name)


def _int_in(value: str, field: str, low: int, high: int) -> int:
    error = InvalidSetting(code="error_setting_int", field=field, low=low, high=high)
    try:
        number = int(value)
    except ValueError:
        raise error from None
    if not low <= number <= high:
        raise error
    return number


def _float_in(value: str, field: str, low: float, high: float) -> float:
    error = InvalidSetting(code="error_setting_number", field=field, low=low, high=high)
    try:
        number = float(value)
    except ValueError:
        raise error from None
    if not low <= number <= high:  # also rejects nan
        raise error
    return number


def _checked_prompt(prompt: str) -> str:
    text = prompt.strip()
    if not text:
        raise PromptError()
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptTooLong(length=len(text), limit=MAX_PROMPT_CHARS)
    return text


def _mime_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


def _quietly(task: asyncio.Task[Any]) -> None:
    """Mark a background task's failure as seen (whoever needs its result looks again)."""
    if not task.cancelled():
        task.exception()


async def _both(first: Awaitable[_T], second: Awaitable[_U]) -> tuple[_T, _U]:
    """Both at once. Each runs to its end even if the other fails; then the first one's error,
    if any, is raised, else the second one's."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


class _PerMinute:
    """At most `limit` takes per key in any 60 seconds (this process; 0: no limit), for the
    most recent FREE_USERS_KEPT keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._told: dict[tuple[str, str], float] = {}

    def take(self, key: tuple[str, str]) -> str:
        """ "ok" (taken), "tell" (over the limit: say so) or "told" (said within the minute)."""
        if not self.limit:
            return "ok"
        now = time.monotonic()
        taken = self._taken.pop(key, None) or deque()
        self._taken[key] = taken  # the most recent last
        while taken and now - taken[0] >= 60:
            taken.popleft()
        if len(self._taken) > FREE_USERS_KEPT:
            old, _ = self._taken.popitem(last=False)
            self._told.pop(old, None)
        if len(taken) < self.limit:
            taken.append(now)
            return "ok"
        if now - self._told.get(key, -60.0) < 60:
            return "told"
        self._told[key] = now
        return "tell"


MAX_GRANT = 1000  # edits one /grant gives (as Discord's command states)
_ID = re.compile(r"[1-9][0-9]{0,19}")  # a user id: ASCII digits only


def _grant_count(text: str) -> int | None:
    """A /grant number: ASCII digits, 1 to MAX_GRANT (not "²", "٣" or twenty nines)."""
    if not re.fullmatch(r"[0-9]{1,4}", text):
        return None
    count = int(text)
    return count if 1 <= count <= MAX_GRANT else None


def _paid_call(exc: StepEditError) -> bool:
    """Whether an edit ended by `exc` made a call the vendor may bill, with no picture: refused
    content, words without a picture, or a failure after the request was sent."""
    if isinstance(exc, EditRefused | NoImageReturned):
        return True
    return isinstance(exc, EditApiError) and bool(exc.params.get("maybe_done"))


def _dollars(amount: float) -> str:
    return f"${amount:.2f}" if amount >= 1 or amount == 0 else f"${amount:.3f}"


def _ms_since(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _new_layer(old: str | None, kind: str, words: str) -> memes.TextLayer:
    """The words to draw: a new layer, or the old one with this kind of words replaced."""
    layer = memes.TextLayer.from_json(old) if old else None
    if kind == "caption":
        top, bottom = memes.parse_caption(words)
        return layer.with_caption(top, bottom) if layer else memes.TextLayer.captioned(top, bottom)
    side, text = memes.parse_bubble(words)
    return layer.with_bubble(text, side) if layer else memes.TextLayer.bubbled(text, side)


_Gated = tuple[bool, UserRecord | None]  # (handled already, the user's record if known)


def _key(user: UserRef) -> tuple[str, str]:
    return user.platform, user.id


def _as_known(record: UserRecord | None, ref: UserRef) -> UserRecord | None:
    """`record`, unless the platform now says a new name or language (then it is read, and
    kept, anew)."""
    if record is None:
        return None
    known = record.ref
    same = ref.name in (None, known.name) and ref.language in (None, known.language)
    return record if same else None


def _note_key(edit: EditRecord) -> NoteKey:
    return (edit.platform, edit.chat_id, edit.user_id)


def _ms_between(start: datetime, end: datetime) -> int:
    """Milliseconds, kept within the INTEGER columns they are stored in (hosts' clocks may
    disagree, and a job may wait across a long outage)."""
    return min(max(int((end - start).total_seconds() * 1000), 0), _MAX_MS)


_MAX_MS = 2**31 - 1
