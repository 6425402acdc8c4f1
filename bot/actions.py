"""What users do besides asking for an edit: the buttons under results and notes (a table from
action to handler: Reroll, Undo, Full quality, Compare, Cancel), /cancel, and photos sent without a
prompt (kept, and asked about). Only Reroll of an edit costs a unit; it is an admission."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence

from bot import imaging, memes
from bot.access import Gate
from bot.admission import Admissions, Source, edit_in
from bot.context import Context
from bot.domain import (
    Address,
    ChatRef,
    EditRecord,
    EditRequest,
    EditStatus,
    FileRef,
    MessageRef,
    Picture,
    ShownImage,
    Upload,
    UserRecord,
    UserRef,
)
from bot.drawing import Drawing
from bot.engine import JobEngine
from bot.errors import FileTooLarge, NothingToUndo, UnknownEdit
from bot.pictures import Pictures
from bot.presenter import Action, Press
from bot.texts import t

_Handler = Callable[[UserRef, ChatRef, Press, Address, str], Awaitable[str | None]]


class Actions:
    def __init__(
        self, ctx: Context, gate: Gate, engine: JobEngine, pictures: Pictures,
        admissions: Admissions, drawing: Drawing,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.gate = gate
        self.engine = engine
        self.pictures = pictures
        self.admissions = admissions
        self.drawing = drawing
        # The buttons that name an edit, which act for whoever asked for it and nobody else.
        self._buttons: dict[Action, _Handler] = {
            Action.CANCEL: self._cancel_pressed,
            Action.REROLL: self._reroll,
            Action.UNDO: self._undo_pressed,
            Action.FULL: self._full_pressed,
            Action.COMPARE: self._compare_pressed,
        }

    async def press(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, *, key: str
    ) -> str | None:
        """A button under one of the bot's messages, pressed by `user` in `chat`; `to` is the
        message it sits under, and `key` names the press (a redelivered press is one press).
        Returns a short text for the presser, if any (the adapter shows it to the presser
        only). Settings presses are the adapter's to apply with `change_setting`: they change
        the message they sit under."""
        record = await self.ctx.store.get_or_create_user(user)
        await self.gate.check(record, user, chat)
        handler = self._buttons.get(press.action)
        if handler is None:
            return None
        refusal = await self._not_theirs(record, chat, press, to.language)
        if refusal is not None:
            return refusal  # nothing done, nothing posted, nothing charged
        return await handler(user, chat, press, to, key)

    async def _cancel_pressed(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, key: str
    ) -> str | None:
        cancelled = await self.cancel(user, chat, note_of=press.edit_id)
        return None if cancelled else t("nothing_to_cancel", to.language)

    async def _reroll(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, key: str
    ) -> str | None:
        rerolled = await edit_in(self.ctx, press.edit_id, chat)
        if rerolled.layer:  # words the bot drew: the next best place, no API call
            self.gate.free_action(user)
            record = await self.ctx.store.get_or_create_user(user)
            layer = memes.TextLayer.from_json(rerolled.layer).rerolled()
            source = Source(rerolled.source_image_id, rerolled.parent_edit_id)
            await self.drawing.render(record, chat, source, layer, to)
            return None
        request = EditRequest(user, chat, reroll_of=press.edit_id, key=key,
                              answer_to=to.reply_to, language=to.language)  # fmt: skip
        await self.admissions.submit(request)
        return None

    async def _undo_pressed(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, key: str
    ) -> str | None:
        self.gate.free_action(user)
        if await self.undo(user, chat, press.edit_id, to) is None:
            return t("undo_not_shown", to.language)
        return None

    async def _full_pressed(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, key: str
    ) -> str | None:
        self.gate.free_action(user)
        await self.send_full_quality(chat, press.edit_id, to)
        return None

    async def _compare_pressed(
        self, user: UserRef, chat: ChatRef, press: Press, to: Address, key: str
    ) -> str | None:
        """The result beside its source, drawn here (no API call, no unit), where the chat saw
        the source; the comparison is no result of its own (no buttons, no reply edits it)."""
        self.gate.free_action(user)
        edit = await edit_in(self.ctx, press.edit_id, chat)
        if edit.result_image_id is None or edit.status != EditStatus.SUCCEEDED:
            raise UnknownEdit(f"edit {edit.id} has no delivered result")
        if not await self.pictures.comparable(edit, chat):
            return t("compare_not_shown", to.language)
        messenger = self.ctx.messengers[chat.platform]
        before = await self.pictures.picture_of(edit.source_image_id, messenger)
        after = (await self.ctx.store.load_image(edit.result_image_id)).data
        labels = (t("compare_before", to.language), t("compare_after", to.language))
        drawn = await self.pictures.pillow(memes.compare, before, after, labels,
                                           font=self.ctx.meme_font)  # fmt: skip
        data, mime = await self.pictures.for_chat(drawn.data, messenger, to)
        picture = Picture(data, mime, f"stepedit-compare-{edit.id}.jpg", 0, None,
                          prompt=edit.prompt, headline="caption_compare")  # fmt: skip
        await messenger.send_picture(to, picture)
        return None

    async def _not_theirs(
        self, presser: UserRecord, chat: ChatRef, press: Press, lang: str
    ) -> str | None:
        """Who may press: a button that names an edit acts for whoever asked for that edit,
        and for nobody else: they get this short private answer. An edit of another chat (or
        none) is left to the action, which refuses it as unknown."""
        edit = await self.ctx.store.get_edit(press.edit_id)
        if edit is None or (edit.platform, edit.chat_id) != (chat.platform, chat.id):
            return None
        return None if edit.user_id == presser.id else t("not_your_button", lang)

    async def cancel(self, user: UserRef, chat: ChatRef, *, note_of: int | None = None) -> bool:
        """Cancel this user's edits in this chat that are not on their way yet; their units go
        back in the same transaction. True if there was one. `note_of`: pressed on the note of
        that edit, which stands for all of its user's edits here, and only its user may."""
        store = self.ctx.store
        record = await store.get_or_create_user(user)
        if note_of is not None:
            noted = await store.get_edit(note_of)
            here = (record.id, chat.platform, chat.id)
            if noted is None or (noted.user_id, noted.platform, noted.chat_id) != here:
                return False
        cancelled = await store.cancel_edits(record.id, chat.platform, chat.id)
        for edit in cancelled:
            self.ctx.metrics.edit_ended(EditStatus.CANCELLED, edit.platform)
            messenger = self.engine.cancelled(edit)
            if messenger is None:
                continue
            with contextlib.suppress(Exception):  # each cancelled request answers for itself
                await messenger.send_text(edit.address, t("cancelled", edit.language))
            await self.engine.announce_end(edit.id)
        return bool(cancelled)

    async def undo(self, user: UserRef, chat: ChatRef, edit_id: int, to: Address) -> Picture | None:
        """Show the image before `edit_id` again and make it the current one. Costs nothing.
        An image never shown in this chat (see Pictures.shown_here) becomes the current one
        without being posted: None."""
        store, pictures = self.ctx.store, self.pictures
        record = await edit_in(self.ctx, edit_id, chat)
        owner = await store.get_or_create_user(user)
        before = await store.load_image(record.source_image_id)
        if before.canvas is not None:
            raise NothingToUndo()  # made from words: there is no picture before it
        parent = await store.get_edit(record.parent_edit_id) if record.parent_edit_id else None
        if not await pictures.shown_here(record.source_image_id, chat, parent):
            shown = ShownImage(record.source_image_id, parent.id if parent else None)
            await pictures.make_current(owner.id, chat, shown, None)
            return None
        messenger = self.ctx.messengers[chat.platform]
        shown_before = [record.source_image_id]
        if record.pictures > 1:  # an edit of several: all its pictures again, as an album
            album = [each.image_id for each in await store.edit_pictures(edit_id)]
            seen = [await store.shown_in_chat(each, chat.platform, chat.id) for each in album]
            shown_before = album if all(seen) else shown_before
        before_pictures = []
        for image_id in shown_before:
            data = await pictures.picture_of(image_id, messenger)
            chat_bytes, mime = await pictures.for_chat(data, messenger, to)
            before_pictures.append(Picture(
                data=chat_bytes,
                mime=mime,
                filename=f"stepedit-undo-{edit_id}.jpg",
                image_id=image_id,
                edit_id=parent.id if parent else None,
                prompt=parent.prompt if parent else None,
                seed=parent.seed if parent else None,
                full_mime=imaging.full_quality_mime(before.data),  # the parent's result
            ))  # fmt: skip
        picture, *others = before_pictures
        if others:
            message, *more = await messenger.send_album(to, before_pictures)
        else:
            message, more = await messenger.send_picture(to, picture), []
        for each, other in zip(more, others, strict=False):  # each repliable
            await store.link_message(each, ShownImage(other.image_id, other.edit_id))
        shown = ShownImage(record.source_image_id, picture.edit_id)
        await pictures.make_current(owner.id, chat, shown, message)
        return picture

    async def send_full_quality(self, chat: ChatRef, edit_id: int, to: Address) -> None:
        """The full-quality file of a delivered result (posted in this chat, so seen there), of
        each picture of an album made one by one, if the platform takes files that big."""
        record = await edit_in(self.ctx, edit_id, chat)
        results = [record.result_image_id]
        if record.pictures > 1:  # (only then a look at its pictures)
            made = [each.result_image_id for each in await self.ctx.store.edit_pictures(edit_id)]
            results = [image_id for image_id in made if image_id is not None] or results
        pictures = [await self._full(record, image_id) for image_id in results]
        messenger = self.ctx.messengers[chat.platform]
        limit = messenger.file_limit(to)
        for picture in pictures:
            if len(picture.data) > limit:
                raise FileTooLarge(
                    f"{len(picture.data)} bytes > {limit}",
                    size_mb=f"{len(picture.data) / 1e6:.1f}",
                    limit_mb=f"{limit / 1e6:.0f}",
                )
        for picture in pictures:
            await messenger.send_file(to, picture)

    async def full_quality(self, chat: ChatRef, edit_id: int) -> Picture:
        """A delivered result as its own file: the API's PNG, or its JPEG as it came (never
        decoded and encoded again); any other format as a lossless PNG."""
        record = await edit_in(self.ctx, edit_id, chat)
        return await self._full(record, record.result_image_id)

    async def _full(self, record: EditRecord, image_id: int | None) -> Picture:
        edit_id = record.id
        if image_id is None or record.status != EditStatus.SUCCEEDED:
            raise UnknownEdit(f"edit {edit_id} has no delivered result")
        image = await self.ctx.store.load_image(image_id)
        data, mime = await self.pictures.pillow(imaging.full_quality, image.data)
        return Picture(
            data=data,
            mime=mime,
            filename=f"stepedit-{edit_id}.{'jpg' if mime == imaging.JPEG_MIME else 'png'}",
            image_id=image.id,
            edit_id=edit_id,
            prompt=record.prompt,
            seed=record.seed,
        )

    # --- photos without a prompt -------------------------------------------------------------

    async def ask_for_prompt(
        self, user: UserRef, chat: ChatRef, upload: FileRef, origin: MessageRef, to: Address,
        *, ask: bool = True, more: Sequence[Upload] = (),
    ) -> None:  # fmt: skip
        """A photo without a prompt: keep it (unfetched) and ask what to change; a reply to
        the photo or to the question edits it, and so does the user's next text here. With
        `more` (an album's other photos, in order), the question and the next text edit all
        of them together, as if the album had had the prompt as its caption; a reply to one of
        its photos, that one. `ask=False` keeps it without asking. The same photo again is
        asked about once."""
        if await self.knows(origin):
            return  # redelivered after a crash: kept and asked already
        store = self.ctx.store
        record = await store.get_or_create_user(user)
        await self.gate.check(record, user, chat)
        if more:
            uploads = (Upload(upload, origin), *more)
            shown = await store.keep_album(record.id, chat.platform, chat.id, uploads)
        else:
            image_id = await self.admissions.keep_upload(record, chat, upload, origin)
            shown = ShownImage(image_id, None)
        if ask:
            question = await self.ctx.messengers[chat.platform].send_text(
                to, t("ask_prompt", to.language)
            )
            await store.link_message(question, shown)

    async def register_photo(
        self, user: UserRef, chat: ChatRef, upload: FileRef, message: MessageRef,
        *, current: bool = True,
    ) -> None:  # fmt: skip
        """A photo without a prompt: keep it (unfetched) as the current image; the next text
        edits it (not `current`: only a reply to it does). Costs nothing and downloads nothing
        until then."""
        record = await self.ctx.store.get_or_create_user(user)
        await self.admissions.keep_upload(record, chat, upload, message, current=current)

    async def knows(self, message: MessageRef) -> bool:
        return await self.ctx.store.shown_in(message) is not None
