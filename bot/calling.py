"""An edit's call to the backend: who asks (the vendor's end-user field), its pictures as the
backend takes them, one call with all of them or one per picture, the platform's "sending
photo…" while it works, its answer checked to be an image, and what failed calls may cost."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date

from aiolimiter import AsyncLimiter

from bot import imaging
from bot.backends.base import InputImage
from bot.context import Context
from bot.domain import (
    Address,
    EditedImage,
    EditOptions,
    EditRecord,
    NewImage,
    Spend,
    UserSettings,
)
from bot.each_picture import edit_each
from bot.errors import ApiProtocolError, EditApiError, InvalidImage, StepEditError
from bot.messaging import Messenger
from bot.pictures import Pictures, SourceBytes
from bot.ports import EditStore
from bot.rules import generation_size
from bot.sources import Fetch, Sources

ACTION_EVERY = 4.5  # Telegram shows a chat action for about 5 s


class EndUsers:
    """Who asked, as vendors' end-user fields see them: a hash of our own user number with a
    salt kept in the database (a bare hash of a platform id could be reversed by trying every
    id), the same for a user across processes and restarts."""

    def __init__(self, store: EditStore) -> None:
        self.store = store
        self._salt: str | None = None  # (the database keeps it)

    async def of(self, user_id: int) -> str:
        if self._salt is None:
            self._salt = await self.store.bot_value("end_user_salt", secrets.token_hex(16))
        digest = hmac.new(self._salt.encode(), str(user_id).encode(), hashlib.sha256)
        return "u-" + digest.hexdigest()[:32]


def billed_one(ctx: Context, exc: StepEditError) -> tuple[date, int] | None:
    """What a failed call may have cost the operator: a call that may have been done (and
    billed) counts at its backend's price; one surely not done, or refused, costs nothing."""
    if not isinstance(exc, EditApiError) or not exc.params.get("maybe_done"):
        return None
    price = exc.params.get("price", ctx.editor.price)
    return ctx.today(), Spend.micros(price if isinstance(price, int | float) else None)


def billed_all(ctx: Context, failed: list[StepEditError]) -> tuple[date, int] | None:
    """What failed calls may have cost, together (see billed_one)."""
    bills = [bill for bill in (billed_one(ctx, exc) for exc in failed) if bill is not None]
    return (bills[0][0], sum(micros for _, micros in bills)) if bills else None


async def call(
    ctx: Context, edit: EditRecord, sources: Sources, options: EditOptions
) -> tuple[list[tuple[int, EditedImage]], list[StepEditError]]:
    """The API's results (position, result) and the pictures that failed: one call with every
    picture, or (a backend that takes one) one call per picture, each fetched just before it."""
    if sources.each:
        fetches = [_fetched_input(fetch, i) for i, fetch in enumerate(sources.each, 1)]
        try:
            return await edit_each(ctx.editor, fetches, edit.prompt, options)
        finally:
            await sources.settled()
    if sources.ready[0].canvas is not None:  # nothing to edit: a new image from the words
        # (a reroll of one made by another backend takes this one's nearest)
        wanted = UserSettings(image_size=sources.ready[0].canvas)
        size = generation_size(ctx.capabilities, wanted) or ""
        return [(0, await ctx.editor.generate(edit.prompt, options, size))], []
    images = [_input(each, i) for i, each in enumerate(sources.ready, 1)]  # in the order sent
    return [(0, await ctx.editor.edit(images, edit.prompt, options))], []


@contextlib.asynccontextmanager
async def showing_action(
    budget: AsyncLimiter, to: Address, messenger: Messenger
) -> AsyncIterator[None]:
    """While the body runs, the platform's "sending photo…", renewed as it fades, within a
    small budget of its own (past it a renewal is skipped, never waited for)."""

    async def keep_showing() -> None:
        while True:
            if budget.has_capacity():
                await budget.acquire()
                with contextlib.suppress(Exception):  # cosmetic
                    await messenger.show_working(to)
            await asyncio.sleep(ACTION_EVERY)

    task = asyncio.create_task(keep_showing())
    try:
        yield
    finally:
        task.cancel()


async def checked_result(pictures: Pictures, edited: EditedImage) -> NewImage:
    """The API's answer as an image to keep; bytes that are no image are the API's fault,
    made (and billed) all the same."""
    data = edited.data
    try:
        width, height = await pictures.pillow(imaging.image_size, data)
    except InvalidImage as exc:  # made and billed all the same
        raise ApiProtocolError(
            "the API returned bytes that are not an image", maybe_done=True, price=edited.cost
        ) from exc
    return NewImage(data, _mime_of(data), width, height)


def _fetched_input(fetch: Fetch, number: int) -> Callable[[], Awaitable[InputImage]]:
    async def fetched() -> InputImage:
        return _input(await fetch(), number)

    return fetched


def _input(source: SourceBytes, number: int) -> InputImage:
    """A picture as a backend takes it, named by its place (image.jpg, image-2.png, …)."""
    suffix = "" if number == 1 else f"-{number}"
    extension = source.mime.removeprefix("image/").replace("jpeg", "jpg")
    return InputImage(source.data, source.mime, f"image{suffix}.{extension}")


def _mime_of(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"
