"""Words the bot draws itself (memes: /caption, /bubble, and Reroll on a drawing): no API call,
no unit. Drawn on a picture the bot drew before, the new words replace its words (the layer is
redrawn on the plain picture)."""

from __future__ import annotations

from bot import imaging, memes
from bot.access import Gate
from bot.admission import Admissions, Source
from bot.context import Context
from bot.domain import (
    Address,
    ChatRef,
    EditRequest,
    FileRef,
    MessageRef,
    NewEdit,
    NewImage,
    Picture,
    ShownImage,
    UserRecord,
    UserRef,
)
from bot.pictures import Pictures


class Drawing:
    def __init__(
        self, ctx: Context, gate: Gate, admissions: Admissions, pictures: Pictures
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.admissions = admissions
        self.pictures = pictures

    async def draw(
        self, user: UserRef, chat: ChatRef, kind: str, words: str, to: Address,
        *, source_message: MessageRef | None = None, upload: FileRef | None = None,
    ) -> None:  # fmt: skip
        """`/caption top | bottom` or `/bubble [left|right] text` on `upload` (a picture given
        with the command, which no message shows: kept as the current image), the image
        `source_message` shows, or the user's current one; the picture answers `to`."""
        store = self.ctx.store
        record = await store.get_or_create_user(user)
        await self.gate.check(record, user, chat)
        self.gate.free_action(user)
        if upload is not None:
            self.admissions.check_claims(upload)
            source = Source(await self.admissions.keep_upload(record, chat, upload, None), None)
        else:
            request = EditRequest(user, chat, source_message=source_message)
            source = await self.admissions.source(record, request, None)
        drawn = await store.get_edit(source.parent_edit_id) if source.parent_edit_id else None
        if drawn is not None and drawn.layer and drawn.user_id != record.id:
            below = drawn.parent_edit_id  # the edit that made the plain picture, if any
            under = await store.get_edit(below) if below else None
            if not await self.pictures.shown_here(drawn.source_image_id, chat, under):
                drawn = None  # someone else's plain picture this chat never saw: words on words
        layer = _new_layer(drawn.layer if drawn and drawn.layer else None, kind, words)
        if drawn is not None and drawn.layer:  # redraw on the picture under the old words
            source = Source(drawn.source_image_id, drawn.parent_edit_id)
        await self.render(record, chat, source, layer, to)

    async def render(
        self, user: UserRecord, chat: ChatRef, source: Source, layer: memes.TextLayer,
        to: Address,
    ) -> None:  # fmt: skip
        """Draw `layer` on `source`, keep it as an edit of its own, and post it to `to`."""
        messenger = self.ctx.messengers[chat.platform]
        base = await self.pictures.picture_of(source.image_id, messenger)
        drawn = await self.pictures.pillow(memes.render, base, layer, font=self.ctx.meme_font)
        words = " | ".join(w for w in (layer.top, layer.bottom, layer.bubble) if w)
        new = NewEdit(
            user.id, chat.platform, chat.id, source.parent_edit_id, source.image_id, words,
            self.ctx.defaults, reply_to=to.reply_to, language=to.language,
        )  # fmt: skip
        result = NewImage(drawn.data, drawn.mime, drawn.width, drawn.height)
        edit_id, result_id = await self.ctx.store.record_drawn(new, result, layer.to_json())
        chat_bytes, mime = await self.pictures.for_chat(drawn.data, messenger, to)
        picture = Picture(chat_bytes, mime, f"stepedit-{edit_id}.jpg", result_id, edit_id,
                          prompt=words,
                          full_mime=imaging.full_quality_mime(drawn.data))  # fmt: skip
        message = await messenger.send_picture(to, picture)
        shown = ShownImage(result_id, edit_id)
        await self.pictures.make_current(user.id, chat, shown, message)


def _new_layer(old: str | None, kind: str, words: str) -> memes.TextLayer:
    """The words to draw: a new layer, or the old one with this kind of words replaced."""
    layer = memes.TextLayer.from_json(old) if old else None
    if kind == "caption":
        top, bottom = memes.parse_caption(words)
        return layer.with_caption(top, bottom) if layer else memes.TextLayer.captioned(top, bottom)
    side, text = memes.parse_bubble(words)
    return layer.with_bubble(text, side) if layer else memes.TextLayer.bubbled(text, side)
