"""Admission: a request becomes a queued job in one step. Its source image is found (a photo
not fetched yet, the image a replied-to message shows, the user's current image, or a rerolled
edit's source), the prompt checked and the options chosen; then one transaction either refuses
it (quota, the chat's or the bot's budget, spend, too many waiting) or reserves a unit and
queues it. Nothing is downloaded or decoded before that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

from bot import imaging
from bot.access import Gate
from bot.context import Context
from bot.domain import (
    Address,
    Admission,
    ChatRef,
    EditOptions,
    EditRecord,
    EditRequest,
    FileRef,
    MessageRef,
    NewEdit,
    Refusal,
    ShownImage,
    Spend,
    UserRecord,
    UserSettings,
)
from bot.engine import JobEngine
from bot.errors import (
    BudgetSpent,
    Busy,
    ChatQuotaExceeded,
    ImageExpired,
    NothingToEdit,
    PromptError,
    QuotaExceeded,
    StepEditError,
    UnchargedCallsCapped,
    UnknownEdit,
)
from bot.operator import Operator
from bot.pictures import Pictures
from bot.rules import (
    canvas_of,
    check_pictures,
    checked_prompt,
    edit_options,
    generation_size,
    lacks,
    needed,
    parse_setting,
    with_defaults,
)
from bot.shop import sells_on


@dataclass(frozen=True)
class Source:
    """What an edit starts from: a stored image (0: the upload the admission keeps) and the
    edit that made it, or a new image of size `canvas` from the prompt alone."""

    image_id: int
    parent_edit_id: int | None
    canvas: str | None = None
    more: tuple[int, ...] = ()  # the other pictures of an edit of several, in order


class Admissions:
    def __init__(
        self, ctx: Context, gate: Gate, engine: JobEngine, pictures: Pictures, operator: Operator
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.engine = engine
        self.pictures = pictures
        self.operator = operator

    async def submit(self, request: EditRequest) -> Admission:
        """Turn a request into a queued job, or raise the StepEditError that refuses it. A
        request whose `key` was seen before is the same job again (`Admission.duplicate`)."""
        ctx, chat = self.ctx, request.chat
        user = await self.gate.user(request.user)
        await self.gate.check(user, request.user, chat)
        if request.upload is not None:
            self.check_pictures(request)
        rerolled = None
        if request.reroll_of is not None:
            rerolled = await edit_in(ctx, request.reroll_of, chat)
        try:
            prompt = rerolled.prompt if rerolled else checked_prompt(request.prompt)
        except PromptError:
            if request.upload:  # kept anyway: a shortened prompt sent next edits it
                await self.keep_upload(user, chat, request.upload, request.origin)
            raise
        source = await self.source(user, request, rerolled)
        settings = user.settings
        ignored: list[str] = []
        for name, value in request.overrides:  # this edit only; refused like /settings
            if lacks(ctx.capabilities, name):
                ignored.append(name)  # not sent, not pretended: the user gets a note
                continue
            settings = parse_setting(settings, name, value, ctx.capabilities)
        new = NewEdit(
            user.id, chat.platform, chat.id, source.parent_edit_id, source.image_id, prompt,
            self._options(settings, prompt, rerolled), key=request.key,
            reply_to=request.answer_to, language=request.language,
            more_sources=source.more,
        )  # fmt: skip
        day = ctx.today()
        canvas = canvas_of(ctx.capabilities, source.canvas)
        with self.engine.admitting() as lease:
            admission = await ctx.store.admit(
                new,
                day=day,
                quota=ctx.daily_quota,
                max_waiting=ctx.max_waiting,
                upload=None if rerolled else request.upload,
                canvas=(canvas.size, canvas.width, canvas.height) if canvas else None,
                origin=request.origin,
                chat_quota=0 if chat.is_private else ctx.rules.chat_quota,
                budget=ctx.rules.budget,
                unlimited=ctx.is_admin(request.user),
                spend=self._spend(),
                max_uncharged=ctx.rules.max_uncharged,
                claim=lease,
                more=() if rerolled else request.more,
            )
        starts_now = await self.engine.admitted(admission, lease, user.id)
        if admission.refused is not None:
            raise self._refusal(admission.refused, day, chat.platform)
        if not admission.duplicate:
            claimed = admission.claimed
            started = claimed is not None and claimed.id == admission.edit_id
            if starts_now and request.upload and not rerolled:
                # fetched while its worker starts (which needs no read of it, when it is this)
                self.pictures.prefetch(request.upload, claimed if started else None)
            to = Address(chat.platform, chat.id, request.answer_to, request.language)
            key = (chat.platform, chat.id, user.id)
            self.engine.show_admitted(admission, key, to, started=started)
        return replace(admission, ignored=tuple(ignored)) if ignored else admission

    def _refusal(self, refused: Refusal, day: date, platform: str) -> StepEditError:
        """The error that tells the user which limit their request met (the day's quota, on a
        platform where edits are sold: and that more can be bought)."""
        ctx = self.ctx
        ctx.metrics.refused(refused)
        if refused in (Refusal.BUDGET, Refusal.SPEND):  # the admins hear of it, once a day
            self.operator.tell_paused(refused, day)
        if refused == Refusal.QUOTA and sells_on(ctx, platform):  # nothing bought left either
            return QuotaExceeded(
                limit=ctx.daily_quota, resets=ctx.reset_time(), code="error_quota_buy"
            )
        return _REFUSALS[refused](ctx)

    def check_pictures(self, request: EditRequest) -> None:
        """Refuse a request's pictures by their number and by what their platform says of
        them, before any is kept or fetched."""
        check_pictures(self.ctx.capabilities, request.pictures)
        for upload in (request.upload, *(more.file for more in request.more)):
            if upload is not None:
                self.check_claims(upload)

    def check_claims(self, upload: FileRef) -> None:
        """Refuse a file by what its platform says of it (type, pixels), before it is kept or
        fetched; an adapter may ask before it answers in public (see imaging.check_claims)."""
        imaging.check_claims(upload.mime, upload.width, upload.height, max_side=self.ctx.max_side)

    async def source(
        self, user: UserRecord, request: EditRequest, rerolled: EditRecord | None
    ) -> Source:
        source = await self._found_source(user, request, rerolled)
        for image_id in (source.image_id, *source.more):
            if image_id and await self.ctx.store.expired(image_id):
                raise ImageExpired(f"image {image_id}")
        return source

    async def _found_source(
        self, user: UserRecord, request: EditRequest, rerolled: EditRecord | None
    ) -> Source:
        store = self.ctx.store
        if rerolled:
            more: tuple[int, ...] = ()
            if rerolled.pictures > 1:  # the same pictures again, in the same order
                pictures = await store.edit_pictures(rerolled.id)
                more = tuple(picture.image_id for picture in pictures[1:])
                check_pictures(self.ctx.capabilities, 1 + len(more))
            return Source(rerolled.source_image_id, rerolled.parent_edit_id, more=more)
        size = generation_size(self.ctx.capabilities, user.settings)
        if request.imagine:
            return Source(0, None, canvas=needed(size))  # made by the admission itself
        if request.upload:
            return Source(0, None)  # kept (and this id set) by the admission itself
        if request.source_message:
            shown = await store.shown_in(request.source_message)
            if shown is None:
                raise UnknownEdit("the replied-to message shows no known image")
            return self._shown_source(shown)
        current = await store.current(user.id, request.chat.platform, request.chat.id)
        if current is None and request.chat.is_private and request.prompt:
            # nothing to edit: make it from the words
            return Source(0, None, canvas=needed(size))
        if current is None:
            raise NothingToEdit()
        return self._shown_source(current)

    def _shown_source(self, shown: ShownImage) -> Source:
        """An image a message shows, or the current one: with an album asked about (`more`),
        all its photos in order, as if its caption had been the prompt."""
        if shown.more:  # the backend may have changed since: refused as a caption would be
            check_pictures(self.ctx.capabilities, 1 + len(shown.more))
        return Source(shown.image_id, shown.edit_id, more=shown.more)

    async def keep_upload(
        self, user: UserRecord, chat: ChatRef, upload: FileRef, origin: MessageRef | None,
        *, current: bool = True,
    ) -> int:  # fmt: skip
        """Remember a user's photo (not fetched yet) as their current image in this chat (or,
        not `current`, only as what a reply to `origin` edits), so "try again" needs no new
        upload; fetched when an edit of it runs."""
        return await self.ctx.store.keep_upload(
            user.id, chat.platform, chat.id, upload, origin, current=current
        )

    def _options(
        self, settings: UserSettings, prompt: str, rerolled: EditRecord | None
    ) -> EditOptions:
        if rerolled:  # same everything, new seed
            return replace(rerolled.options, seed=self.ctx.seeds())
        chosen = with_defaults(settings, self.ctx.defaults, self.ctx.capabilities)
        return edit_options(chosen, prompt, self.ctx.seeds)

    def _spend(self) -> Spend | None:
        """GLOBAL_DAILY_SPEND for admissions, with the most one edit may cost."""
        cap = self.ctx.rules.spend_cap
        if not cap:
            return None
        return Spend(Spend.micros(cap), Spend.micros(self.ctx.editor.price))


_REFUSALS: dict[Refusal, Callable[[Context], StepEditError]] = {
    Refusal.UNCHARGED: lambda ctx: UnchargedCallsCapped(
        limit=ctx.rules.max_uncharged, resets=ctx.reset_time()
    ),
    Refusal.QUOTA: lambda ctx: QuotaExceeded(limit=ctx.daily_quota, resets=ctx.reset_time()),
    Refusal.CHAT_QUOTA: lambda ctx: ChatQuotaExceeded(
        limit=ctx.rules.chat_quota, resets=ctx.reset_time()
    ),
    Refusal.BUDGET: lambda ctx: BudgetSpent(resets=ctx.reset_time()),
    Refusal.SPEND: lambda ctx: BudgetSpent(resets=ctx.reset_time()),
    Refusal.BUSY: lambda ctx: Busy(limit=ctx.max_waiting),
}


async def edit_in(ctx: Context, edit_id: int, chat: ChatRef) -> EditRecord:
    """The edit, if it was made in `chat`: a button's data is the user's to forge, and must
    not reach another chat's private pictures."""
    record = await ctx.store.get_edit(edit_id)
    if record is None or (record.platform, record.chat_id) != (chat.platform, chat.id):
        raise UnknownEdit(f"no edit {edit_id} in this chat")
    return record
