"""The one place that orchestrates an edit, for every platform.

An edit: find the source image (a new upload, the image a replied-to message shows, the user's
current image, or the source of a rerolled edit), validate the prompt, reserve one unit of quota,
wait for a turn at the API, call it, hand the result to the adapter's `deliver`, and only then keep
the unit. Anything that goes wrong on the way releases the unit, so a failed, refused or cancelled
edit costs nothing. Pillow work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, TypeVar

from bot import imaging
from bot.domain import (
    CFG_RANGE,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    STEPS_RANGE,
    ChatRef,
    EditOptions,
    EditRecord,
    EditRequest,
    EditStatus,
    EditTimings,
    ImageUpload,
    MessageRef,
    NewEdit,
    Picture,
    Progress,
    QuotaStatus,
    ShownImage,
    StoredImage,
    UserRecord,
    UserRef,
    UserSettings,
)
from bot.errors import (
    ApiConfigError,
    ApiProtocolError,
    Busy,
    EditCancelled,
    EditRefused,
    InvalidImage,
    InvalidSetting,
    NothingToEdit,
    PromptError,
    PromptTooLong,
    QuotaExceeded,
    UnknownEdit,
)
from bot.ports import EditStore, ImageEditor
from bot.queue import WorkQueue

log = logging.getLogger("stepedit.service")

Deliver = Callable[[Picture], Awaitable[MessageRef]]
OnProgress = Callable[[Progress], Awaitable[None]]

# Written text in quotes, as in the vendor's speech-bubble and sign examples. A straight single
# quote counts only when it does not touch a letter on its outer side (so "cat's" is no quote).
_QUOTED_TEXT = re.compile(r"\"[^\"]+\"|“[^”]+”|「[^」]+」|『[^』]+』|‘[^’]+’|(?<!\w)'[^']+'(?!\w)")
MAX_EDITS_IN_FLIGHT_PER_USER = 3
PILLOW_WORKERS = 2
_T = TypeVar("_T")


def wants_text_mode(prompt: str) -> bool:
    return bool(_QUOTED_TEXT.search(prompt))


def utcnow() -> datetime:
    return datetime.now(UTC)


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class _Source:
    image_id: int
    parent_edit_id: int | None
    notes: tuple[str, ...] = ()
    image: StoredImage | None = None  # already in hand (a fresh upload): no need to reload it


@dataclass(frozen=True)
class _Delivered:
    picture: Picture
    message: MessageRef
    timings: EditTimings


@dataclass(frozen=True)
class _Job:
    user_id: int
    chat: ChatRef
    source: _Source
    prompt: str
    options: EditOptions
    started: float  # perf_counter() when the request arrived
    normalize_ms: int


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
        clock: Callable[[], datetime] = utcnow,
        seeds: Callable[[], int] = random_seed,
    ) -> None:
        self.store = store
        self.editor = editor
        self.daily_quota = daily_quota
        self.defaults = EditOptions(steps=default_steps, cfg_scale=default_cfg_scale)
        self.max_side = max_side
        self.queue = WorkQueue(concurrency)
        self._clock = clock
        self._seeds = seeds
        self._in_flight = _InFlight()
        # Decoding a big image takes hundreds of MB for a moment: a few at a time, whatever comes.
        self._pillow_slots = asyncio.Semaphore(PILLOW_WORKERS)

    # --- editing ---------------------------------------------------------------------------

    async def edit(
        self, request: EditRequest, deliver: Deliver, on_progress: OnProgress | None = None
    ) -> Picture:
        """Run one edit end to end and return the delivered picture; raises StepEditError."""
        started = time.perf_counter()
        user = await self.store.get_or_create_user(request.user)
        with self._in_flight.track(request.user, request.chat):
            rerolled = None if request.reroll_of is None else await self._edit(request.reroll_of)
            # The source first: a new photo is kept even if its caption is refused, so a
            # shortened prompt sent next edits it without a new upload.
            source = await self._source(user, request, rerolled)
            prompt = rerolled.prompt if rerolled else _checked_prompt(request.prompt)
            normalize_ms = _ms_since(started)
            options = self._options(user.settings, prompt, rerolled)
            day = self._clock().date()
            if not await self.store.reserve_quota(user.id, day, self.daily_quota):
                raise QuotaExceeded(limit=self.daily_quota, resets=self._reset_time())
            job = _Job(user.id, request.chat, source, prompt, options, started, normalize_ms)
            try:
                delivered = await self._deliver_new_edit(job, deliver, on_progress)
            except BaseException:
                await self.store.release_quota(user.id, day)
                raise
            # The user has the picture: the unit stays spent and /cancel no longer applies.
            self._in_flight.forget_current()
            await self._record_delivery(job, delivered)
            return delivered.picture

    async def _deliver_new_edit(
        self, job: _Job, deliver: Deliver, on_progress: OnProgress | None
    ) -> _Delivered:
        """Record the edit, wait for a turn, call the API and deliver the result; if anything
        fails on the way, record how the edit ended and re-raise."""
        chat, source, prompt, options = job.chat, job.source, job.prompt, job.options
        new = NewEdit(
            job.user_id, chat.platform, chat.id, source.parent_edit_id, source.image_id, prompt,
            options,
        )  # fmt: skip
        edit_id = await self.store.create_edit(new)
        timings = EditTimings(normalize_ms=job.normalize_ms)
        try:
            image = source.image or await self.store.load_image(source.image_id)
            data, mime = await self._api_input(image)
            queued = time.perf_counter()
            report = _place_reporter(on_progress)
            async with self.queue.turn(report):
                timings = replace(timings, queued_ms=_ms_since(queued))
                if report:
                    await report(0)
                called = time.perf_counter()
                filename = "image." + mime.removeprefix("image/").replace("jpeg", "jpg")
                result = await self.editor.edit(data, filename, mime, prompt, options)
                timings = replace(timings, api_ms=_ms_since(called))
            result_id = await self._save_result(result.data)
            chat_bytes, chat_mime = await self._pillow(imaging.for_chat, result.data)
            picture = Picture(
                data=chat_bytes,
                mime=chat_mime,
                filename=f"stepedit-{edit_id}.jpg",
                image_id=result_id,
                edit_id=edit_id,
                prompt=prompt,
                seed=result.seed,
                notes=source.notes,
            )
            message = await deliver(picture)
            return _Delivered(picture, message, timings)
        except BaseException as exc:
            if isinstance(exc, ApiConfigError):  # users hear "unavailable": tell the operator why
                log.error("the edit API needs the operator: %s", exc.operator_message)
            status, error = _failure(exc)
            timings = replace(timings, total_ms=_ms_since(job.started))
            await self.store.finish_edit(edit_id, status, error=error, timings=timings)
            raise

    async def _record_delivery(self, job: _Job, delivered: _Delivered) -> None:
        """Make the delivered picture the user's current image and its message repliable.
        The user already has it, so a failure here is logged, not shown as a failed edit."""
        picture = delivered.picture
        assert picture.edit_id is not None
        shown = ShownImage(picture.image_id, picture.edit_id)
        timings = replace(delivered.timings, total_ms=_ms_since(job.started))
        try:
            await self._make_current(job.user_id, job.chat, shown, delivered.message)
            await self.store.finish_edit(
                picture.edit_id, EditStatus.SUCCEEDED, result_image_id=picture.image_id,
                seed=picture.seed, timings=timings,
            )  # fmt: skip
        except Exception:
            log.exception("edit %s was delivered, but recording it failed", picture.edit_id)
            return
        log.info(
            "edit %s delivered: api %d ms, total %d ms",
            picture.edit_id, timings.api_ms, timings.total_ms,
        )  # fmt: skip

    async def _make_current(
        self, user_id: int, chat: ChatRef, shown: ShownImage, message: MessageRef | None
    ) -> None:
        """`shown` becomes what the user's next message in `chat` edits, and `message` (the one
        showing it) repliable. Current first: once a message is linked, its state is complete."""
        await self.store.set_current(user_id, chat.platform, chat.id, shown)
        if message is not None:
            await self.store.link_message(message, shown)

    async def _pillow(self, work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run image work in a worker thread, at most PILLOW_WORKERS at once."""
        async with self._pillow_slots:
            return await asyncio.to_thread(work, *args, **kwargs)

    async def _api_input(self, image: StoredImage) -> tuple[bytes, str]:
        """What to upload for a stored image. Uploads were normalized when they arrived and
        results have their source's size, but a result can be a PNG over the API's safe byte
        size: that one is re-encoded first."""
        if len(image.data) <= imaging.MAX_OUTPUT_BYTES:
            return image.data, image.mime
        normal = await self._pillow(imaging.normalize, image.data, max_side=self.max_side)
        return normal.data, normal.mime

    async def _save_result(self, data: bytes) -> int:
        try:
            width, height = await self._pillow(imaging.image_size, data)
        except InvalidImage as exc:
            raise ApiProtocolError("the API returned bytes that are not an image") from exc
        return await self.store.save_image(data, _mime_of(data), width, height)

    async def _source(
        self, user: UserRecord, request: EditRequest, rerolled: EditRecord | None
    ) -> _Source:
        if rerolled:
            return _Source(rerolled.source_image_id, rerolled.parent_edit_id)
        if request.upload:
            return await self._save_upload(user, request.chat, request.upload, request.origin)
        if request.reply_to:
            shown = await self.store.shown_in(request.reply_to)
            if shown is None:
                raise UnknownEdit("the replied-to message shows no known image")
            return _Source(shown.image_id, shown.edit_id)
        current = await self.store.current(user.id, request.chat.platform, request.chat.id)
        if current is None:
            raise NothingToEdit()
        return _Source(current.image_id, current.edit_id)

    async def _save_upload(
        self, user: UserRecord, chat: ChatRef, upload: ImageUpload, origin: MessageRef | None
    ) -> _Source:
        """Normalize and keep a user's photo; it becomes their current image in this chat even
        if the edit then fails, so "try again" needs no new upload."""
        normal = await self._pillow(imaging.normalize, upload.data, max_side=self.max_side)
        image_id = await self.store.save_image(
            normal.data, normal.mime, normal.width, normal.height
        )
        await self._make_current(user.id, chat, ShownImage(image_id, None), origin)
        image = StoredImage(image_id, normal.data, normal.mime, normal.width, normal.height)
        return _Source(image_id, None, normal.notes, image)

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
        """Steps and cfg the user did not choose are the operator's defaults."""
        return replace(
            settings,
            steps=settings.steps or self.defaults.steps,
            cfg_scale=settings.cfg_scale or self.defaults.cfg_scale,
        )

    # --- other actions ------------------------------------------------------------------------

    async def recover_interrupted(self, older_than: timedelta = timedelta(minutes=30)) -> int:
        """At start-up: edits a crash or restart left "running" are marked failed and their
        users get the unit back. Only old ones, since another replica may be mid-edit."""
        stale = await self.store.fail_stale_edits(self._clock() - older_than)
        for user_id, day in stale:
            await self.store.release_quota(user_id, day)
        if stale:
            log.warning(
                "%d interrupted edit(s) marked failed; their quota was given back", len(stale)
            )
        return len(stale)

    async def register_photo(
        self, user: UserRef, chat: ChatRef, upload: ImageUpload, message: MessageRef
    ) -> tuple[str, ...]:
        """A photo without a prompt: keep it as the current image; the next text edits it."""
        record = await self.store.get_or_create_user(user)
        return (await self._save_upload(record, chat, upload, message)).notes

    async def knows(self, message: MessageRef) -> bool:
        return await self.store.shown_in(message) is not None

    async def link_same_image(self, message: MessageRef, same_as: MessageRef) -> None:
        """Let `message` (e.g. the bot's "what should I change?") stand for the image that
        `same_as` shows, so a reply to either edits it."""
        shown = await self.store.shown_in(same_as)
        if shown is not None:
            await self.store.link_message(message, shown)

    async def undo(self, user: UserRef, chat: ChatRef, edit_id: int, deliver: Deliver) -> Picture:
        """Show the image before `edit_id` again and make it the current one. Costs nothing."""
        record = await self._edit(edit_id)
        owner = await self.store.get_or_create_user(user)
        parent = await self.store.get_edit(record.parent_edit_id) if record.parent_edit_id else None
        image = await self.store.load_image(record.source_image_id)
        data, mime = await self._pillow(imaging.for_chat, image.data)
        picture = Picture(
            data=data,
            mime=mime,
            filename=f"stepedit-undo-{edit_id}.jpg",
            image_id=image.id,
            edit_id=parent.id if parent else None,
            prompt=parent.prompt if parent else None,
            seed=parent.seed if parent else None,
        )
        message = await deliver(picture)
        await self._make_current(owner.id, chat, ShownImage(image.id, picture.edit_id), message)
        return picture

    async def full_quality(self, edit_id: int) -> Picture:
        record = await self._edit(edit_id)
        if record.result_image_id is None:
            raise UnknownEdit(f"edit {edit_id} has no result")
        image = await self.store.load_image(record.result_image_id)
        data = await self._pillow(imaging.lossless_png, image.data)
        return Picture(
            data=data,
            mime="image/png",
            filename=f"stepedit-{edit_id}.png",
            image_id=image.id,
            edit_id=edit_id,
            prompt=record.prompt,
            seed=record.seed,
        )

    async def _edit(self, edit_id: int) -> EditRecord:
        record = await self.store.get_edit(edit_id)
        if record is None:
            raise UnknownEdit(f"no edit {edit_id}")
        return record

    async def cancel(self, user: UserRef, chat: ChatRef) -> bool:
        """Cancel this user's edits in this chat; they end with EditCancelled, charging nothing."""
        return self._in_flight.cancel(user, chat)

    # --- quota and settings ---------------------------------------------------------------------

    async def quota(self, user: UserRef) -> QuotaStatus:
        record = await self.store.get_or_create_user(user)
        now = self._clock()
        used = await self.store.quota_used(record.id, now.date())
        return QuotaStatus(used=used, limit=self.daily_quota, resets_at=_next_midnight(now))

    def _reset_time(self) -> str:
        return _next_midnight(self._clock()).strftime("%H:%M")

    async def settings(self, user: UserRef) -> UserSettings:
        """The user's settings with the operator's defaults filled in where they chose none."""
        record = await self.store.get_or_create_user(user)
        return self._with_defaults(record.settings)

    async def change_setting(self, user: UserRef, name: str, value: str) -> UserSettings:
        """Apply `/settings <name> <value>` or `/seed <value>`; raises InvalidSetting."""
        record = await self.store.get_or_create_user(user)
        updated = parse_setting(record.settings, name.strip().lower(), value.strip())
        await self.store.save_settings(record.id, updated)
        return self._with_defaults(updated)

    async def reset_settings(self, user: UserRef) -> UserSettings:
        record = await self.store.get_or_create_user(user)
        await self.store.save_settings(record.id, UserSettings())
        return self._with_defaults(UserSettings())


