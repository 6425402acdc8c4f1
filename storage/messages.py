"""`SqlMessages`: which message shows which image, and each user's current image per chat."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import MessageRef, ShownImage
from storage import statements as S
from storage.base import SqlBase
from storage.models import ChatHead, ShownMessage, utcnow


class SqlMessages(SqlBase):
    async def link_message(self, message: MessageRef, shown: ShownImage) -> None:
        """Remember that `message` shows `shown` (replacing what it showed before)."""
        async with self._tx() as session:
            await link_in(session, message, shown)

    async def shown_in(self, message: MessageRef) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(
                ShownMessage, (message.platform, message.chat_id, message.message_id)
            )
            return None if row is None else _shown(row.image_id, row.edit_id, row.more_images)

    async def shown_in_chat(self, image_id: int, platform: str, chat_id: str) -> bool:
        async with self._tx(read_only=True) as session:
            linked = await session.scalar(
                select(ShownMessage.message_id)
                .where(
                    ShownMessage.platform == platform,
                    ShownMessage.chat_id == chat_id,
                    ShownMessage.image_id == image_id,
                )
                .limit(1)
            )
            return linked is not None

    async def set_current(
        self, user_id: int, platform: str, chat_id: str, shown: ShownImage
    ) -> None:
        async with self._tx() as session:
            await set_current_in(session, user_id, platform, chat_id, shown)

    async def current(self, user_id: int, platform: str, chat_id: str) -> ShownImage | None:
        async with self._tx(read_only=True) as session:
            row = await session.get(ChatHead, (user_id, platform, chat_id))
            return None if row is None else _shown(row.image_id, row.edit_id, row.more_images)


def _shown(image_id: int, edit_id: int | None, more: str | None) -> ShownImage:
    """A row's ShownImage. Its album's other photos count only if they name this row's image
    as theirs: a replica of 0011 (a rolling upgrade) changes the image and leaves them."""
    head, _, ids = (more or "").partition(":")
    if head != str(image_id):
        return ShownImage(image_id, edit_id)
    return ShownImage(image_id, edit_id, tuple(int(each) for each in ids.split(",")))


def _more(shown: ShownImage) -> str | None:
    """An album's other photos as a row keeps them, after the image they go with: "11:12,13"
    (NULL when there are none)."""
    if not shown.more:
        return None
    return f"{shown.image_id}:" + ",".join(str(each) for each in shown.more)


async def set_current_in(
    session: AsyncSession, user_id: int, platform: str, chat_id: str, shown: ShownImage
) -> None:
    """`shown` becomes the user's current image in the chat, in the caller's transaction."""
    await session.execute(S.SET_CURRENT, {
        "user_id": user_id, "platform": platform, "chat_id": chat_id,
        "image_id": shown.image_id, "edit_id": shown.edit_id, "more": _more(shown),
        "now": utcnow(),
    })  # fmt: skip


async def link_in(session: AsyncSession, message: MessageRef, shown: ShownImage) -> None:
    """`message` shows `shown`, in the caller's transaction."""
    await session.execute(S.LINK_MESSAGE, {
        "platform": message.platform, "chat_id": message.chat_id,
        "message_id": message.message_id, "image_id": shown.image_id,
        "edit_id": shown.edit_id, "more": _more(shown), "now": utcnow(),
    })  # fmt: skip
