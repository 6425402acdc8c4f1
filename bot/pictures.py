"""The service's pictures: fetching a user's photo (or taking its prefetch), the bytes an edit
sends for a stored image, the chat's copy of a picture, and which pictures a chat has seen
and which one a user's next message edits. Pillow work runs in worker threads, a few at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot import imaging
from bot.context import Context
from bot.domain import (
    Address,
    ChatRef,
    EditRecord,
    EditStatus,
    FileRef,
    MessageRef,
    NewImage,
    ShownImage,
)
from bot.errors import StepEditError
from bot.ports import Messenger

log = logging.getLogger("stepedit.service")

PILLOW_WORKERS = 2
PREFETCH_KEEP = 15.0  # seconds a fetched upload waits for a worker of this process to take it
_T = TypeVar("_T")


@dataclass(frozen=True)
class Fetched:
    """A user's photo fetched and normalized for the first time: `image` is what to keep of
    it, as stored image `image_id`."""

    image_id: int
    image: NewImage


@dataclass(frozen=True)
class SourceBytes:
    """What an edit sends for its source: a picture (`data` as `mime`, with what normalizing
    it noted), or, for a new image from words alone, the size to make (`canvas`)."""

    data: bytes = b""
    mime: str = ""
    notes: tuple[str, ...] = ()
    fetched: Fetched | None = None  # first fetched now: keep it
    canvas: str | None = None


@dataclass(frozen=True)
class _Prefetch:
    fetch: asyncio.Task[bytes]
    expiry: asyncio.TimerHandle
    edit_id: int | None  # the edit claimed with it, if known

    def drop(self) -> None:
        self.expiry.cancel()
        self.fetch.cancel()


@dataclass(frozen=True)
class _Admitted:
    """The source of an edit admitted and claimed here: an upload stored as `image_id`, not
    fetched yet (the edit's run needs no read of the image)."""

    image_id: int
    upload: FileRef


class Pictures:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Decoding a big image takes hundreds of MB for a moment: a few at a time, whatever comes.
        self._pillow_slots = asyncio.Semaphore(PILLOW_WORKERS)
        # Uploads admitted while a worker was idle, fetched while that worker claims the job
        # (platform, file id -> the download), and the edits claimed with them (edit id -> its
        # source). Only that edit skips the read: a later one of the same image (after a
        # /forget, say) reads the store, which knows what became of it.
        self._prefetched: dict[tuple[str, str], _Prefetch] = {}
        self._pending: dict[int, _Admitted] = {}

    async def pillow(self, work: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run image work in a worker thread, at most PILLOW_WORKERS at once."""
        async with self._pillow_slots:
            return await asyncio.to_thread(work, *args, **kwargs)

    # --- fetching ----------------------------------------------------------------------------

    def prefetch(self, upload: FileRef, claimed: EditRecord | None = None) -> None:
        """Start downloading an admitted upload whose job an idle worker is about to claim, so
        the download overlaps the claim (a photo's takes ~6 ms, a 14 MB file's ~50 ms). Not for
        a job that will wait: it would only hold memory; one another process takes is dropped
        after PREFETCH_KEEP. `claimed`: the edit of it this process claimed, if known."""
        messenger = self.ctx.messengers.get(upload.platform)
        key = (upload.platform, upload.file_id)
        if messenger is None or key in self._prefetched:
            return
        if len(self._prefetched) >= self.ctx.concurrency:
            return
        fetch = asyncio.create_task(messenger.fetch(upload))
        fetch.add_done_callback(_quietly)  # its worker looks at the outcome (see fetch)
        # Not taken here meanwhile (claimed by another process, cancelled): dropped.
        edit_id = claimed.id if claimed is not None else None
        expiry = asyncio.get_running_loop().call_later(
            PREFETCH_KEEP, self._drop_prefetch, key, edit_id
        )
        self._prefetched[key] = _Prefetch(fetch, expiry, edit_id)
        if claimed is not None:
            self._pending[claimed.id] = _Admitted(claimed.source_image_id, upload)

    def _drop_prefetch(self, key: tuple[str, str], edit_id: int | None) -> None:
        if edit_id is not None:
            self._pending.pop(edit_id, None)
        prefetch = self._prefetched.pop(key, None)
        if prefetch is not None:
            prefetch.drop()

    def drop_prefetches(self) -> list[asyncio.Task[bytes]]:
        """Stop every prefetch (shutting down); their tasks, to wait for."""
        fetches = [prefetch.fetch for prefetch in self._prefetched.values()]
        for prefetch in self._prefetched.values():
            prefetch.drop()
        self._prefetched.clear()
        self._pending.clear()
        return fetches

    async def fetch(self, file: FileRef, messenger: Messenger) -> bytes:
        """The file's bytes: from its prefetch if one ran and worked, else fetched now. A
        prefetch the platform refused (too large, gone) is the answer: asking again would only
        be refused again; one that failed otherwise (the network) is fetched once more."""
        prefetch = self._prefetched.pop((file.platform, file.file_id), None)
        if prefetch is not None:
            prefetch.expiry.cancel()
            if prefetch.edit_id is not None:  # (taken by any edit: the shortcut goes too)
                self._pending.pop(prefetch.edit_id, None)
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

    # --- bytes to send and to show -----------------------------------------------------------

    async def source_bytes(
        self, image_id: int, messenger: Messenger, *, for_edit: int | None = None
    ) -> SourceBytes:
        """What to upload for a stored image (the source of edit `for_edit`, if it is one). A
        photo not fetched yet is fetched and normalized now (`fetched`: keep it). Results
        have their source's size, but one can be a PNG over the API's safe byte size: that one
        is re-encoded first."""
        admitted = self._pending.pop(for_edit, None) if for_edit is not None else None
        if admitted is not None and admitted.image_id == image_id:  # admitted just now
            return await self._fetched(image_id, admitted.upload, messenger)
        image = await self.ctx.store.load_image(image_id)
        if image.canvas is not None:  # the size of a new image, for generate()
            return SourceBytes(canvas=image.canvas)
        max_side = self.ctx.max_side
        if image.file is not None:
            return await self._fetched(image.id, image.file, messenger)
        if len(image.data) <= imaging.MAX_OUTPUT_BYTES:
            return SourceBytes(image.data, image.mime)
        normal = await self.pillow(imaging.normalize, image.data, max_side=max_side)
        return SourceBytes(normal.data, normal.mime)

    async def _fetched(self, image_id: int, file: FileRef, messenger: Messenger) -> SourceBytes:
        """A photo known only as a platform file, fetched and normalized (to keep)."""
        data = await self.fetch(file, messenger)
        normal = await self.pillow(imaging.normalize, data, max_side=self.ctx.max_side)
        kept = NewImage(normal.data, normal.mime, normal.width, normal.height)
        return SourceBytes(normal.data, normal.mime, normal.notes, Fetched(image_id, kept))

    async def picture_of(self, image_id: int, messenger: Messenger) -> bytes:
        """A stored picture's bytes, for drawing on or showing again; a photo fetched for the
        first time is kept now."""
        source = await self.source_bytes(image_id, messenger)
        if source.fetched is not None:
            kept = source.fetched.image
            await self.ctx.store.fill_image(
                source.fetched.image_id, kept.data, kept.mime, kept.width, kept.height
            )
        return source.data

    async def for_chat(self, data: bytes, messenger: Messenger, to: Address) -> tuple[bytes, str]:
        """The picture as the platform shows it (its adapter states its limits)."""
        return await self.pillow(imaging.for_chat, data, limits=messenger.picture_limits(to))

    # --- what a chat has seen, and what a user edits next ----------------------------------

    async def shown_here(self, image_id: int, chat: ChatRef, made_by: EditRecord | None) -> bool:
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
        return await self.ctx.store.shown_in_chat(image_id, chat.platform, chat.id)

    async def comparable(self, edit: EditRecord, chat: ChatRef) -> bool:
        """Whether Compare may show `edit`'s source in `chat` (see shown_here): not a new image
        from words, nor an input only its user saw. Only says whether a button is offered:
        a failure to tell is a no. Not for an edit of several pictures (which is which)."""
        if edit.pictures > 1:
            return False
        try:
            store = self.ctx.store
            parent = await store.get_edit(edit.parent_edit_id) if edit.parent_edit_id else None
            return await self.shown_here(edit.source_image_id, chat, parent)
        except Exception:
            log.warning("edit %s: could not tell whether its source was seen", edit.id)
            return False

    async def make_current(
        self, user_id: int, chat: ChatRef, shown: ShownImage, message: MessageRef | None
    ) -> None:
        """`shown` becomes what the user's next message in `chat` edits, and `message` (the one
        showing it) repliable. Current first: once a message is linked, its state is complete."""
        await self.ctx.store.set_current(user_id, chat.platform, chat.id, shown)
        if message is not None:
            await self.ctx.store.link_message(message, shown)


def _quietly(task: asyncio.Task[Any]) -> None:
    """Mark a background task's failure as seen (whoever needs its result looks again)."""
    if not task.cancelled():
        task.exception()