class _InFlight:
    """The edit tasks running now, by user and chat, so /cancel can find them and one user
    cannot fill the queue."""

    def __init__(self) -> None:
        self._owners: dict[asyncio.Task[object], tuple[str, str, str]] = {}
        self._cancelled: set[asyncio.Task[object]] = set()

    @contextmanager
    def track(self, user: UserRef, chat: ChatRef) -> Iterator[None]:
        owner = (user.platform, user.id, chat.id)
        if sum(o[:2] == owner[:2] for o in self._owners.values()) >= MAX_EDITS_IN_FLIGHT_PER_USER:
            raise Busy()
        task: asyncio.Task[object] | None = asyncio.current_task()
        if task is None:
            yield
            return
        self._owners[task] = owner
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._cancelled:
                raise  # shutdown, not the user: let it through
            task.uncancel()
            raise EditCancelled() from None
        finally:
            self._owners.pop(task, None)
            self._cancelled.discard(task)

    def forget_current(self) -> None:
        """The current task's edit can no longer be cancelled (its result was delivered)."""
        task = asyncio.current_task()
        if task is not None:
            self._owners.pop(task, None)

    def cancel(self, user: UserRef, chat: ChatRef) -> bool:
        owner = (user.platform, user.id, chat.id)
        tasks = [task for task, o in self._owners.items() if o == owner]
        for task in tasks:
            self._cancelled.add(task)
            task.cancel()
        return bool(tasks)


