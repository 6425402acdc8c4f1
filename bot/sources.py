"""The pictures an edit of several sends, fetched within bounds: an album may bring ten of up
to 20 MB each, and fetching all of them at once, before any call, held all of them at once (for
every such edit running). A backend that takes them in one call: fetched FETCH_AT_ONCE at a time
(all are held for that one call). A backend that edits one picture per call (bot/each_picture.py):
the first picture that can be fetched is fetched before the call, as an edit of one is (if none
can be, the edit fails before anything is paid, as one does); each of the others while the call
before it runs (the API slot does not wait for a download), and let go after its own call, so two
are held at most. A picture that cannot be fetched
then is left out, as one whose call failed: its unit goes back, nothing is paid for it, the
others are edited all the same. A photo fetched for the first time is kept while its call runs.
(An edit of one picture, the usual case, reads nothing more: it is fetched as it always was.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.context import Context
from bot.domain import EditRecord, NewImage
from bot.each_picture import one_by_one
from bot.errors import StepEditError
from bot.pictures import Pictures, SourceBytes
from bot.ports import Messenger

log = logging.getLogger("stepedit.service")

FETCH_AT_ONCE = 3  # pictures of one edit fetched (and normalized) at once, for its one call

Fetch = Callable[[], Awaitable[SourceBytes]]
_KEEPING: set[asyncio.Task[None]] = set()


class Sources:
    """What an edit sends: `ready`, fetched before the call (its picture, every picture of
    several sent together, or a new image's canvas); or, one call per picture, `each`: a
    picture's fetch, in order, each awaited just before that picture's call (raising
    StepEditError if the picture cannot be had). `unfilled`: photos fetched one by one that
    could not be kept yet (to keep with the result)."""

    def __init__(self, ready: list[SourceBytes]) -> None:
        self.ready = ready
        self.each: list[Fetch] = []
        self.unfilled: list[tuple[int, NewImage]] = []
        self._notes: list[str] = []  # of the pictures fetched one by one
        self._keeping: list[asyncio.Task[None]] = []

    @property
    def notes(self) -> tuple[str, ...]:
        """What normalizing the pictures noted, each once."""
        return tuple(dict.fromkeys([*(n for each in self.ready for n in each.notes), *self._notes]))

    async def settled(self) -> None:
        """Wait until the photos fetched one by one are kept (or are in `unfilled`). Cancelled
        meanwhile, they are cancelled too, and waited for: no database call outlives its job."""
        keeping, self._keeping = self._keeping, []
        if not keeping:
            return
        try:
            await asyncio.wait(keeping)
        except asyncio.CancelledError:
            for task in keeping:
                task.cancel()
            await asyncio.wait(keeping)
            raise

    def _taken(self, ctx: Context, source: SourceBytes) -> SourceBytes:
        """A picture fetched one by one, to send: its notes noted and, a photo fetched for the
        first time, kept meanwhile (nothing else holds it once it is sent)."""
        self._notes.extend(source.notes)
        fetched = source.fetched
        if fetched is None:
            return source

        async def keep() -> None:
            try:
                await ctx.store.fill_images([(fetched.image_id, fetched.image)])
            except Exception as exc:
                log.warning("could not keep photo %s yet (%s); kept with the result",
                            fetched.image_id, exc)  # fmt: skip
                self.unfilled.append((fetched.image_id, fetched.image))

        task = asyncio.create_task(keep())
        self._keeping.append(task)
        _KEEPING.add(task)  # (held to its end, even if the edit ends first)
        task.add_done_callback(_KEEPING.discard)
        return SourceBytes(source.data, source.mime, source.notes)


async def sources_of(
    ctx: Context, pictures: Pictures, edit: EditRecord, messenger: Messenger
) -> Sources:
    """What the edit sends: its source, or (an edit of several) its pictures, fetched a few
    at a time or each while the call before it runs (see the module)."""
    if edit.pictures == 1:  # the usual case: no look at the pictures' table
        source = await pictures.source_bytes(edit.source_image_id, messenger, for_edit=edit.id)
        return Sources([source])
    ids = [each.image_id for each in await ctx.store.edit_pictures(edit.id)]
    if not one_by_one(ctx.capabilities, len(ids)):
        at_once = asyncio.Semaphore(FETCH_AT_ONCE)

        async def fetched(image_id: int) -> SourceBytes:
            async with at_once:
                return await pictures.source_bytes(image_id, messenger)

        fetches = [asyncio.ensure_future(fetched(image_id)) for image_id in ids]
        try:
            return Sources(list(await asyncio.gather(*fetches)))
        except BaseException:  # one failed (the edit fails): the others are not needed
            for each in fetches:
                each.cancel()
            await asyncio.wait(fetches)
            raise
    sources = Sources([])
    failures: list[Exception] = []  # of the pictures before the first that could be fetched
    for image_id in ids:
        try:
            first = await pictures.source_bytes(image_id, messenger)
        except Exception as exc:
            failures.append(exc)
            continue
        break
    else:
        raise failures[0]  # none: the edit fails before its call, as an edit of one
    held = [first]

    async def first_one() -> SourceBytes:  # (kept, as the others, while its call runs)
        return sources._taken(ctx, held.pop())  # (not held here once sent)

    def later(image_id: int) -> Fetch:
        async def fetch() -> SourceBytes:
            try:
                return sources._taken(ctx, await pictures.source_bytes(image_id, messenger))
            except StepEditError:
                raise
            except Exception as exc:  # (the network, say): this picture is left out
                raise _unfetched(image_id, exc) from exc

        return fetch

    sources.each = [
        *(_failing(_unfetched(ids[n], exc)) for n, exc in enumerate(failures)),
        first_one,
        *(later(image_id) for image_id in ids[len(failures) + 1 :]),
    ]
    return sources


def _unfetched(image_id: int, exc: Exception) -> StepEditError:
    """Why a picture is left out: as it failed, or (the network, say) as a StepEditError."""
    if isinstance(exc, StepEditError):
        return exc
    log.warning("could not fetch picture %s (%s: %s); left out", image_id, type(exc).__name__, exc)
    return StepEditError(f"could not fetch picture {image_id}: {type(exc).__name__}: {exc}")


def _failing(exc: StepEditError) -> Fetch:
    async def fail() -> SourceBytes:
        raise exc

    return fail
