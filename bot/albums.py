"""Albums that a platform sends as separate messages (Telegram's media groups, the caption on
one of them): collected through the store, since the parts may reach different processes, into
one request. Each part is kept as it comes; `wait` seconds after a part, if no later part came,
the process that received it takes the album (the store gives it to exactly one taker) and
submits it: all its pictures in the order sent, with the caption's prompt. An album holding a
file that is no picture, or one the platform does not let bots fetch, gets one answer instead.
A sweep takes albums a process left behind: it died while waiting, or after taking one and
before answering it (an album is marked answered only then; its request's key makes a second
submit the same job, so it is charged and delivered once). A part that comes after its
album was taken is kept as a photo the user may reply to, and costs nothing; one that comes
again once its album was taken (a redelivery) changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from bot.actions import Actions
from bot.admission import Admissions
from bot.context import Context
from bot.domain import Address, Admission, AlbumPart, EditRequest, PartKept, Upload
from bot.errors import MixedAlbum, PromptError, StepEditError
from bot.rules import check_pictures, checked_prompt
from bot.texts import error_text, t

log = logging.getLogger("stepedit.service")

ALBUM_WAIT = 1.5  # seconds after an album's last part before it is taken (ALBUM_WAIT_SECONDS)
# An album taken this long ago and not answered was left by a process that died taking it.
ALBUM_LEFT = timedelta(minutes=1)


class Albums:
    def __init__(
        self, ctx: Context, admissions: Admissions, actions: Actions, *, wait: float = ALBUM_WAIT
    ) -> None:
        self.ctx = ctx
        self.admissions = admissions
        self.actions = actions
        self.wait = wait
        self._waiting: set[asyncio.Task[None]] = set()  # asleep: cancelled when stopping
        self._taking: set[asyncio.Task[None]] = set()  # taken: run to the end, even stopping

    async def add(self, part: AlbumPart) -> None:
        """Keep one part of an album; its album is taken once no part came for `wait` seconds."""
        kept = await self.ctx.store.keep_album_part(part, self.ctx.clock())
        if kept is PartKept.AGAIN:  # delivered again (a restart, say): its album has it
            return
        if kept is PartKept.LATE:
            # Its album was taken before it came. Its caption, if it has the album's, is a
            # request of its own (once: the album's key); else the photo is kept, free, for a
            # reply to it: the user's next words still edit the album (or its result).
            if part.refused is None and part.prompt and part.addressed:
                await self._submit([part])
            elif part.refused is None:
                await self.actions.register_photo(
                    part.user, part.chat, part.file, part.origin, current=False
                )
            return
        task = asyncio.create_task(self._take_later(part.chat.platform, part.chat.id, part.album))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def submit(self, request: EditRequest) -> Admission | None:
        """A request, unless it is words alone (no photo, nothing replied to) sent while the
        user's album without a caption is still being collected here: typed before the bot
        could ask, they are that album's caption. None then: the album is edited with them
        once it is complete."""
        if _words_alone(request):
            since = self.ctx.clock() - ALBUM_LEFT
            if await self.ctx.store.caption_album(request, since):
                return None
        return await self.admissions.submit(request)

    async def _take_later(self, platform: str, chat_id: str, album: str) -> None:
        await asyncio.sleep(self.wait)
        # From here on no stop cancels it: an album taken and not yet submitted would be lost.
        task = asyncio.current_task()
        assert task is not None
        self._waiting.discard(task)
        self._taking.add(task)
        try:
            await self.take(platform, chat_id, album)
        except Exception:
            log.exception("album %s: could not take it; the sweep tries again", album)
        finally:
            self._taking.discard(task)

    async def take(
        self, platform: str, chat_id: str, album: str, *, left_before: datetime | None = None
    ) -> None:
        """Take the album if it is quiet (or, `left_before`: left by a taker that died) and
        answer it; only then is it marked answered, so a death in between leaves it to the
        sweep (submitting it twice is harmless: its request's key admits it once)."""
        now = self.ctx.clock()
        quiet_since = now - timedelta(seconds=self.wait)
        store = self.ctx.store
        parts = await store.take_album(
            platform, chat_id, album, quiet_since, now, left_before=left_before
        )
        if parts:
            await self._submit(sorted(parts, key=lambda part: int(part.origin.message_id)))
            await store.album_answered(platform, chat_id, album)

    async def sweep(self) -> None:
        """Now and then, take the albums whose process died waiting for them or taking them."""
        while True:
            await asyncio.sleep(max(self.wait, 1.0) * 4)
            with contextlib.suppress(Exception):
                await self.sweep_once()

    async def sweep_once(self) -> None:
        now = self.ctx.clock()
        since, left_before = now - timedelta(seconds=self.wait * 3), now - ALBUM_LEFT
        for platform, chat_id, album in await self.ctx.store.quiet_albums(
            list(self.ctx.messengers), since, left_before
        ):
            await self.take(platform, chat_id, album, left_before=left_before)

    def stop(self) -> list[asyncio.Task[None]]:
        """Stop waiting (shutting down: the sweep of a process still running takes them); the
        albums being taken finish. The tasks to wait for."""
        for task in self._waiting:
            task.cancel()
        return [*self._waiting, *self._taking]

    async def _submit(self, parts: list[AlbumPart]) -> None:
        """One request of the album's pictures, in the order sent, with its caption's prompt;
        no caption: the pictures are kept and the user asked once what to change (the answer
        is the album's prompt: bot.actions.ask_for_prompt)."""
        if not any(part.addressed for part in parts):
            return  # a group's album not meant for the bot
        # One person's album: a part someone else sent under the same album id (a client may
        # choose it) is not theirs to edit or to pay for.
        owner = _person(next((part for part in parts if part.prompt), parts[0]))
        parts = [part for part in parts if _person(part) == owner]
        prompted = next((part for part in parts if part.prompt), None)
        first = prompted or parts[0]
        to = Address(first.chat.platform, first.chat.id, first.origin.message_id, first.language)
        refused = [part.refused for part in parts if part.refused]
        if refused:  # one answer for the whole album: nothing is kept, fetched or charged
            await self._answer(to, t(MixedAlbum.code if MixedAlbum.code in refused
                                     else refused[0], to.language))  # fmt: skip
            return
        if prompted is None:  # asked once; the prompt that answers edits the whole album
            more = [Upload(part.file, part.origin) for part in parts[1:]]
            try:  # more pictures than the backend takes: told now, as with a caption
                check_pictures(self.ctx.capabilities, len(parts))
            except StepEditError as exc:
                await self._answer(to, error_text(exc, to.language))
                return
            await self.actions.ask_for_prompt(
                first.user, first.chat, first.file, first.origin, to, more=more
            )
            return
        head, *rest = parts  # all of them (a one-picture backend edits each alone)
        request = EditRequest(
            prompted.user, prompted.chat, prompted.prompt or "", upload=head.file,
            origin=head.origin, more=tuple(Upload(part.file, part.origin) for part in rest),
            key=f"{to.platform}:{to.chat_id}:album:{prompted.album}",
            answer_to=to.reply_to, language=to.language,
        )  # fmt: skip
        try:
            await self.admissions.submit(request)
        except StepEditError as exc:
            await self._answer(to, error_text(exc, to.language))
        except Exception:
            log.exception("album %s: could not submit it", prompted.album)
            await self._answer(to, t("error_generic", to.language))

    async def _answer(self, to: Address, text: str) -> None:
        with contextlib.suppress(Exception):  # the user may have blocked the bot meanwhile
            await self.ctx.messengers[to.platform].send_text(to, text)


def _words_alone(request: EditRequest) -> bool:
    """A prompt for the user's current image here, fit to be a caption."""
    if request.upload or request.source_message or request.reroll_of or request.imagine:
        return False
    try:
        checked_prompt(request.prompt)
    except PromptError:  # refused as it would be anyway; the album is asked about
        return False
    return not request.overrides


def _person(part: AlbumPart) -> tuple[str, str]:
    return part.user.platform, part.user.id