def _failure(exc: BaseException) -> tuple[str, str]:
    """The status and error text an edit ends with when `exc` stopped it."""
    if isinstance(exc, EditRefused):
        return EditStatus.REFUSED, exc.code
    if isinstance(exc, asyncio.CancelledError | EditCancelled):
        return EditStatus.CANCELLED, "cancelled"
    return EditStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500]


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


def parse_setting(current: UserSettings, name: str, value: str) -> UserSettings:
    """Turn one user-typed setting into new settings, or raise InvalidSetting saying what fits."""
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
    raise InvalidSetting(code="error_setting_unknown", field=name)


def _int_in(value: str, field: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise InvalidSetting(code="error_setting_int", field=field, low=low, high=high)
    return number


def _float_in(value: str, field: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:  # also rejects nan
        raise InvalidSetting(code="error_setting_number", field=field, low=low, high=high)
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


def _place_reporter(on_progress: OnProgress | None) -> Callable[[int], Awaitable[None]] | None:
    """Turn the queue's "your place is n" into Progress for the adapter (0 = working now)."""
    if on_progress is None:
        return None

    async def report(place: int) -> None:
        await on_progress(Progress(queue_position=place))

    return report


def _ms_since(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _next_midnight(now: datetime) -> datetime:
    tomorrow: date = now.date() + timedelta(days=1)
    return datetime.combine(tomorrow, dtime(0, 0), tzinfo=UTC)
